"""SASS report: the scan kernels' main loops, ours (Triton) beside mamba_ssm's (CUDA), counted from compiled code.

    .venv/bin/python -m bench.triton_sass [--archs 90 80] [--mamba-src SDIST_OR_DIR] [--json]

Ours: every kernel configuration the models launch (``bench.triton_compile``), compiled for each arch.
Theirs: mamba_ssm's ``selective_scan_{fwd,bwd}_kernel`` for the same calls, one explicit instantiation
per kernel (the traits its launcher picks for the call's L: kNThreads x kNItems, even length, variable
B/C, softplus, z) compiled with nvcc from the sdist's ``csrc/selective_scan`` (get it with
``MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-build-isolation --no-binary :all:
mamba-ssm==2.3.2.post1``); that part is skipped, with the reason, without nvcc or the sources.
Both are disassembled with triton's bundled cuobjdump. Nothing runs on a GPU.

How "per element" is counted (anyone can recount it from ``cuobjdump -sass``): the main loop is the
outermost backward branch (a ``BRA`` to a lower address with no unpredicated ``EXIT`` between) with the
most instructions; a loop nested in it is the loop over states and runs ``N`` times per iteration; code
the loop branches out to and back from (outlined slow paths after the kernel's ``EXIT``) is not counted.
One iteration issues ``S = outer + N * inner`` instructions per thread (every instruction of the body once,
both sides of a branch included: a warp that diverges issues both); it covers ``N * T`` (state, step)
elements with ``P`` threads (``T`` steps per iteration: our CHUNK, mamba_ssm's kNThreads * kNItems), so
the figure is ``S * P / (N * T)`` thread-instructions per element (with L <= T our kernel has no tile
loop: the state loop, N iterations, is then the tile) (an upper bound on what is issued: a
guarded block is counted as if every warp ran it). BAR, MEMBAR, SHFL and atomics (ATOM/RED) are counted
per iteration the same way; SHFL also per element.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bench.triton_compile import compile_all, cuobjdump_path
from utils.cli import ArgumentParser, run_cli

MAMBA_SDIST = "mamba-ssm==2.3.2.post1"
_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA(?:\.\S+)?\s+(?:`\(\.L_x_\d+\)\s*)?(0x[0-9a-f]+)")


@dataclasses.dataclass(frozen=True)
class Instr:
    addr: int
    pred: str  # "" or the guard, e.g. "@!P0"
    op: str  # opcode with modifiers, e.g. "BAR.SYNC.DEFER_BLOCKING"
    text: str


def parse_sass(text: str) -> list[Instr]:
    """The instructions of the single kernel in ``cuobjdump -sass`` output."""
    out = []
    for line in text.splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        body = m.group(2)
        pred = ""
        if body.startswith("@"):
            pred, body = body.split(None, 1)
        out.append(Instr(int(m.group(1), 16), pred, body.split()[0], body))
    return out


def find_loops(instrs: list[Instr]) -> list[tuple[int, int]]:
    """(first, last) instruction indices of every loop: a backward branch with no unpredicated EXIT inside."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    loops = []
    for i, ins in enumerate(instrs):
        m = _BRANCH.search(ins.text) if ins.op.startswith("BRA") else None
        if not m or int(m.group(1), 16) >= ins.addr:
            continue
        start = index.get(int(m.group(1), 16))
        if start is None or any(x.op == "EXIT" and not x.pred for x in instrs[start:i]):
            continue
        loops.append((start, i))
    return loops


def main_loop_profile(instrs: list[Instr], d_state: int, steps: int, threads: int, tiles: int = 2) -> dict:
    """Counts of the main loop (module docstring): per iteration and per (state, step) element. With one tile
    (``tiles`` 1: triton makes a tile count of 1 a constant and drops the tile loop), the main loop found is
    the loop over states and one tile is its ``d_state`` iterations."""
    loops = find_loops(instrs)
    if not loops:
        raise ValueError("no loop in the kernel")
    outer = [lp for lp in loops if not any(o != lp and o[0] <= lp[0] and lp[1] <= o[1] for o in loops)]
    first, last = max(outer, key=lambda lp: lp[1] - lp[0])
    inner = [lp for lp in loops if lp != (first, last) and first <= lp[0] and lp[1] <= last]
    weights = [1] * len(instrs)
    if tiles == 1 and not inner:
        inner = [(first, last)]
    for lo, hi in inner:
        for i in range(lo, hi + 1):
            weights[i] *= d_state
    body = range(first, last + 1)

    def count(pred) -> float:
        return sum(weights[i] for i in body if pred(instrs[i].op))

    issued = count(lambda op: True)
    scale = threads / (d_state * steps)
    return dict(
        loop_instrs=last - first + 1,
        inner_loops=len(inner),
        per_iter=issued,
        per_elem=round(issued * scale, 2),
        bar=count(lambda op: op.startswith("BAR")),
        membar=count(lambda op: op.startswith("MEMBAR")),
        shfl=count(lambda op: op.startswith("SHFL")),
        atomics=count(lambda op: op.startswith(("ATOM", "RED"))),
        shfl_per_elem=round(count(lambda op: op.startswith("SHFL")) * scale, 2),
    )


def disassemble(cubin: bytes, cuobjdump: str) -> tuple[list[Instr], dict[str, int]]:
    """SASS instructions and resource usage (regs, stack, local, shared) of the one kernel in ``cubin``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        sass = subprocess.run([cuobjdump, "-sass", f.name], check=True, capture_output=True, text=True).stdout
        res = subprocess.run([cuobjdump, "-res-usage", f.name], check=True, capture_output=True, text=True).stdout
    finally:
        os.remove(f.name)
    fields = dict(re.findall(r"(REG|STACK|LOCAL|SHARED):(\d+)", res))
    return parse_sass(sass), {k.lower(): int(v) for k, v in fields.items()}


def our_rows(archs: tuple[int, ...]) -> list[dict]:
    """One row per distinct Triton kernel the models launch, with its main-loop counts."""
    import triton  # optional: triton (CUDA wheels); fails early where it does not import

    del triton
    rows = compile_all(archs=archs, keep_cubin=True)
    for r in rows:
        instrs, _ = disassemble(r.pop("cubin"), cuobjdump_path())
        tiles = -(-r["length"] // r["chunk"])
        r.update(main_loop_profile(instrs, r["d_state"], r["chunk"], 32 * r["warps"], tiles))
    return rows


def mamba_traits(length: int) -> tuple[int, int]:
    """(kNThreads, kNItems) that mamba_ssm 2.3.2's fwd and bwd launchers pick for ``length`` (CUDA path)."""
    for limit, traits in ((128, (32, 4)), (256, (32, 8)), (512, (32, 16)), (1024, (64, 16))):
        if length <= limit:
            return traits
    return 128, 16


def mamba_source(kernel: str, threads: int, items: int, even: bool, softplus: bool, has_z: bool, dtype: str) -> str:
    """One explicit instantiation of mamba_ssm's kernel (B and C variable, as every call of ours)."""
    t = {"fp32": "float", "bf16": "at::BFloat16", "fp16": "at::Half"}[dtype]
    b = lambda v: "true" if v else "false"  # noqa: E731
    if kernel == "fwd":
        traits = (
            f"Selective_Scan_fwd_kernel_traits<{threads}, {items}, 1, {b(even)}, true, true, {b(has_z)}, {t}, float>"
        )
        return (
            '#include "selective_scan_fwd_kernel.cuh"\n'
            f"template __global__ void selective_scan_fwd_kernel<{traits}>(SSMParamsBase);\n"
        )
    traits = (
        f"Selective_Scan_bwd_kernel_traits<{threads}, {items}, {b(even)}, true, true, {b(softplus)}, {b(has_z)}, "
        f"{t}, float>"
    )
    return (
        '#include "selective_scan_bwd_kernel.cuh"\n'
        f"template __global__ void selective_scan_bwd_kernel<{traits}>(SSMParamsBwd);\n"
    )


def mamba_csrc(src: str | None, workdir: Path) -> tuple[Path | None, str]:
    """mamba_ssm's ``csrc/selective_scan`` from an sdist (.tar.gz) or a directory, or None and why not."""
    if not src:
        return None, f"no --mamba-src (pip download the sdist {MAMBA_SDIST}, see the module docstring)"
    path = Path(src)
    if path.is_file():
        with tarfile.open(path) as tar:
            tar.extractall(workdir, filter="data")
        path = workdir
    hits = sorted(path.glob("**/csrc/selective_scan/selective_scan_fwd_kernel.cuh"))
    if not hits:
        return None, f"{src} has no csrc/selective_scan/selective_scan_fwd_kernel.cuh"
    return hits[0].parent, ""


def mamba_rows(calls: list[dict], archs: tuple[int, ...], src: str | None) -> tuple[list[dict], str]:
    """mamba_ssm's kernels for ``calls`` (dicts with kernel, dtype, arch, length, d_state, has_z, softplus):
    one row per call with its counts, and '' or the one-line reason the part was skipped."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return [], "mamba_ssm: skipped (nvcc not on PATH)"
    from torch.utils.cpp_extension import include_paths  # imports setuptools (slow); only with nvcc on PATH

    work = Path(tempfile.mkdtemp(prefix="mamba_sass_"))
    try:
        csrc, why = mamba_csrc(src, work)
        if csrc is None:
            return [], f"mamba_ssm: skipped ({why})"
        flags = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math"]
        flags += ["-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_OPERATORS__"]
        flags += ["-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_BFLOAT162_OPERATORS__"]
        flags += ["-U__CUDA_NO_BFLOAT162_CONVERSIONS__", f"-I{csrc}"] + [f"-I{p}" for p in include_paths()]
        cache: dict[tuple, tuple] = {}
        rows = []
        for c in calls:
            threads, items = mamba_traits(c["length"])
            even = c["length"] % (threads * items) == 0
            key = (c["kernel"], threads, items, even, c["softplus"], c["has_z"], c["dtype"], c["arch"])
            if key not in cache:
                cu = work / f"k{len(cache)}.cu"
                cu.write_text(mamba_source(*key[:7]))
                out = cu.with_suffix(".cubin")
                proc = subprocess.run([nvcc, "-cubin", f"-arch=sm_{c['arch']}", *flags, "-o", str(out), str(cu)],
                                      capture_output=True, text=True)  # fmt: skip
                if proc.returncode:
                    return [], f"mamba_ssm: skipped (nvcc failed: {proc.stderr.strip().splitlines()[-1][:120]})"
                cache[key] = disassemble(out.read_bytes(), cuobjdump_path())
            instrs, res = cache[key]
            rows.append(dict(traits=f"{threads}x{items}", even=even, threads=threads, regs=res["reg"],
                             stack=res["stack"], local=res["local"], shared=res["shared"],
                             **main_loop_profile(instrs, c["d_state"], threads * items, threads)))  # fmt: skip
        return rows, ""
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(archs: tuple[int, ...], mamba_src: str | None) -> tuple[list[dict], str]:
    """Our rows, each with mamba_ssm's figures for the same call (``theirs_*``) and the ratio ours / theirs."""
    ours = our_rows(archs)
    calls = [dict(kernel=r["kernel"].removeprefix("scan_"), dtype=r["dtype"], arch=int(r["arch"][3:]),
                  length=r["length"], d_state=r["d_state"], has_z=r["has_z"], softplus=r["softplus"]) for r in ours]  # fmt: skip
    theirs, skipped = mamba_rows(calls, archs, mamba_src)
    for r, t in zip(ours, theirs):
        r.update({f"theirs_{k}": v for k, v in t.items()})
        r["ratio"] = round(r["per_elem"] / t["per_elem"], 2)
    return ours, skipped


COLUMNS = (
    ("models", "models"), ("call", "first_call"), ("dtype", "dtype"), ("kernel", "kernel"), ("arch", "arch"),
    ("warps", "warps"), ("T", "chunk"), ("regs", "regs"), ("spill", "stack"), ("smem", "shared"),
    ("BAR/it", "bar"), ("MEMBAR/it", "membar"), ("SHFL/el", "shfl_per_elem"), ("instr/el", "per_elem"),
    ("mamba", "theirs_traits"), ("m.regs", "theirs_regs"),
    ("m.spill", "theirs_stack"), ("m.BAR/it", "theirs_bar"), ("m.SHFL/el", "theirs_shfl_per_elem"),
    ("m.instr/el", "theirs_per_elem"), ("ours/theirs", "ratio"),
)  # fmt: skip


def format_table(rows: list[dict]) -> str:
    cols = [(h, k) for h, k in COLUMNS if any(k in r for r in rows)]
    lines = [[h for h, _ in cols]] + [[str(r.get(k, "")) for _, k in cols] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, nargs="+", default=[90, 80], help="compute capabilities (80 = A100)")
    parser.add_argument("--mamba-src", default=os.environ.get("MAMBA_SSM_SRC"),
                        help="mamba-ssm sdist (.tar.gz) or its unpacked folder (default: $MAMBA_SSM_SRC)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    rows, skipped = report(tuple(args.archs), args.mamba_src)
    print(json.dumps(rows) if args.json else format_table(rows))
    if skipped:
        print(skipped)


if __name__ == "__main__":
    run_cli(main)
