"""Export a trained network: ``python -m tools.export --checkpoint CKPT --format FORMAT --out FILE``.

Formats: ``exported-program`` (``torch.export``, saved with ``torch.export.save``; the scan stays the
backend's operator, so loading it needs ``import model.ssm`` and, for the CPU kernel, its build),
``aoti`` (an AOTInductor package from ``torch._inductor.aoti_compile_and_package``, run with
``torch._inductor.aoti_load_package``) and ``onnx`` (``torch.onnx.export(dynamo=True, optimize=False)``;
needs the onnx and onnxscript packages; onnxruntime optimises the graph when it loads it). ONNX and
AOTInductor have no selective-scan operator, so for them the scan is bound to the chunked pure-PyTorch
forward with its two time loops as ``torch.ops.higher_order.scan`` (``selective_scan_chunked_loop``):
AOTInductor compiles them as while loops, the ONNX exporter writes ONNX ``Scan`` nodes, so the artifact
does not grow with the image size. The export runs in eval mode on CPU on a (batch, C, S, S) input,
S = ``data.val.hr_size`` of the checkpoint's config (over ``scale`` for networks that take the LR itself)
unless ``--size``; the artifact is then run on that input and its largest difference from the eager
network is printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from model.build import bind_scan, load_network
from model.ssm import Scan
from model.ssm.chunked_scan import selective_scan_chunked_loop
from utils.cli import ArgumentParser, run_cli

FORMATS = ("exported-program", "aoti", "onnx")
# One build per export: inductor's precompiled headers (two extra header compiles on a cold cache, about 8 of 46 CPU
# seconds for the test's network) would only pay off over later builds with the same flags.
AOTI_CONFIGS = {"aot_inductor.precompile_headers": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint written by train.py (or tools.convert_released)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, type=Path, help="file to write (.pt2 for exported-program and aoti)")
    p.add_argument("--config", default=None, help="experiment YAML to build from (default: the checkpoint's)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--size", type=int, default=None, help="input side S (default: data.val.hr_size)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    p.add_argument("--strict", action="store_true", help="torch.export strict mode (TorchDynamo); default non-strict")
    args = p.parse_args(argv)
    if args.batch < 1 or (args.size is not None and args.size < 1):
        p.error(f"--batch and --size must be >= 1, got {args.batch} and {args.size}")
    if args.format == "aoti" and args.out.suffix != ".pt2":
        p.error(f"--format aoti writes a .pt2 package: --out must end in .pt2, got {args.out}")
    return args


def portable_scan() -> Scan:
    """The chunked pure-PyTorch forward as a bound scan: aten operations and two ``higher_order.scan`` loops."""
    return Scan("torch (pure PyTorch, scan loops)", selective_scan_chunked_loop)


def export_program(net: torch.nn.Module, x: torch.Tensor, strict: bool) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(net, (x,), strict=strict)


def _onnx_missing() -> str | None:
    for name in ("onnx", "onnxscript", "onnx_ir", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            return f"--format onnx needs the {name} package (pip install -r requirements-dev.txt)"
    return None


def export(args: argparse.Namespace) -> float:
    """Write the artifact; returns the largest |artifact(x) - eager(x)|."""
    net, cfg, _ = load_network(args.checkpoint, args.config, not args.no_ema, "cpu")
    size = args.size or cfg["data"]["val"]["hr_size"] // (cfg["scale"] if getattr(net, "lr_input", False) else 1)
    x = torch.rand(
        args.batch, cfg["model"].get("in_channels", 3), size, size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        want = net(x)  # with the checkpoint's own scan backend: the artifact is compared with the network as trained
    if args.format != "exported-program":
        bind_scan(net, portable_scan())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        got = _write_and_run(args, net, x)
    return float((got - want).abs().max())


def _write_and_run_onnx(net: torch.nn.Module, x: torch.Tensor, out: Path) -> torch.Tensor:
    missing = _onnx_missing()
    if missing:
        raise SystemExit(missing)
    import onnxruntime  # optional: onnx, onnxscript, onnx_ir, onnxruntime (requirements-dev.txt), --format onnx
    from onnx_ir.passes.common import NameFixPass  # optional, as onnxruntime above

    try:
        program = torch.onnx.export(net, (x,), dynamo=True, optimize=False)
    except Exception as err:  # noqa: BLE001 - an unsupported operator: say which, in one line
        raise SystemExit(f"error: no ONNX route for this network: {str(err).strip().splitlines()[0]}") from None
    # torch.onnx names a node's output after its aten op, which can be a buffer's name too (mambair's `mean`):
    # onnxruntime rejects the duplicate, so make every name unique
    NameFixPass()(program.model)
    program.save(str(out), external_data=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _write_and_run(args: argparse.Namespace, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if args.format == "onnx":
        return _write_and_run_onnx(net, x, args.out)
    program = export_program(net, x, args.strict)
    if args.format == "exported-program":
        torch.export.save(program, args.out)
        return torch.export.load(args.out).module()(x)
    # inductor is slow to import; only --format aoti
    from torch._inductor import aoti_compile_and_package, aoti_load_package

    aoti_compile_and_package(program, package_path=str(args.out), inductor_configs=AOTI_CONFIGS)
    return aoti_load_package(str(args.out))(x)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    start = time.perf_counter()
    err = export(args)
    print(
        f"{args.format} written to {args.out} in {time.perf_counter() - start:.1f} s; max |export - eager| = {err:.2e}"
    )
    return err


if __name__ == "__main__":
    run_cli(main)
