"""DRAM bytes of SS2D's core (``forward_core``: the map (B, Di, H, W) in, the merged map out), forward and
backward, composed and fused: counted, not measured (no GPU runs).

    .venv/bin/python -m bench.ss2d_bytes [--batch 32] [--dtypes fp32 bf16] [--configs CONFIG.yaml ...]

Two paths per SS2D call the models make at their training size: ``composed`` (what every non-fused backend
runs, and what every backend ran before the fused kernels: cross_scan materialises the (B, 4, Di, L) sequences,
x_proj per direction, the scan, cross_merge) and ``fused`` (triton: x_proj in spatial order, x_dbl put in
direction order, no sequences, no four outputs), the latter with the atomic or the ordered merge.

Method. The PyTorch operations around the kernels are counted from the operations themselves: the core runs on
fake tensors (batch and map of the real call, nothing allocated) under a dispatch mode that adds, for every
aten operation that is not a view, the bytes of each tensor argument (distinct elements: an expanded weight once)
and of each output: each operation reads its inputs once from DRAM and writes its outputs once, no fusion
between operations (eager; ``torch.compile`` would fuse some of them). Each kernel is priced as
``bench.triton_time_model`` prices it: each tensor once, B and C once per group, atomically accumulated fp32
tensors (dB, dC, the atomic merge) written once after their zero fill (itself counted). Fused: each of the 4
directions reads its channel's map once (4 passes of x forward, of x and dy backward: the directions of a channel
run at about the same time but in different orders, so one pass cannot serve another); the ``ordered`` merge
(``ssm.deterministic``) writes the map once and reads and writes it again for directions 1-3. Column directions
gather with stride W: a 32-byte sector holds 8 (fp32) or 16 (bf16) steps of one column, which the same program
reaches H steps later, column by column; the count above assumes the sector stays in L2 until then, and
``reuse`` prints the distinct bytes all resident programs touch in those H steps (ESTIMATE: 32 one-warp
programs per SM, 132 SMs, half of them column directions) against the H100's 50 MB L2. If it did not hold, the
column passes would cost 8x (fp32) / 16x (bf16) their bytes. L1 (up to 256 KB per SM) may serve part of the
reuse too; not counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import model.ssm as ssm
from bench.triton_compile import MODEL_CONFIGS, ScanCall, _recording
from model import build_model
from model.ss2d import SS2D
from model.ssm.triton_scan import CHUNK, tile
from utils.cli import ArgumentParser, run_cli
from utils.config import load_config

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
L2_BYTES = 50 * 2**20  # H100 SXM
H100_BYTES_PER_MS = 3.35e9  # 3.35 TB/s
RESIDENT_PROGRAMS = 132 * 32  # one-warp programs: at most 32 blocks per SM on sm_90
# allocations, and the view a reshape returns after its copy (the copy is counted)
_FREE = ("aten.empty", "aten.empty_like", "aten.empty_strided", "aten.new_empty", "aten.detach", "aten.lift_fresh")
_FREE += ("aten._unsafe_view",)


@dataclasses.dataclass(frozen=True)
class Core:
    """One SS2D block's core call: its widths and its map."""

    d_model: int
    di: int
    dt_rank: int
    d_state: int
    height: int
    width: int


def model_cores(config: str) -> list[Core]:
    """The SS2D cores of one forward of ``config``'s network at its training size, in call order (scan stubbed)."""
    cfg = load_config(config)
    size = cfg["data"]["train"]["hr_size"]
    net = build_model(cfg["model"]).eval()
    cores: list[Core] = []

    def hook(module: SS2D, args: tuple) -> None:
        _, height, width, _ = args[0].shape
        cores.append(Core(module.d_model, module.d_inner, module.dt_rank, module.d_state, height, width))

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, SS2D)]
    calls: list[ScanCall] = []
    try:
        with _recording(calls), torch.no_grad():
            net(torch.zeros(1, cfg["model"]["in_channels"], size, size))
    finally:
        for h in handles:
            h.remove()
    return cores


def _nbytes(t: torch.Tensor) -> int:
    """Distinct bytes a tensor view covers (stride-0 dimensions once)."""
    return math.prod(s for s, st in zip(t.shape, t.stride()) if st != 0) * t.element_size()


class ByteCount(TorchDispatchMode):
    """Bytes read and written by the aten operations run under it (views and allocations free) plus ``add``-ed
    kernel figures; ``paused`` stops counting (the stand-ins' own allocations)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}
        self.kernels: dict[str, int] = {}
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func).split(".default")[0]
        view = any(r.alias_info is not None for r in func._schema.returns)
        tensors_out = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
        if self.paused or view or not tensors_out or name.rsplit(".", 1)[0] in _FREE or name in _FREE:
            return out
        tensors_in = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        moved = sum(map(_nbytes, tensors_in)) + sum(map(_nbytes, tensors_out))
        self.ops[name] = self.ops.get(name, 0) + moved
        return out

    def add(self, kernel: str, nbytes: int) -> None:
        self.kernels[kernel] = self.kernels.get(kernel, 0) + nbytes

    def total(self) -> int:
        return sum(self.ops.values()) + sum(self.kernels.values())


def _states(rows: int, length: int, n: int, dtype: torch.dtype) -> int:
    """Bytes of the fp32 tile states and last state the forward kernel writes (read again by the backward)."""
    return rows * (-(-length // tile(length, CHUNK, dtype)) + 1) * n * 4


def scan_kernel_bytes(u: torch.Tensor, B: torch.Tensor, n: int, backward: bool) -> int:
    """The unfused kernel: u, delta, (dy) and B, C once, y (or du, ddelta) once, states; dB/dC written once."""
    e, (batch, d, length) = u.element_size(), u.shape
    seq, bc = u.numel() * e, B.numel() * e
    states = _states(batch * d, length, n, u.dtype)
    if not backward:
        return 2 * seq + 2 * bc + seq + states
    per_ch = batch * d * (n + 2 + 2 * n) * 4  # dA, dD, dbias, carry scratch
    return 3 * seq + 2 * bc + states + 2 * seq + 2 * B.numel() * 4 + per_ch


def fused_kernel_bytes(x: torch.Tensor, B: torch.Tensor, n: int, backward: bool, ordered: bool) -> int:
    """The fused kernel: x (and dy) one pass per direction, delta and B, C once, the fp32 merge once (atomic) or
    once + 3 read-and-writes (ordered), states; backward: ddelta once, dB/dC written once."""
    e, m = x.element_size(), x.numel()
    batch, di = x.shape[:2]
    length = x.shape[2] * x.shape[3]
    merge = (4 + 3 * 8) * m if ordered else 4 * m
    states = _states(batch * 4 * di, length, n, x.dtype)
    delta, bc = 4 * m * e, B.numel() * e
    if not backward:
        return 4 * m * e + delta + 2 * bc + merge + states
    per_ch = batch * 4 * di * (n + 2 + 2 * n) * 4
    return 2 * 4 * m * e + delta + 2 * bc + states + delta + merge + 2 * B.numel() * 4 + per_ch


def _stand_in(counter: ByteCount, name: str, price: Callable[[bool], int], out_like: torch.Tensor):
    """An autograd function returning an empty ``out_like`` and empty gradients, counting ``price(backward)``;
    the kernels' own wrappers (zero fills, casts, dB/dC copies) are priced by ``wrapper_bytes``."""

    class Kernel(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            ctx.specs = [None if t is None else (t.shape, t.dtype) for t in inputs]
            counter.add(f"{name} fwd", price(False))
            counter.paused = True
            try:
                return torch.empty(out_like.shape, dtype=out_like.dtype, device=out_like.device)
            finally:
                counter.paused = False

        @staticmethod
        def backward(ctx, grad):
            counter.add(f"{name} bwd", price(True))
            counter.paused = True
            try:
                return tuple(None if s is None else torch.empty(s[0], dtype=s[1]) for s in ctx.specs)
            finally:
                counter.paused = False

    return Kernel.apply


def wrapper_bytes(m: int, e: int, bc_numel: int, fused: bool, ordered: bool) -> dict[str, tuple[int, int]]:
    """(forward, backward) bytes of the operators' own torch work: dB/dC zero fill (atomic) and fp32 copy,
    the fused merge's zero fill (atomic) and its cast to the input dtype (fp32: none)."""
    dbc = 2 * bc_numel * 4
    out = {"dB/dC zero + copy": (0, dbc + 2 * dbc)}
    if fused:
        cast = (4 + e) * m if e != 4 else 0
        zero = 0 if ordered else 4 * m
        out["merge zero + cast"] = (zero + cast, zero + cast)
    return out


@contextlib.contextmanager
def _fused_stand_in(fn: Callable) -> Iterator[None]:
    saved = ssm._FUSED_CROSS.get("triton")
    ssm._FUSED_CROSS["triton"] = fn
    try:
        yield
    finally:
        if saved is None:
            del ssm._FUSED_CROSS["triton"]
        else:
            ssm._FUSED_CROSS["triton"] = saved


def count(core: Core, batch: int, dtype: torch.dtype, path: str, ordered: bool = False) -> dict:
    """Forward and backward bytes of one core call on ``path`` (``composed`` or ``fused``; ``ordered``:
    the deterministic merge), with the per-operation and per-kernel figures."""
    length, n = core.height * core.width, core.d_state
    counter = ByteCount()
    torch.manual_seed(0)
    block = SS2D(core.d_model, d_state=n, expand=core.di / core.d_model, dt_rank=core.dt_rank).to(dtype)
    mode = FakeTensorMode()
    for module in block.modules():
        for key, p in module._parameters.items():
            if p is not None:
                module._parameters[key] = torch.nn.Parameter(mode.from_tensor(p.detach()))
    with mode:
        x = torch.empty(batch, core.di, core.height, core.width, dtype=dtype, requires_grad=True)

        def unfused(u, delta, A, B, C, D=None, z=None, bias=None, softplus=False, last=False):
            price = functools.partial(scan_kernel_bytes, u, B, n)
            return _stand_in(counter, "scan kernel", price, u)(u, delta, A, B, C, D, bias)

        def fused(x, delta, A, B, C, D=None, bias=None, softplus=False, **_):
            price = functools.partial(fused_kernel_bytes, x, B, n, ordered=ordered)
            return _stand_in(counter, "fused kernel", price, x)(x, delta, A, B, C, D, bias)

        block.scan_backend = ssm.Scan("triton" if path == "fused" else "stand-in", unfused)
        leaves = [x, *block.parameters()]
        with _fused_stand_in(fused), counter:
            y = block.forward_core(x)
            forward = counter.total()
            torch.autograd.grad(y, leaves, torch.empty_like(y), allow_unused=True)
        backward = counter.total() - forward
    wrap = wrapper_bytes(batch * core.di * length, x.element_size(), batch * 4 * n * length, path == "fused", ordered)
    for name, (f, b) in wrap.items():
        counter.add(f"{name} fwd", f)
        counter.add(f"{name} bwd", b)
    forward += sum(f for f, _ in wrap.values())
    backward += sum(b for _, b in wrap.values())
    return {"forward": forward, "backward": backward, "ops": counter.ops, "kernels": counter.kernels}


def reuse_bytes(core: Core, dtype: torch.dtype, backward: bool) -> int:
    """ESTIMATE: distinct bytes all resident programs touch while one advances H steps (one column): the column
    directions' sectors of x (and dy, du) 32 B a step, the row directions' 4 B a step (e), delta, the merge, B and
    C of the resident groups. Fits in L2: each column sector comes from DRAM once."""
    e, h = torch.empty(0, dtype=dtype).element_size(), core.height
    half = RESIDENT_PROGRAMS // 2
    gathered = 3 if backward else 2  # x and the merge (forward); x, dy and du (backward)
    per_step = half * (gathered * 32) + half * (gathered * e) + RESIDENT_PROGRAMS * e * (2 if backward else 1)
    groups = max(1, RESIDENT_PROGRAMS // core.di)
    return h * (per_step + groups * 2 * core.d_state * e)


def rows(configs: list[str], batch: int, dtypes: list[str]) -> list[dict]:
    out = []
    cores: dict[Core, dict[str, int]] = {}  # core -> model -> calls per forward
    for config in configs:
        model_name = config.rsplit("/", 1)[-1].removesuffix(".yaml")
        for core in model_cores(config):
            users = cores.setdefault(core, {})
            users[model_name] = users.get(model_name, 0) + 1
    for core, models in cores.items():
        for name in dtypes:
            dtype = DTYPES[name]
            figures = {
                "composed": count(core, batch, dtype, "composed"),
                "fused": count(core, batch, dtype, "fused"),
                "fused ordered": count(core, batch, dtype, "fused", ordered=True),
            }
            out.append(
                dict(
                    models=",".join(f"{k} x{v}" for k, v in models.items()),
                    calls=models,
                    call=f"Di={core.di} {core.height}x{core.width} N={core.d_state} R={core.dt_rank}",
                    dtype=name,
                    **{f"{p} {k}": f[k] for p, f in figures.items() for k in ("forward", "backward")},
                    reuse_fwd=reuse_bytes(core, dtype, False),
                    reuse_bwd=reuse_bytes(core, dtype, True),
                    detail={p: {"ops": f["ops"], "kernels": f["kernels"]} for p, f in figures.items()},
                )
            )
    return out


def format_table(table: list[dict], batch: int) -> str:
    mb = lambda v: f"{v / 1e6:.0f}"  # noqa: E731
    head = ("models", "call", "dtype", "composed f/b", "fused f/b", "ordered f/b", "fused/composed")
    head += ("reuse MB f/b", "H100 ms composed/fused")
    lines = [head]
    for r in table:
        composed = r["composed forward"] + r["composed backward"]
        fused = r["fused forward"] + r["fused backward"]
        lines.append((
            r["models"], r["call"], r["dtype"],
            *(f"{mb(r[p + ' forward'])}/{mb(r[p + ' backward'])}" for p in ("composed", "fused", "fused ordered")),
            f"{fused / composed:.2f}",
            f"{mb(r['reuse_fwd'])}/{mb(r['reuse_bwd'])}" + (" > L2" if r["reuse_bwd"] > L2_BYTES else ""),
            f"{composed / H100_BYTES_PER_MS:.2f}/{fused / H100_BYTES_PER_MS:.2f}",
        ))  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
    totals: dict[tuple[str, str], list[int]] = {}
    for r in table:
        for model_name, n in r["calls"].items():
            acc = totals.setdefault((model_name, r["dtype"]), [0, 0])
            acc[0] += n * (r["composed forward"] + r["composed backward"])
            acc[1] += n * (r["fused forward"] + r["fused backward"])
    text += "\n\nper network forward+backward, every SS2D call (GB composed -> fused):"
    for (model_name, dtype), (b, f) in totals.items():
        text += f"\n  {model_name} {dtype}: {b / 1e9:.1f} -> {f / 1e9:.1f} ({f / b:.2f})"
    title = f"DRAM MB per SS2D core call (forward/backward) at batch {batch}: COUNTS, no GPU (method: module docstring)"
    note = "H100 ms: forward+backward bytes at 3.35 TB/s, the bandwidth-bound time: an ESTIMATE, not a measurement"
    return f"{title}\n{text}\n{note}"


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(MODEL_CONFIGS[:2]), help="experiment configs (SS2D)")
    parser.add_argument("--batch", type=int, default=32, help="batch of every call")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="input dtypes")
    parser.add_argument("--detail", action="store_true", help="also print the bytes per operation and kernel")
    args = parser.parse_args(argv)
    table = rows(args.configs, args.batch, args.dtypes)
    print(format_table(table, args.batch))
    if args.detail:
        for r in table:
            print(f"\n{r['models']} {r['call']} {r['dtype']}")
            for path, d in r["detail"].items():
                parts = {**d["ops"], **d["kernels"]}
                print(
                    f"  {path}: "
                    + ", ".join(f"{k} {v / 1e6:.0f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
                )


if __name__ == "__main__":
    run_cli(main)
