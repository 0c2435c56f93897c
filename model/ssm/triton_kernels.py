"""Triton kernels of the selective scan: one program per (batch, channel), time in chunks of CHUNK steps.

Inside a chunk the recurrence h_t = a_t h_{t-1} + b_t is one ``tl.associative_scan`` over (a, b) pairs;
the state is carried from chunk to chunk, so a program runs L / CHUNK dependent steps, not L. The forward
stores the state entering every chunk (fp32) so the backward can rebuild each chunk's states. The backward
walks the chunks in reverse and runs the adjoint recurrence lambda_t = a_{t+1} lambda_{t+1} + dy_t C_t
as a forward scan over the time-reversed chunk, starting from the gradient of the last state.

Loaded by ``model.ssm.triton_scan`` (compiled or interpreted), never imported at package import time.
"""

import triton
import triton.language as tl


@triton.jit
def _combine(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2) as one affine map h -> a h + b."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _delta(delta_ptr, offs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta (+ bias) (softplus, threshold 20) in fp32 and its pre-softplus value; 0 where masked."""
    pre = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        pre = pre + bias
    dt = pre
    if SOFTPLUS:
        e = tl.exp(tl.minimum(pre, 20.0))
        w = 1.0 + e
        # log1p(e) without log1p: exact where 1 + e rounds to 1, relative error ~1 ulp elsewhere.
        log1p = tl.where(w == 1.0, e, e * tl.log(w) / (w - 1.0))
        dt = tl.where(pre <= 20.0, log1p, pre)
    return tl.where(mask, dt, 0.0), pre


@triton.jit
def _program(pid, d, L, N, G, ch_per_group, A_ptr, D_ptr, bias_ptr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
             BLOCK_N: tl.constexpr):  # fmt: skip
    """This program's (batch, channel) row offset, its B/C group offset, the state lanes and A, D, bias."""
    ch = pid % d
    grp = (pid // d) * G + ch // ch_per_group
    row = pid.to(tl.int64) * L
    bc = grp.to(tl.int64) * N * L
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    A = tl.load(A_ptr + ch * N + n, mask=nmask, other=0.0)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + ch)
    return row, bc, n, nmask, A, bias, Dv


@triton.jit
def _chunk_states(u_ptr, delta_ptr, B_ptr, row, bc, tt, tmask, n, nmask, A, h0, bias, L, HAS_BIAS: tl.constexpr,
                  SOFTPLUS: tl.constexpr):  # fmt: skip
    """One chunk's states h_t (N, CHUNK) from the state h0 entering it, with the terms the backward reuses."""
    u = tl.load(u_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
    dt, pre = _delta(delta_ptr + row, tt, tmask, bias, HAS_BIAS, SOFTPLUS)
    mask2 = nmask[:, None] & tmask[None, :]
    bc_offs = bc + n[:, None] * L + tt[None, :]
    Bt = tl.load(B_ptr + bc_offs, mask=mask2, other=0.0).to(tl.float32)
    decay = tl.exp(dt[None, :] * A[:, None])
    drive = (dt * u)[None, :] * Bt
    cum_decay, h_local = tl.associative_scan((decay, drive), axis=1, combine_fn=_combine)
    return h_local + cum_decay * h0[:, None], u, dt, pre, mask2, bc_offs, Bt, decay, drive


@triton.jit
def scan_fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    y_ptr,
    states_ptr,
    last_ptr,
    d,
    L,
    N,
    n_chunks,
    ch_per_group,
    G,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """y (u's dtype) and the fp32 state entering every chunk, (b*d, n_chunks, N), plus the last state."""
    pid = tl.program_id(0)
    row, bc, n, nmask, A, bias, Dv = _program(
        pid, d, L, N, G, ch_per_group, A_ptr, D_ptr, bias_ptr, HAS_D, HAS_BIAS, BLOCK_N
    )
    t = tl.arange(0, CHUNK)
    h = tl.zeros([BLOCK_N], dtype=tl.float32)
    state_row = pid.to(tl.int64) * n_chunks * N
    for c in range(n_chunks):
        tt = c * CHUNK + t
        tmask = tt < L
        tl.store(states_ptr + state_row + c * N + n, h, mask=nmask)
        hs, u, _, _, mask2, bc_offs, _, _, _ = _chunk_states(
            u_ptr, delta_ptr, B_ptr, row, bc, tt, tmask, n, nmask, A, h, bias, L, HAS_BIAS, SOFTPLUS
        )
        Ct = tl.load(C_ptr + bc_offs, mask=mask2, other=0.0).to(tl.float32)
        y = tl.sum(Ct * hs, axis=0)
        if HAS_D:
            y = y + Dv * u
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(y_ptr + row + tt, y.to(y_ptr.dtype.element_ty), mask=tmask)
        h = tl.sum(tl.where(t[None, :] == CHUNK - 1, hs, 0.0), axis=1)
    tl.store(last_ptr + pid.to(tl.int64) * N + n, h, mask=nmask)


@triton.jit
def scan_bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    dy_ptr,
    states_ptr,
    dlast_ptr,
    du_ptr,
    ddelta_ptr,
    dz_ptr,
    dA_ptr,
    dB_ptr,
    dC_ptr,
    dD_ptr,
    dbias_ptr,
    d,
    L,
    N,
    n_chunks,
    ch_per_group,
    G,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Gradients: du, ddelta, dz per element; dA (b*d, N), dD, dbias (b*d,) per program; dB, dC (b, G, N, L)
    fp32 summed over a group's channels with atomic adds."""
    pid = tl.program_id(0)
    row, bc, n, nmask, A, bias, Dv = _program(
        pid, d, L, N, G, ch_per_group, A_ptr, D_ptr, bias_ptr, HAS_D, HAS_BIAS, BLOCK_N
    )
    t = tl.arange(0, CHUNK)
    if HAS_DLAST:
        adj = tl.load(dlast_ptr + pid.to(tl.int64) * N + n, mask=nmask, other=0.0)
    else:
        adj = tl.zeros([BLOCK_N], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    dD_acc = 0.0
    dbias_acc = 0.0
    state_row = pid.to(tl.int64) * n_chunks * N
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        tt = c * CHUNK + t
        tmask = tt < L
        h0 = tl.load(states_ptr + state_row + c * N + n, mask=nmask, other=0.0)
        hs, u, dt, pre, mask2, bc_offs, Bt, decay, drive = _chunk_states(
            u_ptr, delta_ptr, B_ptr, row, bc, tt, tmask, n, nmask, A, h0, bias, L, HAS_BIAS, SOFTPLUS
        )
        Ct = tl.load(C_ptr + bc_offs, mask=mask2, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zv)
            out = tl.sum(Ct * hs, axis=0)
            if HAS_D:
                out = out + Dv * u
            dz = dy * out * sig * (1.0 + zv * (1.0 - sig))
            tl.store(dz_ptr + row + tt, dz.to(dz_ptr.dtype.element_ty), mask=tmask)
            dout = dy * zv * sig
        else:
            dout = dy
        # The adjoint runs backwards in time: a forward scan over the chunk loaded time-reversed (column j is
        # step CHUNK-1-j), flipped back afterwards; no reverse=True scan, whose operand order triton has varied.
        tr = c * CHUNK + (CHUNK - 1 - t)
        rmask = tr < L
        # delta of the next step inside this chunk: the decay that carries lambda_{t+1} back to t.
        dt_next_r, _ = _delta(delta_ptr + row, tr + 1, (tr + 1 < L) & (t > 0), bias, HAS_BIAS, SOFTPLUS)
        dout_r = tl.load(dy_ptr + row + tr, mask=rmask, other=0.0).to(tl.float32)
        if HAS_Z:
            z_r = tl.load(z_ptr + row + tr, mask=rmask, other=0.0).to(tl.float32)
            dout_r = dout_r * z_r * tl.sigmoid(z_r)
        C_r = tl.load(C_ptr + bc + n[:, None] * L + tr[None, :], mask=nmask[:, None] & rmask[None, :], other=0.0)
        decay_next_r = tl.exp(dt_next_r[None, :] * A[:, None])
        cum_r, lam_r = tl.associative_scan(
            (decay_next_r, dout_r[None, :] * C_r.to(tl.float32)), axis=1, combine_fn=_combine
        )
        lam = tl.flip(lam_r + cum_r * adj[:, None], 1)
        adj = tl.sum(tl.where(t[None, :] == 0, decay * lam, 0.0), axis=1)
        tl.atomic_add(dC_ptr + bc_offs, dout[None, :] * hs, mask=mask2)
        tl.atomic_add(dB_ptr + bc_offs, lam * (dt * u)[None, :], mask=mask2)
        lam_b = tl.sum(lam * Bt, axis=0)
        # decay_t * h_{t-1} = h_t - drive_t: the dA term without dividing by a decay that may underflow.
        lam_hprev = lam * (hs - drive)
        ddt = u * lam_b + tl.sum(lam_hprev * A[:, None], axis=0)
        dA_acc += tl.sum(lam_hprev * dt[None, :], axis=1)
        du = dt * lam_b
        if HAS_D:
            du = du + dout * Dv
            dD_acc += tl.sum(dout * u, axis=0)
        if SOFTPLUS:
            ddt = ddt * tl.where(pre <= 20.0, tl.sigmoid(pre), 1.0)
        ddt = tl.where(tmask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=0)
        tl.store(du_ptr + row + tt, du.to(du_ptr.dtype.element_ty), mask=tmask)
        tl.store(ddelta_ptr + row + tt, ddt.to(ddelta_ptr.dtype.element_ty), mask=tmask)
    tl.store(dA_ptr + pid.to(tl.int64) * N + n, dA_acc, mask=nmask)
    if HAS_D:
        tl.store(dD_ptr + pid, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid, dbias_acc)
