// The IoU row loops. Each is a straight run of min/max/mul/div over structure-of-arrays that
// gcc vectorises (-fno-trapping-math); target_clones adds x86-64-v3 (AVX2) copies next to the
// baseline ones, picked when the library loads, and match_row an AVX-512 one (ssd_targets
// SSD300 bs8 ~200 -> ~130 us on one Zen 4 core, with the masked store it had then).
#include "ops/cpu/detail/iou_rows.h"

#include "ops/cpu/detail/clones.h"

namespace ssd_fast {
namespace cpu {
namespace {

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

template <typename T>
inline bool disjoint(const T a[4], const T* chunk) {
  return !(min_(a[2], chunk[2]) - max_(a[0], chunk[0]) > T(0)) ||
         !(min_(a[3], chunk[3]) - max_(a[1], chunk[1]) > T(0));
}

// Per chunk that a overlaps, one fused SIMD pass: IoU, per-prior running best, and per lane a
// running (max, first index). Skipped chunks are all-zero IoU: they leave best_iou (>= 0)
// alone and can only contribute a 0 at their first index.
template <typename T>
inline T match_row_impl(const T a[4], SoaView<T> b, const T* chunks, int64_t m,
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
  static_assert(kChunk % L == 0);
  T lmax[L];
  int64_t larg[L];
  for (int l = 0; l < L; ++l) {
    lmax[l] = T(-1);
    larg[l] = -1;
  }
  int64_t first_skipped = -1;
  for (int64_t j0 = 0; j0 < m; j0 += kChunk) {
    if (disjoint(a, chunks + 4 * (j0 / kChunk))) {
      if (first_skipped < 0) first_skipped = j0;
      continue;
    }
    const int64_t end = std::min(m, j0 + kChunk);
    int64_t j = j0;
    for (; j + L <= end; j += L) {
#pragma omp simd
      for (int l = 0; l < L; ++l) {
        const int64_t k = j + l;
        const T v = box_iou_one(a1, b1, a2, b2, area_a, x1[k], y1[k], x2[k], y2[k], area[k]);
        // load, select, store unconditionally: written as `best[k] = better ? v : best[k]`,
        // gcc makes it a masked store, which AVX2 (vmaskmovps) does slowly (1.5x on this loop)
        const T old_iou = best_iou[k];
        const int32_t old_idx = best_idx[k];
        const bool better = v > old_iou;
        const T new_iou = better ? v : old_iou;
        const int32_t new_idx = better ? idx : old_idx;
        best_iou[k] = new_iou;
        best_idx[k] = new_idx;
        const T old_max = lmax[l];
        const int64_t old_arg = larg[l];
        const bool up = v > old_max;
        lmax[l] = up ? v : old_max;
        larg[l] = up ? k : old_arg;
      }
    }
    for (; j < end; ++j) {  // the last, partial chunk
      const T v = box_iou_one(a1, b1, a2, b2, area_a, x1[j], y1[j], x2[j], y2[j], area[j]);
      if (v > best_iou[j]) {
        best_iou[j] = v;
        best_idx[j] = idx;
      }
      if (v > lmax[0] || (v == lmax[0] && j < larg[0])) {
        lmax[0] = v;
        larg[0] = j;
      }
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
  if (first_skipped >= 0 && (mx < T(0) || (mx == T(0) && first_skipped < mi))) {
    mx = T(0);
    mi = first_skipped;
  }
  *argmax = mi;
  return mx;
}

template <typename T>
inline T best_free_row_impl(const T a[4], SoaView<T> b, const T* chunks, int64_t m,
                            const uint8_t* taken, int64_t* argmax) {
  const T area_a = box_area(a[0], a[1], a[2], a[3]);
  T best = T(-1);
  int64_t bj = -1;
  for (int64_t j0 = 0; j0 < m; j0 += kChunk) {
    if (disjoint(a, chunks + 4 * (j0 / kChunk))) continue;
    for (int64_t j = j0; j < std::min(m, j0 + kChunk); ++j) {
      if (taken[j]) continue;
      const T v = box_iou_one(a[0], a[1], a[2], a[3], area_a, b.x1[j], b.y1[j], b.x2[j],
                              b.y2[j], b.area[j]);
      if (v > best) {
        best = v;
        bj = j;
      }
    }
  }
  *argmax = bj;
  return best;
}

template <typename T>
SSD_FAST_INLINE void boxes_to_soa_impl(const T* __restrict boxes, int64_t n, T* __restrict out) {
  T* __restrict x1 = out;
  T* __restrict y1 = out + n;
  T* __restrict x2 = out + 2 * n;
  T* __restrict y2 = out + 3 * n;
  T* __restrict area = out + 4 * n;
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const T a = boxes[4 * k], b = boxes[4 * k + 1], c = boxes[4 * k + 2], d = boxes[4 * k + 3];
    x1[k] = a;
    y1[k] = b;
    x2[k] = c;
    y2[k] = d;
    area[k] = box_area(a, b, c, d);
  }
}

// Per chunk the min of x1/y1 and the max of x2/y2 (exact: min/max of ordered values), or
// infinite bounds where a coordinate is NaN. Vertical min/max over rows of kBoundLanes boxes,
// then across the lanes.
constexpr int64_t kBoundLanes = 8;
static_assert(kChunk % kBoundLanes == 0);

template <typename T>
SSD_FAST_INLINE void chunk_bounds_impl(SoaView<T> b, int64_t n, T* __restrict out) {
  const T* __restrict x1 = b.x1;
  const T* __restrict y1 = b.y1;
  const T* __restrict x2 = b.x2;
  const T* __restrict y2 = b.y2;
  const T inf = std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c * kChunk < n; ++c) {
    const int64_t j0 = c * kChunk, j1 = std::min(n, j0 + kChunk);
    T lo_x[kBoundLanes], lo_y[kBoundLanes], hi_x[kBoundLanes], hi_y[kBoundLanes];
    int nan[kBoundLanes];
    for (int64_t l = 0; l < kBoundLanes; ++l) {
      lo_x[l] = lo_y[l] = inf;
      hi_x[l] = hi_y[l] = -inf;
      nan[l] = 0;
    }
    auto take = [&](int64_t l, int64_t j) {
      const T a = x1[j], b1 = y1[j], a2 = x2[j], b2 = y2[j];
      nan[l] |= (a != a) | (b1 != b1) | (a2 != a2) | (b2 != b2);
      lo_x[l] = min_(lo_x[l], a);
      lo_y[l] = min_(lo_y[l], b1);
      hi_x[l] = max_(hi_x[l], a2);
      hi_y[l] = max_(hi_y[l], b2);
    };
    int64_t j = j0;
    for (; j + kBoundLanes <= j1; j += kBoundLanes) {
#pragma omp simd
      for (int64_t l = 0; l < kBoundLanes; ++l) take(l, j + l);
    }
    for (int64_t l = 0; j + l < j1; ++l) take(l, j + l);  // the last, partial chunk
    for (int64_t l = 1; l < kBoundLanes; ++l) {
      nan[0] |= nan[l];
      lo_x[0] = min_(lo_x[0], lo_x[l]);
      lo_y[0] = min_(lo_y[0], lo_y[l]);
      hi_x[0] = max_(hi_x[0], hi_x[l]);
      hi_y[0] = max_(hi_y[0], hi_y[l]);
    }
    out[4 * c + 0] = nan[0] ? -inf : lo_x[0];
    out[4 * c + 1] = nan[0] ? -inf : lo_y[0];
    out[4 * c + 2] = nan[0] ? inf : hi_x[0];
    out[4 * c + 3] = nan[0] ? inf : hi_y[0];
  }
}

template <typename T>
std::vector<T> chunk_bounds_of(SoaView<T> b, int64_t n,
                               void (*fn)(SoaView<T>, int64_t, T*)) {
  std::vector<T> out(4 * ((n + kChunk - 1) / kChunk));
  fn(b, n, out.data());
  return out;
}

}  // namespace

SSD_FAST_CLONES void boxes_to_soa(const float* boxes, int64_t n, float* out) {
  boxes_to_soa_impl(boxes, n, out);
}
SSD_FAST_CLONES void boxes_to_soa(const double* boxes, int64_t n, double* out) {
  boxes_to_soa_impl(boxes, n, out);
}
SSD_FAST_CLONES static void chunk_bounds_f(SoaView<float> b, int64_t n, float* out) {
  chunk_bounds_impl(b, n, out);
}
SSD_FAST_CLONES static void chunk_bounds_d(SoaView<double> b, int64_t n, double* out) {
  chunk_bounds_impl(b, n, out);
}
std::vector<float> chunk_bounds(SoaView<float> b, int64_t n) {
  return chunk_bounds_of(b, n, chunk_bounds_f);
}
std::vector<double> chunk_bounds(SoaView<double> b, int64_t n) {
  return chunk_bounds_of(b, n, chunk_bounds_d);
}

SSD_FAST_CLONES void iou_row(const float a[4], SoaView<float> b, int64_t m, float* out) {
  iou_row_impl(a, b, m, out);
}
SSD_FAST_CLONES void iou_row(const double a[4], SoaView<double> b, int64_t m, double* out) {
  iou_row_impl(a, b, m, out);
}
SSD_FAST_CLONES_AVX512 float match_row(const float a[4], SoaView<float> b, const float* chunks,
                                       int64_t m, float* best_iou, int32_t* best_idx, int32_t idx,
                                       int64_t* argmax) {
  return match_row_impl(a, b, chunks, m, best_iou, best_idx, idx, argmax);
}
SSD_FAST_CLONES_AVX512 double match_row(const double a[4], SoaView<double> b,
                                        const double* chunks, int64_t m, double* best_iou,
                                        int32_t* best_idx, int32_t idx, int64_t* argmax) {
  return match_row_impl(a, b, chunks, m, best_iou, best_idx, idx, argmax);
}
float best_free_row(const float a[4], SoaView<float> b, const float* chunks, int64_t m,
                    const uint8_t* taken, int64_t* argmax) {
  return best_free_row_impl(a, b, chunks, m, taken, argmax);
}
double best_free_row(const double a[4], SoaView<double> b, const double* chunks, int64_t m,
                     const uint8_t* taken, int64_t* argmax) {
  return best_free_row_impl(a, b, chunks, m, taken, argmax);
}

}  // namespace cpu
}  // namespace ssd_fast
