// CUDA kernel of box_iou. Same arithmetic as the CPU kernel (ops/box_math.h, compiled with
// --fmad=false), so the two devices agree bit for bit on IoU.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/cuda/device.cuh"

namespace ssd_fast {
namespace {

constexpr int kMaxGridY = 65535;
constexpr int kMaxGridZ = 65535;

// One thread per (b, i, j): threadIdx.x runs along j so a warp writes 128 contiguous bytes
// and reads 32 consecutive boxes2; the boxes1 row is a broadcast load. Memory bound: the
// output (N*M values) dominates the traffic, so no shared-memory tiling is needed.
template <typename scalar_t>
__global__ void __launch_bounds__(256) box_iou_kernel(const scalar_t* __restrict__ boxes1,
                               const scalar_t* __restrict__ boxes2, scalar_t* __restrict__ out,
                               int64_t batch, int64_t n, int64_t m, bool batched1,
                               bool batched2) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= m) return;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const scalar_t* c = boxes2 + 4 * ((batched2 ? b * m : 0) + j);
    const acc_t c1 = c[0], d1 = c[1], c2 = c[2], d2 = c[3];
    const acc_t area_b = box_area(c1, d1, c2, d2);
    for (int64_t i = blockIdx.y * int64_t(blockDim.y) + threadIdx.y; i < n;
         i += int64_t(gridDim.y) * blockDim.y) {
      const scalar_t* a = boxes1 + 4 * ((batched1 ? b * n : 0) + i);
      const acc_t a1 = a[0], b1 = a[1], a2 = a[2], b2 = a[3];
      const acc_t area_a = box_area(a1, b1, a2, b2);
      out[(b * n + i) * m + j] =
          static_cast<scalar_t>(box_iou_one(a1, b1, a2, b2, area_a, c1, d1, c2, d2, area_b));
    }
  }
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  IouPlan p = plan_box_iou(boxes1, boxes2);
  const dev::DeviceGuard guard(boxes1.device());
  at::Tensor out = at::empty(p.out_sizes, boxes1.options());
  if (out.numel() == 0) return out;
  const dim3 block(32, 8);
  const dim3 grid(static_cast<unsigned>((p.m + 31) / 32),
                  static_cast<unsigned>(std::min<int64_t>((p.n + 7) / 8, kMaxGridY)),
                  static_cast<unsigned>(std::min<int64_t>(p.batch, kMaxGridZ)));
  const dev::Stream stream = dev::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes1.scalar_type(), "box_iou_cuda",
                                  [&] {
                                    dev::launch<box_iou_kernel<scalar_t>>(grid, block, 0, stream,
                                        p.boxes1.data_ptr<scalar_t>(),
                                        p.boxes2.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                        p.batch, p.n, p.m, p.batched1, p.batched2);
                                  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, SSD_FAST_CUDA_KEY, m) {
  m.impl("box_iou", &box_iou_cuda);
}

}  // namespace ssd_fast
