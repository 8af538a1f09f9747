// The tile loops of ops/cpu/detail/softmax_tile.h: straight runs of max/exp/add across the priors of
// a tile, which gcc vectorises (exp_det, exp_nonpos and log_det are branch free). They are the
// hot loops of multibox_loss (1.5M logits per SSD300 batch of 8), so they get an AVX-512 copy
// too: without FMA contraction every copy rounds identically.
#include "ops/cpu/detail/softmax_tile.h"

#include <array>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SSD_FAST_X86_INTRINSICS 1
#endif

#include "ops/box_math.h"
#include "ops/cpu/detail/clones.h"
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
  // kStore false: l is only read. A whole tile gets a constant trip count, so that its
  // maxima and sums stay in registers across the classes (~5% faster than a variable one).
  if (n == kTilePriors) {
    exp_sum_impl<false>(const_cast<T*>(l), m, log_sum, c_n, kTilePriors, ExpNonPos{});
  } else {
    exp_sum_impl<false>(const_cast<T*>(l), m, log_sum, c_n, n, ExpNonPos{});
  }
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

template <typename T>
SSD_FAST_INLINE void load_rows_impl(const T* rows, int64_t n, int64_t c_n, T* __restrict buf) {
  std::array<const T*, kTilePriors> r;
  for (int64_t j = 0; j < n; ++j) r[j] = rows + j * c_n;
  load_tile_impl(r.data(), n, c_n, buf);
}

#ifdef SSD_FAST_X86_INTRINSICS
// gcc 12's AVX-512 unpack/shuffle intrinsics start from _mm512_undefined_ps(), which
// -Wmaybe-uninitialized reports once per call site.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// r[i] = row i of a 16 x 16 block in, column i out: unpacks of pairs of rows, then of pairs of
// 64-bit pairs, then two rounds of 128-bit lane shuffles.
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  // r[4 i + k], 128-bit lane L: element 4 L + k of rows 4 i .. 4 i + 3
  for (int k = 0; k < 4; ++k) {
    const __m512 ab_lo = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
    const __m512 ab_hi = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xdd);
    const __m512 cd_lo = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
    const __m512 cd_hi = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xdd);
    t[k] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0x88);
    t[8 + k] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0xdd);
    t[4 + k] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0x88);
    t[12 + k] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Blocks of 16 rows x 16 classes (the last class block masked), the rows left over one by one.
__attribute__((target("avx512f"))) void load_rows_avx512(const float* rows, int64_t n,
                                                          int64_t c_n, float* __restrict buf) {
  int64_t j0 = 0;
  for (; j0 + 16 <= n; j0 += 16) {
    for (int64_t c0 = 0; c0 < c_n; c0 += 16) {
      const int64_t w = std::min<int64_t>(16, c_n - c0);
      const __mmask16 mask = static_cast<__mmask16>((1u << w) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_maskz_loadu_ps(mask, rows + (j0 + i) * c_n + c0);
      transpose16(r);
      for (int64_t c = 0; c < w; ++c) _mm512_storeu_ps(buf + (c0 + c) * n + j0, r[c]);
    }
  }
  for (int64_t j = j0; j < n; ++j) {
    for (int64_t c = 0; c < c_n; ++c) buf[c * n + j] = rows[j * c_n + c];
  }
}
#pragma GCC diagnostic pop
#endif

}  // namespace

void load_tile(const float* rows, int64_t n, int64_t c_n, float* buf) {
#ifdef SSD_FAST_X86_INTRINSICS
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) {
    load_rows_avx512(rows, n, c_n, buf);
    return;
  }
#endif
  load_rows_impl(rows, n, c_n, buf);
}
void load_tile(const double* rows, int64_t n, int64_t c_n, double* buf) {
  load_rows_impl(rows, n, c_n, buf);
}

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
