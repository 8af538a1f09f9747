// Float arithmetic shared by the CPU and CUDA kernels, written out so that both devices
// compute the very same bits: the bit patterns of floats, and exp/log without libm's exp/log
// (only the fused multiply-add fma_ may be libm's, in the baseline CPU clone).
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <limits>
#include <type_traits>

#include "ops/box_math.h"

#if defined(__CUDACC__)
#define SSD_UNROLL _Pragma("unroll")
#else
#define SSD_UNROLL _Pragma("GCC unroll 16")
#endif

namespace ssd_fast {

// Float types and the unsigned integers their keys live in. Composite keys put a 32-bit
// index (a prior, or class * P + prior) under the score key: 64 bits for float scores, 128
// (96 used) for double scores.
template <typename T> struct KeyTraits;
template <> struct KeyTraits<float> {
  using bits_t = uint32_t;
  using ckey_t = uint64_t;
  static constexpr int kBits = 32;
};
template <> struct KeyTraits<double> {
  using bits_t = uint64_t;
  using ckey_t = unsigned __int128;
  static constexpr int kBits = 64;
};
template <typename T> using skey_t = typename KeyTraits<T>::bits_t;
template <typename T> using ckey_t = typename KeyTraits<T>::ckey_t;

template <typename T>
SSD_HD skey_t<T> bits_of(T x) {
  skey_t<T> u;
  memcpy(&u, &x, sizeof(T));
  return u;
}

template <typename T>
SSD_HD T from_bits(skey_t<T> u) {
  T x;
  memcpy(&x, &u, sizeof(T));
  return x;
}

// a * b + c rounded once (IEEE fused multiply-add). Both devices round it identically: the
// CPU loops that use it are compiled for x86-64-v3/v4 (FMA instructions; the baseline clone
// calls libm's fmaf, slower but the same bits), CUDA has FFMA. Elsewhere no multiply-add is
// fused (-ffp-contract=off, --fmad=false), so every other rounding matches too.
template <typename T>
SSD_HD T fma_(T a, T b, T c) {
  if constexpr (std::is_same_v<T, float>) return fmaf(a, b, c);
  else return fma(a, b, c);
}

// exp(x) for softmaxes (ssd_postprocess, multibox_loss) and the box coder, written out so that
// the CPU (vectorised) and the GPU compute the very same bits: x = n * ln2 + r with
// |r| <= ln2 / 2 (Cody-Waite split of ln2, so n * ln2_hi is exact), exp(r) by a polynomial
// (exp_reduced: below 0.1 ulp), then two exact power-of-two scalings, so that results down to
// the subnormals are rounded once. The reduction's second step and the polynomial are fused
// multiply-adds (fma_). Within 0.9 ulp of exp (float: swept over every 61st float; double: 20M
// samples in [-700, 700]); overflows to +inf, underflows to 0, NaN stays NaN. No branches, so
// the CPU loop vectorises.
template <typename T> struct ExpConsts;
template <> struct ExpConsts<float> {
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693145751953125f;  // ln2 to 16 bits
  static constexpr float kLn2Lo = 1.42860676533018708e-06f;
  static constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float kMin = -104.0f;        // exp(-104) < half the smallest subnormal
  static constexpr float kMax = 89.0f;          // exp(89) > FLT_MAX
  static constexpr float kMinNormal = -87.0f;   // exp(-87) > FLT_MIN
  static constexpr uint32_t kBias = 127;
  static constexpr int kMantissa = 23;
  static constexpr float kMinPositiveNormal = 1.17549435e-38f;  // FLT_MIN
};
template <> struct ExpConsts<double> {
  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kLn2Hi = 0.6931471806019545;  // ln2 to 32 bits
  static constexpr double kLn2Lo = -4.2009150726810846e-11;
  static constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kMin = -746.0;
  static constexpr double kMax = 710.0;
  static constexpr double kMinNormal = -708.0;  // exp(-708) > DBL_MIN
  static constexpr int kDegree = 13;  // exp_reduced: Taylor polynomial
  static constexpr uint64_t kBias = 1023;
  static constexpr int kMantissa = 52;
  static constexpr double kMinPositiveNormal = 2.2250738585072014e-308;  // DBL_MIN
};

// 1 / k!, exact factorial (k <= 13 < 2^53) and one rounding; folded at compile time.
constexpr double inv_factorial(int k) {
  double f = 1.0;
  for (int i = 2; i <= k; ++i) f *= i;
  return 1.0 / f;
}

// 2^n for the integer n held in t = n + kRound (its low mantissa bits, two's complement).
template <typename T>
SSD_HD T pow2_from_rounded(T t) {
  using C = ExpConsts<T>;
  const skey_t<T> n = bits_of(t) - bits_of(C::kRound);
  return from_bits<T>((n + C::kBias) << C::kMantissa);
}

// exp(r) for |r| <= ln2 / 2, by Horner's rule in fused multiply-adds. float: 1 + r + r^2 q(r),
// q of degree 4 fitted to (exp(r) - 1 - r) / r^2 for the least maximum relative error of the
// whole (3.8e-9 with the coefficients rounded to float: 0.06 ulp; fitted for this project by
// Lawson's iteration on 4000 Chebyshev points), one degree below the Taylor polynomial of
// the same accuracy. double: the Taylor polynomial of degree 13 (truncation below 0.1 ulp).
template <typename T>
SSD_HD T exp_reduced(T r) {
  if constexpr (std::is_same_v<T, float>) {
    T p = 0x1.6a244cp-10f;
    p = fma_(p, r, 0x1.1239d4p-7f);
    p = fma_(p, r, 0x1.5558f2p-5f);
    p = fma_(p, r, 0x1.555492p-3f);
    p = fma_(p, r, 0x1.fffffcp-2f);
    p = fma_(p, r, 1.0f);
    return fma_(p, r, 1.0f);
  } else {
    using C = ExpConsts<T>;
    T p = T(inv_factorial(C::kDegree));
SSD_UNROLL
    for (int k = C::kDegree - 1; k >= 0; --k) p = fma_(p, r, T(inv_factorial(k)));
    return p;
  }
}

template <typename T>
SSD_HD T exp_det(T x) {
  using C = ExpConsts<T>;
  const bool nan = x != x;
  T xc = x < C::kMin ? C::kMin : x;
  xc = xc > C::kMax ? C::kMax : xc;
  xc = nan ? T(0) : xc;
  const T t = fma_(xc, C::kLog2e, C::kRound);  // round(x / ln2) + kRound, |n| <= 1076
  const T nf = t - C::kRound;
  // x - nf * kLn2Hi is exact (the product has <= 24 significant bits, Sterbenz for the
  // difference), so fusing it changes no bit; the kLn2Lo step is rounded once
  const T r = fma_(-nf, C::kLn2Lo, fma_(-nf, C::kLn2Hi, xc));
  const T p = exp_reduced(r);
  const T t1 = nf * T(0.5) + C::kRound;  // n1 = round(n / 2), n2 = n - n1: 2^n1, 2^n2 normal
  const T t2 = (nf - (t1 - C::kRound)) + C::kRound;
  const T y = (p * pow2_from_rounded(t1)) * pow2_from_rounded(t2);
  return nan ? x : (x < C::kMin ? T(0) : y);
}

// exp(x) for x <= 0 (or NaN): the terms of a softmax once the max is subtracted (multibox_loss).
// exp_det's reduction and polynomial, but a single power-of-two scaling: results below the
// smallest normal number are flushed to 0 (next to a softmax sum >= 1 they vanish anyway).
// Below kMinNormal (and for -inf) the arithmetic runs on unclamped garbage that the last
// select drops. About half the operations of exp_det. -inf gives 0, NaN stays NaN (p is NaN).
template <typename T>
SSD_HD T exp_nonpos(T x) {
  using C = ExpConsts<T>;
  const bool tiny = x < C::kMinNormal;
  const T t = fma_(x, C::kLog2e, C::kRound);  // round(x / ln2) + kRound, 2^n normal
  const T nf = t - C::kRound;
  const T r = fma_(-nf, C::kLn2Lo, fma_(-nf, C::kLn2Hi, x));  // as in exp_det
  const T y = exp_reduced(r) * pow2_from_rounded(t);
  return tiny ? T(0) : y;
}

// log(x): x = 2^e * (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)) (f exact), then
// log(1 + f) = 2 atanh(s), s = f / (2 + f), |s| <= 0.172, written as
// f - (f^2/2 - s (f^2/2 + R)) with R = s^2 (2/3 + 2/5 s^2 + ...): the big term f is exact and
// the correction is small next to it, so its roundings hardly show (the series to s^8 for float,
// s^22 for double: truncation below 0.01 ulp). Then + e * ln2 with the Cody-Waite split of
// exp_det (e * ln2_hi exact). Within 0.9 ulp of log (float: swept over every 61st positive
// normal float; double: sampled). `e_shift` is added to the exponent (log_any scales
// subnormals by it). For a positive normal x; NaN stays NaN. Branch free, no integer-to-float
// conversion (e is read through kRound), so the CPU loops vectorise, float64 included.
template <typename T>
SSD_HD T log_normal(T x, T e_shift) {
  using C = ExpConsts<T>;
  using U = skey_t<T>;
  constexpr int kTerms = std::is_same_v<T, double> ? 11 : 4;  // R: s^2 .. s^(2 kTerms)
  constexpr U kMantissaMask = (U(1) << C::kMantissa) - 1;
  const U u = bits_of(x);
  // the biased exponent field E, as the float kRound + E, then e = E - bias
  const T biased = from_bits<T>(bits_of(C::kRound) + (u >> C::kMantissa)) - C::kRound;
  T m = from_bits<T>((u & kMantissaMask) | bits_of(T(1)));  // in [1, 2)
  const bool big = m > T(1.41421356237309505);
  m = big ? m * T(0.5) : m;
  const T e = biased - T(C::kBias) + (big ? T(1) : T(0)) + e_shift;
  const T f = m - T(1);  // exact (Sterbenz)
  const T s = f / (T(2) + f);
  const T z = s * s;
  T r = T(2.0 / (2 * kTerms + 1));
SSD_UNROLL
  for (int k = kTerms - 1; k >= 1; --k) r = fma_(r, z, T(2.0 / (2 * k + 1)));
  const T hfsq = T(0.5) * f * f;
  const T y = e * C::kLn2Hi - ((hfsq - fma_(s, fma_(z, r, hfsq), e * C::kLn2Lo)) - f);
  return x != x ? x : y;
}

// log(x) of a positive normal x (multibox_loss takes it of a softmax denominator, >= 1).
template <typename T>
SSD_HD T log_det(T x) { return log_normal(x, T(0)); }

// log(x) for every x, as the box coder needs it: 0 -> -inf, negative -> NaN, +inf -> +inf, NaN
// stays NaN; a subnormal x is scaled into the normal range first (2^kMantissa + 1), exactly.
template <typename T>
SSD_HD T log_any(T x) {
  using C = ExpConsts<T>;
  constexpr T kScale = T(1ull << (C::kMantissa + 1));  // 2^24 (float), 2^53 (double)
  constexpr T kInf = std::numeric_limits<T>::infinity();
  const bool sub = x < C::kMinPositiveNormal;
  const T y = log_normal(sub ? x * kScale : x, sub ? T(-(C::kMantissa + 1)) : T(0));
  const T nonpos = x == T(0) ? -kInf : std::numeric_limits<T>::quiet_NaN();
  return x > T(0) ? (x == kInf ? x : y) : (x != x ? x : nonpos);
}

}  // namespace ssd_fast
