// Per-element math of the training-target ops, shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>
#include <cstring>
#include <math.h>

#include <type_traits>

#include "ops/box_math.h"

namespace ssd_fast {

// Only (prior, GT) pairs with IoU above this exist for bipartite matching (Caffe's epsilon).
constexpr double kMatchEps = 1e-6;

// IoU given to priors that argmax matching forces onto a GT (as ssd.pytorch does).
constexpr double kForcedIou = 2.0;

// How many negatives an image with num_pos positives and num_eligible candidates keeps:
// min(floor(num_pos * neg_pos_ratio), num_eligible).
SSD_HD int64_t num_negatives(int64_t num_pos, int64_t num_eligible, double neg_pos_ratio) {
  const double k = floor(static_cast<double>(num_pos) * neg_pos_ratio);
  return k >= static_cast<double>(num_eligible) ? num_eligible : static_cast<int64_t>(k);
}

// Order-preserving unsigned keys of losses: a larger loss gives a larger key; every NaN gives
// the largest key (NaN losses rank first, as in a descending torch.sort). -0.0 == +0.0. No key
// is 0. Branch free (selects), so that the CPU loops computing keys vectorise.
SSD_HD uint32_t loss_key(float x) {
  const float z = x == 0.0f ? 0.0f : x;
  uint32_t u;
  memcpy(&u, &z, sizeof(u));
  const uint32_t k = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return x != x ? 0xFFFFFFFFu : k;
}

SSD_HD uint64_t loss_key(double x) {
  const double z = x == 0.0 ? 0.0 : x;
  uint64_t u;
  memcpy(&u, &z, sizeof(u));
  const uint64_t k = (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  return x != x ? 0xFFFFFFFFFFFFFFFFull : k;
}

// The key a loss of type S ranks by in hard negative mining: float, half and bfloat16 losses by
// their float key, double losses by their double key.
template <typename S>
using mining_key_t = std::conditional_t<std::is_same_v<S, double>, uint64_t, uint32_t>;

template <typename S>
SSD_HD mining_key_t<S> mining_key(S x) {
  if constexpr (std::is_same_v<S, double>) return loss_key(x);
  else return loss_key(static_cast<float>(x));
}

}  // namespace ssd_fast
