// CPU kernels of box_iou, encode_boxes and decode_boxes.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/cpu/iou_rows.h"

namespace ssd_fast {
namespace {

template <typename scalar_t>
void box_iou_kernel(const IouPlan& p, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = p.n, m = p.m;
  // boxes2 in the compute type as structure of arrays, so each output row is a SIMD loop.
  const cpu::SoaBoxes<acc_t> soa(p.boxes2.data_ptr<scalar_t>(), (p.batched2 ? p.batch : 1) * m);
  const cpu::SoaView<acc_t> b2 = soa.view();
  const scalar_t* b1 = p.boxes1.data_ptr<scalar_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  // About 32k IoUs per task: enough to amortise the thread hand-off.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(m, 1));
  at::parallel_for(0, p.batch * n, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::is_same_v<scalar_t, acc_t> ? 0 : m);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* a = b1 + 4 * (p.batched1 ? r : r % n);
      const acc_t box[4] = {static_cast<acc_t>(a[0]), static_cast<acc_t>(a[1]),
                            static_cast<acc_t>(a[2]), static_cast<acc_t>(a[3])};
      acc_t* dst = std::is_same_v<scalar_t, acc_t> ? reinterpret_cast<acc_t*>(o + r * m) : buf.data();
      cpu::iou_row(box, b2.offset(p.batched2 ? (r / n) * m : 0), m, dst);
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
