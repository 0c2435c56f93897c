"""The Mamba-1 selective scan behind one function with interchangeable backends.

``selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
backend)`` follows mamba_ssm's ``selective_scan_fn``. Backends: ``reference`` (time loop, the
test oracle), ``torch`` (a compiled C++ CPU kernel where it builds, else a
chunked pure-PyTorch scan on any device), ``mamba_ssm`` (its CUDA kernel,
imported lazily), ``triton`` (the project's Triton kernels, CUDA only, triton imported lazily) and
``auto`` (on CUDA mamba_ssm when it imports, else triton when it imports, else torch; torch elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch

from model.ssm.reference import selective_scan_reference
from model.ssm.torch_scan import selective_scan_torch

BACKENDS = ("auto", "mamba_ssm", "triton", "torch", "reference")
logger = logging.getLogger(__name__)

_default_backend = "auto"
_logged: set[str] = set()
_flop_records: list[list[int]] = []


def set_default_backend(name: str) -> None:
    """Set the backend used when ``selective_scan`` gets ``backend=None`` (config ``ssm.backend``)."""
    global _default_backend
    if name not in BACKENDS:
        raise ValueError(f"ssm.backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    _default_backend = name


def get_default_backend() -> str:
    return _default_backend


def _mamba_ssm_fn() -> Callable | None:
    """mamba_ssm's selective_scan_fn behind its contract checks (``mamba_adapter``), or None if it or its
    compiled ``selective_scan_cuda`` extension does not import (mamba_ssm's main branch imports without it
    unless built with ``MAMBA_KEEP_CUDA_BUILD=TRUE``, and would fail only at the first scan)."""
    try:
        import selective_scan_cuda  # noqa: F401  (the kernel itself, not only the Python package)
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a selective_scan_cuda built for another torch
        return None
    from model.ssm.mamba_adapter import mamba_ssm_backend

    return mamba_ssm_backend(selective_scan_fn)


def _triton_fn() -> Callable | None:
    try:
        from model.ssm.triton_scan import selective_scan_triton, triton_available
    except Exception:
        return None
    return selective_scan_triton if triton_available() else None


def resolve_backend(name: str, device: torch.device) -> tuple[str, Callable]:
    """Map a backend name (``auto`` included) to the function that runs on ``device``."""
    if name not in BACKENDS:
        raise ValueError(f"ssm.backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    cuda = device.type == "cuda"
    if name in ("auto", "mamba_ssm") and cuda:
        fn = _mamba_ssm_fn()
        if fn is not None:
            return "mamba_ssm", fn
        if name == "mamba_ssm":
            raise RuntimeError("ssm.backend=mamba_ssm but mamba_ssm does not import (see requirements-cuda.txt)")
    if name == "mamba_ssm":
        raise RuntimeError("ssm.backend=mamba_ssm needs CUDA tensors")
    if name in ("auto", "triton") and cuda:
        fn = _triton_fn()
        if fn is not None:
            return "triton", fn
        if name == "triton":
            raise RuntimeError("ssm.backend=triton but triton does not import (it ships with torch's CUDA wheels)")
    if name == "triton":
        raise RuntimeError(f"ssm.backend=triton needs CUDA tensors, got {device.type} (use torch on CPU)")
    if name == "reference":
        return "reference", selective_scan_reference
    return "torch", selective_scan_torch


def check_shapes(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    """Raise ValueError naming the argument whose shape does not fit u: (batch, d, L)."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, d, L), got shape {tuple(u.shape)}")
    batch, d, length = u.shape
    if length == 0:
        raise ValueError("selective_scan: the sequence length L (u.shape[2]) must be at least 1")
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must be {tuple(u.shape)} like u, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be (d={d}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() not in (3, 4) or t.shape[0] != batch or t.shape[-2:] != (n, length):
            raise ValueError(f"selective_scan: {name} must be ({batch}, [G,] {n}, {length}), got {tuple(t.shape)}")
    if B.shape != C.shape:
        raise ValueError(f"selective_scan: B and C must have the same shape, got {tuple(B.shape)}, {tuple(C.shape)}")
    if B.dim() == 4 and d % B.shape[1]:
        raise ValueError(f"selective_scan: d={d} must be a multiple of the B/C groups G={B.shape[1]}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f"selective_scan: {name} must be (d={d},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z must be {tuple(u.shape)} like u, got {tuple(z.shape)}")


def scan_flops(batch: int, d: int, length: int, d_state: int, has_d: bool, has_z: bool) -> int:
    """FLOPs of one selective scan: about 9 per (batch, channel, step, state) plus D and z terms."""
    flops = 9 * batch * d * length * d_state
    if has_d:
        flops += 2 * batch * d * length
    if has_z:
        flops += 5 * batch * d * length
    return flops


@contextlib.contextmanager
def count_scan_flops() -> Iterator[list[int]]:
    """Inside the block every scan adds its FLOPs to the yielded one-element list."""
    record = [0]
    _flop_records.append(record)
    try:
        yield record
    finally:
        _flop_records.remove(record)


def selective_scan(
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
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan over u, delta, z: (batch, d, L); A: (d, N); B, C: (batch, [G,] N, L)."""
    check_shapes(u, delta, A, B, C, D, z, delta_bias)
    name, fn = resolve_backend(backend or _default_backend, u.device)
    if name not in _logged:
        _logged.add(name)
        logger.info("selective scan backend: %s", name)
    if _flop_records:
        batch, d, length = u.shape
        flops = scan_flops(batch, d, length, A.shape[1], D is not None, z is not None)
        for record in _flop_records:
            record[0] += flops
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


__all__ = [
    "BACKENDS",
    "count_scan_flops",
    "get_default_backend",
    "resolve_backend",
    "scan_flops",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_torch",
    "set_default_backend",
]
