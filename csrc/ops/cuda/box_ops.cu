// CUDA kernels of box_iou, encode_boxes and decode_boxes. Same arithmetic as the CPU kernels
// (ops/box_math.h, compiled with --fmad=false), so the two devices agree bit for bit on IoU.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/coder_math.h"
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

// Grid-stride loop over output rows; each input repeats with its own row period.
template <typename scalar_t, bool Encode>
__global__ void __launch_bounds__(256) coder_kernel(
    const scalar_t* __restrict__ a, const scalar_t* __restrict__ priors, scalar_t* __restrict__ out,
    int64_t rows, int64_t a_rows, int64_t p_rows, at::opmath_type<scalar_t> v0,
    at::opmath_type<scalar_t> v1, at::opmath_type<scalar_t> v2, at::opmath_type<scalar_t> v3) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t v[4] = {v0, v1, v2, v3};
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ia = a_rows == rows ? r : r % a_rows;
    const int64_t ip = p_rows == rows ? r : r % p_rows;
    acc_t x[4], d[4], y[4];
    for (int q = 0; q < 4; ++q) {
      x[q] = static_cast<acc_t>(a[4 * ia + q]);
      d[q] = static_cast<acc_t>(priors[4 * ip + q]);
    }
    if constexpr (Encode) encode_one(x, d, v, y); else decode_one(x, d, v, y);
    for (int q = 0; q < 4; ++q) out[4 * r + q] = static_cast<scalar_t>(y[q]);
  }
}

template <bool Encode>
at::Tensor coder_cuda(const char* op, const char* a_name, const at::Tensor& a,
                      const at::Tensor& priors, at::ArrayRef<double> variances) {
  CoderPlan p = plan_coder(op, a_name, a, priors, variances);
  const dev::DeviceGuard guard(a.device());
  at::Tensor out = at::empty(p.out_sizes, a.options());
  if (p.rows == 0) return out;
  constexpr int threads = 256;
  const int64_t blocks = std::min<int64_t>((p.rows + threads - 1) / threads, 65536);
  const dev::Stream stream = dev::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "box_coder", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dev::launch<coder_kernel<scalar_t, Encode>>(static_cast<unsigned>(blocks), threads, 0, stream,
        p.a.data_ptr<scalar_t>(), p.priors.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), p.rows,
        p.a_rows, p.p_rows, acc_t(variances[0]), acc_t(variances[1]), acc_t(variances[2]),
        acc_t(variances[3]));
  });
  return out;
}

at::Tensor encode_boxes_cuda(const at::Tensor& gt, const at::Tensor& priors,
                             at::ArrayRef<double> variances) {
  return coder_cuda<true>("encode_boxes", "gt", gt, priors, variances);
}

at::Tensor decode_boxes_cuda(const at::Tensor& offsets, const at::Tensor& priors,
                             at::ArrayRef<double> variances) {
  return coder_cuda<false>("decode_boxes", "offsets", offsets, priors, variances);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, SSD_FAST_CUDA_KEY, m) {
  m.impl("box_iou", &box_iou_cuda);
  m.impl("encode_boxes", &encode_boxes_cuda);
  m.impl("decode_boxes", &decode_boxes_cuda);
}

}  // namespace ssd_fast
