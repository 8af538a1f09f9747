// CPU kernels of box_iou, encode_boxes and decode_boxes.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "ops/box_checks.h"
#include "ops/box_math.h"

namespace ssd_fast {
namespace {

// One output row of IoUs against boxes2 held as structure-of-arrays, so that the loop over j
// is a straight run of min/max/mul/div the compiler turns into SIMD. target_clones builds an
// AVX2 copy next to the baseline one and picks at load time.
template <typename T>
inline void iou_row(T a1, T b1, T a2, T b2, const T* __restrict x1, const T* __restrict y1,
                    const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
                    int64_t m, T* __restrict out) {
  const T area_a = box_area(a1, b1, a2, b2);
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    out[j] = box_iou_one(a1, b1, a2, b2, area_a, x1[j], y1[j], x2[j], y2[j], area[j]);
  }
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define SSD_FAST_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SSD_FAST_CLONES
#endif

#define SSD_FAST_IOU_ROW(T)                                                                    \
  SSD_FAST_CLONES void iou_row_##T(T a1, T b1, T a2, T b2, const T* x1, const T* y1,          \
                                   const T* x2, const T* y2, const T* area, int64_t m, T* out) { \
    iou_row<T>(a1, b1, a2, b2, x1, y1, x2, y2, area, m, out);                                  \
  }
SSD_FAST_IOU_ROW(float)
SSD_FAST_IOU_ROW(double)
#undef SSD_FAST_IOU_ROW

inline void iou_row_dispatch(float a1, float b1, float a2, float b2, const float* x1,
                             const float* y1, const float* x2, const float* y2,
                             const float* area, int64_t m, float* out) {
  iou_row_float(a1, b1, a2, b2, x1, y1, x2, y2, area, m, out);
}
inline void iou_row_dispatch(double a1, double b1, double a2, double b2, const double* x1,
                             const double* y1, const double* x2, const double* y2,
                             const double* area, int64_t m, double* out) {
  iou_row_double(a1, b1, a2, b2, x1, y1, x2, y2, area, m, out);
}

template <typename scalar_t>
void box_iou_kernel(const IouPlan& p, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = p.n, m = p.m;
  const int64_t batches2 = p.batched2 ? p.batch : 1;
  // boxes2 as structure of arrays in the compute type: x1 | y1 | x2 | y2 | area.
  std::vector<acc_t> soa(5 * batches2 * m);
  const scalar_t* b2 = p.boxes2.data_ptr<scalar_t>();
  const int64_t stride5 = batches2 * m;
  for (int64_t k = 0; k < batches2 * m; ++k) {
    acc_t c[4];
    for (int q = 0; q < 4; ++q) c[q] = static_cast<acc_t>(b2[4 * k + q]);
    for (int q = 0; q < 4; ++q) soa[q * stride5 + k] = c[q];
    soa[4 * stride5 + k] = box_area(c[0], c[1], c[2], c[3]);
  }
  const scalar_t* b1 = p.boxes1.data_ptr<scalar_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  const int64_t rows = p.batch * n;
  // About 32k IoUs per task: enough to amortise the thread hand-off.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(m, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::is_same_v<scalar_t, acc_t> ? 0 : m);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / n;
      const scalar_t* a = b1 + 4 * (p.batched1 ? r : r % n);
      const int64_t off = p.batched2 ? b * m : 0;
      acc_t* dst = std::is_same_v<scalar_t, acc_t> ? reinterpret_cast<acc_t*>(o + r * m) : buf.data();
      iou_row_dispatch(static_cast<acc_t>(a[0]), static_cast<acc_t>(a[1]),
                       static_cast<acc_t>(a[2]), static_cast<acc_t>(a[3]), soa.data() + off,
                       soa.data() + stride5 + off, soa.data() + 2 * stride5 + off,
                       soa.data() + 3 * stride5 + off, soa.data() + 4 * stride5 + off, m, dst);
      if constexpr (!std::is_same_v<scalar_t, acc_t>) {
        for (int64_t j = 0; j < m; ++j) o[r * m + j] = static_cast<scalar_t>(buf[j]);
      }
    }
  });
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  IouPlan p = plan_box_iou(boxes1, boxes2);
  at::Tensor out = at::empty(p.out_sizes, boxes1.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes1.scalar_type(), "box_iou_cpu",
                                  [&] { box_iou_kernel<scalar_t>(p, out); });
  return out;
}

// encode (Encode=true) or decode every output row; inputs repeat with their row periods.
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
      int64_t ia = begin % p.a_rows, ip = begin % p.p_rows;  // wrapped counters, no division
      for (int64_t r = begin; r < end; ++r) {
        acc_t x[4], d[4], y[4];
        for (int q = 0; q < 4; ++q) {
          x[q] = static_cast<acc_t>(ap[4 * ia + q]);
          d[q] = static_cast<acc_t>(pp[4 * ip + q]);
        }
        if constexpr (Encode) encode_one(x, d, v, y); else decode_one(x, d, v, y);
        for (int q = 0; q < 4; ++q) o[4 * r + q] = static_cast<scalar_t>(y[q]);
        if (++ia == p.a_rows) ia = 0;
        if (++ip == p.p_rows) ip = 0;
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
  m.impl("box_iou", &box_iou_cpu);
  m.impl("encode_boxes", &encode_boxes_cpu);
  m.impl("decode_boxes", &decode_boxes_cpu);
}

}  // namespace ssd_fast
