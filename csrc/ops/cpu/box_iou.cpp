// CPU kernel of box_iou: each output row a SIMD loop over boxes2 held as structure of arrays
// (cpu::iou_row, the arithmetic the CUDA kernel uses).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ops/box_checks.h"
#include "ops/cpu/detail/iou_rows.h"

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

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("box_iou", &box_iou_cpu);
}

}  // namespace ssd_fast
