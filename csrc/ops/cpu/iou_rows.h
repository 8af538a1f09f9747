// SIMD-friendly rows of IoUs on the CPU: one box against many boxes held as
// structure-of-arrays. Used by box_iou and by the matching kernels.
#pragma once

#include <cstdint>
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

// out[j] = IoU(a, b[j]); where out[j] > best_iou[j], best_iou[j] = out[j] and best_idx[j] = idx
// (strictly greater: ties keep the earlier idx). Returns max_j out[j] and sets *argmax to the
// lowest j holding it (-1 and -1 when m == 0).
float match_row(const float a[4], SoaView<float> b, int64_t m, float* out, float* best_iou,
                int32_t* best_idx, int32_t idx, int64_t* argmax);
double match_row(const double a[4], SoaView<double> b, int64_t m, double* out,
                 double* best_iou, int32_t* best_idx, int32_t idx, int64_t* argmax);

}  // namespace cpu
}  // namespace ssd_fast
