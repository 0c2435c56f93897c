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
the kernel would reject with a bare assert.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from model.ssm import check_shapes
from model.ssm.reference import selective_scan_reference

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_STATE = 256


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


def mamba_ssm_backend(selective_scan_fn: Callable) -> Callable:
    """The backend function (selective_scan's signature) over mamba_ssm's ``selective_scan_fn``."""

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
        return selective_scan_fn(*args, delta_softplus=delta_softplus, return_last_state=return_last_state)

    return run
