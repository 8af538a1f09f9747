// select_top and mark_top of ops/cpu/detail/mining.h: the k largest keys of an image in a few
// straight passes over its keys.
//
// 1. Group maxima: the keys as rows of kLanes, R consecutive rows a chunk; each lane of a
//    chunk is a group of R keys, its maximum one vector max per row (n / kLanes vector ops).
//    The k-th largest group maximum lb is a lower bound of the k-th largest key: k groups
//    have a maximum >= lb, so at least k keys are >= lb. R is chosen so that there are about
//    4k groups: then only about 1.2k keys are >= lb (for losses in random order).
// 2. The keys >= lb are copied out (branch free) and std::nth_element finds the k-th largest
//    among them.
#include <algorithm>
#include <functional>

#include "ops/cpu/detail/clones.h"
#include "ops/cpu/detail/mining.h"

namespace ssd_fast {
namespace cpu {
namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kMaxRows = 64;  // rows per chunk at most: groups of <= 64 keys, >= n / 64 groups

// out: the maximum of each group (kLanes per chunk of `rows` rows), then each key of the last
// partial row as a group of its own. Returns the number of groups.
template <typename K>
SSD_FAST_INLINE int64_t group_max_impl(const K* __restrict keys, int64_t n, int64_t rows,
                                       K* __restrict out) {
  const int64_t full_rows = n / kLanes;
  int64_t g = 0;
  for (int64_t r0 = 0; r0 < full_rows; r0 += rows) {
    const int64_t r1 = std::min(full_rows, r0 + rows);
    K m[kLanes];
#pragma omp simd
    for (int64_t w = 0; w < kLanes; ++w) m[w] = keys[r0 * kLanes + w];
    for (int64_t r = r0 + 1; r < r1; ++r) {
#pragma omp simd
      for (int64_t w = 0; w < kLanes; ++w) m[w] = max_(m[w], keys[r * kLanes + w]);
    }
    for (int64_t w = 0; w < kLanes; ++w) out[g + w] = m[w];
    g += kLanes;
  }
  for (int64_t p = full_rows * kLanes; p < n; ++p) out[g++] = keys[p];
  return g;
}

// The keys >= lb, in order, into out (room for n + 1). Returns their count.
template <typename K>
SSD_FAST_INLINE int64_t copy_at_least_impl(const K* __restrict keys, int64_t n, K lb,
                                           K* __restrict out) {
  int64_t m = 0;
  for (int64_t p = 0; p < n; ++p) {
    out[m] = keys[p];
    m += keys[p] >= lb;
  }
  return m;
}

template <typename K>
SSD_FAST_INLINE void count_above_equal_impl(const K* __restrict v, int64_t n, K t,
                                            int64_t* above, int64_t* equal) {
  int64_t a = 0, e = 0;
#pragma omp simd reduction(+ : a, e)
  for (int64_t i = 0; i < n; ++i) {
    a += v[i] > t;
    e += v[i] == t;
  }
  *above = a;
  *equal = e;
}

template <typename K>
SSD_FAST_INLINE void mark_impl(const int64_t* __restrict labels, const K* __restrict keys,
                               int64_t n, K t, bool* __restrict mask) {
#pragma omp simd
  for (int64_t p = 0; p < n; ++p) mask[p] = (labels[p] > 0) | (keys[p] >= t);
}

template <typename T, typename K>
SSD_FAST_INLINE void make_keys_impl(const T* __restrict loss, const int64_t* __restrict labels,
                                    int64_t n, K* __restrict keys, int64_t* num_pos,
                                    int64_t* num_eligible) {
  int64_t pos = 0, eligible = 0;
#pragma omp simd reduction(+ : pos, eligible)
  for (int64_t p = 0; p < n; ++p) {
    keys[p] = labels[p] == 0 ? loss_key(loss[p]) : K(0);
    pos += labels[p] > 0;
    eligible += labels[p] == 0;
  }
  *num_pos = pos;
  *num_eligible = eligible;
}

#define SSD_FAST_MINING_LOOPS(K)                                                               \
  SSD_FAST_CLONES int64_t group_max(const K* keys, int64_t n, int64_t rows, K* out) {          \
    return group_max_impl(keys, n, rows, out);                                                 \
  }                                                                                            \
  int64_t copy_at_least(const K* keys, int64_t n, K lb, K* out) {                              \
    return copy_at_least_impl(keys, n, lb, out);                                               \
  }                                                                                            \
  SSD_FAST_CLONES void count_above_equal(const K* v, int64_t n, K t, int64_t* above,           \
                                         int64_t* equal) {                                     \
    count_above_equal_impl(v, n, t, above, equal);                                             \
  }                                                                                            \
  SSD_FAST_CLONES void mark(const int64_t* labels, const K* keys, int64_t n, K t, bool* mask) { \
    mark_impl(labels, keys, n, t, mask);                                                       \
  }
SSD_FAST_MINING_LOOPS(uint32_t)
SSD_FAST_MINING_LOOPS(uint64_t)
#undef SSD_FAST_MINING_LOOPS

template <typename K>
TopK<K> select_top_impl(const K* keys, int64_t n, int64_t k, TopScratch<K>& s) {
  K lb = 1;  // every eligible key
  const int64_t rows = std::min(kMaxRows, n / (4 * k));
  if (rows >= 2) {
    s.groups.resize(n / kLanes / rows * kLanes + 2 * kLanes);
    const int64_t g = group_max(keys, n, rows, s.groups.data());
    if (k <= g) {
      std::nth_element(s.groups.begin(), s.groups.begin() + (k - 1), s.groups.begin() + g,
                       std::greater<K>());
      lb = std::max(lb, s.groups[k - 1]);
    }
  }
  s.cand.resize(n + 1);
  K* cand = s.cand.data();
  const int64_t m = copy_at_least(keys, n, lb, cand);  // >= k: see above
  std::nth_element(cand, cand + (k - 1), cand + m, std::greater<K>());
  const K t = cand[k - 1];
  int64_t above, equal;
  count_above_equal(cand, m, t, &above, &equal);
  return {t, above + equal - k};
}

template <typename K>
void mark_top_impl(const int64_t* labels, const K* keys, int64_t n, TopK<K> t, bool* mask) {
  mark(labels, keys, n, t.threshold, mask);
  // keys == threshold beyond the k-th: the last ones in prior order are left out
  for (int64_t p = n - 1, drop = t.drop_equal; p >= 0 && drop > 0; --p) {
    if (keys[p] == t.threshold) {
      mask[p] = false;
      --drop;
    }
  }
}

}  // namespace

SSD_FAST_CLONES void make_keys(const float* loss, const int64_t* labels, int64_t n,
                               uint32_t* keys, int64_t* num_pos, int64_t* num_eligible) {
  make_keys_impl(loss, labels, n, keys, num_pos, num_eligible);
}
SSD_FAST_CLONES void make_keys(const double* loss, const int64_t* labels, int64_t n,
                               uint64_t* keys, int64_t* num_pos, int64_t* num_eligible) {
  make_keys_impl(loss, labels, n, keys, num_pos, num_eligible);
}
TopK<uint32_t> select_top(const uint32_t* keys, int64_t n, int64_t k, TopScratch<uint32_t>& s) {
  return select_top_impl(keys, n, k, s);
}
TopK<uint64_t> select_top(const uint64_t* keys, int64_t n, int64_t k, TopScratch<uint64_t>& s) {
  return select_top_impl(keys, n, k, s);
}
void mark_top(const int64_t* labels, const uint32_t* keys, int64_t n, TopK<uint32_t> t, bool* mask) {
  mark_top_impl(labels, keys, n, t, mask);
}
void mark_top(const int64_t* labels, const uint64_t* keys, int64_t n, TopK<uint64_t> t, bool* mask) {
  mark_top_impl(labels, keys, n, t, mask);
}

}  // namespace cpu
}  // namespace ssd_fast
