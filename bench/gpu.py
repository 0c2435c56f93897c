"""GPU report: backend agreement with the reference, scan times at the models' shapes, training img/s and memory.

    .venv/bin/python -m bench.gpu [--batches 8 32] [--repeats 5] [--iterations 10] [--tiny] [--device cpu]

Sections: (1) every selective-scan backend that resolves on the device (``resolve_backend``; the
others are listed with the reason) against the reference loop in fp32, fp16 and bf16: max abs and
relative (max |err| / max |ref|) error of y, last_state and the gradient of every input for a loss
on y; (2) forward and forward+backward time and peak memory of each backend at the SS2D scan shapes
of HybriMamba and RHMC at 128x128 (read from a forward pass: batch, K*Di, L = 16384, N, G = 4);
(3) HybriMamba and RHMC training steps (AdamW, L1) in img/s and peak memory, fp32 and bf16 autocast.
A row that fails (CUDA out of memory included) prints its reason and the report goes on; the exit
status is 1 if a row failed other than by running out of memory or an agreement check failed.
Without CUDA it says so and exits 0; ``--device cpu --tiny`` runs the same report on CPU with the
tiny configs and small shapes (the tests do).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.inputs import scan_inputs
from bench.timing import fmt_time, median_time, sync
from model.build import build_network
from model.ss2d import K_DIRECTIONS, SS2D
from model.ssm import BACKENDS, resolve_backend
from model.ssm.reference import selective_scan_reference
from utils.cli import ArgumentParser
from utils.config import load_config

CONFIGS = {"hybrimamba": "configs/hybrimamba_x8_celeba.yaml", "rhmc": "configs/rhmc_x8_celeba.yaml"}
TINY_CONFIGS = {"hybrimamba": "configs/hybrimamba_tiny.yaml", "rhmc": "configs/rhmc_tiny.yaml"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOLERANCES = {"fp32": (6e-4, 2e-3), "fp16": (3e-3, 5e-3), "bf16": (3e-2, 5e-2)}  # mamba_ssm's test tolerances
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


class Report:
    """Prints rows and counts the failures that make the exit status 1."""

    def __init__(self) -> None:
        self.failures = 0

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def row(self, text: str) -> None:
        print(text, flush=True)

    def failed(self, label: str, err: BaseException) -> None:
        oom = isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)
        self.failures += not oom
        reason = "OOM" if oom else f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:100]}"
        print(f"{label}  {reason}", flush=True)
        err.__traceback__ = None  # its frames hold the failed row's model and tensors
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak_mib(device: torch.device, base: int) -> str:
    return f"{(torch.cuda.max_memory_allocated(device) - base) / 2**20:.0f}" if device.type == "cuda" else "-"


def available_backends(device: torch.device) -> tuple[dict[str, Callable], dict[str, str]]:
    """name -> backend function for every backend that resolves on ``device``; name -> reason for the rest."""
    found, skipped = {}, {}
    for name in BACKENDS:
        if name == "auto":
            continue
        try:
            resolved, fn = resolve_backend(name, device)
        except (RuntimeError, ValueError, ImportError) as err:
            skipped[name] = str(err).splitlines()[0]
            continue
        found[name if resolved == name else f"{name} ({resolved})"] = fn
    return found, skipped


def _outputs_and_grads(fn: Callable, inputs: dict, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    for v in inputs.values():
        if v is not None:
            v.grad = None
    y, last = fn(**inputs, delta_softplus=True, return_last_state=True)
    y.backward(dy)  # a loss on y only: mamba_ssm's backward ignores d(last_state)
    out = {"y": y.detach().float(), "last_state": last.detach().float()}
    out.update({f"d{k}": v.grad.float() for k, v in inputs.items() if v is not None})
    return out


def agreement(report: Report, backends: dict[str, Callable], device: torch.device, tiny: bool) -> None:
    """Each backend against the reference on the same inputs, per input dtype."""
    batch, d, n, length = (1, 8, 4, 40) if tiny else (2, 64, 16, 2500)  # L > 2048: two mamba_ssm chunks
    report.section(
        f"agreement with the reference: batch {batch}, d {d}, N {n}, L {length}, G {K_DIRECTIONS}, z, D, "
        "delta_bias, softplus; error max abs / max rel (= max|err| / max|ref|); grads of a loss on y"
    )
    for dname, dtype in DTYPES.items():
        inputs = scan_inputs(batch, d, n, length, K_DIRECTIONS, dtype, device, with_z=True)
        dy = torch.randn(batch, d, length, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        want = _outputs_and_grads(selective_scan_reference, inputs, dy)
        for name, fn in backends.items():
            if name == "reference":
                continue
            label = f"{name:<18}{dname:<6}"
            try:
                got = _outputs_and_grads(fn, inputs, dy)
            except Exception as err:  # noqa: BLE001 - one row's failure is reported, the others still run
                report.failed(label, err)
                continue
            rtol, atol = TOLERANCES[dname]
            parts, ok = [], True
            for key, ref in want.items():
                err = (got[key] - ref).abs()
                scale = 1 if key in ("y", "last_state") else 10  # gradients: 10x (mamba_ssm's tests use 2-10x)
                ok &= bool((err <= scale * (atol + rtol * ref.abs())).all())
                parts.append(f"{key} {err.max():.1e}/{err.max() / ref.abs().max().clamp_min(1e-30):.1e}")
            report.failures += not ok
            report.row(f"{label}{'ok  ' if ok else 'FAIL'}  " + "  ".join(parts))


def scan_shapes(model_cfg: dict, size: int, device: torch.device) -> dict[tuple[int, int, int], int]:
    """(K*Di, L, N) -> calls per forward, read from a batch-1 forward of the model at size x size."""
    net = build_network({"model": model_cfg}, device)
    shapes: dict[tuple[int, int, int], int] = {}

    def hook(module: SS2D, args: tuple) -> None:
        _, height, width, _ = args[0].shape
        key = (K_DIRECTIONS * module.d_inner, height * width, module.d_state)
        shapes[key] = shapes.get(key, 0) + 1

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, SS2D)]
    with torch.no_grad():
        net(torch.rand(1, 3, size, size, device=device))
    for h in handles:
        h.remove()
    return shapes


def scan_times(
    report: Report, backends: dict[str, Callable], configs: dict[str, dict], args: argparse.Namespace
) -> None:
    """fwd and fwd+bwd of every backend at each model's full-resolution scan shapes."""
    device = torch.device(args.device)
    report.section(
        f"selective scan at the models' SS2D shapes ({args.size}x{args.size}, G {K_DIRECTIONS}, D, delta_bias, "
        f"softplus, no z): median of {args.repeats}; peak MiB over the inputs"
    )
    report.row(f"{'model':<12}{'backend':<18}{'dtype':<6}{'batch':>6}{'K*Di':>6}{'L':>7}{'N':>4}"
               f"{'fwd':>12}{'fwd+bwd':>12}{'peak MiB':>10}")  # fmt: skip
    for model, cfg in configs.items():
        shapes = scan_shapes(cfg["model"], args.size, device)
        report.row(f"{model}: scans per forward (K*Di, L, N): calls = {shapes}")
        longest = sorted(s for s in shapes if s[1] == max(length for _, length, _ in shapes))
        for d, length, n in longest[:1] if args.tiny else longest:
            for name, fn in backends.items():
                if name == "reference":
                    continue  # the oracle loop: minutes per call at L = 16384
                for dname in ("fp32", "bf16"):
                    for batch in args.batches:
                        label = f"{model:<12}{name:<18}{dname:<6}{batch:>6}{d:>6}{length:>7}{n:>4}"
                        try:
                            report.row(label + _time_scan(fn, batch, d, n, length, DTYPES[dname], device, args.repeats))
                        except Exception as err:  # noqa: BLE001
                            report.failed(label, err)


def _time_scan(fn, batch, d, n, length, dtype, device, repeats) -> str:
    inputs = scan_inputs(batch, d, n, length, K_DIRECTIONS, dtype, device, with_z=False)
    base = _reset_peak(device)

    def forward() -> None:
        with torch.no_grad():
            fn(**inputs, delta_softplus=True)

    def forward_backward() -> None:
        for v in inputs.values():
            if v is not None:
                v.grad = None
        fn(**inputs, delta_softplus=True).sum().backward()

    fwd = median_time(forward, device, repeats, warmup=True)
    fwd_bwd = median_time(forward_backward, device, repeats, warmup=True)
    return f"{fmt_time(fwd, 2):>12}{fmt_time(fwd_bwd, 2):>12}{_peak_mib(device, base):>10}"


def training(report: Report, configs: dict[str, dict], args: argparse.Namespace) -> None:
    """Training steps (AdamW, L1) of each model: img/s and peak memory, fp32 and bf16 autocast."""
    device = torch.device(args.device)
    report.section(
        f"training steps at {args.size}x{args.size} (AdamW, L1; ssm.backend auto = "
        f"{resolve_backend('auto', device)[0]}): {args.iterations} timed steps after 2 warm-up steps"
    )
    report.row(f"{'model':<12}{'precision':<10}{'batch':>6}{'img/s':>10}{'s/step':>10}{'peak MiB':>10}")
    for model, cfg in configs.items():
        for precision in ("fp32", "bf16"):
            for batch in args.batches:
                label = f"{model:<12}{precision:<10}{batch:>6}"
                try:
                    report.row(label + _train_row(cfg, precision, batch, device, args))
                except Exception as err:  # noqa: BLE001
                    report.failed(label, err)


def _train_row(cfg: dict, precision: str, batch: int, device: torch.device, args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    net = build_network({"model": cfg["model"]}, device).train()  # ssm.backend auto
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    lr_up = torch.rand(batch, 3, args.size, args.size, device=device)
    hr = torch.rand(batch, 3, args.size, args.size, device=device)
    amp = precision == "bf16"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.l1_loss(net(lr_up).float(), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    base = _reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.iterations):
        step()
    sync(device)
    per_step = (time.perf_counter() - t0) / args.iterations
    return f"{batch / per_step:>10.1f}{per_step:>10.3f}{_peak_mib(device, base):>10}"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: the test mode)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs, 16x16 images, small scans (CPU tests)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 8 32 (tiny: 1)")
    parser.add_argument("--size", type=int, default=None, help="HR image size (default 128, tiny: 16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed scan runs, median (default 5, tiny: 1)")
    parser.add_argument("--iterations", type=int, default=None, help="timed training steps (default 10, tiny: 1)")
    parser.add_argument("--sections", nargs="+", default=["agreement", "scan", "train"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench.gpu: no CUDA GPU on this machine, nothing to measure (--device cpu --tiny runs the report on CPU)")
        return 0
    tiny = args.tiny
    args.batches = args.batches or ([1] if tiny else [8, 32])
    args.size = args.size or (16 if tiny else 128)
    args.repeats = args.repeats or (1 if tiny else 5)
    args.iterations = args.iterations or (1 if tiny else 10)
    configs = {name: load_config(path) for name, path in (TINY_CONFIGS if tiny else CONFIGS).items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"bench.gpu on {device} ({name}), torch {torch.__version__}, CUDA {torch.version.cuda}")
    backends, skipped = available_backends(device)
    print(f"scan backends: {', '.join(backends)}; auto = {resolve_backend('auto', device)[0]}")
    for backend, reason in skipped.items():
        print(f"  skipped {backend}: {reason}")
    report = Report()
    if "agreement" in args.sections:
        agreement(report, backends, device, tiny)
    if "scan" in args.sections:
        scan_times(report, backends, configs, args)
    if "train" in args.sections:
        training(report, configs, args)
    if report.failures:
        print(f"\n{report.failures} row(s) failed (see above)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
