// SSD centre-size box coding, shared by the CPU and CUDA kernels of encode_boxes, decode_boxes,
// ssd_targets and ssd_postprocess. Its log and exp are ops/float_math.h's (log_any, exp_det:
// within 0.9 ulp, the same bits on both devices) rather than the platform's (glibc and CUDA's
// math library differ by an ulp or two), so that loc targets and decoded boxes, and every
// IoU taken of them, are identical on CPU and CUDA. Divisions are IEEE on both devices.
#pragma once

#include "ops/box_math.h"
#include "ops/float_math.h"

namespace ssd_fast {

// v = variances (v0, v1, v2, v3). Priors are corners. A gt side of 0 encodes to -inf in its log
// term, a negative one to NaN.
template <typename T>
SSD_HD void encode_one(const T g[4], const T p[4], const T v[4], T out[4]) {
  T pw = p[2] - p[0], ph = p[3] - p[1];
  T pcx = p[0] + T(0.5) * pw, pcy = p[1] + T(0.5) * ph;
  T gw = g[2] - g[0], gh = g[3] - g[1];
  T gcx = g[0] + T(0.5) * gw, gcy = g[1] + T(0.5) * gh;
  out[0] = (gcx - pcx) / (v[0] * pw);
  out[1] = (gcy - pcy) / (v[1] * ph);
  out[2] = log_any(gw / pw) / v[2];
  out[3] = log_any(gh / ph) / v[3];
}

// The inverse: corners. exp overflows to +inf for large offsets; nothing is clamped.
template <typename T>
SSD_HD void decode_one(const T t[4], const T p[4], const T v[4], T out[4]) {
  T pw = p[2] - p[0], ph = p[3] - p[1];
  T pcx = p[0] + T(0.5) * pw, pcy = p[1] + T(0.5) * ph;
  T cx = t[0] * v[0] * pw + pcx;
  T cy = t[1] * v[1] * ph + pcy;
  T w = exp_det(t[2] * v[2]) * pw;
  T h = exp_det(t[3] * v[3]) * ph;
  out[0] = cx - T(0.5) * w;
  out[1] = cy - T(0.5) * h;
  out[2] = cx + T(0.5) * w;
  out[3] = cy + T(0.5) * h;
}

}  // namespace ssd_fast
