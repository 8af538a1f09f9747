// The CPU selection of hard_negative_mining (SPEC §2), shared by the hard_negative_mining and
// multibox_loss kernels: per image, positives OR the k eligible negatives of highest loss,
// k = min(floor(num_pos * ratio), num_eligible), ties to the lower prior index. Selection, not
// sorting: O(P) per image.
//
// Each loss becomes an order-preserving unsigned key (loss_key); a prior that is not an
// eligible negative gets key 0, which no loss has, so one array of P keys carries both.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "ops/target_math.h"

namespace ssd_fast {
namespace cpu {

// The k largest of an image's keys: the k-th largest key (> 0) and how many keys equal to it
// are left out (the last ones in prior order: ties go to the lower index).
template <typename K>
struct TopK {
  K threshold;
  int64_t drop_equal;
};

// Scratch of select_top, reused between images (per thread).
template <typename K>
struct TopScratch {
  std::vector<K> groups, cand;
};

// keys[p] = labels[p] == 0 ? loss_key(loss[p]) : 0 (every negative eligible), and the counts.
void make_keys(const float* loss, const int64_t* labels, int64_t n, uint32_t* keys,
               int64_t* num_pos, int64_t* num_eligible);
void make_keys(const double* loss, const int64_t* labels, int64_t n, uint64_t* keys,
               int64_t* num_pos, int64_t* num_eligible);

// keys [n], 0 = not eligible; 1 <= k <= the number of keys > 0.
TopK<uint32_t> select_top(const uint32_t* keys, int64_t n, int64_t k, TopScratch<uint32_t>& s);
TopK<uint64_t> select_top(const uint64_t* keys, int64_t n, int64_t k, TopScratch<uint64_t>& s);

// mask[p] = labels[p] > 0 || keys[p] is among the top k (t from select_top).
void mark_top(const int64_t* labels, const uint32_t* keys, int64_t n, TopK<uint32_t> t, bool* mask);
void mark_top(const int64_t* labels, const uint64_t* keys, int64_t n, TopK<uint64_t> t, bool* mask);

// One image, keys written: its mask from the number of positives and of eligible negatives.
template <typename K>
void mine_image(const int64_t* labels, const K* keys, int64_t n, int64_t num_pos,
                int64_t num_eligible, double ratio, TopScratch<K>& s, bool* mask) {
  const int64_t k = num_negatives(num_pos, num_eligible, ratio);
  if (k > 0) {
    mark_top(labels, keys, n, select_top(keys, n, k, s), mask);
  } else {
    for (int64_t p = 0; p < n; ++p) mask[p] = labels[p] > 0;
  }
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
    std::vector<K> keys(P);
    TopScratch<K> scratch;
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* l = loss + b * P;
      const int64_t* lab = labels + b * P;
      const iou_t* iou = miou ? miou + b * P : nullptr;
      int64_t num_pos = 0, num_eligible = 0;
      bool done = false;  // float/double losses without matched_iou: the vectorised pass
      if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
        if (iou == nullptr) {
          make_keys(l, lab, P, keys.data(), &num_pos, &num_eligible);
          done = true;
        }
      }
      if (!done) {
        for (int64_t p = 0; p < P; ++p) {
          const bool eligible = lab[p] == 0 && (iou == nullptr || iou[p] < overlap);
          keys[p] = eligible ? mining_key(l[p]) : K(0);
          num_pos += lab[p] > 0;
          num_eligible += eligible;
        }
      }
      mine_image(lab, keys.data(), P, num_pos, num_eligible, ratio, scratch, mask + b * P);
    }
  });
}

}  // namespace cpu
}  // namespace ssd_fast
