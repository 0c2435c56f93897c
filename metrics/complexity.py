"""Model complexity: parameters, FLOPs / MACs at an input size, and latency per image.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls, einsum,
attention; like thop it ignores elementwise ops) plus the selective scan, which runs outside
any counted op and is added through ``model.ssm.count_scan_flops()``. (An einsum whose
contraction has size 1, e.g. SS2D's dt projection with dt_rank 1, is lowered to a broadcast
multiply and not counted; it is a negligible 2 * K * Di * L.) One multiply-add is two
FLOPs; MACs = FLOPs / 2 (the "FLOPs" of thop-based FSR tables are usually these MACs).
The input size is the network input: the bicubic-upsampled LR (128x128 for x8 faces), or the LR
itself (16x16) for networks with ``lr_input`` (SwinIR, MambaIR), the default of ``--size``.

Latency: the median of ``--repeats`` (default 3) timed forwards after ``--warmup`` (default 1)
untimed ones, with a progress bar (a forward of the full models takes seconds on a CPU).

Script: ``python -m metrics.complexity --model NAME [--config CFG] [--size H W] [--device cpu cuda]
[--repeats 3] [--warmup 1] [--no-progress]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path (python metrics/x.py): the repository root first, not metrics/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import json
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from model.build import bind_scan, build_network
from model.ssm import count_scan_flops, resolve_backend
from utils.cli import ArgumentParser, run_cli
from utils.config import load_config


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not, shared ones once; placeholders such as bicubic's dummy left out)."""
    return sum(p.numel() for p in model.parameters() if not getattr(p, "_placeholder", False))


@torch.no_grad()
def count_flops(model: nn.Module, size: tuple[int, int] = (128, 128), batch: int = 1) -> dict[str, int]:
    """FLOPs of one forward pass on a (batch, 3, H, W) input: counted ops, scan, total and MACs."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.rand(batch, 3, *size, device=device)
    model.eval()
    with FlopCounterMode(display=False) as counter, count_scan_flops() as scan:
        model(x)
    counted = int(counter.get_total_flops())
    total = counted + int(scan[0])
    return {"op_flops": counted, "scan_flops": int(scan[0]), "flops": total, "macs": total // 2}


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    size: tuple[int, int] = (128, 128),
    device: str | torch.device = "cpu",
    batch: int = 1,
    warmup: int = 1,
    repeats: int = 3,
    progress: bool = False,
) -> dict[str, float]:
    """Milliseconds per image (median and mean over ``repeats`` timed forwards after ``warmup``)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"latency needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.rand(batch, 3, *size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with tqdm(total=warmup + repeats, desc=f"timing on {device.type}", unit="forward", disable=not progress) as bar:
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000 / batch)
            bar.update(1)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "repeats": repeats}


def model_config(name: str | None, config: str | None) -> dict[str, Any]:
    """The ``model`` section to build: from ``config`` (its name must match ``name``) or ``{name: name}``."""
    if config is None:
        if name is None:
            raise ValueError("give --model NAME or --config CFG")
        return {"name": name}

    cfg = load_config(config)
    if name is not None and cfg["model"]["name"] != name:
        raise ValueError(f"--model {name!r} but config {config!r} builds model {cfg['model']['name']!r}")
    return cfg["model"]


def profile(
    model_cfg: dict[str, Any],
    size: tuple[int, int] | None = None,
    devices: tuple[str, ...] = ("cpu",),
    warmup: int = 1,
    repeats: int = 3,
    progress: bool = False,
    backend: str = "auto",
) -> dict[str, Any]:
    """Build the model and report parameters, FLOPs / MACs and latency on each device (scan ``backend`` bound
    for each device).

    ``size`` None: the input of a 128x128 output, the 128 / scale LR for ``lr_input`` networks.
    """
    model = build_network({"model": model_cfg, "ssm": {"backend": backend}})
    if size is None:
        side = 128 // model.scale if getattr(model, "lr_input", False) else 128
        size = (side, side)
    report: dict[str, Any] = {"model": model_cfg["name"], "size": list(size), "params": count_parameters(model)}
    report.update(count_flops(model, size))
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            continue
        bind_scan(model, resolve_backend(backend, torch.device(device)))
        report[f"latency_{device}"] = measure_latency(
            model, size, device, warmup=warmup, repeats=repeats, progress=progress
        )
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description="Parameters, FLOPs / MACs and latency of a registered model")
    parser.add_argument("--model", default=None, help="registered model name")
    parser.add_argument("--config", default=None, help="experiment YAML whose model section is built")
    parser.add_argument(
        "--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="network input (default: for 128x128 out)"
    )
    parser.add_argument("--device", nargs="+", choices=("cpu", "cuda"), default=("cpu", "cuda"))
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards; the median is reported (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while timing")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    cfg = model_config(args.model, args.config)
    backend = "auto"
    if args.config is not None:
        backend = load_config(args.config)["ssm"]["backend"]
    size = None if args.size is None else tuple(args.size)
    report = profile(
        cfg,
        size,
        devices=tuple(args.device),
        warmup=args.warmup,
        repeats=args.repeats,
        progress=not args.no_progress,
        backend=backend,
    )
    h, w = report["size"]
    print(f"model: {report['model']}  input: 1x3x{h}x{w}")
    print(f"params: {report['params'] / 1e6:.3f} M")
    print(
        f"FLOPs: {report['flops'] / 1e9:.3f} G (ops {report['op_flops'] / 1e9:.3f} G + selective scan "
        f"{report['scan_flops'] / 1e9:.3f} G)   MACs: {report['macs'] / 1e9:.3f} G (= FLOPs / 2, thop-style)"
    )
    for device in args.device:
        if f"latency_{device}" in report:
            lat = report[f"latency_{device}"]
            print(
                f"latency {device}: {lat['median_ms']:.2f} ms/image median of {lat['repeats']} runs "
                f"({lat['mean_ms']:.2f} mean)"
            )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    run_cli(main)
