// Greedy NMS on the CPU, shared by the kernels of nms, batched_nms, multiclass_nms and
// ssd_postprocess (its SIMD passes are in greedy_nms.cpp), and the radix sort they rank with.
//
// The boxes, in rank order (score descending, ties by lower index), are held as a structure of
// arrays in the compute type. The first live box is kept; one
// vectorised pass computes its IoU with every later box (box_iou_one, the arithmetic the CUDA
// kernels use) and marks those above the threshold dead; the next live box is kept, and so on.
// Dead boxes are removed lazily: the arrays are compacted only once more than half of the
// range is dead, so a pass costs O(live boxes) and a compaction is amortised. Every pass is
// a straight SIMD loop over contiguous memory, unlike torchvision's loop (indirect loads and a
// branch per box).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ops/box_math.h"

namespace ssd_fast {
namespace cpu {

// Stable LSD radix sort of keys (and of values along, when given), one byte per pass. Passes
// whose byte is the same for every key are skipped (the high bytes of small class ids, of
// scores in (0, 1], of prior indices). `keys2` and `vals2` are scratch.
template <typename U>
void radix_sort(std::vector<U>& keys, std::vector<int64_t>* vals, std::vector<U>& keys2,
                std::vector<int64_t>& vals2) {
  constexpr int kPasses = sizeof(U);
  const size_t n = keys.size();
  std::array<std::array<int64_t, 256>, kPasses> hist{};
  for (const U k : keys) {
    for (int p = 0; p < kPasses; ++p) ++hist[p][static_cast<uint32_t>(k >> (8 * p)) & 255];
  }
  keys2.resize(n);
  if (vals != nullptr) vals2.resize(n);
  for (int p = 0; p < kPasses; ++p) {
    auto& h = hist[p];
    if (std::any_of(h.begin(), h.end(), [&](int64_t c) { return size_t(c) == n; })) continue;
    int64_t sum = 0;
    for (auto& c : h) {
      const int64_t x = c;
      c = sum;
      sum += x;
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t dst = h[static_cast<uint32_t>(keys[i] >> (8 * p)) & 255]++;
      keys2[dst] = keys[i];
      if (vals != nullptr) vals2[dst] = (*vals)[i];
    }
    keys.swap(keys2);
    if (vals != nullptr) vals->swap(vals2);
  }
}

template <typename U>
void radix_sort_pairs(std::vector<U>& keys, std::vector<int64_t>& vals) {
  std::vector<U> keys2;
  std::vector<int64_t> vals2;
  radix_sort(keys, &vals, keys2, vals2);
}

// Dead flags as wide as the coordinates, so that the SIMD loop below has one lane width.
template <typename T>
using flag_t = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// Greedy NMS over n boxes in rank order, structure of arrays (clobbered: live boxes are
// compacted, ids move along). Writes the ids of the kept boxes, in rank order, to kept[] and
// returns their count.
int64_t greedy(float* x1, float* y1, float* x2, float* y2, float* area, int64_t* id,
               int32_t* dead, int64_t n, float thr, int64_t* kept);
int64_t greedy(double* x1, double* y1, double* x2, double* y2, double* area, int64_t* id,
               int64_t* dead, int64_t n, double thr, int64_t* kept);

// Boxes in rank order, compute type T, plus an id per box (what the caller wants back).
template <typename T>
struct BoxArrays {
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int64_t> id, kept;
  std::vector<flag_t<T>> dead;

  explicit BoxArrays(int64_t n)
      : x1(n), y1(n), x2(n), y2(n), area(n), id(n), kept(n), dead(n) {}

  template <typename scalar_t>
  void set(int64_t i, const scalar_t* box, int64_t box_id) {
    x1[i] = static_cast<T>(box[0]);
    y1[i] = static_cast<T>(box[1]);
    x2[i] = static_cast<T>(box[2]);
    y2[i] = static_cast<T>(box[3]);
    area[i] = box_area(x1[i], y1[i], x2[i], y2[i]);
    id[i] = box_id;
  }
};

// Greedy NMS of the boxes [first, first + n) of `a` (in rank order): calls keep(id) for each
// kept box, in rank order. Clobbers that range of `a`. thr >= 1 suppresses nothing: IoU <= 1
// (inter <= each area <= union, and rounding is monotone).
template <typename T, typename Keep>
void greedy_nms(BoxArrays<T>& a, int64_t first, int64_t n, T thr, Keep&& keep) {
  if (n <= 0) return;
  if (!(thr < T(1))) {
    for (int64_t i = first; i < first + n; ++i) keep(a.id[i]);
    return;
  }
  const int64_t count = greedy(a.x1.data() + first, a.y1.data() + first, a.x2.data() + first,
                               a.y2.data() + first, a.area.data() + first, a.id.data() + first,
                               a.dead.data() + first, n, thr, a.kept.data() + first);
  for (int64_t i = first; i < first + count; ++i) keep(a.kept[i]);
}

}  // namespace cpu
}  // namespace ssd_fast
