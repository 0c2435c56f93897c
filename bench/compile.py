"""torch.compile of the networks: graph breaks, compile time, eager vs compiled img/s (forward and training step).

``python -m bench.compile`` measures, per model at 128x128 (``--size``), batch ``--batch``:

- graph breaks (``torch._dynamo.explain``) of the forward and of a training step (forward, L1 and
  backward as one function with ``trace_autograd_ops``, then the AdamW step);
- the first call's time (compile) and the median img/s of eager and compiled forward (eval, no_grad)
  and training step (``--kinds``; the network compiled, ``model.build.compile_network``; loss and optimizer
  eager), with inductor's phases of that first call (seconds in its scheduler's fusion pass, its code
  generation and the wait for the C++ builds, from ``torch._dynamo.utils.compilation_time_metrics``);
  ``--regional`` compiles each scanning module instead of the whole network, with static shapes (blocks of
  one shape share one compiled graph: one compile per distinct block, which bounds compile time);
- ``--profile N``: ``torch.profiler`` over N compiled training steps after the timing: the top operators by
  self CPU time (inductor's C++ kernels named, ``cpp.enable_kernel_profile``), where the compiled step's
  time goes;
- ``--dispatch``: the host cost of one ``selective_scan`` call's backend choice, a bound ``Scan`` vs a name
  resolved per call (what every call paid before networks were bound).

Inductor compiles take minutes per model on a small CPU: ``--tiny`` (tiny widths at 32x32) first.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.timing import median_time
from model.build import build_network, compile_network
from model.ssm import Scan, resolve_backend, selective_scan
from utils.cli import ArgumentParser
from utils.config import load_config

CONFIGS = {
    "hybrimamba": "configs/hybrimamba_x8_celeba.yaml",
    "rhmc": "configs/rhmc_x8_celeba.yaml",
    "mamba1d": {"name": "mamba1d"},
    "sparnet": {"name": "sparnet"},
}
TINY = {
    "hybrimamba": dict(name="hybrimamba", embed_dim=8, depth=1, n_layers=1, d_state=4),
    "rhmc": dict(name="rhmc", embed_dim=8, depth=1, d_state=4),
    "mamba1d": dict(name="mamba1d", embed_dim=8, depth=1, n_layers=1, d_state=4),
    "sparnet": dict(name="sparnet", min_ch=8, max_ch=16, in_size=32, min_feat_size=8, res_depth=1),
}


def model_config(name: str, tiny: bool) -> dict[str, Any]:
    if tiny:
        return TINY[name]
    spec = CONFIGS[name]
    if isinstance(spec, dict):
        return spec

    return load_config(spec)["model"]


def _step_fn(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def step() -> torch.Tensor:
        loss = (net(x) - y).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def graph_breaks(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """Graph breaks of the forward and of a training step: forward + L1 + backward traced as one function
    (``trace_autograd_ops``), plus ``optimizer.step`` traced on its own (dynamo breaks between a traced
    backward and an optimizer step in one frame, for any network)."""
    torch._dynamo.reset()
    forward = torch._dynamo.explain(net)(x).graph_break_count
    torch._dynamo.reset()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def forward_backward() -> torch.Tensor:
        loss = (net(x) - y).abs().mean()
        loss.backward()
        return loss.detach()

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        step = torch._dynamo.explain(forward_backward)().graph_break_count
    step += torch._dynamo.explain(opt.step)().graph_break_count
    torch._dynamo.reset()
    return forward, step


def _first_and_rate(run, batch: int, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    return first, batch / median_time(run, torch.device("cpu"), repeats)


PHASES = {"fusion": "Scheduler.fused_nodes", "codegen": "Scheduler.codegen", "c++": "async_compile.wait"}


def _phase_totals() -> dict[str, float]:
    metrics = torch._dynamo.utils.compilation_time_metrics
    return {label: sum(metrics.get(key, ())) for label, key in PHASES.items()}


def profile_table(run, steps: int, rows: int = 15) -> str:
    """The top ``rows`` operators by self CPU time over ``steps`` calls of ``run``, as torch.profiler prints them."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = {"model": model_config(name, args.tiny), "ssm": {"backend": "torch"}}
    size = 32 if args.tiny else args.size
    x = torch.rand(args.batch, 3, size, size)
    y = torch.rand(args.batch, 3, size, size)
    row: dict[str, Any] = {"model": name}
    if args.breaks:
        row["breaks_forward"], row["breaks_step"] = graph_breaks(build_network(cfg), x, y)
    for kind in args.kinds:
        for compiled in (False, True):
            torch._dynamo.reset()
            torch.manual_seed(0)
            net = build_network(cfg)
            if compiled:
                compile_network(net, args.mode, regional=args.regional)
            if kind == "forward":
                net.eval()

                def run(net=net) -> None:
                    with torch.no_grad():
                        net(x)
            else:
                run = _step_fn(net, torch.optim.AdamW(net.parameters(), lr=1e-4), x, y)
            phases = _phase_totals()
            first, rate = _first_and_rate(run, args.batch, args.repeats)
            label = f"{kind}_{'compiled' if compiled else 'eager'}"
            row[label] = rate
            if compiled:
                row[f"{kind}_compile_s"] = first
                row[f"{kind}_phases"] = {k: v - phases[k] for k, v in _phase_totals().items()}
                if kind == "step" and args.profile:
                    row["step_profile"] = profile_table(run, args.profile)
        row[f"{kind}_ratio"] = row[f"{kind}_compiled"] / row[f"{kind}_eager"]
    return row


def dispatch_cost(repeats: int = 2000) -> dict[str, float]:
    """Microseconds of ``selective_scan``'s backend choice per call (a no-op scan behind it)."""
    u = torch.zeros(1, 2, 4)
    args = (u, u, torch.zeros(2, 1), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))
    noop = Scan("noop", lambda *a: a[0])
    out = {}
    for label, call in (
        ("bound", lambda: selective_scan(*args, backend=noop)),
        ("resolve per call (cpu)", lambda: selective_scan(*args, backend="auto")),
        ("resolve auto for cuda", lambda: resolve_backend("auto", torch.device("cuda"))),
    ):
        call()
        t0 = time.perf_counter()
        for _ in range(repeats):
            call()
        out[label] = (time.perf_counter() - t0) / repeats * 1e6
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=tuple(CONFIGS), default=tuple(CONFIGS))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mode", choices=("default", "max-autotune"), default="default")
    p.add_argument("--kinds", nargs="+", choices=("forward", "step"), default=("forward", "step"))
    p.add_argument("--regional", action="store_true", help="compile each scanning module, not the whole network")
    p.add_argument("--tiny", action="store_true", help="tiny widths at 32x32")
    p.add_argument("--no-breaks", dest="breaks", action="store_false", help="skip the graph-break count")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile N compiled training steps")
    p.add_argument("--dispatch", action="store_true", help="only the per-call backend choice cost")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.dispatch:
        for label, us in dispatch_cost().items():
            print(f"{label:<26}{us:8.1f} us per call")
        return []
    size = 32 if args.tiny else args.size
    print(
        f"bench.compile: CPU, {torch.get_num_threads()} threads, {size}x{size}, batch {args.batch}, mode {args.mode}"
        f"{', regional' if args.regional else ''}, torch {torch.__version__}"
    )
    if args.profile:  # inductor's C++ kernels as named profiler events (set before anything compiles)
        torch._inductor.config.cpp.enable_kernel_profile = True
    rows = []
    for name in args.models:
        row = measure(name, args)
        rows.append(row)
        parts = [f"breaks fwd {row['breaks_forward']} step {row['breaks_step']}"] if args.breaks else []
        for kind in args.kinds:
            phases = ", ".join(f"{k} {v:.0f} s" for k, v in row[f"{kind}_phases"].items())
            parts.append(
                f"{kind} {row[f'{kind}_eager']:.2f} -> {row[f'{kind}_compiled']:.2f} img/s "
                f"({row[f'{kind}_ratio']:.2f}x, compile {row[f'{kind}_compile_s']:.0f} s: {phases})"
            )
        print(f"{name:<11}" + "; ".join(parts), flush=True)
        if "step_profile" in row:
            print(f"{name}: compiled training step, {args.profile} steps, top operators by self CPU time")
            print(row["step_profile"], flush=True)
    return rows


if __name__ == "__main__":
    main()
