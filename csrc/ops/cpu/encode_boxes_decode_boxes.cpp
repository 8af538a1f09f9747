// CPU kernels of encode_boxes and decode_boxes: one row loop, templated on the direction.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/coder_math.h"
#include "ops/cpu/detail/clones.h"

namespace ssd_fast {
namespace {

// Rows in which neither input wraps: out[r] = encode or decode (a[r], p[r]). Branch free, so the
// row loop vectorises (8 or 16 rows at a time); cloned for AVX2 and AVX-512 (fma_ an
// instruction there, libm's fmaf in the baseline clone: the same bits).
template <bool Encode, typename T>
SSD_FAST_INLINE void code_rows(const T* __restrict a, const T* __restrict p, const T* v,
                               T* __restrict out, int64_t n) {
  const T var[4] = {v[0], v[1], v[2], v[3]};
  for (int64_t r = 0; r < n; ++r) {
    T x[4], d[4], y[4];
    for (int q = 0; q < 4; ++q) {
      x[q] = a[4 * r + q];
      d[q] = p[4 * r + q];
    }
    if constexpr (Encode) encode_one(x, d, var, y); else decode_one(x, d, var, y);
    for (int q = 0; q < 4; ++q) out[4 * r + q] = y[q];
  }
}

SSD_FAST_CLONES_AVX512 void encode_rows(const float* a, const float* p, const float* v, float* out,
                                        int64_t n) {
  code_rows<true>(a, p, v, out, n);
}
SSD_FAST_CLONES_AVX512 void encode_rows(const double* a, const double* p, const double* v,
                                        double* out, int64_t n) {
  code_rows<true>(a, p, v, out, n);
}
SSD_FAST_CLONES_AVX512 void decode_rows(const float* a, const float* p, const float* v, float* out,
                                        int64_t n) {
  code_rows<false>(a, p, v, out, n);
}
SSD_FAST_CLONES_AVX512 void decode_rows(const double* a, const double* p, const double* v,
                                        double* out, int64_t n) {
  code_rows<false>(a, p, v, out, n);
}

template <bool Encode, typename T>
void code(const T* a, const T* p, const T* v, T* out, int64_t n) {
  if constexpr (Encode) encode_rows(a, p, v, out, n); else decode_rows(a, p, v, out, n);
}

// Half types: through float buffers of kRows rows.
template <bool Encode, typename scalar_t>
void code_in_float(const scalar_t* a, const scalar_t* p, const float* v, scalar_t* out, int64_t n) {
  constexpr int64_t kRows = 256;
  float fa[4 * kRows], fp[4 * kRows], fo[4 * kRows];
  for (int64_t r0 = 0; r0 < n; r0 += kRows) {
    const int64_t k = std::min(kRows, n - r0);
    for (int64_t i = 0; i < 4 * k; ++i) {
      fa[i] = static_cast<float>(a[4 * r0 + i]);
      fp[i] = static_cast<float>(p[4 * r0 + i]);
    }
    code<Encode>(fa, fp, v, fo, k);
    for (int64_t i = 0; i < 4 * k; ++i) out[4 * r0 + i] = static_cast<scalar_t>(fo[i]);
  }
}

// encode (Encode=true) or decode every output row; inputs repeat with their row periods, so the
// rows go by runs in which neither wraps.
template <bool Encode>
at::Tensor coder_cpu(const char* op, const char* a_name, const at::Tensor& a,
                     const at::Tensor& priors, at::ArrayRef<double> variances) {
  CoderPlan p = plan_coder(op, a_name, a, priors, variances);
  at::Tensor out = at::empty(p.out_sizes, a.options());
  if (p.rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "box_coder", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t v[4] = {acc_t(variances[0]), acc_t(variances[1]), acc_t(variances[2]),
                        acc_t(variances[3])};
    const scalar_t* ap = p.a.data_ptr<scalar_t>();
    const scalar_t* pp = p.priors.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, p.rows, 4096, [&](int64_t begin, int64_t end) {
      int64_t ia = begin % p.a_rows, ip = begin % p.p_rows;
      for (int64_t r = begin; r < end;) {
        const int64_t n = std::min({end - r, p.a_rows - ia, p.p_rows - ip});
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          code<Encode>(ap + 4 * ia, pp + 4 * ip, v, o + 4 * r, n);
        } else {
          code_in_float<Encode>(ap + 4 * ia, pp + 4 * ip, v, o + 4 * r, n);
        }
        r += n;
        ia = ia + n == p.a_rows ? 0 : ia + n;
        ip = ip + n == p.p_rows ? 0 : ip + n;
      }
    });
  });
  return out;
}

at::Tensor encode_boxes_cpu(const at::Tensor& gt, const at::Tensor& priors,
                            at::ArrayRef<double> variances) {
  return coder_cpu<true>("encode_boxes", "gt", gt, priors, variances);
}

at::Tensor decode_boxes_cpu(const at::Tensor& offsets, const at::Tensor& priors,
                            at::ArrayRef<double> variances) {
  return coder_cpu<false>("decode_boxes", "offsets", offsets, priors, variances);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("encode_boxes", &encode_boxes_cpu);
  m.impl("decode_boxes", &decode_boxes_cpu);
}

}  // namespace ssd_fast
