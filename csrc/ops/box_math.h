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

SSD_HD float log_(float x) { return logf(x); }
SSD_HD double log_(double x) { return log(x); }
SSD_HD float exp_(float x) { return expf(x); }
SSD_HD double exp_(double x) { return exp(x); }

// SSD centre-size coding. v = variances (v0, v1, v2, v3). Priors are corners.
template <typename T>
SSD_HD void encode_one(const T g[4], const T p[4], const T v[4], T out[4]) {
  T pw = p[2] - p[0], ph = p[3] - p[1];
  T pcx = p[0] + T(0.5) * pw, pcy = p[1] + T(0.5) * ph;
  T gw = g[2] - g[0], gh = g[3] - g[1];
  T gcx = g[0] + T(0.5) * gw, gcy = g[1] + T(0.5) * gh;
  out[0] = (gcx - pcx) / (v[0] * pw);
  out[1] = (gcy - pcy) / (v[1] * ph);
  out[2] = log_(gw / pw) / v[2];
  out[3] = log_(gh / ph) / v[3];
}

template <typename T>
SSD_HD void decode_one(const T t[4], const T p[4], const T v[4], T out[4]) {
  T pw = p[2] - p[0], ph = p[3] - p[1];
  T pcx = p[0] + T(0.5) * pw, pcy = p[1] + T(0.5) * ph;
  T cx = t[0] * v[0] * pw + pcx;
  T cy = t[1] * v[1] * ph + pcy;
  T w = exp_(t[2] * v[2]) * pw;
  T h = exp_(t[3] * v[3]) * ph;
  out[0] = cx - T(0.5) * w;
  out[1] = cy - T(0.5) * h;
  out[2] = cx + T(0.5) * w;
  out[3] = cy + T(0.5) * h;
}

}  // namespace ssd_fast
