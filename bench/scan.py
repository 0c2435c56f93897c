"""Selective scan benchmark: forward and forward+backward time and peak memory of every backend.

    .venv/bin/python -m bench.scan [--lengths 1024 4096 16384] [--states 8 16] [--repeats 3] [--quick | --tiny]

Each (backend, N, L) case runs in its own subprocess, so that a slow or memory-hungry case is
time-boxed (``--timeout``) and peak memory can be read per case: on CPU the growth of the
process's max RSS (``resource.getrusage``; torch's allocations are invisible to tracemalloc) over
the state after the inputs are built, on CUDA ``torch.cuda.max_memory_allocated`` over the inputs.
Inputs follow SS2D's call: grouped B/C (G=4), D, z, delta_bias, delta_softplus. The CUDA backends
come from ``model.ssm.resolve_backend`` (those that do not resolve are listed with the reason).
``--tiny`` runs one small case per backend and exits 1 if any failed (the tests run it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from bench.inputs import scan_inputs
from bench.timing import fmt_time, median_time, sync
from model.ssm import resolve_backend
from model.ssm.chunked_scan import selective_scan_chunked
from model.ssm.cpu_kernel import kernel_available, selective_scan_compiled
from model.ssm.reference import selective_scan_reference
from utils.cli import ArgumentParser


def _backend_fns(device: torch.device, only: str | None = None) -> tuple[dict[str, object], dict[str, str]]:
    """name -> function (selective_scan's signature) for every backend that runs on ``device``; name -> why not."""
    fns: dict[str, object] = {"reference": selective_scan_reference, "torch-pure": selective_scan_chunked}
    skipped: dict[str, str] = {}
    if only in fns:  # a worker: no kernel build or CUDA import for the other backends
        return {only: fns[only]}, skipped
    if device.type == "cpu" and kernel_available():
        fns["torch-compiled"] = selective_scan_compiled
    for name in ("mamba_ssm", "triton"):
        try:
            fns[name] = resolve_backend(name, device)[1]
        except RuntimeError as err:
            skipped[name] = str(err).splitlines()[0]
    return fns, skipped


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def worker(args: argparse.Namespace) -> dict:
    """One case in this process: returns fwd/fwd+bwd seconds and peak memory in MiB."""
    device = torch.device(args.device)
    fn = _backend_fns(device, only=args.backend)[0][args.backend]
    # Warm up (kernel build, lazy imports) on a tiny problem so the memory baseline stays low.
    small = scan_inputs(1, args.groups, args.states, 64, args.groups, torch.float32, device, with_z=True)
    fn(**small, delta_softplus=True).sum().backward()
    del small
    inputs = scan_inputs(args.batch, args.d, args.states, args.length, args.groups, torch.float32, device, with_z=True)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _maxrss_bytes()

    def forward() -> None:
        with torch.no_grad():
            fn(**inputs, delta_softplus=True)

    def forward_backward() -> None:
        for v in inputs.values():
            v.grad = None
        fn(**inputs, delta_softplus=True).sum().backward()

    fwd = median_time(forward, device, args.repeats, args.budget)
    fwd_bwd = median_time(forward_backward, device, args.repeats, args.budget)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _maxrss_bytes()
    return {"fwd": fwd, "fwd_bwd": fwd_bwd, "peak_mib": (peak - base) / 2**20}


def _run_case(args: argparse.Namespace, backend: str, n: int, length: int) -> dict:
    cmd = [sys.executable, "-m", "bench.scan", "--worker", backend, "--states", str(n), "--lengths", str(length)]
    for key in ("batch", "d", "groups", "repeats", "budget", "device", "threads"):
        if getattr(args, key) is not None:
            cmd += [f"--{key}", str(getattr(args, key))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {args.timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail[:60]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--states", type=int, nargs="+", default=[8, 16], help="d_state N values")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d", type=int, default=256, help="channels d = K * Di")
    parser.add_argument("--groups", type=int, default=4, help="B/C groups G (K = 4 in SS2D)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--budget", type=float, default=20.0, help="stop repeating a case after this many s")
    parser.add_argument("--timeout", type=float, default=400.0, help="give up on a case after this many s")
    parser.add_argument("--backends", nargs="+", default=None, help="subset of backends to run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="L=1024, 4096, N=16, one repeat")
    parser.add_argument("--tiny", action="store_true", help="batch 1, d 8, L 64, N 4, one repeat; exit 1 on a failure")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        args.backend, args.length, args.states = args.worker, args.lengths[0], args.states[0]
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.lengths, args.states, args.repeats = [1024, 4096], [16], 1
    if args.tiny:
        args.lengths, args.states, args.repeats, args.batch, args.d = [64], [4], 1, 1, 8
    device = torch.device(args.device)
    fns, skipped = _backend_fns(device)
    available = list(fns)
    backends = args.backends or available
    unknown = sorted(set(backends) - set(available))
    if unknown:
        parser.error(f"backends {unknown} not available on {device}; available: {', '.join(available)}")
    print(
        f"selective scan on {device} ({torch.get_num_threads()} threads): batch={args.batch} d={args.d} "
        f"G={args.groups}, D, z, delta_bias, softplus; median of <= {args.repeats} runs"
    )
    header = f"{'backend':<16}{'N':>4}{'L':>7}{'fwd':>12}{'x ref':>8}{'fwd+bwd':>12}{'x ref':>8}{'peak MiB':>10}"
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(header)
    print("-" * len(header))
    failed = 0
    for n in args.states:
        for length in args.lengths:
            ref: dict = {}
            for backend in backends:
                r = _run_case(args, backend, n, length)
                if backend == "reference":
                    ref = r
                if "error" in r:
                    failed += 1
                    print(f"{backend:<16}{n:>4}{length:>7}  {r['error']}", flush=True)
                    continue
                cols = []
                for key in ("fwd", "fwd_bwd"):
                    speedup = f"{ref[key] / r[key]:.1f}x" if key in ref else "-"
                    cols.append(f"{fmt_time(r[key]):>12}{speedup:>8}")
                print(f"{backend:<16}{n:>4}{length:>7}{''.join(cols)}{r['peak_mib']:>10.0f}", flush=True)
    if failed and args.tiny:
        raise SystemExit(f"bench.scan: {failed} case(s) failed")


if __name__ == "__main__":
    main()
