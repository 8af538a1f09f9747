// Box arithmetic shared by the CPU and CUDA kernels, so both round every value the same way.
// Boxes are (x1, y1, x2, y2); a box with x2 < x1 or y2 < y1 has zero area.
// min_/max_ are written as selects (not fminf/fmaxf) so that NaN handling is identical on
// both devices. A NaN coordinate makes that box's area NaN (box_area), so the union is NaN
// and the IoU 0, whichever argument holds the NaN.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define SSD_HD __host__ __device__ __forceinline__
#else
#define SSD_HD inline
#endif

namespace ssd_fast {

template <typename T>
SSD_HD T min_(T a, T b) { return b < a ? b : a; }

template <typename T>
SSD_HD T max_(T a, T b) { return a < b ? b : a; }

// Negative sides count as 0; a NaN side stays NaN, so a box with a NaN coordinate has a NaN
// area and every IoU it takes part in has a NaN union, hence IoU 0.
template <typename T>
SSD_HD T box_area(T x1, T y1, T x2, T y2) {
  T w = x2 - x1;
  T h = y2 - y1;
  return (w < T(0) ? T(0) : w) * (h < T(0) ? T(0) : h);
}

// IoU of box a (with precomputed area) and box b. Union <= 0 (or NaN) gives 0.
// The division is unconditional (by 1 where the union is not positive) so that the CPU
// loop vectorises without speculating a trapping division.
template <typename T>
SSD_HD T box_iou_one(T a1, T b1, T a2, T b2, T area_a,  // box a: x1 y1 x2 y2, area
                     T c1, T d1, T c2, T d2, T area_b) {  // box b: x1 y1 x2 y2, area
  T w = min_(a2, c2) - max_(a1, c1);
  T h = min_(b2, d2) - max_(b1, d1);
  T inter = (w > T(0) ? w : T(0)) * (h > T(0) ? h : T(0));
  T uni = area_a + area_b - inter;
  bool pos = uni > T(0);
  T q = inter / (pos ? uni : T(1));
  return pos ? q : T(0);
}

}  // namespace ssd_fast
