// Selective scan on CPU: forward and reverse-time backward as the operators fsr_selective_scan::fwd/bwd.
//
// Shapes (float32, contiguous): u, delta, z, dout: (b, d, L); A: (d, N); B, C: (b, G, N, L) as the
// caller's projections give them; D, delta_bias: (d,). Channel c reads group c / (d / G). The
// kernel adds delta_bias and takes the softplus itself (and their gradients in the backward), and
// reads B, C one block of steps at a time into a time-major (step, state) buffer, so no
// prepared copy of any input is made or saved.
//
// One task per (batch, group, slice of the group's channels); a task walks blocks of kBlock steps
// and, inside a block, its channels, so the block's B, C (and in the backward its dB, dC) are read
// (written) once and stay in L2 across the channels, while each channel's u, delta, y still stream
// kBlock contiguous steps at a time. The state entering every chunk of kChunk steps is saved by
// the forward; the backward recomputes one chunk at a time from it, so memory stays at
// O(b d N L / kChunk). Only exp of non-positive
// numbers (delta >= 0, A <= 0 in practice) is taken and nothing is divided by a decay, so large
// delta cannot overflow.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int64_t kChunk = 64;
constexpr int64_t kBlock = 16 * kChunk;  // steps of B, C (and dB, dC) a task holds time-major: L2, not L1

struct Dims {
  int64_t batch, d, length, n, groups, chunks, per_group, slices, per_slice;
};

bool present(const std::optional<at::Tensor>& t) { return t && t->defined(); }

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "selective_scan_cpu: ",
              name, " must be a contiguous float32 CPU tensor");
}

// Channel slices per (batch, group): about two tasks per thread, never more slices than channels.
// Built with OpenMP, the kernel may link another OpenMP runtime than torch's: its team is sized to the
// threads torch is given (torch.set_num_threads), not to every core.
int64_t slices_for(int64_t tasks, int64_t per_group) {
#ifdef _OPENMP
  omp_set_num_threads(static_cast<int>(at::get_num_threads()));
#endif
  const int64_t want = (2 * at::get_num_threads() + std::max<int64_t>(tasks, 1) - 1) / std::max<int64_t>(tasks, 1);
  return std::max<int64_t>(1, std::min(per_group, want));
}

Dims check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                  const std::optional<at::Tensor>& bias) {
  check_float(u, "u");
  check_float(delta, "delta");
  check_float(A, "A");
  check_float(B, "B");
  check_float(C, "C");
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "selective_scan_cpu: u, delta must be (b, d, L)");
  Dims s{u.size(0), u.size(1), u.size(2), A.size(1), B.size(1), 0, 0, 0, 0};
  TORCH_CHECK(A.dim() == 2 && A.size(0) == s.d, "selective_scan_cpu: A must be (d, N)");
  TORCH_CHECK(B.dim() == 4 && B.size(0) == s.batch && B.size(2) == s.n && B.size(3) == s.length &&
                  C.sizes() == B.sizes(),
              "selective_scan_cpu: B, C must be (b, G, N, L)");
  TORCH_CHECK(s.groups > 0 && s.d % s.groups == 0, "selective_scan_cpu: d must be a multiple of G");
  if (present(D)) {
    check_float(*D, "D");
    TORCH_CHECK(D->numel() == s.d, "selective_scan_cpu: D must be (d,)");
  }
  if (present(bias)) {
    check_float(*bias, "delta_bias");
    TORCH_CHECK(bias->numel() == s.d, "selective_scan_cpu: delta_bias must be (d,)");
  }
  if (present(z)) {
    check_float(*z, "z");
    TORCH_CHECK(z->sizes() == u.sizes(), "selective_scan_cpu: z must be (b, d, L) like u");
  }
  s.chunks = (s.length + kChunk - 1) / kChunk;
  s.per_group = s.d / s.groups;
  s.slices = slices_for(s.batch * s.groups, s.per_group);
  s.per_slice = (s.per_group + s.slices - 1) / s.slices;
  return s;
}

// exp(x) for x <= 88 to about 2 ulp (Cephes' range reduction and polynomial), branch-free so that
// loops over it vectorise; 0 below -87.3 where float exp underflows anyway.
inline float fast_exp(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.3f);
  const float k = std::floor(xc * 1.44269504088896341f + 0.5f);
  const float r = (xc - k * 0.693359375f) + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
  return x < -87.3f ? 0.0f : p * scale;
}

// log(1 + e) for e in [0, 1] to about 2 ulp, branch-free: Cephes' logf polynomial on e itself
// (e <= sqrt 2 - 1) or on (1 + e) / 2 - 1 plus log 2, so 1 + e is never rounded.
inline float log1p_unit(float e) {
  const bool hi = e > 0.41421356f;
  const float f = hi ? (e - 1.0f) * 0.5f : e;
  const float k = hi ? 1.0f : 0.0f;
  const float zz = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * zz - k * 2.12194440e-4f - 0.5f * zz;
  return f + y + k * 0.693359375f;
}

// dt = softplus(delta + bias) (torch's: x past 20 is kept) and, when wanted, softplus' = sigmoid.
inline void chunk_dt(const float* delta, float bias, bool softplus, int64_t len, float* dt, float* slope) {
  if (!softplus) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dt[i] = delta[i] + bias;
    if (slope) std::fill(slope, slope + len, 1.0f);
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const float x = delta[i] + bias;
    const float e = fast_exp(-std::fabs(x));  // exp(-|x|) in (0, 1]
    dt[i] = x > 20.0f ? x : std::max(x, 0.0f) + log1p_unit(e);
    if (slope) slope[i] = (x >= 0.0f ? 1.0f : e) / (1.0f + e);
  }
}

// a[j] = exp(dt_i * A[k]) for the len steps of one chunk, j = i * n + k.
template <int NS>
inline void chunk_decays(const float* dt, const float* A, int64_t len, int64_t n_rt, float* a) {
  const int64_t n = NS > 0 ? NS : n_rt;
  for (int64_t i = 0; i < len; ++i) {
    const float dv = dt[i];
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) a[i * n + k] = dv * A[k];
  }
#pragma omp simd
  for (int64_t j = 0; j < len * n; ++j) a[j] = fast_exp(a[j]);
}

// The (N, L) rows of one group, steps t0 .. t0 + len, into a time-major (len, N) buffer.
inline void load_chunk(const float* src, int64_t n, int64_t L, int64_t t0, int64_t len, float* dst) {
  for (int64_t j = 0; j < n; ++j) {
    const float* row = src + j * L + t0;
    for (int64_t i = 0; i < len; ++i) dst[i * n + j] = row[i];
  }
}

inline void store_chunk(const float* src, int64_t n, int64_t L, int64_t t0, int64_t len, float* dst) {
  for (int64_t j = 0; j < n; ++j) {
    float* row = dst + j * L + t0;
    for (int64_t i = 0; i < len; ++i) row[i] = src[i * n + j];
  }
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

#if defined(__GNUC__)
// The N states of one step as one GCC/Clang vector (N = 4, 8): the state recurrences stay in
// registers and the sums over states are trees (omp simd keeps a vector in memory and adds its
// lanes in order). Other compilers, and other N, take the loops below.
template <int W>
struct Vec {
  typedef float type __attribute__((vector_size(4 * W)));
};
template <int W>
using vec = typename Vec<W>::type;

template <int W>
inline vec<W> vload(const float* p) {
  vec<W> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <int W>
inline void vstore(float* p, vec<W> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

template <int W>
inline float hsum(vec<W> v) {
  if constexpr (W == 2) {
    return v[0] + v[1];
  } else {
    vec<W / 2> lo, hi;
    __builtin_memcpy(&lo, &v, sizeof(lo));
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return hsum<W / 2>(lo + hi);
  }
}
constexpr int kMaxVector = 8;  // N = 16 (two AVX2 registers a vector) ran slower than the loops below
#endif

// One chunk of the recurrence h_t = a_t h_{t-1} + dt_t u_t B_t, y_t = <C_t, h_t> + D u_t; h holds
// the entry state and leaves with the last; hs_next (if given) receives every h_t, one row a step.
template <int NS>
inline void chunk_states(int64_t len, int64_t n_rt, const float* dt, const float* u, float Dv, const float* a,
                         const float* bc, const float* cc, float* h, float* hs_next, float* y) {
  const int64_t n = NS > 0 ? NS : n_rt;
#if defined(__GNUC__)
  if constexpr (NS > 0 && NS <= kMaxVector) {
    vec<NS> hv = vload<NS>(h);
    for (int64_t i = 0; i < len; ++i) {
      hv = vload<NS>(a + i * n) * hv + (dt[i] * u[i]) * vload<NS>(bc + i * n);
      if (hs_next) vstore<NS>(hs_next + i * n, hv);
      y[i] = hsum<NS>(vload<NS>(cc + i * n) * hv) + Dv * u[i];
    }
    vstore<NS>(h, hv);
    return;
  }
#endif
  for (int64_t i = 0; i < len; ++i) {
    const float du = dt[i] * u[i];
    const float* ai = a + i * n;
    const float* bt = bc + i * n;
    const float* ct = cc + i * n;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; ++j) {
      h[j] = ai[j] * h[j] + du * bt[j];
      acc += ct[j] * h[j];
    }
    if (hs_next) std::copy(h, h + n, hs_next + i * n);
    y[i] = acc + Dv * u[i];
  }
}

// One chunk of the reverse-time adjoint: g holds dL/dh after the chunk and leaves with it before;
// dA accumulates; dB, dC (the chunk's (len, N) buffers) get this channel's terms; du, ddt (dL/d dt)
// are written. hs holds the chunk's entry state and its len states (len + 1 rows).
template <int NS>
inline void chunk_adjoint(int64_t len, int64_t n_rt, const float* dys, const float* u, const float* dt, float Dv,
                          const float* A, const float* a, const float* bc, const float* cc, const float* hs,
                          float* g, float* dA, float* dbc, float* dcc, float* du, float* ddt) {
  const int64_t n = NS > 0 ? NS : n_rt;
#if defined(__GNUC__)
  if constexpr (NS > 0 && NS <= kMaxVector) {
    const vec<NS> Av = vload<NS>(A);
    vec<NS> gv = vload<NS>(g), dAv = vload<NS>(dA);
    for (int64_t i = len - 1; i >= 0; --i) {
      const float dy = dys[i], uv = u[i], dv = dt[i];
      const vec<NS> ai = vload<NS>(a + i * n);
      const vec<NS> gj = gv + dy * vload<NS>(cc + i * n);
      const vec<NS> ga = gj * ai * vload<NS>(hs + i * n);
      vstore<NS>(dcc + i * n, vload<NS>(dcc + i * n) + dy * vload<NS>(hs + (i + 1) * n));
      vstore<NS>(dbc + i * n, vload<NS>(dbc + i * n) + gj * (dv * uv));
      const float du_acc = hsum<NS>(gj * vload<NS>(bc + i * n));
      const float dd_acc = hsum<NS>(Av * ga);
      dAv += dv * ga;
      gv = gj * ai;
      du[i] = dy * Dv + dv * du_acc;
      ddt[i] = uv * du_acc + dd_acc;
    }
    vstore<NS>(g, gv);
    vstore<NS>(dA, dAv);
    return;
  }
#endif
  for (int64_t i = len - 1; i >= 0; --i) {
    const float dy = dys[i];
    const float uv = u[i], dv = dt[i];
    const float* ai = a + i * n;
    const float* bt = bc + i * n;
    const float* ct = cc + i * n;
    const float* hp = hs + i * n;
    const float* hn = hs + (i + 1) * n;
    float* dbt = dbc + i * n;
    float* dct = dcc + i * n;
    float du_acc = 0.0f, dd_acc = 0.0f;
#pragma omp simd reduction(+ : du_acc, dd_acc)
    for (int64_t j = 0; j < n; ++j) {
      const float gj = g[j] + dy * ct[j];
      const float ga = gj * ai[j] * hp[j];
      dct[j] += dy * hn[j];
      dbt[j] += gj * dv * uv;
      du_acc += gj * bt[j];
      dd_acc += A[j] * ga;
      dA[j] += dv * ga;
      g[j] = gj * ai[j];
    }
    du[i] = dy * Dv + dv * du_acc;
    ddt[i] = uv * du_acc + dd_acc;
  }
}

struct Inputs {
  const float *u, *delta, *A, *B, *C, *D, *z, *bias;
  bool softplus;
};

template <int NS>
void forward_tasks(const Dims& s, const Inputs& in, float* out, float* last, float* ckpt) {
  const int64_t n = NS > 0 ? NS : s.n;
  const int64_t L = s.length;
  at::parallel_for(0, s.batch * s.groups * s.slices, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kChunk * n), bc(kBlock * n), cc(kBlock * n), dt(kChunk), h(s.per_slice * n);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t sl = task % s.slices, bg = task / s.slices, b = bg / s.groups, g = bg % s.groups;
      const int64_t c_begin = g * s.per_group + sl * s.per_slice;
      const int64_t c_end = std::min((g + 1) * s.per_group, c_begin + s.per_slice);
      std::fill(h.begin(), h.end(), 0.0f);
      for (int64_t t_blk = 0; t_blk < L; t_blk += kBlock) {
        load_chunk(in.B + bg * n * L, n, L, t_blk, std::min(kBlock, L - t_blk), bc.data());
        load_chunk(in.C + bg * n * L, n, L, t_blk, std::min(kBlock, L - t_blk), cc.data());
        for (int64_t c = c_begin; c < c_end; ++c) {
          for (int64_t t0 = t_blk; t0 < std::min(t_blk + kBlock, L); t0 += kChunk) {
            const int64_t k = t0 / kChunk, len = std::min(kChunk, L - t0), off = (t0 - t_blk) * n;
            const int64_t row = b * s.d + c;
            const float* ur = in.u + row * L + t0;
            const float* Ar = in.A + c * n;
            const float Dv = in.D ? in.D[c] : 0.0f;
            float* hc = h.data() + (c - c_begin) * n;
            float* yr = out + row * L + t0;
            std::copy(hc, hc + n, ckpt + (row * s.chunks + k) * n);
            chunk_dt(in.delta + row * L + t0, in.bias ? in.bias[c] : 0.0f, in.softplus, len, dt.data(), nullptr);
            chunk_decays<NS>(dt.data(), Ar, len, n, a.data());
            chunk_states<NS>(len, n, dt.data(), ur, Dv, a.data(), bc.data() + off, cc.data() + off, hc, nullptr,
                             yr);
            if (in.z) {
              const float* zr = in.z + row * L + t0;
#pragma omp simd
              for (int64_t i = 0; i < len; ++i) yr[i] *= zr[i] * sigmoid(zr[i]);
            }
            if (k == s.chunks - 1) std::copy(hc, hc + n, last + row * n);
          }
        }
      }
    }
  });
}

struct Grads {
  float *du, *ddelta, *dA, *dD, *dz, *dbias, *dB, *dC;  // dA, dD, dbias per batch; dB, dC per slice
};

template <int NS>
void backward_tasks(const Dims& s, const Inputs& in, const float* dout, const float* dlast, const float* ckpt,
                    const Grads& gr) {
  const int64_t n = NS > 0 ? NS : s.n;
  const int64_t L = s.length, per = s.per_slice;
  at::parallel_for(0, s.batch * s.groups * s.slices, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kChunk * n), hs((kChunk + 1) * n), bc(kBlock * n), cc(kBlock * n), dbc(kBlock * n),
        dcc(kBlock * n), dt(kChunk), slope(kChunk), ys(kChunk), dys(kChunk), gv(per * n), dA_acc(per * n),
        dD_acc(per), dbias_acc(per), h(n);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t sl = task % s.slices, bg = task / s.slices, b = bg / s.groups, g = bg % s.groups;
      const int64_t c_begin = g * s.per_group + sl * s.per_slice;
      const int64_t c_end = std::min((g + 1) * s.per_group, c_begin + s.per_slice);
      const int64_t slab = (sl * s.batch * s.groups + bg) * n * L;
      for (int64_t c = c_begin; c < c_end; ++c) {
        float* gc = gv.data() + (c - c_begin) * n;
        if (dlast) {
          std::copy(dlast + (b * s.d + c) * n, dlast + (b * s.d + c + 1) * n, gc);
        } else {
          std::fill(gc, gc + n, 0.0f);
        }
      }
      std::fill(dA_acc.begin(), dA_acc.end(), 0.0f);
      std::fill(dD_acc.begin(), dD_acc.end(), 0.0f);
      std::fill(dbias_acc.begin(), dbias_acc.end(), 0.0f);
      for (int64_t t_blk = (L - 1) / kBlock * kBlock; t_blk >= 0; t_blk -= kBlock) {
        const int64_t blen = std::min(kBlock, L - t_blk);
        load_chunk(in.B + bg * n * L, n, L, t_blk, blen, bc.data());
        load_chunk(in.C + bg * n * L, n, L, t_blk, blen, cc.data());
        std::fill(dbc.begin(), dbc.end(), 0.0f);
        std::fill(dcc.begin(), dcc.end(), 0.0f);
        for (int64_t c = c_begin; c < c_end; ++c) {
          for (int64_t k = (t_blk + blen - 1) / kChunk; k >= t_blk / kChunk; --k) {
            const int64_t t0 = k * kChunk, len = std::min(kChunk, L - t0), off = (t0 - t_blk) * n;
            const int64_t row = b * s.d + c, ci = c - c_begin;
            const float* ur = in.u + row * L + t0;
            const float* zr = in.z ? in.z + row * L + t0 : nullptr;
            const float* go = dout ? dout + row * L + t0 : nullptr;
            const float* Ar = in.A + c * n;
            const float Dv = in.D ? in.D[c] : 0.0f;
            float* gc = gv.data() + ci * n;
            float* dAc = dA_acc.data() + ci * n;
            float* dur = gr.du + row * L + t0;
            float* ddr = gr.ddelta + row * L + t0;
            float* dzr = gr.dz ? gr.dz + row * L + t0 : nullptr;
            chunk_dt(in.delta + row * L + t0, in.bias ? in.bias[c] : 0.0f, in.softplus, len, dt.data(),
                     slope.data());
            // Recompute the chunk's states hs[i + 1] = h_{t0 + i} from the saved entry state hs[0].
            std::copy(ckpt + (row * s.chunks + k) * n, ckpt + (row * s.chunks + k + 1) * n, hs.begin());
            chunk_decays<NS>(dt.data(), Ar, len, n, a.data());
            std::copy(hs.begin(), hs.begin() + n, h.begin());
            chunk_states<NS>(len, n, dt.data(), ur, Dv, a.data(), bc.data() + off, cc.data() + off, h.data(),
                             hs.data() + n, ys.data());
            // dL/dy before the gate, and dz, for the whole chunk.
            float dD_sum = 0.0f;
#pragma omp simd reduction(+ : dD_sum)
            for (int64_t i = 0; i < len; ++i) {
              float dy = go ? go[i] : 0.0f;
              if (zr) {
                const float zv = zr[i], sz = sigmoid(zv);
                dzr[i] = dy * ys[i] * sz * (1.0f + zv * (1.0f - sz));
                dy *= zv * sz;
              }
              dys[i] = dy;
              dD_sum += dy * ur[i];
            }
            dD_acc[ci] += dD_sum;
            chunk_adjoint<NS>(len, n, dys.data(), ur, dt.data(), Dv, Ar, a.data(), bc.data() + off, cc.data() + off,
                              hs.data(), gc, dAc, dbc.data() + off, dcc.data() + off, dur, ddr);
            float db_sum = 0.0f;
#pragma omp simd reduction(+ : db_sum)
            for (int64_t i = 0; i < len; ++i) {
              ddr[i] *= slope[i];
              db_sum += ddr[i];
            }
            dbias_acc[ci] += db_sum;
          }
        }
        store_chunk(dbc.data(), n, L, t_blk, blen, gr.dB + slab);
        store_chunk(dcc.data(), n, L, t_blk, blen, gr.dC + slab);
      }
      for (int64_t c = c_begin; c < c_end; ++c) {
        const int64_t row = b * s.d + c, ci = c - c_begin;
        std::copy(dA_acc.data() + ci * n, dA_acc.data() + (ci + 1) * n, gr.dA + row * n);
        gr.dD[row] = dD_acc[ci];
        gr.dbias[row] = dbias_acc[ci];
      }
    }
  });
}

template <typename F>
void dispatch_n(int64_t n, F&& f) {
  switch (n) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

const float* ptr_or_null(const std::optional<at::Tensor>& t) { return present(t) ? t->data_ptr<float>() : nullptr; }

Inputs inputs_of(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                 const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                 const std::optional<at::Tensor>& bias, bool softplus) {
  return Inputs{u.data_ptr<float>(), delta.data_ptr<float>(), A.data_ptr<float>(), B.data_ptr<float>(),
                C.data_ptr<float>(), ptr_or_null(D),          ptr_or_null(z),      ptr_or_null(bias),
                softplus};
}

// Returns (y, last_state (b, d, N), chunk entry states (b, d, chunks, N)).
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_fwd(const at::Tensor& u, const at::Tensor& delta,
                                                        const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                                        const std::optional<at::Tensor>& D,
                                                        const std::optional<at::Tensor>& z,
                                                        const std::optional<at::Tensor>& delta_bias,
                                                        bool delta_softplus) {
  const Dims s = check_inputs(u, delta, A, B, C, D, z, delta_bias);
  auto out = at::empty_like(u);
  auto last = at::empty({s.batch, s.d, s.n}, u.options());
  auto ckpt = at::empty({s.batch, s.d, s.chunks, s.n}, u.options());
  const Inputs in = inputs_of(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  dispatch_n(s.n, [&](auto ns) {
    constexpr int NS = decltype(ns)::value;
    forward_tasks<NS>(s, in, out.data_ptr<float>(), last.data_ptr<float>(), ckpt.data_ptr<float>());
  });
  return std::make_tuple(out, last, ckpt);
}

// Returns the gradients in the inputs' shapes: (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); the
// last three are empty (0,) tensors when D, z, delta_bias are absent.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scan_bwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus, const std::optional<at::Tensor>& dout,
    const std::optional<at::Tensor>& dlast, const at::Tensor& ckpt) {
  const Dims s = check_inputs(u, delta, A, B, C, D, z, delta_bias);
  if (present(dout)) {
    check_float(*dout, "dout");
    TORCH_CHECK(dout->sizes() == u.sizes(), "selective_scan_cpu: dout must be (b, d, L) like u");
  }
  if (present(dlast)) {
    check_float(*dlast, "dlast");
    TORCH_CHECK(dlast->numel() == s.batch * s.d * s.n, "selective_scan_cpu: dlast must be (b, d, N)");
  }
  check_float(ckpt, "chunk states");
  TORCH_CHECK(ckpt.numel() == s.batch * s.d * s.chunks * s.n, "selective_scan_cpu: bad chunk states");
  auto du = at::empty_like(u);
  auto ddelta = at::empty_like(u);
  auto dz = present(z) ? at::empty_like(u) : at::empty({0}, u.options());
  auto dA_b = at::empty({s.batch, s.d, s.n}, u.options());
  auto dD_b = at::empty({s.batch, s.d}, u.options());
  auto dbias_b = at::empty({s.batch, s.d}, u.options());
  auto dB_s = at::empty({s.slices, s.batch, s.groups, s.n, s.length}, u.options());
  auto dC_s = at::empty_like(dB_s);
  const Inputs in = inputs_of(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  const Grads gr{du.data_ptr<float>(),   ddelta.data_ptr<float>(),  dA_b.data_ptr<float>(),
                 dD_b.data_ptr<float>(), present(z) ? dz.data_ptr<float>() : nullptr,
                 dbias_b.data_ptr<float>(), dB_s.data_ptr<float>(), dC_s.data_ptr<float>()};
  dispatch_n(s.n, [&](auto ns) {
    constexpr int NS = decltype(ns)::value;
    backward_tasks<NS>(s, in, ptr_or_null(dout), ptr_or_null(dlast), ckpt.data_ptr<float>(), gr);
  });
  auto dB = s.slices > 1 ? dB_s.sum(0) : dB_s.view(B.sizes());
  auto dC = s.slices > 1 ? dC_s.sum(0) : dC_s.view(C.sizes());
  auto dD = present(D) ? dD_b.sum(0) : at::empty({0}, u.options());
  auto dbias = present(delta_bias) ? dbias_b.sum(0) : at::empty({0}, u.options());
  return std::make_tuple(du, ddelta, dA_b.sum(0), dB, dC, dD, dz, dbias);
}

}  // namespace

TORCH_LIBRARY(fsr_selective_scan, m) {
  m.def(
      "fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
      "bool delta_softplus) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
      "bool delta_softplus, Tensor? dout, Tensor? dlast, Tensor ckpt) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fsr_selective_scan, CPU, m) {
  m.impl("fwd", &scan_fwd);
  m.impl("bwd", &scan_bwd);
}
