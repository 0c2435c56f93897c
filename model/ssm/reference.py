"""The reference selective scan: a plain time-major loop, slow and obviously correct."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 copies with delta biased/softplussed and B, C expanded to (batch, d, N, L)."""
    batch, d, length = u.shape
    u, delta, A, B, C = u.float(), delta.float(), A.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    groups = B.shape[1]
    B = B.repeat_interleave(d // groups, dim=1)
    C = C.repeat_interleave(d // groups, dim=1)
    return u, delta, A, B, C


def selective_scan_reference(
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
    """h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t; y_t = <C_t, h_t> + D u_t; y *= silu(z)."""
    dtype_in = u.dtype
    u, delta, A, B, C = prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, d, length = u.shape
    decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (batch, d, N, L)
    drive = (delta * u).unsqueeze(2) * B  # (batch, d, N, L)
    h = u.new_zeros(batch, d, A.shape[1])
    ys = []
    for a_t, b_t, c_t in zip(decay.unbind(-1), drive.unbind(-1), C.unbind(-1)):
        h = a_t * h + b_t
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y
