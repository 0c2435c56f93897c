"""Triton kernels of the selective scan: one program per (batch, channel), time in tiles of T steps, the
states looped inside the program.

Per tile the per-step work (delta + bias, softplus, delta * u, D * u, z gating) is done once per step for
all states; then, for each state n (a loop in the program), the recurrence
h_t = exp(delta_t A_n) h_{t-1} + delta_t u_t B_{n,t} over the tile is one ``tl.associative_scan`` of
(decay, drive) pairs over a 1-D tile (each thread holds T / threads consecutive steps), started from the
state carried out of the previous tile. The forward stores the state entering every tile (fp32) so the
backward can rebuild each tile's states. The backward walks the tiles in reverse; per state it rebuilds
h over the tile and runs the adjoint lambda_t = exp(delta_{t+1} A_n) lambda_{t+1} + dout_t C_{n,t} as a
reverse scan, started from what the next tile carries back; dB and dC are summed over a group's
channels with relaxed fp32 atomics (or, ``DETERMINISTIC``, stored per channel and summed by the caller).

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
def _pick(vec, idx, s):
    """Element ``s`` of the small state vector ``vec`` (indices ``idx``)."""
    return tl.sum(tl.where(idx == s, vec, 0.0), axis=0)


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
    n_tiles,
    ch_per_group,
    G,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    T: tl.constexpr,
):
    """y (u's dtype), the fp32 state entering every tile (b*d, n_tiles, N) and the last state (b*d, N)."""
    pid = tl.program_id(0)
    ch = pid % d
    grp = (pid // d) * G + ch // ch_per_group
    row = pid.to(tl.int64) * L
    bc = grp.to(tl.int64) * N * L
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + ch)
    t = tl.arange(0, T)
    h_all = tl.zeros([BLOCK_N], dtype=tl.float32)
    state_row = pid.to(tl.int64) * n_tiles * N
    for c in range(n_tiles):
        tt = c * T + t
        tmask = tt < L
        tl.store(states_ptr + state_row + c * N + n, h_all, mask=nmask)
        u = tl.load(u_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
        dt, _ = _delta(delta_ptr + row, tt, tmask, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = Dv * u
        for s in range(N):
            A_s = tl.load(A_ptr + ch * N + s)
            B_s = tl.load(B_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            C_s = tl.load(C_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            cum, h = tl.associative_scan((tl.exp(dt * A_s), dtu * B_s), axis=0, combine_fn=_combine)
            h = h + cum * _pick(h_all, n, s)
            y += C_s * h
            h_all = tl.where(n == s, tl.sum(tl.where(t == T - 1, h, 0.0), axis=0), h_all)
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(y_ptr + row + tt, y.to(y_ptr.dtype.element_ty), mask=tmask)
    tl.store(last_ptr + pid.to(tl.int64) * N + n, h_all, mask=nmask)


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
    n_tiles,
    ch_per_group,
    G,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    DETERMINISTIC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    T: tl.constexpr,
):
    """Gradients: du, ddelta, dz per element; dA (b*d, N), dD, dbias (b*d,) per program; dB, dC fp32, either
    (b, G, N, L) summed over a group's channels with atomic adds or, DETERMINISTIC, (b*d, N, L) per channel."""
    pid = tl.program_id(0)
    ch = pid % d
    grp = (pid // d) * G + ch // ch_per_group
    row = pid.to(tl.int64) * L
    bc = grp.to(tl.int64) * N * L
    dbc = bc
    if DETERMINISTIC:
        dbc = pid.to(tl.int64) * N * L
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + ch)
    t = tl.arange(0, T)
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + pid.to(tl.int64) * N + n, mask=nmask, other=0.0)
    else:
        carry = tl.zeros([BLOCK_N], dtype=tl.float32)
    dA_all = tl.zeros([BLOCK_N], dtype=tl.float32)
    dD_acc = 0.0
    dbias_acc = 0.0
    state_row = pid.to(tl.int64) * n_tiles * N
    for i in range(n_tiles):
        c = n_tiles - 1 - i
        tt = c * T + t
        tmask = tt < L
        u = tl.load(u_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
        dt, pre = _delta(delta_ptr + row, tt, tmask, bias, HAS_BIAS, SOFTPLUS)
        # delta of the next step inside this tile: the decay that carries lambda_{t+1} back to t (1 past the
        # tile's end, where the carry from the next tile takes over, and past L).
        dt_next, _ = _delta(delta_ptr + row, tt + 1, (tt + 1 < L) & (t < T - 1), bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        dy = tl.load(dy_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zv)
            dout = dy * zv * sig
        else:
            dout = dy
        lam_b = tl.zeros([T], dtype=tl.float32)  # sum_n lambda B
        lam_ha = tl.zeros([T], dtype=tl.float32)  # sum_n lambda decay h_{t-1} A
        out = Dv * u
        for s in range(N):
            A_s = tl.load(A_ptr + ch * N + s)
            B_s = tl.load(B_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            C_s = tl.load(C_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            decay = tl.exp(dt * A_s)
            drive = dtu * B_s
            cum, h = tl.associative_scan((decay, drive), axis=0, combine_fn=_combine)
            h = h + cum * tl.load(states_ptr + state_row + c * N + s)
            cum_r, lam = tl.associative_scan((tl.exp(dt_next * A_s), dout * C_s), axis=0, combine_fn=_combine,
                                             reverse=True)  # fmt: skip
            lam = lam + cum_r * _pick(carry, n, s)
            carry = tl.where(n == s, tl.sum(tl.where(t == 0, decay * lam, 0.0), axis=0), carry)
            if HAS_Z:
                out += C_s * h
            if DETERMINISTIC:
                tl.store(dC_ptr + dbc + s * L + tt, dout * h, mask=tmask)
                tl.store(dB_ptr + dbc + s * L + tt, lam * dtu, mask=tmask)
            else:
                tl.atomic_add(dC_ptr + dbc + s * L + tt, dout * h, mask=tmask, sem="relaxed")
                tl.atomic_add(dB_ptr + dbc + s * L + tt, lam * dtu, mask=tmask, sem="relaxed")
            lam_b += lam * B_s
            # decay_t * h_{t-1} = h_t - drive_t: the dA term without dividing by a decay that may underflow.
            lam_hprev = lam * (h - drive)
            lam_ha += lam_hprev * A_s
            dA_all = tl.where(n == s, dA_all + tl.sum(lam_hprev * dt, axis=0), dA_all)
        if HAS_Z:
            dz = dy * out * sig * (1.0 + zv * (1.0 - sig))
            tl.store(dz_ptr + row + tt, dz.to(dz_ptr.dtype.element_ty), mask=tmask)
        ddt = u * lam_b + lam_ha
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
    tl.store(dA_ptr + pid.to(tl.int64) * N + n, dA_all, mask=nmask)
    if HAS_D:
        tl.store(dD_ptr + pid, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid, dbias_acc)
