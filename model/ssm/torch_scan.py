"""The ``torch`` backend: the compiled CPU kernel where it builds, else a pure-PyTorch chunked scan."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from model.ssm.cpu_kernel import kernel_available, selective_scan_compiled
from model.ssm.reference import prepare_inputs

CHUNK = 64
logger = logging.getLogger(__name__)
_logged: set[str] = set()


def selective_scan_chunked(
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
    """Pure PyTorch, any device, autograd through a two-level chunked scan; only exp of non-positive numbers."""
    dtype_in = u.dtype
    u, delta, A, B, C = prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, d, length = u.shape
    n = A.shape[1]
    pad = (-length) % chunk
    if pad:
        u_p, delta_p = F.pad(u, (0, pad)), F.pad(delta, (0, pad))
        B_p, C_p = F.pad(B, (0, pad)), F.pad(C, (0, pad))
    else:
        u_p, delta_p, B_p, C_p = u, delta, B, C
    nc = (length + pad) // chunk
    delta_c = delta_p.view(batch, d, 1, nc, chunk)
    dA_cum = torch.cumsum(delta_c, dim=-1) * A[None, :, :, None, None]  # (b, d, N, nc, T)
    decay = torch.exp(delta_c * A[None, :, :, None, None])
    drive = (delta_p * u_p).view(batch, d, 1, nc, chunk) * B_p.view(batch, d, n, nc, chunk)
    C_c = C_p.view(batch, d, n, nc, chunk)
    h = u.new_zeros(batch, d, n, nc)
    states = []
    for a_t, b_t in zip(decay.unbind(-1), drive.unbind(-1)):
        h = a_t * h + b_t
        states.append(h)
    h_local = torch.stack(states, dim=-1)  # (b, d, N, nc, T): state from a zero start
    chunk_decay = torch.exp(dA_cum[..., -1])  # (b, d, N, nc)
    carry = u.new_zeros(batch, d, n)
    carries = []
    for c in range(nc):
        carries.append(carry)
        carry = chunk_decay[..., c] * carry + h_local[..., c, -1]
    h_in = torch.stack(carries, dim=-1)  # state entering each chunk
    h_full = h_local + torch.exp(dA_cum) * h_in.unsqueeze(-1)
    y = (h_full * C_c).sum(2).reshape(batch, d, nc * chunk)[..., :length]
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    return (y, carry) if return_last_state else y


def selective_scan_torch(
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
    """Same contract as ``selective_scan_reference``: compiled kernel on CPU when available."""
    compiled = u.device.type == "cpu" and kernel_available()
    impl = "torch (compiled CPU kernel)" if compiled else "torch (pure PyTorch)"
    if impl not in _logged:
        _logged.add(impl)
        logger.info("selective scan: %s", impl)
    fn = selective_scan_compiled if compiled else selective_scan_chunked
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
