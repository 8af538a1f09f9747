// The CPU selection of hard_negative_mining (SPEC §2), shared by the hard_negative_mining and
// multibox_loss kernels: per image, positives OR the k eligible negatives of highest loss,
// k = min(floor(num_pos * ratio), num_eligible), ties to the lower prior index. Selection, not
// sorting: O(P) per image.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <type_traits>
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
// tensor with a Python float). Per image, the k-th largest eligible key T: a histogram of the
// keys' top kDigitBits bits finds the bin holding it, std::nth_element among that bin's keys
// (a small fraction of the row) finds T; a pass in prior order then takes every key > T and the
// first (k - #keys > T) keys == T. Parallel over images.
template <typename scalar_t, typename iou_t>
void mine_rows(const scalar_t* loss, const int64_t* labels, const iou_t* miou, double ratio,
               double neg_overlap, int64_t B, int64_t P, bool* mask) {
  using K = mining_key_t<scalar_t>;
  constexpr int kDigitBits = 11;  // 2048 bins: 8 KB of counts, in L1
  constexpr int kShift = 8 * sizeof(K) - kDigitBits;
  const iou_t overlap = static_cast<iou_t>(neg_overlap);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<K> keys(P), bin_keys(P);
    std::vector<int32_t> hist(1 << kDigitBits);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* l = loss + b * P;
      const int64_t* lab = labels + b * P;
      const iou_t* iou = miou ? miou + b * P : nullptr;
      auto eligible = [&](int64_t p) {
        return lab[p] == 0 && (iou == nullptr || iou[p] < overlap);
      };
      bool* m = mask + b * P;
      int64_t num_pos = 0, num_keys = 0;
      K* key_out = keys.data();
      for (int64_t p = 0; p < P; ++p) {  // branch free: every key is written, the eligible kept
        m[p] = lab[p] > 0;
        num_pos += m[p];
        key_out[num_keys] = mining_key(l[p]);
        num_keys += eligible(p);
      }
      const int64_t k = num_negatives(num_pos, num_keys, ratio);
      if (k <= 0) continue;
      std::fill(hist.begin(), hist.end(), 0);
      for (int64_t i = 0; i < num_keys; ++i) ++hist[key_out[i] >> kShift];
      int64_t above = 0;  // keys in the bins above bin d
      K d = hist.size() - 1;
      for (; above + hist[d] < k; --d) above += hist[d];  // stops: k <= #keys
      K* in_bin = bin_keys.data();
      int64_t num_in_bin = 0;
      for (int64_t i = 0; i < num_keys; ++i) {  // branch free, as above
        in_bin[num_in_bin] = key_out[i];
        num_in_bin += (key_out[i] >> kShift) == d;
      }
      const int64_t need = k - above;  // the need largest keys of bin d are taken
      std::nth_element(in_bin, in_bin + (need - 1), in_bin + num_in_bin, std::greater<K>());
      const K threshold = in_bin[need - 1];
      for (int64_t i = 0; i < num_in_bin; ++i) above += in_bin[i] > threshold;
      int64_t ties = k - above;  // keys == threshold to take, lowest prior index first
      for (int64_t p = 0; p < P; ++p) {
        if (!eligible(p)) continue;
        const K key = mining_key(l[p]);
        const bool tie = key == threshold && ties > 0;
        ties -= tie;
        m[p] = m[p] || key > threshold || tie;
      }
    }
  });
}

}  // namespace cpu
}  // namespace ssd_fast
