// Scalar helpers of the NMS family shared by the CPU and CUDA kernels, so that both devices
// rank, threshold and compute softmax probabilities bit for bit the same way.
//
// Ranking. Every sort in the NMS ops is an ascending sort of unsigned "descending keys":
// desc_key(s) is smaller for a larger score. -0.0 and +0.0 get the same key (they tie, as in
// torch.sort), and every NaN gets key 0, ahead of +inf, because torch.sort (and so
// torchvision.ops.nms) ranks NaN above every number. Ties are then broken by index, either by
// a stable sort or by a composite key (desc_key << 32 | index), which is unique.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

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

// The key that no score gets: marks "not a candidate" (score <= threshold, or NaN) in the
// key arrays of multiclass_nms. desc_key of -inf is 0xFF800000 (float), so all-ones is free.
template <typename T>
SSD_HD skey_t<T> excluded_key() { return ~skey_t<T>(0); }

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

// Ascending desc_key <=> descending score; NaN first, -0 == +0.
template <typename T>
SSD_HD skey_t<T> desc_key(T s) {
  using U = skey_t<T>;
  constexpr U sign = U(1) << (KeyTraits<T>::kBits - 1);
  const U u = bits_of(s == T(0) ? T(0) : s);
  const U ascending = (u & sign) ? ~u : (u | sign);  // monotone map of the float order
  return s != s ? U(0) : ~ascending;  // selects, no branch: the CPU loops vectorise
}

// The score a (non-NaN) key was made from; -0.0 comes back as +0.0.
template <typename T>
SSD_HD T from_desc_key(skey_t<T> key) {
  using U = skey_t<T>;
  constexpr U sign = U(1) << (KeyTraits<T>::kBits - 1);
  const U ascending = ~key;
  return from_bits<T>((ascending & sign) ? (ascending & ~sign) : ~ascending);
}

template <typename T>
SSD_HD ckey_t<T> compose_key(skey_t<T> key, uint32_t low) {
  return (ckey_t<T>(key) << 32) | ckey_t<T>(low);
}

template <typename T>
SSD_HD skey_t<T> score_key_of(ckey_t<T> c) { return skey_t<T>(c >> 32); }

SSD_HD uint32_t low_of(uint64_t c) { return uint32_t(c); }
SSD_HD uint32_t low_of(unsigned __int128 c) { return uint32_t(c); }

// Thresholds are given as doubles and mean "value > threshold" exactly. For a float x,
// x > t <=> x > (the largest float <= t), so kernels compare in their compute type against
// this rounded-down threshold. (torchvision's CPU nms compares its float IoU with the double
// threshold: the same decisions.) Host only.
template <typename T>
inline T threshold_below(double t) {
  if constexpr (std::is_same_v<T, double>) {
    return t;
  } else {
    T f = static_cast<T>(t);
    if (static_cast<double>(f) > t) f = nextafterf(f, -INFINITY);
    return f;
  }
}

// exp(x) for the softmax of ssd_postprocess, written out so that the CPU (vectorised) and
// the GPU compute the very same bits: x = n * ln2 + r with |r| <= ln2 / 2 (Cody-Waite split
// of ln2, so n * ln2_hi is exact), exp(r) by its Taylor polynomial (degree 7 for float, 13
// for double: truncation below 0.1 ulp), then two exact power-of-two scalings, so that
// results down to the subnormals are rounded once. Within 2 ulp of exp; overflows to +inf,
// underflows to 0, NaN stays NaN. Needs IEEE arithmetic without FMA contraction (the build
// passes -ffp-contract=off and --fmad=false). No branches, so the CPU loop vectorises.
template <typename T> struct ExpConsts;
template <> struct ExpConsts<float> {
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693145751953125f;  // ln2 to 16 bits
  static constexpr float kLn2Lo = 1.42860676533018708e-06f;
  static constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float kMin = -104.0f;        // exp(-104) < half the smallest subnormal
  static constexpr float kMax = 89.0f;          // exp(89) > FLT_MAX
  static constexpr int kDegree = 7;
  static constexpr uint32_t kBias = 127;
  static constexpr int kMantissa = 23;
};
template <> struct ExpConsts<double> {
  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kLn2Hi = 0.6931471806019545;  // ln2 to 32 bits
  static constexpr double kLn2Lo = -4.2009150726810846e-11;
  static constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kMin = -746.0;
  static constexpr double kMax = 710.0;
  static constexpr int kDegree = 13;
  static constexpr uint64_t kBias = 1023;
  static constexpr int kMantissa = 52;
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

template <typename T>
SSD_HD T exp_det(T x) {
  using C = ExpConsts<T>;
  const bool nan = x != x;
  T xc = x < C::kMin ? C::kMin : x;
  xc = xc > C::kMax ? C::kMax : xc;
  xc = nan ? T(0) : xc;
  const T t = xc * C::kLog2e + C::kRound;  // round(x / ln2) + kRound, |n| <= 1076
  const T nf = t - C::kRound;
  const T r = (xc - nf * C::kLn2Hi) - nf * C::kLn2Lo;
  T p = T(inv_factorial(C::kDegree));
SSD_UNROLL
  for (int k = C::kDegree - 1; k >= 0; --k) p = p * r + T(inv_factorial(k));
  const T t1 = nf * T(0.5) + C::kRound;  // n1 = round(n / 2), n2 = n - n1: 2^n1, 2^n2 normal
  const T t2 = (nf - (t1 - C::kRound)) + C::kRound;
  const T y = (p * pow2_from_rounded(t1)) * pow2_from_rounded(t2);
  return nan ? x : (x < C::kMin ? T(0) : y);
}

// Clamp a decoded coordinate to [0, 1] (ssd_postprocess clip=True); NaN stays NaN.
template <typename T>
SSD_HD T clip01(T x) { return min_(max_(x, T(0)), T(1)); }

}  // namespace ssd_fast
