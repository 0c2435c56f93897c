"""mamba_ssm's CUDA selective scan behind the project's backend signature, its kernel contract checked first.

The contract of ``selective_scan_cuda.fwd/bwd`` (mamba_ssm 2.x, ``csrc/selective_scan/selective_scan.cpp``)
and of its Python wrapper ``selective_scan_fn`` (``mamba_ssm/ops/selective_scan_interface.py``):

- u, delta, B, C, z: one dtype, float32, float16 or bfloat16 (the kernel's input type); y has it too.
- A: real float32 (d, N) with N <= 256; D, delta_bias: float32 (d,) with last-dim stride 1.
- B, C: (batch, G, N, L) (the wrapper unsqueezes (batch, N, L)); d % G == 0, which the kernel
  does not check (it would read past the groups).
- last-dim stride 1 for u, delta, B, C, z, D, delta_bias: the wrapper copies all but delta_bias.
- an empty batch launches an empty CUDA grid (a launch error); last_state and dA, dD,
  d(delta_bias) are float32; the backward ignores the gradient of last_state.

``mamba_ssm_backend`` casts A, D, delta_bias of another real dtype to float32 (the kernel computes in
float32 anyway; autograd casts the gradients back), copies tensors whose last-dim stride is not 1,
runs empty batches through the reference, and raises a one-line ValueError for anything else that
the kernel would reject with a bare assert. The kernel runs as the operators ``fsr::mamba_scan_fwd`` /
``fsr::mamba_scan_bwd`` (``torch.library.custom_op`` over ``selective_scan_cuda.fwd/bwd``, as mamba_ssm's
``SelectiveScanFn`` calls them, with fake kernels and the autograd formula), so networks compile around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from model.ssm import check_shapes
from model.ssm.reference import selective_scan_reference

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_STATE = 256
KERNEL_CHUNK = 2048  # the kernel keeps one (decay product, state) pair per chunk of L and state: x (b, d, chunks, 2N)
_kernel: dict[str, Any] = {}  # "module": the selective_scan_cuda extension the operators call


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def _error(name: str, t: torch.Tensor, expected: str) -> ValueError:
    return ValueError(f"selective_scan (mamba_ssm): {name} is {_describe(t)}; mamba_ssm's CUDA kernel takes {expected}")


def _last_dim_unit_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def prepare_mamba_ssm_args(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> tuple[torch.Tensor | None, ...]:
    """Check the kernel contract; return (u, delta, A, B, C, D, z, delta_bias) converted where it is safe."""
    check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if u.dtype not in INPUT_DTYPES:
        raise _error("u", u, "u, delta, B, C, z in float32, float16 or bfloat16 (use backend torch for others)")
    for name, t in (("delta", delta), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.dtype != u.dtype:
            raise _error(name, t, f"u, delta, B, C, z in one dtype, here u's {str(u.dtype).removeprefix('torch.')}")
    for name, t in (("A", A), ("D", D), ("delta_bias", delta_bias)):
        if t is not None and not t.dtype.is_floating_point:
            raise _error(name, t, f"a real floating {name} (used as float32)")
    if A.shape[1] > MAX_STATE:
        raise _error("A", A, f"d_state N <= {MAX_STATE}")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias)):
        if t is not None and t.device != u.device:
            raise ValueError(f"selective_scan (mamba_ssm): {name} is on {t.device} but u is on {u.device}")
    A, D, delta_bias = (t.float() if t is not None else None for t in (A, D, delta_bias))
    u, delta, B, C, D, z, delta_bias = (
        _last_dim_unit_stride(t) if t is not None else None for t in (u, delta, B, C, D, z, delta_bias)
    )
    return u, delta, A, B, C, D, z, delta_bias


def _empty_or(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0) if t is None else t


@torch.library.custom_op("fsr::mamba_scan_fwd", mutates_args=())
def mamba_scan_fwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``selective_scan_cuda.fwd`` on checked inputs (B, C 4-D): (out, x, out_z), out_z empty without z."""
    out, x, *rest = _kernel["module"].fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out, x, rest[0] if z is not None else u.new_empty(0)


@mamba_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    batch, d, length = u.shape
    chunks = -(-length // KERNEL_CHUNK)
    x = u.new_empty(batch, d, chunks, 2 * A.shape[1], dtype=torch.float32)
    return u.new_empty(u.shape), x, z.new_empty(z.shape) if z is not None else u.new_empty(0)


@torch.library.custom_op("fsr::mamba_scan_bwd", mutates_args=())
def mamba_scan_bwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    dout: torch.Tensor,
    x: torch.Tensor,
    out: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """``selective_scan_cuda.bwd``: (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), empty for absent inputs."""
    du, ddelta, dA, dB, dC, dD, dbias, *rest = _kernel["module"].bwd(
        u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, delta_softplus, False
    )
    dz = rest[0] if z is not None else None
    return (
        du,
        ddelta,
        dA,
        dB,
        dC,
        _empty_or(dD if D is not None else None, u),
        _empty_or(dz, u),
        _empty_or(dbias if delta_bias is not None else None, u),
    )


@mamba_scan_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, dout, x, out, delta_softplus):
    like = [u, delta, A, B, C, D, z, delta_bias]
    return tuple(t.new_empty(t.shape) if t is not None else u.new_empty(0) for t in like)


def _setup_context(ctx, inputs, output) -> None:
    *tensors, delta_softplus = inputs
    out, x, _ = output
    ctx.has_z = tensors[6] is not None
    ctx.save_for_backward(*tensors, x, out if ctx.has_z else None)
    ctx.delta_softplus = delta_softplus
    ctx.mark_non_differentiable(x)


def _backward(ctx, dout, dx, dout_z):
    """The kernel's backward; it takes the gradient of the gated output when there is z, and ignores last_state's."""
    *tensors, x, out = ctx.saved_tensors
    grad = dout_z if ctx.has_z else dout
    grad = grad if grad.stride(-1) == 1 else grad.contiguous()
    grads = mamba_scan_bwd(*tensors, grad, x, out, ctx.delta_softplus)
    return (*(g if t is not None else None for g, t in zip(grads, tensors)), None)


mamba_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def mamba_ssm_backend(kernel: Any) -> Callable:
    """The backend function (selective_scan's signature) over mamba_ssm's ``selective_scan_cuda`` extension."""
    _kernel["module"] = kernel

    def run(
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
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        args = prepare_mamba_ssm_args(u, delta, A, B, C, D, z, delta_bias)
        if u.numel() == 0:  # an empty grid is a CUDA launch error; the reference returns the empty results
            return selective_scan_reference(*args, delta_softplus, return_last_state)
        u, delta, A, B, C, D, z, delta_bias = args
        if B.dim() == 3:
            B, C = B.unsqueeze(1), C.unsqueeze(1)
        out, x, out_z = mamba_scan_fwd(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
        y = out_z if z is not None else out
        return (y, x[:, :, -1, 1::2]) if return_last_state else y

    return run
