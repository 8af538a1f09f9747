// SIMD-friendly rows of IoUs on the CPU: one box against many boxes held as
// structure-of-arrays. Used by box_iou and by the matching kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/box_math.h"

namespace ssd_fast {
namespace cpu {

template <typename T>
struct SoaView {  // n boxes: x1[i], y1[i], x2[i], y2[i], area[i]
  const T *x1, *y1, *x2, *y2, *area;
  SoaView offset(int64_t k) const { return {x1 + k, y1 + k, x2 + k, y2 + k, area + k}; }
};

// Boxes [n, 4] (any floating type S) converted to the compute type T, as structure of arrays.
template <typename T>
class SoaBoxes {
 public:
  template <typename S>
  SoaBoxes(const S* boxes, int64_t n) : n_(n), buf_(5 * n) {
    for (int64_t k = 0; k < n; ++k) {
      T c[4];
      for (int q = 0; q < 4; ++q) c[q] = static_cast<T>(boxes[4 * k + q]);
      for (int q = 0; q < 4; ++q) buf_[q * n + k] = c[q];
      buf_[4 * n + k] = box_area(c[0], c[1], c[2], c[3]);
    }
  }
  SoaView<T> view() const {
    const T* b = buf_.data();
    return {b, b + n_, b + 2 * n_, b + 3 * n_, b + 4 * n_};
  }

 private:
  int64_t n_;
  std::vector<T> buf_;
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

template <typename T>
std::vector<T> chunk_bounds(SoaView<T> b, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<T> out(4 * chunks);
  for (int64_t c = 0; c < chunks; ++c) {
    T lo_x = b.x1[c * kChunk], lo_y = b.y1[c * kChunk], hi_x = b.x2[c * kChunk],
      hi_y = b.y2[c * kChunk];
    bool nan = false;
    for (int64_t j = c * kChunk; j < std::min(n, (c + 1) * kChunk); ++j) {
      nan = nan || b.x1[j] != b.x1[j] || b.y1[j] != b.y1[j] || b.x2[j] != b.x2[j] ||
            b.y2[j] != b.y2[j];
      lo_x = min_(lo_x, b.x1[j]);
      lo_y = min_(lo_y, b.y1[j]);
      hi_x = max_(hi_x, b.x2[j]);
      hi_y = max_(hi_y, b.y2[j]);
    }
    const T inf = std::numeric_limits<T>::infinity();
    out[4 * c + 0] = nan ? -inf : lo_x;
    out[4 * c + 1] = nan ? -inf : lo_y;
    out[4 * c + 2] = nan ? inf : hi_x;
    out[4 * c + 3] = nan ? inf : hi_y;
  }
  return out;
}

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
