// SIMD-friendly rows of IoUs on the CPU: one box against many boxes held as
// structure-of-arrays. Used by box_iou and by the matching kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "ops/box_math.h"

namespace ssd_fast {
namespace cpu {

template <typename T>
struct SoaView {  // n boxes: x1[i], y1[i], x2[i], y2[i], area[i]
  const T *x1, *y1, *x2, *y2, *area;
  SoaView offset(int64_t k) const { return {x1 + k, y1 + k, x2 + k, y2 + k, area + k}; }
};

// out[q * n + k] = boxes[4 * k + q] for q < 4, out[4 * n + k] = the area of box k (vectorised).
void boxes_to_soa(const float* boxes, int64_t n, float* out);
void boxes_to_soa(const double* boxes, int64_t n, double* out);

// Boxes [n, 4] (any floating type S) converted to the compute type T, as structure of arrays.
template <typename T>
class SoaBoxes {
 public:
  template <typename S>
  SoaBoxes(const S* boxes, int64_t n) : n_(n), buf_(new T[5 * n]) {
    if constexpr (std::is_same_v<S, T>) {
      boxes_to_soa(boxes, n, buf_.get());
      return;
    }
    for (int64_t k = 0; k < n; ++k) {
      T c[4];
      for (int q = 0; q < 4; ++q) c[q] = static_cast<T>(boxes[4 * k + q]);
      for (int q = 0; q < 4; ++q) buf_[q * n + k] = c[q];
      buf_[4 * n + k] = box_area(c[0], c[1], c[2], c[3]);
    }
  }
  SoaView<T> view() const {
    const T* b = buf_.get();
    return {b, b + n_, b + 2 * n_, b + 3 * n_, b + 4 * n_};
  }

 private:
  int64_t n_;
  std::unique_ptr<T[]> buf_;  // not zeroed: every element is written
};

// out[j] = IoU(a, b[j]) for j < m. a = (x1, y1, x2, y2).
void iou_row(const float a[4], SoaView<float> b, int64_t m, float* out);
void iou_row(const double a[4], SoaView<double> b, int64_t m, double* out);

// Bounding boxes of consecutive chunks of kChunk boxes: an (x1, y1, x2, y2) per chunk, the
// union of its boxes (infinite where a coordinate is NaN, so such a chunk is never skipped).
// A box disjoint from a chunk's bounding box has IoU exactly 0 with every box of the chunk
// (min/max and the subtraction of ordered floats are exact), so matching skips it. SSD priors
// come in grid order, so a chunk covers a small area and most GTs skip most chunks.
constexpr int64_t kChunk = 64;

std::vector<float> chunk_bounds(SoaView<float> b, int64_t n);
std::vector<double> chunk_bounds(SoaView<double> b, int64_t n);

// One GT a against the m priors b (chunk bounds from chunk_bounds): where IoU(a, b[j]) >
// best_iou[j], best_iou[j] and best_idx[j] = idx (strictly greater: ties keep the earlier
// idx; start from best_iou = 0, best_idx = 0, which the first GT would set anyway). Returns
// max_j IoU(a, b[j]) and sets *argmax to the lowest j holding it.
float match_row(const float a[4], SoaView<float> b, const float* chunks, int64_t m,
                float* best_iou, int32_t* best_idx, int32_t idx, int64_t* argmax);
double match_row(const double a[4], SoaView<double> b, const double* chunks, int64_t m,
                 double* best_iou, int32_t* best_idx, int32_t idx, int64_t* argmax);

// The best prior j with !taken[j] for GT a: returns its IoU and sets *argmax to the lowest
// such j, when that IoU is > 0; returns 0 or -1 (*argmax then unspecified) when no free
// prior overlaps a.
float best_free_row(const float a[4], SoaView<float> b, const float* chunks, int64_t m,
                    const uint8_t* taken, int64_t* argmax);
double best_free_row(const double a[4], SoaView<double> b, const double* chunks, int64_t m,
                     const uint8_t* taken, int64_t* argmax);

}  // namespace cpu
}  // namespace ssd_fast
