// The CPU selection of hard_negative_mining (SPEC §2), shared by the hard_negative_mining and
// multibox_loss kernels: per image, positives OR the k eligible negatives of highest loss,
// k = min(floor(num_pos * ratio), num_eligible), ties to the lower prior index. Selection, not
// sorting: one pass builds (key, index) pairs of the eligible priors, std::nth_element finds
// the k largest in O(P).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/target_math.h"

namespace ssd_fast {
namespace cpu {

// A float/half/bfloat16 loss ranks by its float key, a double loss by its double key.
template <typename scalar_t>
using mining_key_t = std::conditional_t<std::is_same_v<scalar_t, double>, uint64_t, uint32_t>;

template <typename scalar_t>
mining_key_t<scalar_t> mining_key(scalar_t x) {
  if constexpr (std::is_same_v<scalar_t, double>) return loss_key(x);
  else return loss_key(static_cast<float>(x));
}

// mask [B, P] of the losses [B, P] and labels [B, P]. Eligible negatives: labels == 0, and
// miou[p] < neg_overlap when miou is given (compared in miou's dtype, as PyTorch compares a
// tensor with a Python float). Parallel over images.
template <typename scalar_t, typename iou_t>
void mine_rows(const scalar_t* loss, const int64_t* labels, const iou_t* miou, double ratio,
               double neg_overlap, int64_t B, int64_t P, bool* mask) {
  using K = mining_key_t<scalar_t>;
  const iou_t overlap = static_cast<iou_t>(neg_overlap);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<K, int32_t>> cand;
    cand.reserve(P);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* l = loss + b * P;
      const int64_t* lab = labels + b * P;
      const iou_t* iou = miou ? miou + b * P : nullptr;
      bool* m = mask + b * P;
      int64_t num_pos = 0;
      cand.clear();
      for (int64_t p = 0; p < P; ++p) {
        m[p] = lab[p] > 0;
        num_pos += m[p];
        if (lab[p] == 0 && (iou == nullptr || iou[p] < overlap))
          cand.emplace_back(mining_key(l[p]), static_cast<int32_t>(p));
      }
      const int64_t k = num_negatives(num_pos, static_cast<int64_t>(cand.size()), ratio);
      if (k <= 0) continue;
      // Larger key first; equal keys: lower prior index first.
      auto before = [](const std::pair<K, int32_t>& a, const std::pair<K, int32_t>& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      };
      if (k < static_cast<int64_t>(cand.size()))
        std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), before);
      for (int64_t i = 0; i < k; ++i) m[cand[i].second] = true;
    }
  });
}

}  // namespace cpu
}  // namespace ssd_fast
