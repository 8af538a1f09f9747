// CUDA kernels of multibox_loss and multibox_loss_backward. No host synchronisation: the
// number of positives is counted, and divided by, on the device.
//
// Forward, four launches: (1) one thread per prior: logsumexp with the CPU kernel's arithmetic
// (max, exp_nonpos summed in class order, log_det), the background cross-entropy into bg_ce
// [B, P] and the cross-entropy of the prior's own label into ce [B, P]; (2) hard negative
// mining on bg_ce (launch_mining, the hard_negative_mining radix select); (3) one block per
// image: its positives' smooth L1 and cross-entropy, its mined negatives' cross-entropy and its
// number of positives; (4) one block: the sums over the images, divided by max(num_pos, 1).
// Sums are in double, in an order fixed by the launch shapes: deterministic.
// Backward, four launches: count the positives; one thread per masked prior: max and sum of
// exp into [B, P] temporaries; one thread per logit and one per box offset write the gradients.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>

#include "ops/cuda/detail/block_reduce.cuh"
#include "ops/cuda/device.cuh"
#include "ops/cuda/detail/mining.cuh"
#include "ops/float_math.h"
#include "ops/loss_checks.h"
#include "ops/loss_math.h"

namespace ssd_fast {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) {  // grid-stride loops: enough blocks to fill any GPU
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65536));
}

// max over the row and sum of exp_nonpos(l_c - max), in class order (the CPU tile's arithmetic).
template <typename T>
__device__ __forceinline__ void exp_sum(const T* __restrict__ l, int64_t c_n, T& m, T& sum) {
  m = l[0];
  for (int64_t c = 1; c < c_n; ++c) m = max_(m, l[c]);
  sum = T(0);
  for (int64_t c = 0; c < c_n; ++c) sum += exp_nonpos(l[c] - m);
}

// (1) Per prior: bg_ce = -log softmax[0], ce = -log softmax[label] (0 unless label > 0; NaN for
// a label >= C: no device assertion, which would end the CUDA context, and no host
// synchronisation to look for one; MultiBoxLoss checks its labels).
template <typename T>
__global__ void __launch_bounds__(kThreads) prior_ce_kernel(
    const T* __restrict__ conf, const int64_t* __restrict__ labels, int64_t n_prior, int64_t c_n,
    T* __restrict__ bg_ce, T* __restrict__ ce) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n_prior;
       p += int64_t(gridDim.x) * blockDim.x) {
    const T* l = conf + p * c_n;
    T m, sum;
    exp_sum(l, c_n, m, sum);
    const T log_sum = log_det(sum);
    bg_ce[p] = cross_entropy(m, l[0], log_sum);
    const int64_t label = labels[p];
    ce[p] = label <= 0 ? T(0)
            : label < c_n ? cross_entropy(m, l[label], log_sum)
                          : std::numeric_limits<T>::quiet_NaN();
  }
}

// (3) One block per image: sums[3 b + 0] = smooth L1 over its positives, sums[3 b + 1] = cross-
// entropy over its mask, count[b] = its positives.
template <typename T>
__global__ void __launch_bounds__(kThreads)
image_sums_kernel(const T* __restrict__ loc, const T* __restrict__ loc_t,
                  const int64_t* __restrict__ labels, const bool* __restrict__ mask,
                  const T* __restrict__ bg_ce, const T* __restrict__ ce, int64_t P,
                  double* __restrict__ sums, int64_t* __restrict__ count) {
  SSD_SHARED(double[cuda::kMaxWarps], red);
  SSD_SHARED(double, total);
  SSD_SHARED(int64_t[cuda::kMaxWarps], ired);
  SSD_SHARED(int64_t, itotal);
  const int64_t b = blockIdx.x;
  double loc_sum = 0, conf_sum = 0;
  int64_t pos = 0;
  for (int64_t p = b * P + threadIdx.x; p < (b + 1) * P; p += blockDim.x) {
    const int64_t label = labels[p];
    if (label > 0) {
      ++pos;
      conf_sum += ce[p];
      for (int q = 0; q < 4; ++q) loc_sum += smooth_l1(loc[4 * p + q] - loc_t[4 * p + q]);
    } else if (label == 0 && mask[p]) {
      conf_sum += bg_ce[p];
    }
  }
  loc_sum = cuda::block_sum(loc_sum, red, &total);
  conf_sum = cuda::block_sum(conf_sum, red, &total);
  pos = cuda::block_sum(pos, ired, &itotal);
  if (threadIdx.x == 0) {
    sums[3 * b] = loc_sum;
    sums[3 * b + 1] = conf_sum;
    count[b] = pos;
  }
}

// (4) One block: the batch's sums over the B images, divided by max(num_pos, 1).
template <typename T>
__global__ void __launch_bounds__(kThreads)
batch_loss_kernel(const double* __restrict__ sums, const int64_t* __restrict__ count, int64_t B,
                  T* __restrict__ loc_loss, T* __restrict__ conf_loss) {
  SSD_SHARED(double[cuda::kMaxWarps], red);
  SSD_SHARED(double, total);
  SSD_SHARED(int64_t[cuda::kMaxWarps], ired);
  SSD_SHARED(int64_t, itotal);
  double loc_sum = 0, conf_sum = 0;
  int64_t pos = 0;
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    loc_sum += sums[3 * b];
    conf_sum += sums[3 * b + 1];
    pos += count[b];
  }
  loc_sum = cuda::block_sum(loc_sum, red, &total);
  conf_sum = cuda::block_sum(conf_sum, red, &total);
  pos = cuda::block_sum(pos, ired, &itotal);
  if (threadIdx.x == 0) {
    const double n = static_cast<double>(pos > 0 ? pos : 1);
    *loc_loss = static_cast<T>(loc_sum / n);
    *conf_loss = static_cast<T>(conf_sum / n);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> multibox_loss_cuda(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& loc_targets,
    const at::Tensor& labels, double neg_pos_ratio) {
  check_multibox_args(loc, conf_logits, loc_targets, labels, neg_pos_ratio);
  const dev::DeviceGuard guard(conf_logits.device());
  const int64_t B = conf_logits.size(0), P = conf_logits.size(1), C = conf_logits.size(2);
  at::Tensor mask = at::empty({B, P}, conf_logits.options().dtype(at::kBool));
  if (mask.numel() == 0) {
    return {at::zeros({}, conf_logits.options()), at::zeros({}, conf_logits.options()), mask};
  }
  TORCH_CHECK(B <= 2147483647, "multibox_loss: too many images: ", B);
  const at::Tensor x = loc.contiguous(), cl = conf_logits.contiguous(), xt = loc_targets.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  at::Tensor bg_ce = at::empty({B, P}, cl.options());
  at::Tensor ce = at::empty({B, P}, cl.options());
  at::Tensor sums = at::empty({B, 3}, cl.options().dtype(at::kDouble));
  at::Tensor count = at::empty({B}, cl.options().dtype(at::kLong));
  at::Tensor loc_loss = at::empty({}, cl.options()), conf_loss = at::empty({}, cl.options());
  const dev::Stream stream = dev::current_stream();
  AT_DISPATCH_FLOATING_TYPES(cl.scalar_type(), "multibox_loss_cuda", [&] {
    dev::launch<prior_ce_kernel<scalar_t>>(grid_for(B * P), kThreads, 0, stream,
        cl.data_ptr<scalar_t>(), lab.data_ptr<int64_t>(), B * P, C, bg_ce.data_ptr<scalar_t>(),
        ce.data_ptr<scalar_t>());
    launch_mining(bg_ce, lab, std::nullopt, neg_pos_ratio, 0.0, mask);
    dev::launch<image_sums_kernel<scalar_t>>(static_cast<unsigned>(B), kThreads, 0, stream,
        x.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), lab.data_ptr<int64_t>(),
        mask.data_ptr<bool>(), bg_ce.data_ptr<scalar_t>(), ce.data_ptr<scalar_t>(), P,
        sums.data_ptr<double>(), count.data_ptr<int64_t>());
    dev::launch<batch_loss_kernel<scalar_t>>(1, kThreads, 0, stream, sums.data_ptr<double>(),
        count.data_ptr<int64_t>(), B, loc_loss.data_ptr<scalar_t>(),
        conf_loss.data_ptr<scalar_t>());
  });
  return {loc_loss, conf_loss, mask};
}

// Backward: the number of positives of the whole batch, one block.
__global__ void __launch_bounds__(kThreads)
count_positives_kernel(const int64_t* __restrict__ labels, int64_t n_prior,
                       int64_t* __restrict__ num_pos) {
  SSD_SHARED(int64_t[cuda::kMaxWarps], red);
  SSD_SHARED(int64_t, total);
  int64_t pos = 0;
  for (int64_t p = threadIdx.x; p < n_prior; p += blockDim.x) pos += labels[p] > 0;
  pos = cuda::block_sum(pos, red, &total);
  if (threadIdx.x == 0) *num_pos = pos;
}

// Backward: per masked prior, the max and the sum of exp of its logits (unmasked: untouched).
template <typename T>
__global__ void __launch_bounds__(kThreads) masked_exp_sum_kernel(
    const T* __restrict__ conf, const bool* __restrict__ mask, int64_t n_prior, int64_t c_n,
    T* __restrict__ row_max, T* __restrict__ row_sum) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n_prior;
       p += int64_t(gridDim.x) * blockDim.x) {
    if (!mask[p]) continue;
    T m, sum;
    exp_sum(conf + p * c_n, c_n, m, sum);
    row_max[p] = m;
    row_sum[p] = sum;
  }
}

// The output gradient divided by max(num_pos, 1), rounded as the CPU kernel rounds it.
template <typename T>
__device__ __forceinline__ T scaled(const T* grad, const int64_t* num_pos) {
  const int64_t n = *num_pos;
  return static_cast<T>(static_cast<double>(*grad) / static_cast<double>(n > 0 ? n : 1));
}

// grad_conf[p, c] = g * (softmax[p, c] - (c == label[p])) on masked priors, else 0.
template <typename T>
__global__ void __launch_bounds__(kThreads) grad_conf_kernel(const T* __restrict__ grad_conf_loss,
                                 const int64_t* __restrict__ num_pos, const T* __restrict__ conf,
                                 const int64_t* __restrict__ labels, const bool* __restrict__ mask,
                                 const T* __restrict__ row_max, const T* __restrict__ row_sum,
                                 int64_t n_prior, int64_t c_n, T* __restrict__ grad_conf) {
  const T g = scaled(grad_conf_loss, num_pos);
  const int64_t total = n_prior * c_n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i / c_n, c = i % c_n;
    grad_conf[i] = mask[p] ? (exp_nonpos(conf[i] - row_max[p]) / row_sum[p] - T(c == labels[p])) * g
                           : T(0);
  }
}

// grad_loc[p, q] = g * clamp(loc - loc_t, -1, 1) on positives, else 0.
template <typename T>
__global__ void __launch_bounds__(kThreads) grad_loc_kernel(const T* __restrict__ grad_loc_loss,
                                const int64_t* __restrict__ num_pos, const T* __restrict__ loc,
                                const T* __restrict__ loc_t, const int64_t* __restrict__ labels,
                                int64_t n_prior, T* __restrict__ grad_loc) {
  const T g = scaled(grad_loc_loss, num_pos);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < 4 * n_prior;
       i += int64_t(gridDim.x) * blockDim.x) {
    grad_loc[i] = labels[i / 4] > 0 ? smooth_l1_grad(loc[i] - loc_t[i]) * g : T(0);
  }
}

std::tuple<at::Tensor, at::Tensor> multibox_loss_backward_cuda(
    const at::Tensor& grad_loc_loss, const at::Tensor& grad_conf_loss, const at::Tensor& loc,
    const at::Tensor& conf_logits, const at::Tensor& loc_targets, const at::Tensor& labels,
    const at::Tensor& mask) {
  check_multibox_backward_args(grad_loc_loss, grad_conf_loss, loc, conf_logits, loc_targets,
                               labels, mask);
  const dev::DeviceGuard guard(conf_logits.device());
  at::Tensor grad_loc = at::empty(loc.sizes(), loc.options());
  at::Tensor grad_conf = at::empty(conf_logits.sizes(), conf_logits.options());
  if (mask.numel() == 0) return {grad_loc, grad_conf};
  const at::Tensor x = loc.contiguous(), cl = conf_logits.contiguous(), xt = loc_targets.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous(), mk = mask.contiguous();
  const at::Tensor g_loc = grad_loc_loss.contiguous(), g_conf = grad_conf_loss.contiguous();
  const int64_t n_prior = mask.numel(), C = cl.size(2);
  at::Tensor num_pos = at::empty({}, lab.options());
  at::Tensor row_max = at::empty(mask.sizes(), cl.options());
  at::Tensor row_sum = at::empty(mask.sizes(), cl.options());
  const dev::Stream stream = dev::current_stream();
  dev::launch<count_positives_kernel>(1, kThreads, 0, stream, lab.data_ptr<int64_t>(), n_prior,
      num_pos.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(cl.scalar_type(), "multibox_loss_backward_cuda", [&] {
    dev::launch<masked_exp_sum_kernel<scalar_t>>(grid_for(n_prior), kThreads, 0, stream,
        cl.data_ptr<scalar_t>(), mk.data_ptr<bool>(), n_prior, C, row_max.data_ptr<scalar_t>(),
        row_sum.data_ptr<scalar_t>());
    dev::launch<grad_conf_kernel<scalar_t>>(grid_for(n_prior * C), kThreads, 0, stream,
        g_conf.data_ptr<scalar_t>(), num_pos.data_ptr<int64_t>(), cl.data_ptr<scalar_t>(),
        lab.data_ptr<int64_t>(), mk.data_ptr<bool>(), row_max.data_ptr<scalar_t>(),
        row_sum.data_ptr<scalar_t>(), n_prior, C, grad_conf.data_ptr<scalar_t>());
    dev::launch<grad_loc_kernel<scalar_t>>(grid_for(4 * n_prior), kThreads, 0, stream,
        g_loc.data_ptr<scalar_t>(), num_pos.data_ptr<int64_t>(), x.data_ptr<scalar_t>(),
        xt.data_ptr<scalar_t>(), lab.data_ptr<int64_t>(), n_prior, grad_loc.data_ptr<scalar_t>());
  });
  return {grad_loc, grad_conf};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, SSD_FAST_CUDA_KEY, m) {
  m.impl("multibox_loss", &multibox_loss_cuda);
  m.impl("multibox_loss_backward", &multibox_loss_backward_cuda);
}

}  // namespace ssd_fast
