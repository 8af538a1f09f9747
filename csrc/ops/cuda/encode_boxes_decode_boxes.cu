// CUDA kernels of encode_boxes and decode_boxes (one coder kernel, templated on the direction).
// Same arithmetic as the CPU kernels (ops/coder_math.h, compiled with --fmad=false).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/coder_math.h"
#include "ops/cuda/device.cuh"

namespace ssd_fast {
namespace {

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
  m.impl("encode_boxes", &encode_boxes_cuda);
  m.impl("decode_boxes", &decode_boxes_cuda);
}

}  // namespace ssd_fast
