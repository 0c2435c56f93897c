"""The ``triton`` backend: the selective scan as two Triton kernels (forward, reverse-time backward).

``selective_scan_triton`` runs the compiled kernels on CUDA tensors and the Triton interpreter on CPU
tensors (tests only: milliseconds per program and chunk step). Triton is imported on first use, so
``import model`` works without it. Contract (mamba_ssm's): u, delta, z, B, C float32/float16/bfloat16;
A, D, delta_bias are used in float32; y has u's dtype; last_state and all accumulation are float32.
The gradient of last_state is propagated (mamba_ssm's kernel ignores it).
"""

from __future__ import annotations

import contextlib
import functools
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

CHUNK = 64  # time steps per associative scan on the GPU
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def triton_available() -> bool:
    """True when triton imports."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def kernel_module(interpret: bool) -> ModuleType:
    """The kernels module; ``interpret`` (CPU tensors) needs triton's interpreter, which triton only turns
    on when TRITON_INTERPRET=1 is in the environment before ``import triton``."""
    import triton

    if interpret and not triton.knobs.runtime.interpret:
        raise RuntimeError(
            "selective_scan (triton): CPU tensors run only under the Triton interpreter; set TRITON_INTERPRET=1 "
            "before triton is imported (tests only), or use CUDA tensors"
        )
    from model.ssm import triton_kernels

    return triton_kernels


def block_n(d_state: int) -> int:
    """The state tile: d_state rounded up to a power of two (at least 2)."""
    return max(2, 1 << (d_state - 1).bit_length())


def num_warps(d_state: int, chunk: int, backward: bool) -> int:
    """Warps per program: 8 for the backward on tiles of 1024+ elements, where 4 warps come close to 255
    registers per thread and spill on sm_90 (``python -m bench.triton_compile``), else 4."""
    return 8 if backward and block_n(d_state) * chunk >= 1024 else 4


def _check_dtypes(**tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.dtype not in _FLOATS:
            raise TypeError(f"selective_scan (triton): {name} must be float32, float16 or bfloat16, got {t.dtype}")


def _or(t: torch.Tensor | None, stand_in: torch.Tensor) -> torch.Tensor:
    return stand_in if t is None else t


def _on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on ``t``'s GPU (triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk):
        batch, d, length = u.shape
        n = A.shape[1]
        interpret = u.device.type != "cuda"
        kernels = kernel_module(interpret)
        grouped = B.dim() == 4
        groups = B.shape[1] if grouped else 1
        u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        z = z.contiguous() if z is not None else None
        A32 = A.float().contiguous()
        D32 = D.float().contiguous() if D is not None else None
        bias32 = delta_bias.float().contiguous() if delta_bias is not None else None
        n_chunks = -(-length // chunk)
        y = torch.empty_like(u)
        states = torch.empty(batch * d, n_chunks, n, device=u.device, dtype=torch.float32)
        last = torch.empty(batch, d, n, device=u.device, dtype=torch.float32)
        flags = dict(
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus),
            BLOCK_N=block_n(n),
            CHUNK=chunk,
        )
        # Absent optional inputs get a stand-in pointer (never read): one signature per dtype set.
        if batch * d:
            with _on_device(u):
                kernels.scan_fwd_kernel[(batch * d,)](
                    u, delta, A32, B, C, _or(D32, A32), _or(z, u), _or(bias32, A32), y, states, last,
                    d, length, n, n_chunks, d // groups, groups, **flags, num_warps=num_warps(n, chunk, False),
                )  # fmt: skip
        ctx.save_for_backward(u, delta, A32, B, C, D32, z, bias32, states)
        ctx.flags, ctx.grouped, ctx.chunk, ctx.interpret = flags, grouped, chunk, interpret
        ctx.input_dtypes = (
            A.dtype,
            D.dtype if D is not None else None,
            (delta_bias.dtype if delta_bias is not None else None),
        )
        ctx.set_materialize_grads(False)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dlast):
        u, delta, A32, B, C, D32, z, bias32, states = ctx.saved_tensors
        batch, d, length = u.shape
        n = A32.shape[1]
        groups = B.shape[1] if ctx.grouped else 1
        kernels = kernel_module(ctx.interpret)
        f32 = dict(device=u.device, dtype=torch.float32)
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        dA = torch.empty(batch * d, n, **f32)
        dB = torch.zeros(batch, groups, n, length, **f32)
        dC = torch.zeros(batch, groups, n, length, **f32)
        dD = torch.empty(batch * d, **f32) if D32 is not None else None
        dbias = torch.empty(batch * d, **f32) if bias32 is not None else None
        if batch * d:
            with _on_device(u):
                kernels.scan_bwd_kernel[(batch * d,)](
                    u, delta, A32, B, C, _or(D32, A32), _or(z, u), _or(bias32, A32), dy, states,
                    dA if dlast is None else dlast.contiguous(), du, ddelta, _or(dz, du), dA, dB, dC,
                    _or(dD, dA), _or(dbias, dA),
                    d, length, n, states.shape[1], d // groups, groups,
                    HAS_DLAST=dlast is not None, **ctx.flags, num_warps=num_warps(n, ctx.chunk, True),
                )  # fmt: skip
        a_dtype, d_dtype, bias_dtype = ctx.input_dtypes
        if not ctx.grouped:
            dB, dC = dB[:, 0], dC[:, 0]
        dA = dA.view(batch, d, n).sum(0).to(a_dtype)
        dD = dD.view(batch, d).sum(0).to(d_dtype) if dD is not None else None
        dbias = dbias.view(batch, d).sum(0).to(bias_dtype) if dbias is not None else None
        return du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dz, dbias, None, None, None


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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan in Triton (interpreted on CPU tensors); ``chunk``: time steps per parallel scan,
    a power of two."""
    _check_dtypes(u=u, delta=delta, B=B, C=C, z=z, A=A, D=D, delta_bias=delta_bias)
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"selective_scan (triton): chunk must be a power of two >= 2, got {chunk}")
    y, last = _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk)
    return (y, last) if return_last_state else y
