// Per-prior arithmetic of multibox_loss, shared by the CPU and CUDA kernels.
#pragma once

#include "ops/box_math.h"

namespace ssd_fast {

// Smooth L1 with beta 1, as torch.nn.functional.smooth_l1_loss computes it, and its derivative.
template <typename T>
SSD_HD T smooth_l1(T d) {
  const T a = d < T(0) ? -d : d;
  return a < T(1) ? T(0.5) * d * d : a - T(0.5);
}

template <typename T>
SSD_HD T smooth_l1_grad(T d) { return min_(max_(d, T(-1)), T(1)); }

// -log softmax(x)[k] = logsumexp(x) - x_k, with logsumexp = m + log_sum (m = max of x), summed
// in the order log_softmax computes it: (m - x_k) + log_sum.
template <typename T>
SSD_HD T cross_entropy(T m, T x_k, T log_sum) { return (m - x_k) + log_sum; }

}  // namespace ssd_fast
