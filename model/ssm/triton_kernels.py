"""Triton kernels of the selective scan: one program per (batch, channel), time in tiles of T = S x R steps
(R threads, one warp at the models' sizes, each holding S consecutive steps), the states looped inside the
program.

Per tile the per-step work (delta + bias, softplus, delta * u, D * u, z gating) is done once per step for
all states. For each state n (a loop in the program) the recurrence h_t = exp(delta_t A_n) h_{t-1} +
delta_t u_t B_{n,t} is scanned as mamba_ssm does: each thread runs its S steps sequentially in registers,
one scan over the R threads' (decay, drive) aggregates gives the state entering each thread's steps, and
one multiply-add per step applies it. The forward holds 16 steps a thread (as mamba_ssm's kNItems) in P
16-byte parts ([P, Q, R] tensors, Q steps a part: each part scanned, then the parts' aggregates); it
stores the state entering every SAVE steps, the backward's tile (the last thread writes the next tile's
entry, one barrier per tile; the threads starting the other backward tiles inside it write theirs). The
backward ([S, R] tensors, one 16-byte load a thread) walks its tiles in reverse; per state it rebuilds h
over the tile from the saved state and runs the adjoint lambda_t = exp(delta_{t+1} A_n) lambda_{t+1} +
dout_t C_{n,t} backwards (sequential in each thread, one reverse scan over the threads), started from what
the next tile carries back (a two-slot scratch row per program); dB and dC are summed over a group's
channels with relaxed fp32 atomics (or, ``DETERMINISTIC``, stored per channel and summed by the caller).

``CONTIG``: the steps' addresses are visible as contiguous, so each thread loads its steps as 16-byte
vectors; otherwise a runtime stride ``one`` (1, never specialised) hides the contiguity and every step
loads as a scalar, which still keeps the S steps in one thread. ``EVEN``: L is a multiple of T, no step is
masked.

``CROSS`` (SS2D's fused cross-scan, ``cross_selective_scan``): u, dy are read from the (B, Di, H, W) map in
direction k's order and y, du added into one fp32 map (``_direction_program``, ``_at``, ``_put``); every other
tensor stays in direction order; ``RUNS`` (H a multiple of a thread's steps): a thread's positions are its first
step's and the direction's stride. Off, the kernels compile as without it.

The reverse scan over the threads (the adjoint) is a forward scan of the lane-flipped maps (``_flip``: ``tl.gather``,
triton 3.3+, one shuffle a value); triton's ``reverse=True`` (kept before 3.3) flips inputs and outputs with log2(R)
shuffles each.

Loaded by ``model.ssm.triton_scan`` (compiled or interpreted), never imported at package import time.
"""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
HAS_GATHER = tl.constexpr(hasattr(tl, "gather"))  # triton 3.3+


@triton.jit
def _combine(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2) as one affine map h -> a h + b."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_excl(a1, b1, e1, f1, a2, b2, e2, f2):
    """Segments as (whole map (a, b), map of all but the last element (e, f)): the scan's (inclusive,
    exclusive) pair in one pass."""
    return a1 * a2, a2 * b1 + b2, a1 * e2, e2 * b1 + f2


@triton.jit
def _log1p_exp(x):
    """log(1 + e^x) as max(x, 0) + log1p(t), t = e^-|x| in (0, 1], log1p(t) = t q(t) with q a degree-8
    polynomial (a fit of relative error on [0, 1]; no log, no division: about 15 SASS instructions a step,
    libdevice's log and a division about 45). Evaluated in fp32 with an exact exp: within 2.9e-7 relative
    (3.7 ulp) of softplus over [-40, 40]; x itself above 17, where t q(t) is below half an ulp of x."""
    t = tl.exp(-tl.abs(x))
    q = 0.00523251062259078 * t - 0.029504254460334778
    q = q * t + 0.07822387665510178
    q = q * t - 0.13663020730018616
    q = q * t + 0.1910587102174759
    q = q * t - 0.24842937290668488
    q = q * t + 0.3331908881664276
    q = q * t - 0.4999949336051941
    q = q * t + 0.9999999403953552
    return tl.maximum(x, 0.0) + t * q


@triton.jit
def _delta(delta_ptr, offs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta (+ bias) (softplus) in fp32 and its pre-softplus value; 0 where masked."""
    pre = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        pre = pre + bias
    dt = pre
    if SOFTPLUS:
        dt = _log1p_exp(pre)
    return tl.where(mask, dt, 0.0), pre


@triton.jit
def _row(x, j, k: tl.constexpr):
    """Step ``k`` of every thread of ``x`` [S, R] as an [R] vector (in-thread: compiles to a register pick)."""
    return tl.sum(tl.where(j == k, x, -0.0), axis=0)


@triton.jit
def _scan_back(decay, b, j, S: tl.constexpr):
    """Reverse in-thread scan of x_k = decay_{k+1} x_{k+1} + b_k, x_{S-1} = b_{S-1}: per step
    (prod_{k < m < S} decay_m, x_k), unrolled (triton's reverse scan lowers to warp shuffles even along an
    in-thread axis)."""
    acc_b = _row(b, j, S - 1)
    acc_a = tl.zeros_like(acc_b) + 1.0
    out_a = tl.where(j == S - 1, 1.0, tl.zeros_like(b))
    out_b = tl.where(j == S - 1, acc_b[None, :], 0.0)
    nxt = _row(decay, j, S - 1)
    for k in tl.static_range(S - 2, -1, -1):
        acc_b = nxt * acc_b + _row(b, j, k)
        acc_a = nxt * acc_a
        out_a = tl.where(j == k, acc_a[None, :], out_a)
        out_b = tl.where(j == k, acc_b[None, :], out_b)
        nxt = _row(decay, j, k)
    return out_a, out_b


if HAS_GATHER:  # defined only where tl.gather exists: triton 3.0-3.2's JIT resolves every tl.name a kernel reads

    @triton.jit
    def _flip(x):
        """x [R] in reverse thread order: one shuffle a value (triton's reverse scan flips its inputs and outputs
        with log2(R) shuffles each)."""
        R: tl.constexpr = x.shape[0]
        return tl.gather(x, tl.arange(0, R) * -1 + (R - 1), axis=0)


@triton.jit
def _enter(agg_a, agg_b, x0, REVERSE: tl.constexpr):
    """Per thread, from the threads' aggregate maps (x -> agg_a x + agg_b) in time order (REVERSE: from the
    last thread down): the value entering its steps and the value leaving them, ``x0`` entering the first.
    REVERSE with ``tl.gather`` (triton 3.3+): a forward scan of the flipped maps, flipped back."""
    one = tl.full(agg_a.shape, 1.0, tl.float32)
    zero = tl.zeros(agg_a.shape, tl.float32)
    if REVERSE and HAS_GATHER:
        ia, ib, ea, eb = tl.associative_scan((_flip(agg_a), _flip(agg_b), one, zero), axis=0, combine_fn=_combine_excl)
        enter, leave = _flip(eb + ea * x0), _flip(ib + ia * x0)
    else:
        ia, ib, ea, eb = tl.associative_scan((agg_a, agg_b, one, zero), axis=0, combine_fn=_combine_excl,
                                             reverse=REVERSE)  # fmt: skip
        enter, leave = eb + ea * x0, ib + ia * x0
    return enter, leave


@triton.jit
def _steps(S: tl.constexpr, R: tl.constexpr, one, CONTIG: tl.constexpr):
    """([S, 1] step index in a thread, [R] thread index, [S, R] step offsets in the tile)."""
    j = tl.arange(0, S)[:, None]
    r = tl.arange(0, R)
    offs = r[None, :] * S + j
    if not CONTIG:
        offs = offs * one
    return j, r, offs


@triton.jit
def _steps_in(tt, L, EVEN: tl.constexpr):
    """The mask of steps ``tt`` < L; EVEN (L a multiple of the tile): a constant true one, nothing masked (set
    explicitly: ``tensor | constexpr`` fails in the interpreters of triton 3.2-3.3)."""
    mask = tt < L
    if EVEN:
        mask = tl.full(tt.shape, True, tl.int1)
    return mask


@triton.jit
def _channel(bias_ptr, D_ptr, ch, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
    """The channel's delta_bias and D (0 where absent), fp32."""
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + ch)
    return bias, Dv


@triton.jit
def _parts(P: tl.constexpr, Q: tl.constexpr, R: tl.constexpr, one, CONTIG: tl.constexpr):
    """([P, 1] part index, [1, Q, 1] step index in a part, [R] thread index, [P, Q, R] step offsets in the
    tile): each thread's S = P x Q consecutive steps as P parts of one 16-byte load. Triton's coalescing caps a
    thread's vector at 16 bytes and spreads the rest of a contiguous axis over threads (8 fp32 steps as one
    [8] axis: two threads); it places threads along the axis it orders next, the last one on a tie, so the
    thread axis comes last (the steps stay in one thread with scalar loads too)."""
    p = tl.arange(0, P)[:, None]
    q = tl.arange(0, Q)[None, :, None]
    r = tl.arange(0, R)
    offs = r[None, None, :] * (P * Q) + p[:, :, None] * Q + q
    if not CONTIG:
        offs = offs * one
    return p, q, r, offs


@triton.jit
def _direction_program(pid, d, k0, nk, CROSS: tl.constexpr):
    """The program's row in the direction-ordered (b, 4 x Di) arrays; CROSS launches cover directions k0 ..
    k0 + nk - 1 of every (b, channel), so programs of a one-direction launch skip the other rows."""
    if CROSS:
        di = d // 4
        pid = pid + ((pid // (nk * di)) * (4 - nk) + k0) * di
    return pid


@triton.jit
def _at(ptr, row, tt, first, j, pid, d, L, H, W, CROSS: tl.constexpr, RUNS: tl.constexpr):
    """Pointers to steps ``tt`` of u (and y, dy, du): ``ptr + row + tt``; CROSS: the (b, c) map's (B, Di, H, W)
    positions in direction k's order (0 rows, 1 columns, 2 and 3 their reverses; SS2D's cross-scan). RUNS (H a
    multiple of a thread's steps, so they never wrap to the next column): from the position of each thread's
    ``first`` step and the direction's stride (+-1, +-W), ``j`` the step index in the thread; otherwise per step."""
    if CROSS:
        di = d // 4
        k = (pid % d) // di
        base = ptr + ((pid // d) * di + pid % di).to(tl.int64) * L
        if RUNS:
            t0 = tl.where(k >= 2, L - 1 - first, first)
            t0 = tl.where(k % 2 == 1, (t0 % H) * W + t0 // H, t0)
            stride = tl.where(k % 2 == 1, W, 1)
            ptrs = base + t0 + j * tl.where(k >= 2, -stride, stride)
        else:
            t = tl.where(k >= 2, L - 1 - tt, tt)
            ptrs = base + tl.where(k % 2 == 1, (t % H) * W + t // H, t)
    else:
        ptrs = ptr + row + tt
    return ptrs


@triton.jit
def _put(ptr, val, mask, k0, CROSS: tl.constexpr, ATOMIC: tl.constexpr):
    """Store ``val``; CROSS: add it to the fp32 merge, with relaxed atomics (ATOMIC) or after what the launches
    of directions < k0 stored (one program per position per launch: a fixed order, bitwise reproducible)."""
    if CROSS:
        if ATOMIC:
            tl.atomic_add(ptr, val, mask=mask, sem="relaxed")
        else:
            first = tl.full(mask.shape, k0, tl.int32) > 0  # not `mask & (k0 > 0)`: triton 3.9's interpreter fails
            prev = tl.load(ptr, mask=mask & first, other=0.0)
            tl.store(ptr, prev + val, mask=mask)
    else:
        tl.store(ptr, val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["one", "k0"])
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
    one,
    H,
    W,
    k0,
    nk,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    S: tl.constexpr,
    R: tl.constexpr,
    P: tl.constexpr,
    SAVE: tl.constexpr,
    CONTIG: tl.constexpr,
    EVEN: tl.constexpr,
    CROSS: tl.constexpr,
    ATOMIC: tl.constexpr,
    RUNS: tl.constexpr,
):
    """y (u's dtype), the fp32 state entering every SAVE steps (b*d, n_tiles, N: the backward's tiles; a tile
    here is K = T / SAVE of them) and the last state (b*d, N)."""
    T: tl.constexpr = S * R
    K: tl.constexpr = T // SAVE
    Q: tl.constexpr = S // P
    pid = _direction_program(tl.program_id(0), d, k0, nk, CROSS)
    ch = pid % d
    grp = (pid // d) * G + ch // ch_per_group
    row = pid.to(tl.int64) * L
    bc = grp.to(tl.int64) * N * L
    n = tl.arange(0, BLOCK_N)
    bias, Dv = _channel(bias_ptr, D_ptr, ch, HAS_BIAS, HAS_D)
    p, q, r, step = _parts(P, Q, R, one, CONTIG)
    jj = p[:, :, None] * Q + q  # a thread's step index
    state_row = pid.to(tl.int64) * n_tiles * N
    # the threads whose steps start a saved state's span (not the first: that state is the tile's entry)
    save_slot = r * S // SAVE
    save_mask = (r * S % SAVE == 0) & (r > 0)
    one_p = tl.full([P, R], 1.0, tl.float32)
    zero_p = tl.zeros([P, R], tl.float32)
    tl.store(states_ptr + state_row + n, tl.zeros([BLOCK_N], dtype=tl.float32), mask=n < N)
    tl.debug_barrier()
    for c in range(tl.cdiv(L, T)):
        tt = c * T + step
        tmask = _steps_in(tt, L, EVEN)
        first = c * T + r * S
        u = tl.load(_at(u_ptr, row, tt, first, jj, pid, d, L, H, W, CROSS, RUNS), mask=tmask, other=0.0).to(tl.float32)
        dt, _ = _delta(delta_ptr + row, tt, tmask, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = Dv * u
        # the last thread writes the state leaving the tile: the next tile's entry, or the last state
        out_ptr = states_ptr + state_row + (c + 1) * K * N
        if (c + 1) * T >= L:
            out_ptr = last_ptr + pid.to(tl.int64) * N
        mid_ptr = states_ptr + state_row + (c * K + save_slot) * N
        mid_mask = save_mask & (c * K + save_slot < n_tiles)
        for s in range(N):
            A_s = tl.load(A_ptr + ch * N + s) * LOG2E
            B_s = tl.load(B_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            C_s = tl.load(C_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            # in-thread: scan each part's Q steps, then the parts' aggregates (inclusive and exclusive)
            cum, h = tl.associative_scan((tl.exp2(dt * A_s), dtu * B_s), axis=1, combine_fn=_combine)
            part_a = tl.sum(tl.where(q == Q - 1, cum, -0.0), axis=1)
            part_b = tl.sum(tl.where(q == Q - 1, h, -0.0), axis=1)
            ia, ib, ea, eb = tl.associative_scan((part_a, part_b, one_p, zero_p), axis=0, combine_fn=_combine_excl)
            h_in = tl.load(states_ptr + state_row + c * K * N + s)
            enter, leave = _enter(_row(ia, p, P - 1), _row(ib, p, P - 1), h_in, False)
            part_in = eb + ea * enter[None, :]
            y += C_s * (h + cum * part_in[:, None, :])
            if K > 1:
                tl.store(mid_ptr + s, enter, mask=mid_mask)
            tl.store(out_ptr + s + 0 * r, leave, mask=r == R - 1)
        tl.debug_barrier()
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        _put(_at(y_ptr, row, tt, first, jj, pid, d, L, H, W, CROSS, RUNS), y, tmask, k0, CROSS, ATOMIC)


@triton.jit(do_not_specialize=["one", "k0"])
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
    carry_ptr,
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
    one,
    H,
    W,
    k0,
    nk,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    DETERMINISTIC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    S: tl.constexpr,
    R: tl.constexpr,
    CONTIG: tl.constexpr,
    EVEN: tl.constexpr,
    CROSS: tl.constexpr,
    ATOMIC: tl.constexpr,
    RUNS: tl.constexpr,
):
    """Gradients: du, ddelta, dz per element; dA (b*d, N), dD, dbias (b*d,) per program; dB, dC fp32, either
    (b, G, N, L) summed over a group's channels with atomic adds or, DETERMINISTIC, (b*d, N, L) per channel.
    ``carry_ptr`` (b*d, 2, N) fp32 scratch: the adjoint a tile hands to the one before it (two slots)."""
    T: tl.constexpr = S * R
    pid = _direction_program(tl.program_id(0), d, k0, nk, CROSS)
    ch = pid % d
    grp = (pid // d) * G + ch // ch_per_group
    row = pid.to(tl.int64) * L
    bc = grp.to(tl.int64) * N * L
    dbc = bc
    if DETERMINISTIC:
        dbc = pid.to(tl.int64) * N * L
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    bias, Dv = _channel(bias_ptr, D_ptr, ch, HAS_BIAS, HAS_D)
    j, r, step = _steps(S, R, one, CONTIG)
    carry_row = pid.to(tl.int64) * 2 * N
    if HAS_DLAST:
        dlast = tl.load(dlast_ptr + pid.to(tl.int64) * N + n, mask=nmask, other=0.0)
    else:
        dlast = tl.zeros([BLOCK_N], dtype=tl.float32)
    tl.store(carry_ptr + carry_row + (n_tiles % 2) * N + n, dlast, mask=nmask)
    tl.debug_barrier()
    dA_all = tl.zeros([BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([R], dtype=tl.float32)
    dbias_acc = tl.zeros([R], dtype=tl.float32)
    state_row = pid.to(tl.int64) * n_tiles * N
    for i in range(n_tiles):
        c = n_tiles - 1 - i
        tt = c * T + step
        first = c * T + r * S
        tmask = _steps_in(tt, L, EVEN)
        u = tl.load(_at(u_ptr, row, tt, first, j, pid, d, L, H, W, CROSS, RUNS), mask=tmask, other=0.0).to(tl.float32)
        dt, _pre = _delta(delta_ptr + row, tt, tmask, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        dout = tl.load(_at(dy_ptr, row, tt, first, j, pid, d, L, H, W, CROSS, RUNS), mask=tmask, other=0.0).to(
            tl.float32
        )
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
            dout = dout * zv * tl.sigmoid(zv)
        lam_b = tl.zeros([S, R], dtype=tl.float32)  # sum_n lambda B
        lam_ha = tl.zeros([S, R], dtype=tl.float32)  # sum_n lambda decay h_{t-1} A
        out = Dv * u
        carry_in = carry_ptr + carry_row + ((c + 1) % 2) * N
        carry_out = carry_ptr + carry_row + (c % 2) * N
        for s in range(N):
            A_s = tl.load(A_ptr + ch * N + s)
            B_s = tl.load(B_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            C_s = tl.load(C_ptr + bc + s * L + tt, mask=tmask, other=0.0).to(tl.float32)
            decay = tl.exp2(dt * (A_s * LOG2E))
            drive = dtu * B_s
            cum, h = tl.associative_scan((decay, drive), axis=0, combine_fn=_combine)
            thread_decay = _row(cum, j, S - 1)
            enter, _leave = _enter(thread_decay, _row(h, j, S - 1), tl.load(states_ptr + state_row + c * N + s), False)
            h = h + cum * enter[None, :]
            # lambda_k = decay_{k+1} lambda_{k+1} + dout_k C_k in a thread; what a thread hands back is
            # decay_0 lambda_0 (the tile's carry has the same form), so its aggregate decay is thread_decay.
            g = dout * C_s
            back, lam = _scan_back(decay, g, j, S)
            lam_in, lam_out = _enter(thread_decay, _row(decay * lam, j, 0), tl.load(carry_in + s), True)
            lam = lam + back * lam_in[None, :]
            tl.store(carry_out + s + 0 * r, lam_out, mask=r == 0)
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
            dA_all = tl.where(n == s, dA_all + tl.sum(tl.sum(lam_hprev * dt, axis=0), axis=0), dA_all)
        tl.debug_barrier()
        # u and delta again (cached): cheaper than holding them in registers across the state loop
        u = tl.load(_at(u_ptr, row, tt, first, j, pid, d, L, H, W, CROSS, RUNS), mask=tmask, other=0.0).to(tl.float32)
        pre = tl.load(delta_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32) + bias
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tmask, other=0.0).to(tl.float32)
            dy = tl.load(_at(dy_ptr, row, tt, first, j, pid, d, L, H, W, CROSS, RUNS), mask=tmask, other=0.0).to(
                tl.float32
            )
            sig = tl.sigmoid(zv)
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
        _put(_at(du_ptr, row, tt, first, j, pid, d, L, H, W, CROSS, RUNS), du, tmask, k0, CROSS, ATOMIC)
        tl.store(ddelta_ptr + row + tt, ddt.to(ddelta_ptr.dtype.element_ty), mask=tmask)
    tl.store(dA_ptr + pid.to(tl.int64) * N + n, dA_all, mask=nmask)
    if HAS_D:
        tl.store(dD_ptr + pid, tl.sum(dD_acc, axis=0))
    if HAS_BIAS:
        tl.store(dbias_ptr + pid, tl.sum(dbias_acc, axis=0))
