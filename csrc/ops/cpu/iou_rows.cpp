// The IoU row loops. Each is a straight run of min/max/mul/div over structure-of-arrays that
// gcc vectorises (-fno-trapping-math); target_clones adds an AVX2 copy next to the baseline
// one, picked when the library loads.
#include "ops/cpu/iou_rows.h"

namespace ssd_fast {
namespace cpu {
namespace {

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define SSD_FAST_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SSD_FAST_CLONES
#endif

template <typename T>
inline void iou_row_impl(const T a[4], SoaView<T> b, int64_t m, T* __restrict out) {
  const T a1 = a[0], b1 = a[1], a2 = a[2], b2 = a[3];
  const T area_a = box_area(a1, b1, a2, b2);
  const T* __restrict x1 = b.x1;
  const T* __restrict y1 = b.y1;
  const T* __restrict x2 = b.x2;
  const T* __restrict y2 = b.y2;
  const T* __restrict area = b.area;
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    out[j] = box_iou_one(a1, b1, a2, b2, area_a, x1[j], y1[j], x2[j], y2[j], area[j]);
  }
}

// One fused pass: IoU, per-prior running best, and the row's (max, first index of max).
// Lanes keep their own (max, index); the final reduction picks the lowest index among ties.
template <typename T>
inline T match_row_impl(const T a[4], SoaView<T> b, int64_t m, T* __restrict out,
                        T* __restrict best_iou, int32_t* __restrict best_idx, int32_t idx,
                        int64_t* argmax) {
  const T a1 = a[0], b1 = a[1], a2 = a[2], b2 = a[3];
  const T area_a = box_area(a1, b1, a2, b2);
  const T* __restrict x1 = b.x1;
  const T* __restrict y1 = b.y1;
  const T* __restrict x2 = b.x2;
  const T* __restrict y2 = b.y2;
  const T* __restrict area = b.area;
  constexpr int L = 64 / sizeof(T);  // lanes of independent (max, index) pairs
  T lmax[L];
  int64_t larg[L];
  for (int l = 0; l < L; ++l) {
    lmax[l] = T(-1);
    larg[l] = -1;
  }
  int64_t j = 0;
  for (; j + L <= m; j += L) {
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      const int64_t k = j + l;
      const T v = box_iou_one(a1, b1, a2, b2, area_a, x1[k], y1[k], x2[k], y2[k], area[k]);
      out[k] = v;
      const bool better = v > best_iou[k];
      best_iou[k] = better ? v : best_iou[k];
      best_idx[k] = better ? idx : best_idx[k];
      const bool up = v > lmax[l];
      lmax[l] = up ? v : lmax[l];
      larg[l] = up ? k : larg[l];
    }
  }
  for (; j < m; ++j) {
    const T v = box_iou_one(a1, b1, a2, b2, area_a, x1[j], y1[j], x2[j], y2[j], area[j]);
    out[j] = v;
    if (v > best_iou[j]) {
      best_iou[j] = v;
      best_idx[j] = idx;
    }
    if (v > lmax[0]) {  // lane 0 saw only lower indices so far
      lmax[0] = v;
      larg[0] = j;
    }
  }
  T mx = T(-1);
  int64_t mi = -1;
  for (int l = 0; l < L; ++l) {
    if (larg[l] >= 0 && (lmax[l] > mx || (lmax[l] == mx && larg[l] < mi))) {
      mx = lmax[l];
      mi = larg[l];
    }
  }
  *argmax = mi;
  return mx;
}

}  // namespace

SSD_FAST_CLONES void iou_row(const float a[4], SoaView<float> b, int64_t m, float* out) {
  iou_row_impl(a, b, m, out);
}
SSD_FAST_CLONES void iou_row(const double a[4], SoaView<double> b, int64_t m, double* out) {
  iou_row_impl(a, b, m, out);
}
SSD_FAST_CLONES float match_row(const float a[4], SoaView<float> b, int64_t m, float* out,
                                float* best_iou, int32_t* best_idx, int32_t idx,
                                int64_t* argmax) {
  return match_row_impl(a, b, m, out, best_iou, best_idx, idx, argmax);
}
SSD_FAST_CLONES double match_row(const double a[4], SoaView<double> b, int64_t m, double* out,
                                 double* best_iou, int32_t* best_idx, int32_t idx,
                                 int64_t* argmax) {
  return match_row_impl(a, b, m, out, best_iou, best_idx, idx, argmax);
}

}  // namespace cpu
}  // namespace ssd_fast
