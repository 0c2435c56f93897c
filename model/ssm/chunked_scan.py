"""Pure-PyTorch selective scan (any device) with a hand-written reverse-time backward.

The sequence is cut into segments of S steps (S a multiple of the chunk T, sized so that one
(batch, d, N, S) tensor stays near ``SEGMENT_ELEMENTS`` on the CPU, cache-sized, and near
``ACCELERATOR_SEGMENT_ELEMENTS`` on a GPU, where a segment of a single chunk would make the scan one
long run of tiny kernel launches at large batch), processed one after another with the
state carried between them. Inside a segment the linear recurrence h_t = a_t h_{t-1} + b_t runs
as a two-level chunked scan: T vectorised steps inside all chunks at once from a zero state, then
L/T steps carrying the state across chunks with the chunk's total decay, then each chunk's
incoming state added with exp(cumsum of log-decays). Only exponentials of non-positive numbers
appear. The forward keeps just the state entering every segment; the backward recomputes a
segment's states from it and runs the same scan backwards in time for dL/dh.

Internally tensors are time-major, (L, batch, G, d/G, N): one step of all chunks is a contiguous
block per chunk, and grouped B, C broadcast over d/G without copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CHUNK = 64
SEGMENT_ELEMENTS = 1 << 22
ACCELERATOR_SEGMENT_ELEMENTS = 1 << 26


def linear_scan(log_decay: torch.Tensor, drive: torch.Tensor, h0: torch.Tensor, chunk: int) -> torch.Tensor:
    """All h_t of h_t = exp(log_decay_t) h_{t-1} + drive_t along dim 0 (a multiple of chunk)."""
    length, *lead = drive.shape
    nc = length // chunk
    ld = log_decay.reshape(nc, chunk, *lead)
    dr = drive.reshape(nc, chunk, *lead)
    decay = torch.exp(ld)
    h = torch.empty_like(dr)
    h[:, 0] = dr[:, 0]
    for t in range(1, chunk):  # pass 1: every chunk from a zero state
        torch.addcmul(dr[:, t], decay[:, t], h[:, t - 1], out=h[:, t])
    cum = torch.cumsum(ld, dim=1)
    chunk_decay = torch.exp(cum[:, -1])
    carry_in = torch.empty_like(dr[:, 0])
    carry_in[0] = h0
    for c in range(1, nc):  # pass 2: the state entering each chunk
        torch.addcmul(h[c - 1, -1], chunk_decay[c - 1], carry_in[c - 1], out=carry_in[c])
    h.addcmul_(torch.exp_(cum), carry_in.unsqueeze(1))  # pass 3
    return h.reshape(length, *lead)


def _segment_length(elements_per_step: int, length: int, chunk: int, device: torch.device) -> int:
    budget = SEGMENT_ELEMENTS if device.type == "cpu" else ACCELERATOR_SEGMENT_ELEMENTS
    steps = max(chunk, budget // max(1, elements_per_step) // chunk * chunk)
    return min(steps, length)


class _Inputs:
    """fp32 inputs padded to a multiple of the chunk, time-major: (Lp, b, G, d/G) and (Lp, b, G, 1, N)."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int) -> None:
        batch, d, length = u.shape
        if B.dim() == 3:
            B, C = B.unsqueeze(1), C.unsqueeze(1)
        groups, n = B.shape[1], A.shape[1]
        self.shape, self.length = (batch, d, length), length
        self.padded = length + (-length) % chunk
        x = delta.float()
        if delta_bias is not None:
            x = x + delta_bias.float()[None, :, None]
        self.x = x if delta_softplus else None
        dt = F.softplus(x) if delta_softplus else x

        def time_major(t: torch.Tensor) -> torch.Tensor:  # (..., L) -> (Lp, ...), zero padded
            out = t.new_zeros(self.padded, *t.shape[:-1], dtype=torch.float32)
            out[:length] = t.float().movedim(-1, 0)
            return out

        per_group = d // groups
        self.u = time_major(u.reshape(batch, groups, per_group, length))
        self.dt = time_major(dt.reshape(batch, groups, per_group, length))
        self.z = time_major(z.reshape(batch, groups, per_group, length)) if z is not None else None
        self.B, self.C = time_major(B).unsqueeze(3), time_major(C).unsqueeze(3)
        self.A = A.float().reshape(groups, per_group, n)
        self.D = D.float().reshape(groups, per_group) if D is not None else None

    def segment(self, s0: int, s1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log-decays, drives (s1 - s0, b, G, d/G, N) and C of steps s0..s1."""
        dt = self.dt[s0:s1]
        log_decay = dt.unsqueeze(-1) * self.A
        drive = (dt * self.u[s0:s1]).unsqueeze(-1) * self.B[s0:s1]
        return log_decay, drive, self.C[s0:s1]

    def channels_last_time(self, t: torch.Tensor) -> torch.Tensor:
        """(Lp, b, G, d/G) -> (b, d, L)."""
        return t[: self.length].movedim(0, -1).reshape(self.shape)

    def groups_last_time(self, t: torch.Tensor) -> torch.Tensor:
        """(Lp, b, G, N) -> (b, G, N, L)."""
        return t[: self.length].movedim(0, -1)


class ChunkedSelectiveScan(torch.autograd.Function):
    """Segment-wise chunked scan; saves the inputs and one state per segment."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int):
        with torch.autocast(u.device.type, enabled=False):
            inp = _Inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)
            padded, batch, groups, per_group = inp.u.shape
            n = A.shape[1]
            seg = _segment_length(batch * groups * per_group * n, padded, chunk, u.device)
            y = torch.empty_like(inp.u)
            h_last = inp.u.new_zeros(batch, groups, per_group, n)
            entries = []
            for s0 in range(0, padded, seg):
                s1 = min(padded, s0 + seg)
                entries.append(h_last)
                log_decay, drive, Cs = inp.segment(s0, s1)
                h = linear_scan(log_decay, drive, h_last, chunk)
                y[s0:s1] = torch.linalg.vecdot(h, Cs)
                h_last = h[-1].clone()
            if inp.D is not None:
                y.addcmul_(inp.u, inp.D)
            if inp.z is not None:
                y.mul_(F.silu(inp.z))
        ctx.inp, ctx.seg, ctx.chunk, ctx.grouped = inp, seg, chunk, B.dim() == 4
        ctx.dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.save_for_backward(torch.stack(entries))
        ctx.set_materialize_grads(False)
        # Pad steps have delta = u = 0, so they leave the state unchanged: h_last is h_{L-1}.
        return inp.channels_last_time(y).to(u.dtype), h_last.reshape(batch, groups * per_group, n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlast):
        (entries,) = ctx.saved_tensors
        inp, seg, chunk = ctx.inp, ctx.seg, ctx.chunk
        with torch.autocast(inp.u.device.type, enabled=False):
            padded, batch, groups, per_group = inp.u.shape
            n = inp.A.shape[-1]
            gout = torch.zeros_like(inp.u)
            if dout is not None:
                gout[: inp.length] = dout.float().reshape(batch, groups, per_group, inp.length).movedim(-1, 0)
            du, ddt = torch.empty_like(inp.u), torch.empty_like(inp.u)
            dz = torch.empty_like(inp.u) if inp.z is not None else None
            dB, dC = inp.u.new_empty(padded, batch, groups, n), inp.u.new_empty(padded, batch, groups, n)
            dA = inp.A.new_zeros(groups, per_group, n)
            dD = inp.D.new_zeros(groups, per_group) if inp.D is not None else None
            if dlast is not None:
                carry = dlast.float().reshape(batch, groups, per_group, n)
            else:
                carry = torch.zeros_like(entries[0])
            next_log_decay = torch.zeros_like(carry)
            starts = list(range(0, padded, seg))
            for k in reversed(range(len(starts))):
                s0 = starts[k]
                s1 = min(padded, s0 + seg)
                log_decay, drive, Cs = inp.segment(s0, s1)
                h = linear_scan(log_decay, drive, entries[k], chunk)
                us, dts, Bs = inp.u[s0:s1], inp.dt[s0:s1], inp.B[s0:s1]
                dy = gout[s0:s1]
                if inp.z is not None:
                    y = torch.linalg.vecdot(h, Cs)
                    if inp.D is not None:
                        y.addcmul_(us, inp.D)
                    zs = inp.z[s0:s1]
                    sz = torch.sigmoid(zs)
                    dz[s0:s1] = dy * y * sz * (1 + zs * (1 - sz))
                    dy = dy * zs * sz
                # dL/dh_t = dy_t C_t + a_{t+1} dL/dh_{t+1}: the same scan, backwards in time.
                shifted = torch.cat([log_decay[1:], next_log_decay.unsqueeze(0)])
                g_drive = dy.unsqueeze(-1) * Cs
                g = linear_scan(shifted.flip(0), g_drive.flip(0), carry, chunk).flip(0)
                carry, next_log_decay = g[0].clone(), log_decay[0].clone()
                dC[s0:s1] = (dy.unsqueeze(-1) * h).sum(3)
                dB[s0:s1] = (g * (dts * us).unsqueeze(-1)).sum(3)
                gB = torch.linalg.vecdot(g, Bs)
                ga = g.mul_(h.sub_(drive))  # dL/dh_t * a_t h_{t-1}
                du[s0:s1] = dts * gB
                if inp.D is not None:
                    du[s0:s1].addcmul_(dy, inp.D)
                    dD += (dy * us).sum((0, 1))
                ddt[s0:s1] = torch.linalg.vecdot(ga, inp.A.expand_as(ga)).addcmul_(us, gB)
                dA += (ga * dts.unsqueeze(-1)).sum((0, 1))
            ddt = inp.channels_last_time(ddt)
            if inp.x is not None:
                ddt = ddt * torch.sigmoid(inp.x)  # softplus' = sigmoid, 1.0 in float32 past the threshold
            dB, dC = inp.groups_last_time(dB), inp.groups_last_time(dC)
            if not ctx.grouped:
                dB, dC = dB.squeeze(1), dC.squeeze(1)
        t_u, t_delta, t_A, t_B, t_C, t_D, t_z, t_bias = ctx.dtypes
        return (
            inp.channels_last_time(du).to(t_u),
            ddt.to(t_delta),
            dA.reshape(groups * per_group, n).to(t_A),
            dB.to(t_B),
            dC.to(t_C),
            dD.reshape(-1).to(t_D) if dD is not None else None,
            inp.channels_last_time(dz).to(t_z) if dz is not None else None,
            ddt.sum((0, 2)).to(t_bias) if t_bias is not None else None,
            None,
            None,
        )


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
    """Pure PyTorch, any device; same contract as ``selective_scan_reference``."""
    y, last = ChunkedSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)
    return (y, last) if return_last_state else y
