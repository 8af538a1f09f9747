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
#include "ops/float_math.h"

namespace ssd_fast {

// The key that no score gets: marks "not a candidate" (score <= threshold, or NaN) in the
// key arrays of multiclass_nms. desc_key of -inf is 0xFF800000 (float), so all-ones is free.
template <typename T>
SSD_HD skey_t<T> excluded_key() { return ~skey_t<T>(0); }

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

// Clamp a decoded coordinate to [0, 1] (ssd_postprocess clip=True); NaN stays NaN.
template <typename T>
SSD_HD T clip01(T x) { return min_(max_(x, T(0)), T(1)); }

}  // namespace ssd_fast
