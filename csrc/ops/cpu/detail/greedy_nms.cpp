// The SIMD passes of greedy NMS (ops/cpu/detail/greedy_nms.h), target_clones'd.
#include "ops/cpu/detail/greedy_nms.h"

#include "ops/cpu/detail/clones.h"

namespace ssd_fast {
namespace cpu {
namespace {

// Marks dead every box j in [lo, hi) whose IoU with box a exceeds thr; returns how many were
// alive before. One SIMD loop.
template <typename T>
SSD_FAST_INLINE int64_t suppress_range(T a1, T b1, T a2, T b2, T area_a, const T* __restrict x1,
                              const T* __restrict y1, const T* __restrict x2,
                              const T* __restrict y2, const T* __restrict area,
                              flag_t<T>* __restrict dead, int64_t lo, int64_t hi, T thr) {
  flag_t<T> newly = 0;
#pragma omp simd reduction(+ : newly)
  for (int64_t j = lo; j < hi; ++j) {
    const T iou = box_iou_one(a1, b1, a2, b2, area_a, x1[j], y1[j], x2[j], y2[j], area[j]);
    const flag_t<T> s = iou > thr ? 1 : 0;
    newly += s & (dead[j] ^ 1);
    dead[j] |= s;
  }
  return newly;
}

// The same over [0, m) without a scalar remainder: the last partial vector is redone as a
// whole vector ending at m. Marking dead is idempotent and only newly dead boxes are counted,
// so the overlap changes nothing.
constexpr int64_t kLanes = 8;

template <typename T>
SSD_FAST_INLINE int64_t suppress(T a1, T b1, T a2, T b2, T area_a, const T* x1, const T* y1,
                                 const T* x2, const T* y2, const T* area, flag_t<T>* dead,
                                 int64_t m, T thr) {
  const int64_t body = m - m % kLanes;
  int64_t newly = suppress_range(a1, b1, a2, b2, area_a, x1, y1, x2, y2, area, dead, 0, body, thr);
  if (body < m) {
    const int64_t lo = m >= kLanes ? m - kLanes : body;
    newly += suppress_range(a1, b1, a2, b2, area_a, x1, y1, x2, y2, area, dead, lo, m, thr);
  }
  return newly;
}

// greedy() of greedy_nms.h: the first live box is kept; one pass marks dead the later boxes it
// overlaps; dead boxes are compacted away once more than half of the range is dead.
template <typename T>
SSD_FAST_INLINE int64_t greedy_impl(T* x1, T* y1, T* x2, T* y2, T* area, int64_t* id,
                                    flag_t<T>* dead, int64_t n, T thr, int64_t* kept) {
  std::fill(dead, dead + n, flag_t<T>(0));
  int64_t count = 0, begin = 0, end = n, dead_in_range = 0;
  while (begin < end) {  // invariant: box `begin` is alive, so it is kept
    kept[count++] = id[begin];
    const int64_t b = begin++;
    dead_in_range += suppress(x1[b], y1[b], x2[b], y2[b], area[b], x1 + begin, y1 + begin,
                              x2 + begin, y2 + begin, area + begin, dead + begin, end - begin,
                              thr);
    while (begin < end && dead[begin]) {
      ++begin;
      --dead_in_range;
    }
    if (dead_in_range > 32 && 2 * dead_in_range > end - begin) {  // compact the live boxes
      int64_t w = begin;
      for (int64_t j = begin; j < end; ++j) {
        if (!dead[j]) {
          x1[w] = x1[j];
          y1[w] = y1[j];
          x2[w] = x2[j];
          y2[w] = y2[j];
          area[w] = area[j];
          id[w] = id[j];
          dead[w++] = 0;
        }
      }
      end = w;
      dead_in_range = 0;
    }
  }
  return count;
}

// One entry point per type, target_clones'd (an AVX2 copy picked at load time) as a whole, so
// that the SIMD pass inlines and the dispatch happens once per NMS, not once per kept box.
#define SSD_FAST_GREEDY(T)                                                                     \
  SSD_FAST_CLONES int64_t greedy_##T(T* x1, T* y1, T* x2, T* y2, T* area, int64_t* id,          \
                                     flag_t<T>* dead, int64_t n, T thr, int64_t* kept) {       \
    return greedy_impl<T>(x1, y1, x2, y2, area, id, dead, n, thr, kept);                       \
  }
SSD_FAST_GREEDY(float)
SSD_FAST_GREEDY(double)
#undef SSD_FAST_GREEDY

}  // namespace

int64_t greedy(float* x1, float* y1, float* x2, float* y2, float* area, int64_t* id,
               int32_t* dead, int64_t n, float thr, int64_t* kept) {
  return greedy_float(x1, y1, x2, y2, area, id, dead, n, thr, kept);
}
int64_t greedy(double* x1, double* y1, double* x2, double* y2, double* area, int64_t* id,
               int64_t* dead, int64_t n, double thr, int64_t* kept) {
  return greedy_double(x1, y1, x2, y2, area, id, dead, n, thr, kept);
}

}  // namespace cpu
}  // namespace ssd_fast
