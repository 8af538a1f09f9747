// CPU kernel of hard_negative_mining (SPEC §2): per image, positives OR the k eligible
// negatives of highest loss, k = min(floor(num_pos * ratio), num_eligible), ties to the lower
// prior index. Selection, not sorting: one pass builds (key, index) pairs of the eligible
// priors, std::nth_element finds the k largest in O(P).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ops/target_checks.h"
#include "ops/target_math.h"

namespace ssd_fast {
namespace {

// A float/half/bfloat16 loss ranks by its float key, a double loss by its double key.
template <typename scalar_t>
using key_t = std::conditional_t<std::is_same_v<scalar_t, double>, uint64_t, uint32_t>;

template <typename scalar_t>
key_t<scalar_t> key_of(scalar_t x) {
  if constexpr (std::is_same_v<scalar_t, double>) return loss_key(x);
  else return loss_key(static_cast<float>(x));
}

// Eligible negatives of one row: labels == 0, and matched_iou < neg_overlap when given
// (compared in matched_iou's dtype, as PyTorch compares a tensor with a Python float).
template <typename iou_t>
struct Eligible {
  const iou_t* iou;  // null: no overlap condition
  iou_t overlap;
  bool operator()(int64_t label, int64_t p) const {
    return label == 0 && (iou == nullptr || iou[p] < overlap);
  }
};

template <typename scalar_t, typename iou_t>
void mine_rows(const scalar_t* loss, const int64_t* labels, const iou_t* miou, double ratio,
               double neg_overlap, int64_t B, int64_t P, bool* mask) {
  using K = key_t<scalar_t>;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<K, int32_t>> cand;
    cand.reserve(P);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* l = loss + b * P;
      const int64_t* lab = labels + b * P;
      const Eligible<iou_t> eligible{miou ? miou + b * P : nullptr, static_cast<iou_t>(neg_overlap)};
      bool* m = mask + b * P;
      int64_t num_pos = 0;
      cand.clear();
      for (int64_t p = 0; p < P; ++p) {
        m[p] = lab[p] > 0;
        num_pos += m[p];
        if (eligible(lab[p], p)) cand.emplace_back(key_of(l[p]), static_cast<int32_t>(p));
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

at::Tensor hard_negative_mining_cpu(const at::Tensor& conf_loss, const at::Tensor& labels,
                                    double neg_pos_ratio,
                                    const c10::optional<at::Tensor>& matched_iou,
                                    double neg_overlap) {
  check_mining_args(conf_loss, labels, neg_pos_ratio, matched_iou, neg_overlap);
  const int64_t B = conf_loss.size(0), P = conf_loss.size(1);
  at::Tensor mask = at::empty({B, P}, conf_loss.options().dtype(at::kBool));
  if (mask.numel() == 0) return mask;
  const at::Tensor loss = conf_loss.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  const at::Tensor miou = matched_iou.has_value() ? matched_iou->contiguous() : loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, loss.scalar_type(), "hnm_cpu", [&] {
    using loss_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, miou.scalar_type(), "hnm_cpu", [&] {
      mine_rows<loss_t, scalar_t>(loss.data_ptr<loss_t>(), lab.data_ptr<int64_t>(),
                                  matched_iou.has_value() ? miou.data_ptr<scalar_t>() : nullptr,
                                  neg_pos_ratio, neg_overlap, B, P, mask.data_ptr<bool>());
    });
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("hard_negative_mining", &hard_negative_mining_cpu);
}

}  // namespace ssd_fast
