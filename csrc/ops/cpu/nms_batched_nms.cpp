// CPU kernels of nms and batched_nms: the boxes in rank order, then greedy NMS
// (ops/cpu/detail/greedy_nms.h); batched_nms runs one per class, in parallel.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "ops/cpu/detail/greedy_nms.h"
#include "ops/nms_checks.h"
#include "ops/nms_math.h"

namespace ssd_fast {
namespace {

using cpu::BoxArrays;
using cpu::greedy_nms;
using cpu::radix_sort_pairs;

// Rank order of the scores: order[r] = index of the box of rank r (score descending, NaN
// first, ties by lower index; see nms_math.h).
template <typename scalar_t>
std::vector<int64_t> rank_order(const scalar_t* scores, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<skey_t<acc_t>> keys(n);
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) {
    keys[i] = desc_key(static_cast<acc_t>(scores[i]));
    order[i] = i;
  }
  radix_sort_pairs(keys, order);
  return order;
}

at::Tensor to_tensor(const std::vector<int64_t>& v) {
  at::Tensor out = at::empty({static_cast<int64_t>(v.size())}, at::kLong);
  if (!v.empty()) std::memcpy(out.data_ptr<int64_t>(), v.data(), v.size() * sizeof(int64_t));
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = check_nms_args("nms", boxes, scores, iou_threshold);
  std::vector<int64_t> kept;
  if (n > 0) {
    const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "nms_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const std::vector<int64_t> order = rank_order(s.data_ptr<scalar_t>(), n);
      const scalar_t* bp = b.data_ptr<scalar_t>();
      BoxArrays<acc_t> a(n);
      for (int64_t r = 0; r < n; ++r) a.set(r, bp + 4 * order[r], order[r]);
      greedy_nms(a, 0, n, threshold_below<acc_t>(iou_threshold),
                 [&](int64_t id) { kept.push_back(id); });
    });
  }
  return to_tensor(kept);
}

// Per class without offsets: a stable sort by class of the rank order groups each class's
// boxes, still in rank order; each group is an independent greedy NMS (in parallel); the
// kept boxes are then read back in rank order. O(N) memory for any N and number of classes.
at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                           const at::Tensor& idxs, double iou_threshold) {
  constexpr const char* op = "batched_nms";
  const int64_t n = check_nms_args(op, boxes, scores, iou_threshold);
  check_idxs(op, boxes, idxs);
  std::vector<int64_t> kept;
  if (n > 0) {
    const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
    const at::Tensor cls = idxs.to(at::kLong).contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), op, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const std::vector<int64_t> order = rank_order(s.data_ptr<scalar_t>(), n);
      const int64_t* cp = cls.data_ptr<int64_t>();
      std::vector<uint64_t> class_key(n);
      std::vector<int64_t> grouped(n);  // ranks, grouped by class
      for (int64_t r = 0; r < n; ++r) {
        class_key[r] = static_cast<uint64_t>(cp[order[r]]) ^ (uint64_t(1) << 63);
        grouped[r] = r;
      }
      radix_sort_pairs(class_key, grouped);
      std::vector<int64_t> seg_begin;
      for (int64_t q = 0; q < n; ++q) {
        if (q == 0 || class_key[q] != class_key[q - 1]) seg_begin.push_back(q);
      }
      const int64_t segments = static_cast<int64_t>(seg_begin.size());
      seg_begin.push_back(n);
      const scalar_t* bp = b.data_ptr<scalar_t>();
      BoxArrays<acc_t> a(n);
      std::vector<uint8_t> keep_rank(n, 0);
      const acc_t thr = threshold_below<acc_t>(iou_threshold);
      at::parallel_for(0, segments, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t g = lo; g < hi; ++g) {
          const int64_t first = seg_begin[g], len = seg_begin[g + 1] - first;
          for (int64_t q = first; q < first + len; ++q) {
            a.set(q, bp + 4 * order[grouped[q]], grouped[q]);
          }
          greedy_nms(a, first, len, thr, [&](int64_t r) { keep_rank[r] = 1; });
        }
      });
      for (int64_t r = 0; r < n; ++r) {
        if (keep_rank[r]) kept.push_back(order[r]);
      }
    });
  }
  return to_tensor(kept);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace ssd_fast
