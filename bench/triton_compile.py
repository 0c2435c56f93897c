"""Compile every Triton scan kernel configuration the models launch ahead of time, without a GPU.

    .venv/bin/python -m bench.triton_compile [--archs 80 90] [--json]

For each configuration (model, dtype, forward/backward) and target (sm_80, sm_90) it runs triton's
compiler to a cubin (triton ships its own ptxas) and reads the cubin's resource usage with the bundled
cuobjdump: registers per thread, stack and local memory bytes (spills live there), shared memory from
triton's metadata. It prints one table row per kernel, and exits 1 when a kernel uses local memory.
Nothing runs on a GPU: occupancy follows from the registers, speed is not measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import tempfile

from model.ssm.triton_scan import CHUNK, block_n, num_warps


@dataclasses.dataclass(frozen=True)
class ScanConfig:
    """One way the models call the scan: d_state, grouped B/C, z, D, delta_bias, softplus, last-state grad."""

    name: str
    d_state: int
    grouped: bool
    has_z: bool
    has_d: bool = True
    has_bias: bool = True
    softplus: bool = True
    has_dlast: bool = False


# SS2D (G=4 groups, D, delta_bias, softplus, no z): HybriMamba d_state=8, RHMC d_state=16; the Mamba1D
# ablation (ungrouped, z); plus every option at once, last-state gradient included (the API's widest call).
MODEL_CONFIGS = (
    ScanConfig("hybrimamba-ss2d", 8, grouped=True, has_z=False),
    ScanConfig("rhmc-ss2d", 16, grouped=True, has_z=False),
    ScanConfig("mamba1d", 16, grouped=False, has_z=True),
    ScanConfig("all-options", 16, grouped=True, has_z=True, has_dlast=True),
)
DTYPES = ("fp32", "bf16")


def _flags(cfg: ScanConfig) -> dict:
    return dict(
        HAS_D=cfg.has_d,
        HAS_Z=cfg.has_z,
        HAS_BIAS=cfg.has_bias,
        SOFTPLUS=cfg.softplus,
        BLOCK_N=block_n(cfg.d_state),
        CHUNK=CHUNK,
    )


def signatures(cfg: ScanConfig, dtype: str) -> dict[str, tuple[dict, dict]]:
    """Kernel name -> (signature, constexprs) as ``model.ssm.triton_scan`` launches them (absent optional
    inputs get a stand-in pointer of the same type, as there)."""
    x, f = f"*{dtype}", "*fp32"
    ints = dict.fromkeys(("d", "L", "N", "n_chunks", "ch_per_group", "G"), "i32")
    if not cfg.grouped:
        ints["G"] = "constexpr"  # G == 1: triton specialises an int argument equal to 1
    common = dict(u_ptr=x, delta_ptr=x, A_ptr=f, B_ptr=x, C_ptr=x, D_ptr=f, z_ptr=x, bias_ptr=f)
    flags = _flags(cfg)
    const = {k: 1 for k, v in ints.items() if v == "constexpr"}
    fwd = {**common, "y_ptr": x, "states_ptr": f, "last_ptr": f, **ints, **dict.fromkeys(flags, "constexpr")}
    bwd = {
        **common,
        **dict(dy_ptr=x, states_ptr=f, dlast_ptr=f, du_ptr=x, ddelta_ptr=x, dz_ptr=x),
        **dict(dA_ptr=f, dB_ptr=f, dC_ptr=f, dD_ptr=f, dbias_ptr=f),
        **ints,
        **dict.fromkeys((*flags, "HAS_DLAST"), "constexpr"),
    }
    return {
        "scan_fwd_kernel": (fwd, {**flags, **const}),
        "scan_bwd_kernel": (bwd, {**flags, "HAS_DLAST": cfg.has_dlast, **const}),
    }


def _resources(cubin: bytes, cuobjdump: str) -> dict[str, int]:
    """Registers, stack and local bytes of the one kernel in ``cubin``, read by cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        text = subprocess.run([cuobjdump, "-res-usage", f.name], check=True, capture_output=True, text=True).stdout
    finally:
        os.remove(f.name)
    fields = dict(re.findall(r"(REG|STACK|LOCAL):(\d+)", text))
    return {"regs": int(fields["REG"]), "stack": int(fields["STACK"]), "local": int(fields["LOCAL"])}


def compile_all(archs: tuple[int, ...] = (80, 90), configs=MODEL_CONFIGS, dtypes=DTYPES) -> list[dict]:
    """Compile every (config, dtype, kernel, arch); one row of resource usage each."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if triton.knobs.runtime.interpret:
        raise RuntimeError("bench.triton_compile: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    from model.ssm import triton_kernels

    cuobjdump = triton.knobs.nvidia.cuobjdump.path
    rows = []
    for cfg in configs:
        for dtype in dtypes:
            for kernel, (signature, constexprs) in signatures(cfg, dtype).items():
                for arch in archs:
                    src = ASTSource(fn=getattr(triton_kernels, kernel), signature=signature, constexprs=constexprs)
                    warps = num_warps(cfg.d_state, CHUNK, kernel == "scan_bwd_kernel")
                    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
                    res = _resources(compiled.asm["cubin"], cuobjdump)
                    rows.append(
                        dict(
                            config=cfg.name,
                            dtype=dtype,
                            kernel=kernel.removesuffix("_kernel"),
                            arch=f"sm_{arch}",
                            warps=compiled.metadata.num_warps,
                            shared=compiled.metadata.shared,
                            cubin_bytes=len(compiled.asm["cubin"]),
                            **res,
                        )
                    )
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ("config", "dtype", "kernel", "arch", "warps", "regs", "shared", "stack", "local", "cubin_bytes")
    lines = [cols] + [tuple(str(r[c]) for c in cols) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, nargs="+", default=[80, 90], help="compute capabilities (80 = A100)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    rows = compile_all(tuple(args.archs))
    print(json.dumps(rows) if args.json else format_table(rows))
    spilled = [r for r in rows if r["local"] or r["stack"]]
    if spilled:
        names = ", ".join(f"{r['config']}/{r['dtype']}/{r['kernel']}/{r['arch']}" for r in spilled)
        raise SystemExit(f"error: local memory (register spills) in {names}")


if __name__ == "__main__":
    from utils.cli import run_cli

    run_cli(main)
