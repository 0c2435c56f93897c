"""Compile every Triton scan kernel configuration the models launch ahead of time, without a GPU.

    .venv/bin/python -m bench.triton_compile [--configs CONFIG.yaml ...] [--archs 80 90] [--json]

The launches are read off the models: each config's network runs one forward at its training size on
CPU with the scan replaced by a recorder (shapes and options of every call). Each recorded call, in fp32
and in bf16 (what autocast feeds the scan; A, D, delta_bias stay fp32), gives a forward and a backward
launch built by ``model.ssm.triton_scan`` itself and specialised the way triton's JIT does (integer
arguments equal to 1 become constants, multiples of 16 and 16-byte aligned pointers get divisibility
hints). One extra call covers the widest API use (z, D, delta_bias, grouped B/C, last-state gradient).
SS2D's core gives its fused kernels (``cross`` "atomic" and "ordered", the merge modes) and, next to them,
the unfused call the other path would launch (so the SASS tables compare like with like).
Each distinct kernel is compiled to a cubin for every target with triton's bundled ptxas, and its
resource usage read with the bundled cuobjdump: registers per thread, stack and local memory (where
spills go); shared memory from triton's metadata. Exits 1 when a kernel a model launches uses local memory. Nothing
runs on a GPU: speed is not measured here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

import model.mamba1d
import model.ss2d
from model import build_model
from model.ssm.triton_scan import (
    CHUNK,
    backward_launch,
    cross_backward_launch,
    cross_forward_launch,
    forward_launch,
    interpreting,
)
from utils.cli import ArgumentParser, run_cli
from utils.config import load_config

MODEL_CONFIGS = ("configs/hybrimamba_x8_celeba.yaml", "configs/rhmc_x8_celeba.yaml", "configs/ablations/mamba1d.yaml")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class ScanCall:
    """What decides a launch's specialisation: shapes (batch aside) and options of one selective_scan call."""

    d: int
    length: int
    d_state: int
    groups: int | None  # None: B, C of shape (batch, N, L)
    has_d: bool
    has_z: bool
    has_bias: bool
    softplus: bool
    last_state: bool
    cross: str = ""  # SS2D's fused core (cross_selective_scan): "atomic" or "ordered" (deterministic) merge
    map_hw: tuple[int, int] = (0, 0)  # its (H, W)


API_CALL = ScanCall(192, 16384, 16, 4, True, True, True, True, True)


@contextlib.contextmanager
def _recording(calls: list[ScanCall]) -> Iterator[None]:
    """Replace the scan in the model modules by a recorder returning zeros."""

    def record(
        u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False, backend=None
    ):
        groups = B.shape[1] if B.dim() == 4 else None
        flags = (D is not None, z is not None, delta_bias is not None, bool(delta_softplus), return_last_state)
        calls.append(ScanCall(u.shape[1], u.shape[2], A.shape[1], groups, *flags))
        y = torch.zeros_like(u)
        return (y, u.new_zeros(u.shape[0], u.shape[1], A.shape[1])) if return_last_state else y

    def record_cross(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend=None, sequences=None):
        """SS2D's core: the fused kernels in both merge modes, and the unfused call (other backends' path)."""
        plain = ScanCall(delta.shape[1], delta.shape[2], A.shape[1], 4, D is not None, False,
                         delta_bias is not None, bool(delta_softplus), False)  # fmt: skip
        calls.append(plain)
        calls.extend(dataclasses.replace(plain, cross=m, map_hw=tuple(x.shape[2:])) for m in ("atomic", "ordered"))
        return torch.zeros_like(x)

    saved = {m: m.selective_scan for m in (model.ss2d, model.mamba1d) if hasattr(m, "selective_scan")}
    saved_cross = model.ss2d.cross_selective_scan
    try:
        for m in saved:
            m.selective_scan = record
        model.ss2d.cross_selective_scan = record_cross
        yield
    finally:
        for m, fn in saved.items():
            m.selective_scan = fn
        model.ss2d.cross_selective_scan = saved_cross


def model_scan_calls(config: str | Path) -> list[ScanCall]:
    """The distinct scan calls of one forward of ``config``'s network on a training-size input."""
    cfg = load_config(config)
    size = cfg["data"]["train"]["hr_size"]  # the networks map the bicubic-upsampled input at HR size
    net = build_model(cfg["model"]).eval()
    calls: list[ScanCall] = []
    with _recording(calls), torch.no_grad():
        net(torch.zeros(1, cfg["model"]["in_channels"], size, size))
    return list(dict.fromkeys(calls))


def _launch_args(call: ScanCall, dtype: torch.dtype) -> dict[str, tuple[list, dict]]:
    """Kernel name -> (arguments, options) that ``model.ssm.triton_scan`` passes for ``call`` (batch 1, CPU)."""
    if call.cross:
        return _cross_launch_args(call, dtype)
    x = dict(dtype=dtype)
    f = dict(dtype=torch.float32)
    bc = (1, call.d_state, call.length) if call.groups is None else (1, call.groups, call.d_state, call.length)
    u, delta, z = (torch.empty(1, call.d, call.length, **x) for _ in range(3))
    A32 = torch.empty(call.d, call.d_state, **f)
    D32, bias32 = torch.empty(call.d, **f), torch.empty(call.d, **f)
    B, C = torch.empty(bc, **x), torch.empty(bc, **x)
    fwd_args, meta, (y, states, last) = forward_launch(
        u, delta, A32, B, C, D32 if call.has_d else None, z if call.has_z else None,
        bias32 if call.has_bias else None, call.softplus, CHUNK,
    )  # fmt: skip
    saved = (u, delta, A32, B, C, D32 if call.has_d else None, z if call.has_z else None)
    saved += (bias32 if call.has_bias else None, states)
    dlast = last if call.last_state else None
    bwd_args, bwd_meta, _ = backward_launch(saved, torch.empty_like(y), dlast, call.softplus, CHUNK)
    return {"scan_fwd_kernel": (fwd_args, meta), "scan_bwd_kernel": (bwd_args, bwd_meta)}


def _cross_launch_args(call: ScanCall, dtype: torch.dtype) -> dict[str, tuple[list, dict]]:
    """``_launch_args`` of SS2D's fused core (the first launch's geometry; ``ordered``: one direction a launch)."""
    det = call.cross == "ordered"
    di, (height, width) = call.d // 4, call.map_hw
    x = torch.empty(1, di, height, width, dtype=dtype)
    delta, B = (
        torch.empty(1, call.d, call.length, dtype=dtype),
        torch.empty(1, 4, call.d_state, call.length, dtype=dtype),
    )
    A32, D32 = torch.empty(call.d, call.d_state), torch.empty(call.d)
    D32, bias32 = D32 if call.has_d else None, D32 if call.has_bias else None
    fwd_args, meta, (y, states) = cross_forward_launch(x, delta, A32, B, B, D32, bias32, call.softplus, CHUNK, det)
    saved = (x, delta, A32, B, B, D32, bias32, states)
    bwd_args, bwd_meta, _ = cross_backward_launch(saved, torch.empty_like(x), call.softplus, CHUNK, det)
    return {"scan_fwd_kernel": (fwd_args, meta), "scan_bwd_kernel": (bwd_args, bwd_meta)}


@dataclasses.dataclass
class ASTSourceArgs:
    """What ``triton.compiler.ASTSource`` takes besides the kernel."""

    signature: dict
    constexprs: dict
    attrs: dict

    def key(self) -> str:
        return json.dumps(
            [self.signature, sorted(map(str, self.constexprs.items())), sorted(map(str, self.attrs.items()))]
        )


def _specialiser(backend, version: tuple[int, int]):
    """``(arg, specialize_value) -> (kind, attr)`` as triton's JIT has it: native from 3.6, Python in 3.3-3.5
    (3.3's impl takes the backend's ``get_arg_specialization`` per call, 3.4-3.5's when it is made)."""
    if version >= (3, 6):
        from triton.runtime.jit import native_specialize_impl  # triton >= 3.6; version-dependent API

        return lambda arg, value: native_specialize_impl(type(backend), arg, False, value, True)
    from triton.runtime.jit import create_specialize_impl  # triton 3.3-3.5

    if version >= (3, 4):
        impl = create_specialize_impl(backend.get_arg_specialization)
        return lambda arg, value: impl(arg, False, value, True)
    impl = create_specialize_impl()
    return lambda arg, value: impl(arg, backend.get_arg_specialization, False, value, True)


def specialise(kernel, args: list, meta: dict, backend, version: tuple[int, int]) -> tuple[ASTSourceArgs, dict]:
    """ASTSource arguments (signature, constexprs, attrs) and compile options, as triton's JIT (3.3+) derives
    them."""
    names = kernel.arg_names
    spec = _specialiser(backend, version)
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, arg) in enumerate(zip(names, args)):
        kind, attr = spec(arg, not kernel.params[i].do_not_specialize)
        signature[name] = kind
        if kind == "constexpr":
            constexprs[name] = attr
        elif isinstance(attr, str):  # "" too, as the JIT: an empty attribute list
            attrs[(i,)] = backend.parse_attr(attr)
    options = {k: v for k, v in meta.items() if k not in names}
    for name in names[len(args) :]:
        signature[name] = "constexpr"
        constexprs[name] = meta[name]
    return ASTSourceArgs(signature, constexprs, attrs), options


def legacy_source(kernel, args: list, meta: dict):
    """triton 3.0-3.1's ASTSource (signature by name, constants, AttrsDescriptor of divisible-by-16 and
    equal-to-1 argument numbers) as their JIT builds it, and a key for it; compile options as ``specialise``."""
    from triton.compiler import ASTSource, AttrsDescriptor  # only on triton 3.0-3.1 (gone later)
    from triton.runtime.jit import mangle_type  # triton 3.0-3.1's JIT helper

    signature, constants, div16, one = {}, {}, [], []
    for i, (param, arg) in enumerate(zip(kernel.params, args)):
        signature[param.name] = mangle_type(arg)
        if param.do_not_specialize or isinstance(arg, bool):
            continue
        if isinstance(arg, int) and arg == 1:
            one.append(i)
            constants[param.name] = 1
        elif (arg.data_ptr() if hasattr(arg, "data_ptr") else arg) % 16 == 0:
            div16.append(i)
    names = kernel.arg_names
    constants.update({name: meta[name] for name in names[len(args) :]})
    options = {k: v for k, v in meta.items() if k not in names}
    key = json.dumps([signature, sorted(map(str, constants.items())), div16, one])
    return ASTSource(kernel, signature, constants, AttrsDescriptor(tuple(div16), tuple(one))), key, options


def attrs_source(kernel, args: list, meta: dict, backend):
    """triton 3.2's ASTSource as its JIT builds it: signature of the non-constexpr arguments by name (None as
    ``*i8``), constants (constexprs, None and equal-to-1 arguments), and the backend's AttrsDescriptor of every
    argument; a key for it; compile options as ``specialise``."""
    from triton.compiler import ASTSource  # triton 3.2's signature (fn, signature, constants, attrs)
    from triton.runtime.jit import mangle_type  # triton 3.2's JIT helper

    names = kernel.arg_names
    values = list(args) + [meta[name] for name in names[len(args) :]]
    attrs = backend.get_attrs_descriptor(kernel.params, values)
    equal = attrs.get_constants()
    signature = {
        p.name: "*i8" if v is None else mangle_type(v, p.is_const)
        for p, v in zip(kernel.params, values)
        if not p.is_constexpr
    }
    constants = {p.name: v for p, v in zip(kernel.params, values) if p.is_constexpr or p.num in equal or v is None}
    options = {k: v for k, v in meta.items() if k not in names}
    key = json.dumps([signature, sorted(map(str, constants.items())), sorted(map(str, attrs.get_fn_attrs().items()))])
    return ASTSource(kernel, signature, constants, attrs), key, options


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


def _describe(call: ScanCall) -> str:
    """Shape and options (D, z, delta_bias, softplus, last-state gradient) of a call."""
    flags = (call.has_d, call.has_z, call.has_bias, call.softplus, call.last_state)
    opts = "+".join(name for name, on in zip(("D", "z", "bias", "softplus", "dlast"), flags) if on)
    g = "-" if call.groups is None else call.groups
    cross = f" cross {call.map_hw[0]}x{call.map_hw[1]} {call.cross}" if call.cross else ""
    return f"d={call.d} L={call.length} N={call.d_state} G={g} {opts}{cross}"


def cuobjdump_path() -> str:
    """Triton's bundled cuobjdump (``triton.knobs`` from 3.4, the backend's binary lookup before)."""
    import triton  # optional: triton (CUDA wheels)

    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return knobs.nvidia.cuobjdump.path
    from triton.backends.nvidia.compiler import _path_to_binary  # triton < 3.4 (no triton.knobs)

    return _path_to_binary("cuobjdump")[0]


def compile_all(
    configs=MODEL_CONFIGS, archs: tuple[int, ...] = (80, 90), dtypes=tuple(DTYPES), keep_cubin: bool = False
) -> list[dict]:
    """Compile every distinct kernel that ``configs`` launch (plus the API's widest call) for every arch: one
    row each, with the models and the number of (d, L) calls that launch it (``keep_cubin``: and its cubin)."""
    import triton  # optional: triton (CUDA wheels); only when kernels compile
    from triton.backends.compiler import GPUTarget  # optional: triton
    from triton.compiler import ASTSource, make_backend  # optional: triton

    from model.ssm import triton_kernels  # the @triton.jit kernels: imports triton

    if interpreting():
        raise RuntimeError("bench.triton_compile: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    version = tuple(int(v) for v in triton.__version__.split(".")[:2])
    cuobjdump = cuobjdump_path()
    calls = {}
    for config in configs:
        for call in model_scan_calls(config):
            calls.setdefault(call, []).append(Path(config).stem)
    calls.setdefault(API_CALL, []).append("api-widest")
    rows: dict[tuple, dict] = {}  # one per distinct compiled kernel
    for call, users in calls.items():
        for dtype in dtypes:
            for kernel_name, (args, meta) in _launch_args(call, DTYPES[dtype]).items():
                kernel = getattr(triton_kernels, kernel_name)
                for arch in archs:
                    target = GPUTarget("cuda", arch, 32)
                    if version < (3, 2):
                        src, src_key, options = legacy_source(kernel, args, meta)
                    elif version < (3, 3):
                        src, src_key, options = attrs_source(kernel, args, meta, make_backend(target))
                    else:
                        src_args, options = specialise(kernel, args, meta, make_backend(target), version)
                        src_key = src_args.key()
                        src = ASTSource(fn=kernel, signature=src_args.signature, constexprs=src_args.constexprs,
                                        attrs=src_args.attrs)  # fmt: skip
                    key = (kernel_name, arch, dtype, src_key, json.dumps(options))
                    if key in rows:
                        rows[key]["models"] = ",".join(dict.fromkeys(rows[key]["models"].split(",") + users))
                        rows[key]["calls"] += 1
                        continue
                    compiled = triton.compile(src, target=target, options=options)
                    rows[key] = dict(
                        models=",".join(dict.fromkeys(users)),
                        calls=1,
                        first_call=_describe(call),
                        dtype=dtype,
                        kernel=kernel_name.removesuffix("_kernel"),
                        arch=f"sm_{arch}",
                        warps=compiled.metadata.num_warps,
                        shared=compiled.metadata.shared,
                        cubin_bytes=len(compiled.asm["cubin"]),
                        **_resources(compiled.asm["cubin"], cuobjdump),
                        length=call.length,
                        d_state=call.d_state,
                        has_z=call.has_z,
                        softplus=call.softplus,
                        chunk=meta["S"] * meta["R"],
                        cross=call.cross,
                        save=meta.get("SAVE", meta["S"] * meta["R"]),  # steps per saved state
                    )
                    if keep_cubin:
                        rows[key]["cubin"] = compiled.asm["cubin"]
    return list(rows.values())


def format_table(rows: list[dict]) -> str:
    cols = ("models", "calls", "first_call", "dtype", "kernel", "arch", "warps", "regs", "shared", "stack", "local")
    cols += ("cubin_bytes",)
    lines = [cols] + [tuple(str(r[c]) for c in cols) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=list(MODEL_CONFIGS), help="experiment configs to read launches from"
    )
    parser.add_argument("--archs", type=int, nargs="+", default=[80, 90], help="compute capabilities (80 = A100)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    rows = compile_all(args.configs, tuple(args.archs))
    print(json.dumps(rows) if args.json else format_table(rows))
    spilled = [r for r in rows if (r["local"] or r["stack"]) and r["models"] != "api-widest"]
    for r in rows:
        if (r["local"] or r["stack"]) and r["models"] == "api-widest":
            print(f"note: the widest API call (no model launches it) spills {r['stack']} B: {r['dtype']} {r['arch']}")
    if spilled:
        names = ", ".join(f"{r['models']} {r['first_call']} {r['dtype']} {r['kernel']} {r['arch']}" for r in spilled)
        raise SystemExit(f"error: local memory (register spills) in {names}")


if __name__ == "__main__":
    run_cli(main)
