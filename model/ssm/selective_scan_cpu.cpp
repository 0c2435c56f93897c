// Selective scan on CPU: forward and reverse-time backward, one task per (batch, channel) row.
//
// Shapes (float32, contiguous): u, delta, z, dout: (b, d, L); A: (d, N); B, C: (b, G, L, N)
// (time-major so the N states of one step are adjacent); D: (d,). delta is already biased and
// softplussed. Channel c reads group c / (d / G). The state entering every chunk of kChunk steps is
// saved by the forward; the backward recomputes one chunk at a time from it, so memory stays at
// O(b d N L / kChunk). Only exp of non-positive numbers (delta >= 0, A <= 0 in practice) is taken
// and nothing is divided by a decay, so large delta cannot overflow.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kChunk = 64;

struct Dims {
  int64_t batch, d, length, n, groups, chunks;
};

Dims check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z) {
  for (const at::Tensor* t : {&u, &delta, &A, &B, &C}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "selective_scan_cpu: expected contiguous float32 CPU tensors");
  }
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "selective_scan_cpu: u, delta must be (b, d, L)");
  Dims s{u.size(0), u.size(1), u.size(2), A.size(1), B.size(1), 0};
  TORCH_CHECK(A.dim() == 2 && A.size(0) == s.d, "selective_scan_cpu: A must be (d, N)");
  TORCH_CHECK(B.dim() == 4 && B.size(0) == s.batch && B.size(2) == s.length && B.size(3) == s.n &&
                  C.sizes() == B.sizes(),
              "selective_scan_cpu: B, C must be (b, G, L, N)");
  TORCH_CHECK(s.groups > 0 && s.d % s.groups == 0, "selective_scan_cpu: d must be a multiple of G");
  if (D) TORCH_CHECK(D->numel() == s.d && D->scalar_type() == at::kFloat && D->is_contiguous(), "bad D");
  if (z) TORCH_CHECK(z->sizes() == u.sizes() && z->scalar_type() == at::kFloat && z->is_contiguous(), "bad z");
  s.chunks = (s.length + kChunk - 1) / kChunk;
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

// a[j] = exp(delta_t * A[n]) for the len steps of one chunk, j = i * n + k.
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

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

template <int NS>
void forward_rows(const Dims& s, const float* u, const float* dt, const float* A, const float* B, const float* C,
                  const float* D, const float* z, float* out, float* last, float* ckpt) {
  const int64_t n = NS > 0 ? NS : s.n;
  const int64_t L = s.length, per_group = s.d / s.groups;
  at::parallel_for(0, s.batch * s.d, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kChunk * n), h(n);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / s.d, c = row % s.d, g = c / per_group;
      const float* ur = u + row * L;
      const float* dr = dt + row * L;
      const float* zr = z ? z + row * L : nullptr;
      const float* Br = B + (b * s.groups + g) * L * n;
      const float* Cr = C + (b * s.groups + g) * L * n;
      const float* Ar = A + c * n;
      const float Dv = D ? D[c] : 0.0f;
      float* yr = out + row * L;
      std::fill(h.begin(), h.end(), 0.0f);
      for (int64_t k = 0; k < s.chunks; ++k) {
        const int64_t t0 = k * kChunk, len = std::min(kChunk, L - t0);
        std::copy(h.begin(), h.end(), ckpt + (row * s.chunks + k) * n);
        chunk_decays<NS>(dr + t0, Ar, len, n, a.data());
        for (int64_t i = 0; i < len; ++i) {
          const int64_t t = t0 + i;
          const float du = dr[t] * ur[t];
          const float* ai = a.data() + i * n;
          const float* bt = Br + t * n;
          const float* ct = Cr + t * n;
          float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < n; ++j) {
            h[j] = ai[j] * h[j] + du * bt[j];
            acc += ct[j] * h[j];
          }
          yr[t] = acc + Dv * ur[t];
        }
        if (zr) {
#pragma omp simd
          for (int64_t t = t0; t < t0 + len; ++t) yr[t] *= zr[t] * sigmoid(zr[t]);
        }
      }
      std::copy(h.begin(), h.end(), last + row * n);
    }
  });
}

// One task per (batch, group, slice of the group's channels): the channels of a task run one after
// another and add their dB, dC into the task's own (L, N) slab, so no two threads write the same slab.
template <int NS>
void backward_rows(const Dims& s, int64_t slices, const float* u, const float* dt, const float* A, const float* B,
                   const float* C, const float* D, const float* z, const float* dout, const float* dlast,
                   const float* ckpt, float* du, float* ddt, float* dA, float* dD, float* dz, float* dB, float* dC) {
  const int64_t n = NS > 0 ? NS : s.n;
  const int64_t L = s.length, per_group = s.d / s.groups;
  const int64_t per_slice = (per_group + slices - 1) / slices;
  at::parallel_for(0, s.batch * s.groups * slices, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kChunk * n), hs((kChunk + 1) * n), ys(kChunk), dys(kChunk), gv(n), dA_acc(n);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t sl = task % slices, bg = task / slices, b = bg / s.groups, g = bg % s.groups;
      const float* Br = B + bg * L * n;
      const float* Cr = C + bg * L * n;
      float* dBr = dB + (sl * s.batch * s.groups + bg) * L * n;
      float* dCr = dC + (sl * s.batch * s.groups + bg) * L * n;
      const int64_t c_begin = g * per_group + sl * per_slice;
      const int64_t c_end = std::min(g * per_group + per_group, c_begin + per_slice);
      for (int64_t c = c_begin; c < c_end; ++c) {
        const int64_t row = b * s.d + c;
        const float* ur = u + row * L;
        const float* dr = dt + row * L;
        const float* zr = z ? z + row * L : nullptr;
        const float* gr = dout + row * L;
        const float* Ar = A + c * n;
        const float Dv = D ? D[c] : 0.0f;
        float* dur = du + row * L;
        float* ddr = ddt + row * L;
        float* dzr = dz ? dz + row * L : nullptr;
        if (dlast) {
          std::copy(dlast + row * n, dlast + (row + 1) * n, gv.begin());
        } else {
          std::fill(gv.begin(), gv.end(), 0.0f);
        }
        std::fill(dA_acc.begin(), dA_acc.end(), 0.0f);
        float dD_acc = 0.0f;
        for (int64_t k = s.chunks - 1; k >= 0; --k) {
          const int64_t t0 = k * kChunk, len = std::min(kChunk, L - t0);
          // Recompute the chunk's states hs[i + 1] = h_{t0 + i} from the saved entry state hs[0].
          std::copy(ckpt + (row * s.chunks + k) * n, ckpt + (row * s.chunks + k + 1) * n, hs.begin());
          chunk_decays<NS>(dr + t0, Ar, len, n, a.data());
          for (int64_t i = 0; i < len; ++i) {
            const int64_t t = t0 + i;
            const float dv = dr[t] * ur[t];
            const float* ai = a.data() + i * n;
            const float* bt = Br + t * n;
            const float* ct = Cr + t * n;
            const float* hp = hs.data() + i * n;
            float* hn = hs.data() + (i + 1) * n;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < n; ++j) {
              hn[j] = ai[j] * hp[j] + dv * bt[j];
              acc += ct[j] * hn[j];
            }
            ys[i] = acc + Dv * ur[t];
          }
          // dL/dy before the gate, and dz, for the whole chunk.
#pragma omp simd reduction(+ : dD_acc)
          for (int64_t i = 0; i < len; ++i) {
            const int64_t t = t0 + i;
            float dy = gr[t];
            if (zr) {
              const float zv = zr[t], sz = sigmoid(zv);
              dzr[t] = dy * ys[i] * sz * (1.0f + zv * (1.0f - sz));
              dy *= zv * sz;
            }
            dys[i] = dy;
            dD_acc += dy * ur[t];
          }
          // Reverse time: gv holds dL/dh_t once the step's own output term is added.
          for (int64_t i = len - 1; i >= 0; --i) {
            const int64_t t = t0 + i;
            const float dy = dys[i];
            const float uv = ur[t], dv = dr[t];
            const float* ai = a.data() + i * n;
            const float* bt = Br + t * n;
            const float* ct = Cr + t * n;
            const float* hp = hs.data() + i * n;
            const float* hn = hs.data() + (i + 1) * n;
            float* dbt = dBr + t * n;
            float* dct = dCr + t * n;
            float du_acc = 0.0f, dd_acc = 0.0f;
#pragma omp simd reduction(+ : du_acc, dd_acc)
            for (int64_t j = 0; j < n; ++j) {
              const float gj = gv[j] + dy * ct[j];
              const float ga = gj * ai[j] * hp[j];
              dct[j] += dy * hn[j];
              dbt[j] += gj * dv * uv;
              du_acc += gj * bt[j];
              dd_acc += Ar[j] * ga;
              dA_acc[j] += dv * ga;
              gv[j] = gj * ai[j];
            }
            dur[t] = dy * Dv + dv * du_acc;
            ddr[t] = uv * du_acc + dd_acc;
          }
        }
        std::copy(dA_acc.begin(), dA_acc.end(), dA + row * n);
        dD[row] = dD_acc;
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

const float* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr<float>() : nullptr;
}

// Returns (y, last_state (b, d, N), chunk entry states (b, d, chunks, N)).
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_fwd(const at::Tensor& u, const at::Tensor& delta,
                                                        const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                                        const std::optional<at::Tensor>& D,
                                                        const std::optional<at::Tensor>& z) {
  const Dims s = check_inputs(u, delta, A, B, C, D, z);
  auto out = at::empty_like(u);
  auto last = at::empty({s.batch, s.d, s.n}, u.options());
  auto ckpt = at::empty({s.batch, s.d, s.chunks, s.n}, u.options());
  const float *pu = u.data_ptr<float>(), *pd = delta.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>(), *pD = ptr_or_null(D), *pz = ptr_or_null(z);
  float *py = out.data_ptr<float>(), *plast = last.data_ptr<float>(), *pck = ckpt.data_ptr<float>();
  dispatch_n(s.n, [&](auto ns) {
    constexpr int NS = decltype(ns)::value;
    forward_rows<NS>(s, pu, pd, pA, pB, pC, pD, pz, py, plast, pck);
  });
  return std::make_tuple(out, last, ckpt);
}

// Returns (du, ddelta, dA per batch (b, d, N), dD per batch (b, d), dz, dB, dC per slice (S, b, G, L, N)).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scan_bwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z, const at::Tensor& dout,
    const std::optional<at::Tensor>& dlast, const at::Tensor& ckpt, int64_t slices) {
  const Dims s = check_inputs(u, delta, A, B, C, D, z);
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.scalar_type() == at::kFloat && dout.is_contiguous(), "bad dout");
  TORCH_CHECK(ckpt.numel() == s.batch * s.d * s.chunks * s.n && ckpt.is_contiguous(), "bad chunk states");
  if (dlast && dlast->defined())
    TORCH_CHECK(dlast->numel() == s.batch * s.d * s.n && dlast->is_contiguous(), "bad dlast");
  slices = std::max<int64_t>(1, std::min(slices, s.d / s.groups));
  auto du = at::empty_like(u);
  auto ddt = at::empty_like(u);
  auto dA = at::empty({s.batch, s.d, s.n}, u.options());
  auto dD = at::empty({s.batch, s.d}, u.options());
  auto dz = z ? at::empty_like(u) : at::empty({0}, u.options());
  auto dB = at::zeros({slices, s.batch, s.groups, s.length, s.n}, u.options());
  auto dC = at::zeros({slices, s.batch, s.groups, s.length, s.n}, u.options());
  const float *pu = u.data_ptr<float>(), *pd = delta.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>(), *pD = ptr_or_null(D), *pz = ptr_or_null(z);
  const float *pg = dout.data_ptr<float>(), *pgl = ptr_or_null(dlast), *pck = ckpt.data_ptr<float>();
  float *pdu = du.data_ptr<float>(), *pdd = ddt.data_ptr<float>(), *pdA = dA.data_ptr<float>();
  float *pdD = dD.data_ptr<float>(), *pdz = z ? dz.data_ptr<float>() : nullptr;
  float *pdB = dB.data_ptr<float>(), *pdC = dC.data_ptr<float>();
  dispatch_n(s.n, [&](auto ns) {
    constexpr int NS = decltype(ns)::value;
    backward_rows<NS>(s, slices, pu, pd, pA, pB, pC, pD, pz, pg, pgl, pck, pdu, pdd, pdA, pdD, pdz, pdB, pdC);
  });
  return std::make_tuple(du, ddt, dA, dD, dz, dB, dC);
}

}  // namespace

TORCH_LIBRARY(fsr_selective_scan, m) {
  m.def("fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor dout, Tensor? dlast, "
      "Tensor ckpt, int slices) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fsr_selective_scan, CPU, m) {
  m.impl("fwd", &scan_fwd);
  m.impl("bwd", &scan_bwd);
}
