"""The ``triton`` backend: the selective scan as two Triton kernels (forward, reverse-time backward).

``selective_scan_triton`` runs the compiled kernels on CUDA tensors and the Triton interpreter on CPU
tensors (tests only: milliseconds per program and chunk step). Triton is imported on first use, so
``import model`` works without it. Contract (mamba_ssm's): u, delta, z, B, C float32/float16/bfloat16;
A, D, delta_bias are used in float32; y has u's dtype; last_state and all accumulation are float32.
The gradient of last_state is propagated (mamba_ssm's kernel ignores it).

Forward and backward are the operators ``fsr::triton_scan_fwd`` / ``fsr::triton_scan_bwd``
(``torch.library.triton_op``, kernels launched through ``wrap_triton``), with the forward's autograd
formula registered: ``torch.compile`` sees the Triton kernels themselves, fake tensors run the same
Python with the launches skipped (no CUDA initialisation), and ``torch.export`` keeps one operator.
SS2D's core fused (``cross_selective_scan_triton``) is ``fsr::triton_cross_scan_fwd`` / ``_bwd`` over the same
kernels with ``CROSS`` on.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import torch
from torch._subclasses.fake_tensor import is_fake
from torch.library import triton_op, wrap_triton

CHUNK = 1024  # time steps per tile (at most; a shorter sequence gets one tile of its length)
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
NO_CROSS = (1, 1, 0, 1)  # the kernels' (H, W, k0, nk) when they do not read a cross-scanned map
CROSS_MAXNREG = 128  # the fused kernels' register cap where a thread's steps would take ptxas to it (_cross_meta)
# Triton releases whose compiles under that cap were checked spill-free (bench.triton_versions); elsewhere no cap:
# triton 3.9's fused forward spills 32-232 bytes under it and takes 168 registers without it, spilling none.
CROSS_MAXNREG_CHECKED = ("3.8.",)


@functools.cache
def triton_available() -> bool:
    """True when triton imports."""
    try:
        import triton  # noqa: F401 (the probe of the optional dependency)
    except Exception:
        return False
    return True


def interpreting() -> bool:
    """Whether triton runs interpreted: ``triton.knobs`` from 3.4, TRITON_INTERPRET (read at import) before."""
    import triton  # optional: triton (CUDA wheels)

    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class _Launchers:
    """The kernels of ``triton_kernels`` as attributes, each behind ``wrap_triton`` (traceable launches). Wrapped
    at every launch, not cached: a wrapper holds its index in torch's kernel side table, which
    ``torch._dynamo.reset()`` clears, and a stale index fails the next trace ("kernel_idx mismatch")."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return wrap_triton(getattr(self._module, name))


@functools.cache
def _launchers() -> _Launchers:
    from model.ssm import triton_kernels  # the @triton.jit kernels: imports triton

    return _Launchers(triton_kernels)


def kernel_module(interpret: bool) -> _Launchers:
    """The kernels, launched as ``kernel_module(...).name[grid](...)``; ``interpret`` (CPU tensors) needs triton's
    interpreter, which triton only turns on when TRITON_INTERPRET=1 is in the environment before ``import triton``."""
    if interpret and not interpreting():
        raise RuntimeError(
            "selective_scan (triton): CPU tensors run only under the Triton interpreter; set TRITON_INTERPRET=1 "
            "before triton is imported (tests only), or use CUDA tensors"
        )
    return _launchers()


def block_n(d_state: int) -> int:
    """The state vector's padded length: d_state rounded up to a power of two (at least 2)."""
    return max(2, 1 << (d_state - 1).bit_length())


def thread_steps(dtype: torch.dtype, has_z: bool = False, forward: bool = False, contig: bool = True) -> int:
    """Consecutive time steps each thread of a kernel holds (at most). Forward: 16, as mamba_ssm's kNItems (four
    16-byte loads of fp32, two of 16-bit: the scan across the warp is paid once per 16 steps; 117-128
    registers, mamba_ssm's forward 128-145); 8 where the steps load as scalars (not ``contig``: L not a
    multiple of 16), whose addresses would take 16 steps past 220 registers. Backward: one 16-byte load (fp32
    4, 16-bit 8), 4 for 16-bit inputs with z; more would take it past 128 registers."""
    if forward:
        return 16 if contig else 8
    return 4 if has_z else 16 // dtype.itemsize


def tile(
    length: int, chunk: int, dtype: torch.dtype = torch.float32, has_z: bool = False, forward: bool = False
) -> int:
    """Time steps per tile: one warp's (32 x ``thread_steps``), at most ``chunk``, or the power of two that
    covers a shorter ``length`` (at least 2). One warp a program: no cross-warp step in the scans, which
    ``python -m bench.triton_sass`` counts as the cheapest (wider tiles: more instructions per element). The
    backward's tile is also the saved states' spacing (the forward's tile is the same or twice it)."""
    steps = 32 * thread_steps(dtype, has_z, forward, length % 16 == 0)
    return max(2, min(chunk, steps, 1 << max(length - 1, 1).bit_length()))


def tiling(steps: int, length: int, dtype: torch.dtype, has_z: bool, forward: bool = False) -> dict:
    """The kernels' tile constants for tiles of ``steps`` over ``length`` in ``dtype``: S consecutive steps a
    thread, R = steps / S threads, ``CONTIG`` (each thread's steps load as 16-byte vectors: alignment known
    when L is a multiple of 16; otherwise scalar loads with the contiguity hidden, which keeps them in the
    thread), ``EVEN`` (no step masked), and the launch options."""
    s = min(thread_steps(dtype, has_z, forward, length % 16 == 0), steps)
    if forward:  # a tile shorter than 32 x 16: fill the warp's 32 threads first, down to 4 steps each
        s = min(s, max(4, steps // 32), steps)
    r = steps // s
    meta = dict(S=s, R=r, CONTIG=length % 16 == 0, EVEN=length % steps == 0)
    if forward:  # a thread's steps as P parts of one 16-byte load each
        meta["P"] = max(1, s * dtype.itemsize // 16)
    return dict(meta, num_warps=max(1, min(8, r // 32)), num_stages=1)


def _check_dtypes(**tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.dtype not in _FLOATS:
            raise TypeError(f"selective_scan (triton): {name} must be float32, float16 or bfloat16, got {t.dtype}")


def _or(t: torch.Tensor | None, stand_in: torch.Tensor) -> torch.Tensor:
    return stand_in if t is None else t


def _on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on ``t``'s GPU (triton launches on the current device); nothing for fake tensors (tracing), which
    must not initialise CUDA."""
    return torch.cuda.device(t.device) if t.is_cuda and not is_fake(t) else contextlib.nullcontext()


def forward_launch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A32: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D32: torch.Tensor | None,
    z: torch.Tensor | None,
    bias32: torch.Tensor | None,
    softplus: bool,
    chunk: int,
    y: torch.Tensor | None = None,
    cross: tuple[int, int, int, int] = NO_CROSS,
) -> tuple[list, dict, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The forward kernel's arguments and launch options, and its outputs (y, tile states, last state).
    Absent optional inputs get a stand-in pointer that is never read: one signature per dtype set.
    ``y`` and ``cross`` (H, W, k0, nk): the fused cross-scan's output and geometry (``cross_launch``)."""
    batch, d, length = delta.shape
    n = A32.shape[1]
    groups = B.shape[1] if B.dim() == 4 else 1
    y = torch.empty_like(u) if y is None else y
    shape = saved_states_shape(batch, d, length, n, chunk, u.dtype, z is not None)
    states = torch.empty(shape, device=u.device, dtype=torch.float32)
    last = torch.empty(batch, d, n, device=u.device, dtype=torch.float32)
    args = [u, delta, A32, B, C, _or(D32, A32), _or(z, u), _or(bias32, A32), y, states, last]
    args += [d, length, n, states.shape[1], d // groups, groups, 1, *cross]
    steps = tile(length, chunk, u.dtype, z is not None, forward=True)
    meta = kernel_meta(n, D32 is not None, z is not None, bias32 is not None, softplus, steps, length, u.dtype, True)
    meta["SAVE"] = tile(length, chunk, u.dtype, z is not None)  # the backward's tile: one saved state each
    return args, meta, (y, states, last)


def kernel_meta(
    d_state: int,
    has_d: bool,
    has_z: bool,
    has_bias: bool,
    softplus: bool,
    steps: int,
    length: int,
    dtype: torch.dtype,
    forward: bool,
) -> dict:
    """The constexpr arguments and launch options both kernels share, for tiles of ``steps`` over ``length``."""
    return dict(
        HAS_D=has_d,
        HAS_Z=has_z,
        HAS_BIAS=has_bias,
        SOFTPLUS=bool(softplus),
        BLOCK_N=block_n(d_state),
        **tiling(steps, length, dtype, has_z, forward),
        CROSS=False,
        ATOMIC=False,
        RUNS=False,
    )


def backward_launch(
    saved: tuple[torch.Tensor | None, ...],
    dy: torch.Tensor,
    dlast: torch.Tensor | None,
    softplus: bool,
    chunk: int,
    deterministic: bool = False,
    du: torch.Tensor | None = None,
    cross: tuple[int, int, int, int] = NO_CROSS,
) -> tuple[list, dict, tuple[torch.Tensor | None, ...]]:
    """The backward kernel's arguments and launch options for the forward's ``saved`` tensors, and its outputs
    (du, ddelta, dz, dA (b*d, N), dB, dC (b, G, N, L), or per channel (b*d, N, L) when ``deterministic``, dD,
    dbias (b*d,)); ``du`` and ``cross`` as ``forward_launch``'s ``y`` and ``cross``."""
    u, delta, A32, B, C, D32, z, bias32, states = saved
    batch, d, length = delta.shape
    n = A32.shape[1]
    groups = B.shape[1] if B.dim() == 4 else 1
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddelta = torch.empty_like(u) if du is None else du, torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dA = torch.empty(batch * d, n, **f32)
    shape = (batch * d, n, length) if deterministic else (batch, groups, n, length)
    dB = (torch.empty if deterministic else torch.zeros)(shape, **f32)
    dC = (torch.empty if deterministic else torch.zeros)(shape, **f32)
    dD = torch.empty(batch * d, **f32) if D32 is not None else None
    dbias = torch.empty(batch * d, **f32) if bias32 is not None else None
    carry = torch.empty(batch * d, 2, n, **f32)  # the adjoint a tile hands back to the one before it
    args = [u, delta, A32, B, C, _or(D32, A32), _or(z, u), _or(bias32, A32), dy, states, _or(dlast, dA), carry]
    args += [du, ddelta, _or(dz, du), dA, dB, dC, _or(dD, dA), _or(dbias, dA)]
    args += [d, length, n, states.shape[1], d // groups, groups, 1, *cross]
    steps = tile(length, chunk, u.dtype, z is not None)
    meta = kernel_meta(n, D32 is not None, z is not None, bias32 is not None, softplus, steps, length, u.dtype, False)
    meta.update(HAS_DLAST=dlast is not None, DETERMINISTIC=deterministic)
    return args, meta, (du, ddelta, dz, dA, dB, dC, dD, dbias)


def scan_forward(
    u: torch.Tensor,
    delta: torch.Tensor,
    A32: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D32: torch.Tensor | None,
    z: torch.Tensor | None,
    bias32: torch.Tensor | None,
    softplus: bool,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the forward kernel on contiguous inputs (A, D, delta_bias already float32): y (u's dtype), the last
    state (batch, d, N) float32, and the float32 state entering every backward tile (``tile(L, chunk)`` steps),
    which the backward reads (``saved_states_shape``)."""
    args, meta, (y, states, last) = forward_launch(u, delta, A32, B, C, D32, z, bias32, softplus, chunk)
    if u.shape[0] * u.shape[1]:
        with _on_device(u):
            kernel_module(not u.is_cuda).scan_fwd_kernel[(u.shape[0] * u.shape[1],)](*args, **meta)
    return y, last, states


def saved_states_shape(
    batch: int,
    d: int,
    length: int,
    d_state: int,
    chunk: int,
    dtype: torch.dtype = torch.float32,
    has_z: bool = False,
) -> tuple[int, ...]:
    """Shape of the tile states ``scan_forward`` returns for inputs of ``dtype`` (for fake tensors)."""
    return (batch * d, -(-length // tile(length, chunk, dtype, has_z)), d_state)


def scan_backward(
    saved: tuple[torch.Tensor | None, ...],
    dy: torch.Tensor,
    dlast: torch.Tensor | None,
    softplus: bool,
    chunk: int,
    deterministic: bool = False,
) -> tuple[torch.Tensor | None, ...]:
    """Run the backward kernel for ``saved`` = (u, delta, A32, B, C, D32, z, bias32, states) as ``scan_forward``
    was called and returned, on a contiguous ``dy`` (and ``dlast`` or None): (du, ddelta, dA, dB, dC, dD, dz,
    dbias) with dA (d, N), dD and dbias (d,) float32 summed over the batch, dB and dC float32 shaped like B, C.
    ``deterministic``: dB and dC summed over a group's channels in a fixed order (per-channel partials, then
    a sum) instead of fp32 atomics, whose order, and so last bits, vary run to run."""
    u, B = saved[0], saved[3]
    batch, d, length = u.shape
    args, meta, grads = backward_launch(saved, dy, dlast, softplus, chunk, deterministic)
    if batch * d:
        with _on_device(u):
            kernel_module(not u.is_cuda).scan_bwd_kernel[(batch * d,)](*args, **meta)
    return _reduce_grads(grads, B, deterministic)


def _reduce_grads(grads: tuple[torch.Tensor | None, ...], B: torch.Tensor, deterministic: bool) -> tuple:
    """The backward kernel's per-program outputs summed to the inputs' shapes (``scan_backward``'s result)."""
    du, ddelta, dz, dA, dB, dC, dD, dbias = grads
    batch, d = ddelta.shape[:2]
    if deterministic:
        groups = B.shape[1] if B.dim() == 4 else 1
        dB, dC = (g.view(batch, groups, d // groups, *g.shape[1:]).sum(2) for g in (dB, dC))
    if B.dim() == 3:
        dB, dC = dB[:, 0], dC[:, 0]
    dA = dA.view(batch, d, dA.shape[1]).sum(0)
    dD = dD.view(batch, d).sum(0) if dD is not None else None
    dbias = dbias.view(batch, d).sum(0) if dbias is not None else None
    return du, ddelta, dA, dB, dC, dD, dz, dbias


def _empty_or(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0) if t is None else t


@triton_op("fsr::triton_scan_fwd", mutates_args=())
def triton_scan_fwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A32: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D32: torch.Tensor | None,
    z: torch.Tensor | None,
    bias32: torch.Tensor | None,
    softplus: bool,
    chunk: int,
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``scan_forward`` as an operator: (y, last state, tile states); ``deterministic`` is for its backward."""
    return scan_forward(u, delta, A32, B, C, D32, z, bias32, softplus, chunk)


@triton_op("fsr::triton_scan_bwd", mutates_args=())
def triton_scan_bwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A32: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D32: torch.Tensor | None,
    z: torch.Tensor | None,
    bias32: torch.Tensor | None,
    states: torch.Tensor,
    dy: torch.Tensor,
    dlast: torch.Tensor | None,
    softplus: bool,
    chunk: int,
    deterministic: bool,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """``scan_backward`` as an operator: (du, ddelta, dA, dB, dC, dD, dz, dbias), empty for absent inputs."""
    saved = (u, delta, A32, B, C, D32, z, bias32, states)
    du, ddelta, dA, dB, dC, dD, dz, dbias = scan_backward(saved, dy, dlast, softplus, chunk, deterministic)
    dB, dC = dB.to(dtype=B.dtype, copy=True), dC.to(dtype=C.dtype, copy=True)
    return du, ddelta, dA, dB, dC, _empty_or(dD, u), _empty_or(dz, u), _empty_or(dbias, u)


def _setup_context(ctx, inputs, output) -> None:
    *tensors, softplus, chunk, deterministic = inputs
    ctx.save_for_backward(*tensors, output[2])
    ctx.softplus, ctx.chunk, ctx.deterministic = softplus, chunk, deterministic
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, dlast, dstates):
    *tensors, states = ctx.saved_tensors
    u = tensors[0]
    dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
    dlast = dlast.contiguous() if dlast is not None else None
    grads = triton_scan_bwd(*tensors, states, dy, dlast, ctx.softplus, ctx.chunk, ctx.deterministic)
    return (*(g if t is not None else None for g, t in zip(grads, tensors)), None, None, None)


triton_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk: int = CHUNK,
    deterministic: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan in Triton (interpreted on CPU tensors); ``chunk``: time steps per tile (at most), a
    power of two; ``deterministic``: dB, dC bitwise reproducible (no atomics; more memory, see scan_backward)."""
    _check_dtypes(u=u, delta=delta, B=B, C=C, z=z, A=A, D=D, delta_bias=delta_bias)
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"selective_scan (triton): chunk must be a power of two >= 2, got {chunk}")
    u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
    z = z.contiguous() if z is not None else None
    # A, D, delta_bias are used in float32; autograd casts their gradients back to the inputs' dtypes
    A32 = A.float().contiguous()
    D32 = D.float().contiguous() if D is not None else None
    bias32 = delta_bias.float().contiguous() if delta_bias is not None else None
    y, last, _ = triton_scan_fwd(u, delta, A32, B, C, D32, z, bias32, bool(delta_softplus), chunk, bool(deterministic))
    return (y, last) if return_last_state else y


# SS2D's core fused: the kernels read the (B, Di, H, W) map in each direction's order and add the four
# directions' y (forward) and du (backward) into one fp32 (B, Di, H, W) map; delta, B, C (and their
# gradients) stay in direction order, (B, 4 x Di, L) and (B, 4, N, L), as the composed path has them.


def cross_launches(batch: int, di: int, height: int, width: int, deterministic: bool) -> list[tuple[int, tuple]]:
    """(programs, (H, W, k0, nk)) of each launch: one over the 4 directions adding with atomics, or (deterministic)
    one per direction in order 0-3, each program adding to what the launches before stored."""
    if deterministic:
        return [(batch * di, (height, width, k, 1)) for k in range(4)]
    return [(batch * 4 * di, (height, width, 0, 4))]


def cross_forward_launch(
    x: torch.Tensor,
    delta: torch.Tensor,
    A32: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D32: torch.Tensor | None,
    bias32: torch.Tensor | None,
    softplus: bool,
    chunk: int,
    deterministic: bool,
) -> tuple[list, dict, tuple[torch.Tensor, torch.Tensor]]:
    """The forward kernel's arguments (geometry of the first of ``cross_launches``) and options over the map ``x``
    (B, Di, H, W), and its outputs: the fp32 merge and the tile states (one row per (b, direction, channel))."""
    acc = (torch.empty if deterministic else torch.zeros)(x.shape, device=x.device, dtype=torch.float32)
    args, meta, (_, states, _) = forward_launch(
        x, delta, A32, B, C, D32, None, bias32, softplus, chunk, acc, _first_geometry(x, deterministic)
    )
    return args, _cross_meta(meta, x, deterministic), (acc, states)


def cross_backward_launch(
    saved: tuple[torch.Tensor | None, ...], dy: torch.Tensor, softplus: bool, chunk: int, deterministic: bool
) -> tuple[list, dict, tuple[torch.Tensor | None, ...]]:
    """The backward kernel's arguments and options for ``saved`` = (x, delta, A32, B, C, D32, bias32, states) and
    the merged output's gradient ``dy`` (B, Di, H, W); its outputs as ``backward_launch``'s, du the fp32 merge."""
    x, delta, A32, B, C, D32, bias32, states = saved
    acc = (torch.empty if deterministic else torch.zeros)(x.shape, device=x.device, dtype=torch.float32)
    full = (x, delta, A32, B, C, D32, None, bias32, states)
    geometry = _first_geometry(x, deterministic)
    args, meta, grads = backward_launch(full, dy, None, softplus, chunk, deterministic, du=acc, cross=geometry)
    return args, _cross_meta(meta, x, deterministic), grads


def _cross_meta(meta: dict, x: torch.Tensor, deterministic: bool) -> dict:
    """The cross-scan's constexprs and options: ``RUNS`` where a thread's S steps never wrap past a column
    (H % S == 0), so its positions are one position and a stride (the models' maps), else a position per step;
    ``maxnreg`` 128 where a thread holds 16 steps (forward) or 8 (16-bit backward): unbounded, ptxas takes 162-168
    registers for that forward and spills one for RHMC's bf16 backward on sm_90; capped, neither spills (the
    forward: 2-3% more instructions, 16 one-warp programs an SM instead of 12). The cap only on the triton
    releases of ``CROSS_MAXNREG_CHECKED``."""
    wide = meta["S"] == (16 if "P" in meta else 8)
    cap = {"maxnreg": CROSS_MAXNREG} if wide and _register_cap_checked() else {}
    return {**meta, **cap, "CROSS": True, "ATOMIC": not deterministic, "RUNS": x.shape[2] % meta["S"] == 0}


@functools.cache
def _register_cap_checked() -> bool:
    """True when the installed triton is one whose compiles under ``CROSS_MAXNREG`` were checked spill-free."""
    import triton  # optional: triton (CUDA wheels); only a launch, which has it, asks

    return triton.__version__.startswith(CROSS_MAXNREG_CHECKED)


def _first_geometry(x: torch.Tensor, deterministic: bool) -> tuple[int, int, int, int]:
    return cross_launches(*x.shape, deterministic)[0][1]


def _launch_cross(kernel: str, x: torch.Tensor, args: list, meta: dict, deterministic: bool) -> None:
    with _on_device(x):
        for programs, geometry in cross_launches(*x.shape, deterministic):
            if programs:
                args[-4:] = geometry
                getattr(kernel_module(not x.is_cuda), kernel)[(programs,)](*args, **meta)


@triton_op("fsr::triton_cross_scan_fwd", mutates_args=())
def triton_cross_scan_fwd(
    x: torch.Tensor,
    delta: torch.Tensor,
    A32: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D32: torch.Tensor | None,
    bias32: torch.Tensor | None,
    softplus: bool,
    chunk: int,
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel over the 4 directions of the map ``x`` (B, Di, H, W): the merged y (x's dtype, summed
    in fp32) and the tile states (as ``scan_forward``'s, one row per (b, direction, channel))."""
    args, meta, (acc, states) = cross_forward_launch(x, delta, A32, B, C, D32, bias32, softplus, chunk, deterministic)
    _launch_cross("scan_fwd_kernel", x, args, meta, deterministic)
    return acc.to(x.dtype), states


@triton_op("fsr::triton_cross_scan_bwd", mutates_args=())
def triton_cross_scan_bwd(
    x: torch.Tensor,
    delta: torch.Tensor,
    A32: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D32: torch.Tensor | None,
    bias32: torch.Tensor | None,
    states: torch.Tensor,
    dy: torch.Tensor,
    softplus: bool,
    chunk: int,
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward kernel (saved as ``cross_backward_launch`` takes them): dx (x's dtype, its 4 directions summed
    in fp32), ddelta, dA, dB, dC, dD, dbias summed as ``scan_backward``'s, empty for absent inputs."""
    saved = (x, delta, A32, B, C, D32, bias32, states)
    args, meta, grads = cross_backward_launch(saved, dy, softplus, chunk, deterministic)
    _launch_cross("scan_bwd_kernel", x, args, meta, deterministic)
    dx, ddelta, dA, dB, dC, dD, _, dbias = _reduce_grads(grads, B, deterministic)
    dB, dC = dB.to(dtype=B.dtype, copy=True), dC.to(dtype=C.dtype, copy=True)
    return dx.to(x.dtype), ddelta, dA, dB, dC, _empty_or(dD, x), _empty_or(dbias, x)


def _cross_setup_context(ctx, inputs, output) -> None:
    *tensors, softplus, chunk, deterministic = inputs
    ctx.save_for_backward(*tensors, output[1])
    ctx.softplus, ctx.chunk, ctx.deterministic = softplus, chunk, deterministic
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _cross_backward(ctx, dy, dstates):
    *tensors, states = ctx.saved_tensors
    dy = dy.contiguous() if dy is not None else torch.zeros_like(tensors[0])
    grads = triton_cross_scan_bwd(*tensors, states, dy, ctx.softplus, ctx.chunk, ctx.deterministic)
    return (*(g if t is not None else None for g, t in zip(grads, tensors)), None, None, None)


triton_cross_scan_fwd.register_autograd(_cross_backward, setup_context=_cross_setup_context)


def cross_selective_scan_triton(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    chunk: int = CHUNK,
    deterministic: bool = False,
) -> torch.Tensor:
    """``model.ssm.cross_selective_scan`` fused: the map ``x`` (B, Di, H, W) is read in each direction's order
    inside the kernels and the four outputs summed in place (fp32), so neither the (B, 4, Di, L) sequences nor
    the four outputs exist; ``deterministic``: the sums (and dB, dC) in a fixed order, bitwise reproducible."""
    _check_dtypes(x=x, delta=delta, B=B, C=C, A=A, D=D, delta_bias=delta_bias)
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"selective_scan (triton): chunk must be a power of two >= 2, got {chunk}")
    x, delta, B, C = (t.contiguous() for t in (x, delta, B, C))
    A32 = A.float().contiguous()
    D32 = D.float().contiguous() if D is not None else None
    bias32 = delta_bias.float().contiguous() if delta_bias is not None else None
    y, _ = triton_cross_scan_fwd(x, delta, A32, B, C, D32, bias32, bool(delta_softplus), chunk, bool(deterministic))
    return y
