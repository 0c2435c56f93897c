"""The Mamba-1 selective scan behind one function with interchangeable backends.

``selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
backend)`` follows mamba_ssm's ``selective_scan_fn``. ``BACKEND_TABLE`` lists the backends in
``auto``'s order: ``mamba_ssm`` (its CUDA kernel), ``triton`` (the project's Triton kernels, CUDA
only), ``torch`` (a compiled C++ CPU kernel where it builds, else a chunked pure-PyTorch scan on any
device) and ``reference`` (time loop, the test oracle, never picked by ``auto``). Each backend is a
PyTorch operator (``torch.library``), so networks compile and export without graph breaks.

A backend is resolved once, for one device, by ``resolve_backend`` (imports, the CPU kernel's build
and logging happen there) and handed to the modules that scan by ``model.build.bind_scan``. A module
that scans declares ``scan_backend: Scan | None`` and passes it as ``backend=``; ``None`` (a module
used outside ``model.build``) resolves ``auto`` for the tensors' device once per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from model.ssm import torch_scan
from model.ssm.cross import K_DIRECTIONS, cross_merge, cross_scan
from model.ssm.reference import selective_scan_reference
from model.ssm.torch_scan import selective_scan_torch
from utils.registry import SCAN_BACKEND_REGISTRY

logger = logging.getLogger(__name__)

_flop_records: list[list[int]] = []


class Scan(NamedTuple):
    """A backend resolved for one device: its name and its scan function (``selective_scan``'s signature)."""

    name: str
    fn: Callable


@dataclass(frozen=True)
class Backend:
    """One row of ``BACKEND_TABLE``: ``load(device)`` gives the scan function, or None when it does not import."""

    name: str
    cuda_only: bool
    in_auto: bool
    load: Callable[[torch.device], Callable | None]
    missing: str
    deterministic: str = "always"  # bitwise-reproducible gradients: "always", "option" (deterministic=True), "never"
    cross: Callable[[], Callable | None] | None = None  # its fused ``cross_selective_scan``; None: composed


def _mamba_ssm_fn() -> Callable | None:
    """mamba_ssm's kernel (``selective_scan_cuda``) behind its contract checks (``mamba_adapter``), or None if the
    kernel itself does not import (mamba_ssm's main branch imports without it unless built with
    ``MAMBA_KEEP_CUDA_BUILD=TRUE``, and would fail only at the first scan)."""
    try:
        import selective_scan_cuda  # optional CUDA extension of mamba_ssm (requirements-cuda.txt)
    except Exception:  # ImportError, or a selective_scan_cuda built for another torch
        return None
    from model.ssm.mamba_adapter import mamba_ssm_backend  # imports model.ssm: only once the kernel is there

    return mamba_ssm_backend(selective_scan_cuda)


def _triton_cross_fn() -> Callable | None:
    """The triton backend's fused SS2D core (``cross_selective_scan``), if triton imports."""
    try:
        # optional: triton (CUDA wheels) and its kernels
        from model.ssm.triton_scan import cross_selective_scan_triton, triton_available
    except Exception:
        return None
    return cross_selective_scan_triton if triton_available() else None


def _triton_fn() -> Callable | None:
    try:
        # optional: triton (CUDA wheels) and its kernels
        from model.ssm.triton_scan import selective_scan_triton, triton_available
    except Exception:
        return None
    return selective_scan_triton if triton_available() else None


BACKEND_TABLE: tuple[Backend, ...] = (
    Backend(
        "mamba_ssm",
        True,
        True,
        lambda device: _mamba_ssm_fn(),
        "mamba_ssm does not import (see requirements-cuda.txt)",
        deterministic="never",  # its backward adds dB/dC over channels with atomics
    ),
    Backend(
        "triton",
        True,
        True,
        lambda device: _triton_fn(),
        "triton does not import (it ships with torch's CUDA wheels)",
        deterministic="option",
        cross=_triton_cross_fn,
    ),
    Backend("torch", False, True, lambda device: torch_scan.torch_backend(device), ""),
    Backend("reference", False, False, lambda device: selective_scan_reference, ""),
)
BACKENDS: tuple[str, ...] = ("auto", *(b.name for b in BACKEND_TABLE))
"""The ``ssm.backend`` choices."""
for _row in BACKEND_TABLE:  # the config schema (utils.schema) reads the names from the registry
    SCAN_BACKEND_REGISTRY.register(_row.name)(_row)


def resolve_backend(name: str, device: torch.device | str, deterministic: bool = False) -> Scan:
    """Map a backend name (``auto`` included) to the scan that runs on ``device``; done once per network.
    ``deterministic`` (``ssm.deterministic``): only backends whose gradients are bitwise reproducible, run so."""
    if name not in BACKENDS:
        raise ValueError(f"ssm.backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    for row in BACKEND_TABLE:
        if name not in (row.name, "auto") or (name == "auto" and not row.in_auto):
            continue
        if row.cuda_only and not cuda:
            if name == "auto":
                continue
            hint = "" if row.name == "mamba_ssm" else f", got {device.type} (use torch on CPU)"
            raise RuntimeError(f"ssm.backend={row.name} needs CUDA tensors{hint}")
        if deterministic and row.deterministic == "never":
            if name == "auto":
                continue
            raise RuntimeError(f"ssm.deterministic: {row.name} is not bitwise reproducible (use triton or torch)")
        fn = row.load(device)
        if fn is not None and deterministic and row.deterministic == "option":
            fn = functools.partial(fn, deterministic=True)
        if fn is not None and row.cross is not None and row.name not in _FUSED_CROSS:
            fused = row.cross()
            if fused is not None:
                _FUSED_CROSS[row.name] = fused
        if fn is not None:
            logger.info("selective scan backend: %s (ssm.backend %s, %s)", row.name, name, device.type)
            return Scan(row.name, fn)
        if name != "auto":
            raise RuntimeError(f"ssm.backend={row.name} but {row.missing}")
    raise AssertionError("the torch backend always resolves")


_unbound: dict[str, Scan] = {}
_FUSED_CROSS: dict[str, Callable] = {}  # backend name -> its fused cross_selective_scan, filled by resolve_backend


def _unbound_scan(device: torch.device) -> Scan:
    """``auto`` for a module used outside ``model.build`` (no ``scan_backend`` bound): resolved once per device type."""
    scan = _unbound.get(device.type)
    if scan is None:
        scan = _unbound[device.type] = resolve_backend("auto", device)
    return scan


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
    backend: Scan | str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan over u, delta, z: (batch, d, L); A: (d, N); B, C: (batch, [G,] N, L).

    ``backend``: a resolved ``Scan`` (what ``model.build`` binds), a name (resolved on each call: tests,
    benchmarks), or None (``auto`` for u's device, resolved once)."""
    check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if isinstance(backend, Scan):
        fn = backend.fn
    elif backend is None:
        fn = _unbound_scan(u.device).fn
    else:
        fn = resolve_backend(backend, u.device).fn
    if _flop_records:
        batch, d, length = u.shape
        flops = scan_flops(batch, d, length, A.shape[1], D is not None, z is not None)
        for record in _flop_records:
            record[0] += flops
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def fuses_cross(backend: Scan | None, device: torch.device) -> bool:
    """Whether ``cross_selective_scan`` runs a fused kernel for this bound backend (None: ``auto`` on ``device``)."""
    return (backend if backend is not None else _unbound_scan(device)).name in _FUSED_CROSS


def cross_selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: Scan | str | None = None,
    sequences: torch.Tensor | None = None,
) -> torch.Tensor:
    """SS2D's core: the selective scan of the map ``x`` (B, Di, H, W) in its 4 cross-scan orders, the outputs
    merged back on the map (B, Di, H, W). delta (B, 4 x Di, H*W), B, C (B, 4, N, H*W), A (4 x Di, N), D and
    delta_bias (4 x Di,) are per direction, in direction k's order. ``cross_scan`` + ``selective_scan`` +
    ``cross_merge`` on every backend but those with a fused kernel (triton: the map read in each order inside
    the kernel, the merge summed in place, in fp32), which take the bound scan's keywords (``deterministic``).
    ``sequences``: ``cross_scan(x)`` when the caller has made it (the composed path then uses it)."""
    if x.dim() != 4:
        raise ValueError(f"cross_selective_scan: x must be (batch, Di, H, W), got shape {tuple(x.shape)}")
    batch, di, height, width = x.shape
    if delta.shape != (batch, K_DIRECTIONS * di, height * width):
        want = (batch, K_DIRECTIONS * di, height * width)
        raise ValueError(f"cross_selective_scan: delta must be {want} for x {tuple(x.shape)}, got {tuple(delta.shape)}")
    if B.dim() != 4 or B.shape[1] != K_DIRECTIONS:
        raise ValueError(f"cross_selective_scan: B and C must be ({batch}, 4, N, L), got {tuple(B.shape)}")
    check_shapes(delta, delta, A, B, C, D, None, delta_bias)
    if isinstance(backend, Scan):
        scan = backend
    elif backend is None:
        scan = _unbound_scan(x.device)
    else:
        scan = resolve_backend(backend, x.device)
    fused = _FUSED_CROSS.get(scan.name)  # a plain lookup: decided when the backend was resolved
    if fused is None:
        xs = (cross_scan(x) if sequences is None else sequences).reshape(delta.shape)
        y = selective_scan(xs, delta, A, B, C, D, None, delta_bias, delta_softplus, backend=scan)
        return cross_merge(y.view(batch, K_DIRECTIONS, di, -1), height, width)
    if _flop_records:
        flops = scan_flops(batch, K_DIRECTIONS * di, height * width, A.shape[1], D is not None, False)
        for record in _flop_records:
            record[0] += flops
    keywords = scan.fn.keywords if isinstance(scan.fn, functools.partial) else {}
    return fused(x, delta, A, B, C, D, delta_bias, delta_softplus, **keywords)


__all__ = [
    "BACKENDS",
    "BACKEND_TABLE",
    "Backend",
    "Scan",
    "count_scan_flops",
    "cross_selective_scan",
    "fuses_cross",
    "resolve_backend",
    "scan_flops",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_torch",
]
