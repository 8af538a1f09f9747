// The tile loops of ops/cpu/softmax_tile.h: straight runs of max/exp/add across the priors of
// a tile, which gcc vectorises (exp_det, exp_nonpos and log_det are branch free). They are the
// hot loops of multibox_loss (1.5M logits per SSD300 batch of 8), so they get an AVX-512 copy
// too: without FMA contraction every copy rounds identically.
#include "ops/cpu/softmax_tile.h"

#include "ops/box_math.h"
#include "ops/cpu/clones.h"
#include "ops/float_math.h"

namespace ssd_fast {
namespace cpu {
namespace {

struct ExpDet {
  template <typename T>
  SSD_FAST_INLINE T operator()(T x) const { return exp_det(x); }
};
struct ExpNonPos {
  template <typename T>
  SSD_FAST_INLINE T operator()(T x) const { return exp_nonpos(x); }
};

// m[j] = max over classes, sum[j] = sum of e_c; with kStore, e_c overwrites l.
template <bool kStore, typename T, typename Exp>
SSD_FAST_INLINE void exp_sum_impl(T* __restrict l, T* __restrict m, T* __restrict sum,
                                  int64_t c_n, int64_t n, Exp exp) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) m[j] = l[j];
  for (int64_t c = 1; c < c_n; ++c) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) m[j] = max_(m[j], l[c * n + j]);
  }
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) sum[j] = T(0);
  for (int64_t c = 0; c < c_n; ++c) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const T e = exp(l[c * n + j] - m[j]);
      if constexpr (kStore) l[c * n + j] = e;
      sum[j] += e;
    }
  }
}

template <typename T, typename Exp>
SSD_FAST_INLINE void softmax_tile_impl(T* __restrict l, T* __restrict m, T* __restrict sum,
                                       int64_t c_n, int64_t n, Exp exp) {
  exp_sum_impl<true>(l, m, sum, c_n, n, exp);
  for (int64_t c = 0; c < c_n; ++c) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) l[c * n + j] /= sum[j];
  }
}

template <typename T>
SSD_FAST_INLINE void log_sum_exp_tile_impl(const T* l, T* __restrict m, T* __restrict log_sum,
                                           int64_t c_n, int64_t n) {
  // kStore false: l is only read
  exp_sum_impl<false>(const_cast<T*>(l), m, log_sum, c_n, n, ExpNonPos{});
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) log_sum[j] = log_det(log_sum[j]);
}

// Groups of 8 rows, classes inner: 8 streams of contiguous reads, 8 consecutive writes per
// class (twice as fast as one row at a time, which writes c_n scattered values per row).
template <typename T>
SSD_FAST_INLINE void load_tile_impl(const T* const* rows, int64_t n, int64_t c_n,
                                    T* __restrict buf) {
  constexpr int64_t kGroup = 8;
  int64_t j0 = 0;
  for (; j0 + kGroup <= n; j0 += kGroup) {
    for (int64_t c = 0; c < c_n; ++c) {
SSD_UNROLL
      for (int64_t g = 0; g < kGroup; ++g) buf[c * n + j0 + g] = rows[j0 + g][c];
    }
  }
  for (int64_t j = j0; j < n; ++j) {
    for (int64_t c = 0; c < c_n; ++c) buf[c * n + j] = rows[j][c];
  }
}

}  // namespace

#define SSD_FAST_TILE_FNS(T)                                                                   \
  SSD_FAST_CLONES_AVX512 void softmax_tile(T* l, T* m, T* sum, int64_t c_n, int64_t n,          \
                                           TileExp exp) {                                      \
    if (exp == TileExp::kDet) softmax_tile_impl(l, m, sum, c_n, n, ExpDet{});                  \
    else softmax_tile_impl(l, m, sum, c_n, n, ExpNonPos{});                                    \
  }                                                                                            \
  SSD_FAST_CLONES_AVX512 void log_sum_exp_tile(const T* l, T* m, T* log_sum, int64_t c_n,       \
                                               int64_t n) {                                    \
    log_sum_exp_tile_impl(l, m, log_sum, c_n, n);                                              \
  }                                                                                            \
  SSD_FAST_CLONES void load_tile(const T* const* rows, int64_t n, int64_t c_n, T* buf) {       \
    load_tile_impl(rows, n, c_n, buf);                                                         \
  }
SSD_FAST_TILE_FNS(float)
SSD_FAST_TILE_FNS(double)
#undef SSD_FAST_TILE_FNS

}  // namespace cpu
}  // namespace ssd_fast
