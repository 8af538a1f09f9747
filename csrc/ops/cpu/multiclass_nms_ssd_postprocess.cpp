// CPU kernels of multiclass_nms and ssd_postprocess.
//
// Both first build keys [B, S, P]: the desc_key of every (image, non-background class,
// prior) score above score_threshold, excluded_key() elsewhere, by tiles of 64 priors held
// class-major (so every per-class loop is a contiguous SIMD loop). Then, per (image, class)
// segment (in parallel): the top-k composite keys (score key, prior), sorted, and greedy NMS;
// and per image: the kept detections of all classes under composite keys (score key,
// class * P + prior), the top K, sorted. Composite keys are unique, so every order is total
// and the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "ops/coder_math.h"
#include "ops/cpu/detail/clones.h"
#include "ops/cpu/detail/greedy_nms.h"
#include "ops/cpu/detail/softmax_tile.h"
#include "ops/nms_checks.h"
#include "ops/nms_math.h"

namespace ssd_fast {
namespace {

using cpu::BoxArrays;
using cpu::greedy_nms;
using cpu::radix_sort;

using cpu::kTilePriors;
using cpu::softmax_tile;

template <typename T>
SSD_FAST_INLINE void make_keys_impl(const T* __restrict s, int64_t n, T threshold,
                           skey_t<T>* __restrict out) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = s[j] > threshold ? desc_key(s[j]) : excluded_key<T>();
}

#define SSD_FAST_TILE_FNS(T)                                                                  \
  SSD_FAST_CLONES void make_keys_##T(const T* s, int64_t n, T threshold, skey_t<T>* out) {     \
    make_keys_impl<T>(s, n, threshold, out);                                                  \
  }
SSD_FAST_TILE_FNS(float)
SSD_FAST_TILE_FNS(double)
#undef SSD_FAST_TILE_FNS

inline void make_keys(const float* s, int64_t n, float t, uint32_t* out) {
  make_keys_float(s, n, t, out);
}
inline void make_keys(const double* s, int64_t n, double t, uint64_t* out) {
  make_keys_double(s, n, t, out);
}

// One tile: priors [p0, p0 + n) of image b, buf[c * n + j] = scores (or logits) of the tile in
// the compute type.
template <typename scalar_t>
struct Tile {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t b, p0, n;
  std::vector<acc_t> buf;

  void load(const scalar_t* __restrict rows, int64_t c_n) {  // rows [n, C] -> buf [C, n]
    acc_t* __restrict out = buf.data();
    const int64_t len = n;  // a local: the compiler cannot keep members in registers here
    for (int64_t c = 0; c < c_n; ++c) {
      for (int64_t j = 0; j < len; ++j) out[c * len + j] = static_cast<acc_t>(rows[j * c_n + c]);
    }
  }

  // keys[b, s, p0 + j] for every non-background class s. round: the values are probabilities
  // computed in acc_t, to be ranked as the output dtype holds them.
  void write_keys(const MulticlassPlan& pl, acc_t threshold, bool round, skey_t<acc_t>* keys) {
    for (int64_t s = 0; s < pl.segments_per_image; ++s) {
      acc_t* row = buf.data() + pl.class_of(s) * n;
      if constexpr (!std::is_same_v<scalar_t, acc_t>) {
        if (round) {
          for (int64_t j = 0; j < n; ++j) {
            row[j] = static_cast<acc_t>(static_cast<scalar_t>(row[j]));
          }
        }
      }
      make_keys(row, n, threshold, keys + (b * pl.segments_per_image + s) * pl.p + p0);
    }
  }
};

// Calls fn(tile) for every tile of 64 priors of every image, in parallel.
template <typename scalar_t, typename Fn>
void for_each_tile(const MulticlassPlan& pl, Fn&& fn) {
  const int64_t per_image = pl.segments_per_image > 0 ? (pl.p + kTilePriors - 1) / kTilePriors : 0;
  at::parallel_for(0, pl.b * per_image, 1, [&](int64_t lo, int64_t hi) {
    Tile<scalar_t> t;
    t.buf.resize(std::max<int64_t>(pl.c, 1) * kTilePriors);
    for (int64_t i = lo; i < hi; ++i) {
      t.b = i / per_image;
      t.p0 = (i % per_image) * kTilePriors;
      t.n = std::min(kTilePriors, pl.p - t.p0);
      fn(t);
    }
  });
}

// The k smallest composite keys (score key, prior) of one segment's keys [P], sorted. A
// histogram of the top 11 bits of the keys finds the bin holding the k-th; only that bin goes
// through nth_element. Excluded keys (all ones) are alone in the last bin: no candidate has
// a key >= desc_key(-FLT_MAX), as -inf is never above a threshold.
template <typename T>
void top_k_sorted(const skey_t<T>* key, int64_t P, int64_t k, std::vector<ckey_t<T>>& out,
                  std::vector<ckey_t<T>>& tail, std::vector<int64_t>& hist) {
  std::vector<int64_t> no_vals;
  constexpr int kShift = KeyTraits<T>::kBits - 11;
  constexpr int64_t kExcludedBin = 2047;
  hist.assign(2048, 0);
  for (int64_t p = 0; p < P; ++p) ++hist[key[p] >> kShift];
  const int64_t valid = P - hist[kExcludedBin];
  int64_t bin = kExcludedBin, below = 0;  // all valid keys are below bin 2047
  if (valid > k) {
    bin = 0;
    while (below + hist[bin] < k) below += hist[bin++];
  }
  out.clear();
  tail.clear();
  for (int64_t p = 0; p < P; ++p) {
    const int64_t kb = static_cast<int64_t>(key[p] >> kShift);
    if (kb < bin) {
      out.push_back(compose_key<T>(key[p], static_cast<uint32_t>(p)));
    } else if (kb == bin && bin != kExcludedBin) {
      tail.push_back(compose_key<T>(key[p], static_cast<uint32_t>(p)));
    }
  }
  if (!tail.empty()) {
    const int64_t need = k - below;
    std::nth_element(tail.begin(), tail.begin() + need, tail.end());
    out.insert(out.end(), tail.begin(), tail.begin() + need);
  }
  radix_sort(out, nullptr, tail, no_vals);  // unique keys: any sort gives this order
}

template <typename scalar_t>
struct BoxSource {  // boxes[b, p] or boxes[b, p, c] as 4 contiguous values
  const scalar_t* data;
  int64_t image_stride, prior_stride, class_stride;
  const scalar_t* at(int64_t b, int64_t p, int64_t c) const {
    return data + b * image_stride + p * prior_stride + c * class_stride;
  }
};

template <typename scalar_t>
void multiclass_core(const MulticlassPlan& pl,
                     const std::vector<skey_t<at::opmath_type<scalar_t>>>& keys,
                     const BoxSource<scalar_t>& boxes, double iou_threshold, Detections& out) {
  using acc_t = at::opmath_type<scalar_t>;
  using ck_t = ckey_t<acc_t>;
  const int64_t B = pl.b, P = pl.p, S = pl.segments_per_image, k = pl.topk, K = pl.max_det;
  const acc_t thr = threshold_below<acc_t>(iou_threshold);
  // Kept detections of every segment, as composite keys (score key, prior), score order.
  std::vector<ck_t> kept(B * S * k);
  std::vector<int64_t> kept_count(B * S, 0);
  at::parallel_for(0, B * S, 1, [&](int64_t lo, int64_t hi) {
    std::vector<ck_t> cand, tail;
    std::vector<int64_t> hist;
    BoxArrays<acc_t> a(k);
    for (int64_t seg = lo; seg < hi; ++seg) {
      const int64_t b = seg / S, c = pl.class_of(seg % S);
      top_k_sorted<acc_t>(keys.data() + seg * P, P, k, cand, tail, hist);
      const int64_t m = static_cast<int64_t>(cand.size());
      for (int64_t i = 0; i < m; ++i) a.set(i, boxes.at(b, low_of(cand[i]), c), i);
      int64_t t = 0;
      greedy_nms(a, 0, m, thr, [&](int64_t i) { kept[seg * k + t++] = cand[i]; });
      kept_count[seg] = t;
    }
  });
  scalar_t* ob = out.boxes.data_ptr<scalar_t>();
  scalar_t* os = out.scores.data_ptr<scalar_t>();
  int64_t* ol = out.labels.data_ptr<int64_t>();
  int64_t* on = out.num.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<ck_t> merged;
    for (int64_t b = lo; b < hi; ++b) {
      merged.clear();
      for (int64_t s = 0; s < S; ++s) {
        const int64_t seg = b * S + s, c = pl.class_of(s);
        for (int64_t t = 0; t < kept_count[seg]; ++t) {
          const ck_t x = kept[seg * k + t];
          merged.push_back(compose_key<acc_t>(score_key_of<acc_t>(x),
                                              uint32_t(c * P + low_of(x))));
        }
      }
      if (static_cast<int64_t>(merged.size()) > K) {
        std::nth_element(merged.begin(), merged.begin() + K, merged.end());
        merged.resize(K);
      }
      std::sort(merged.begin(), merged.end());
      const int64_t num = static_cast<int64_t>(merged.size());
      on[b] = num;
      for (int64_t i = 0; i < K; ++i) {
        scalar_t* row = ob + (b * K + i) * 4;
        if (i < num) {
          const uint32_t low = low_of(merged[i]);
          const int64_t c = low / P, p = low % P;
          std::copy_n(boxes.at(b, p, c), 4, row);
          const acc_t score = from_desc_key<acc_t>(score_key_of<acc_t>(merged[i]));
          os[b * K + i] = static_cast<scalar_t>(score);
          ol[b * K + i] = c;
        } else {
          std::fill_n(row, 4, scalar_t(0));
          os[b * K + i] = scalar_t(0);
          ol[b * K + i] = -1;
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> as_tuple(const Detections& d) {
  return {d.boxes, d.scores, d.labels, d.num};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiclass_nms_cpu(
    const at::Tensor& boxes, const at::Tensor& scores, double score_threshold,
    double iou_threshold, int64_t topk_per_class, int64_t max_detections,
    int64_t background_class) {
  const MulticlassPlan pl = plan_multiclass_nms(boxes, scores, score_threshold, iou_threshold,
                                                topk_per_class, max_detections, background_class);
  Detections out = empty_detections(pl, boxes.options());
  const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
  const auto dtype = b.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "multiclass_nms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t st = threshold_below<acc_t>(score_threshold);
    const scalar_t* sp = s.data_ptr<scalar_t>();
    std::vector<skey_t<acc_t>> keys(pl.b * pl.segments_per_image * pl.p);
    for_each_tile<scalar_t>(pl, [&](Tile<scalar_t>& t) {
      t.load(sp + (t.b * pl.p + t.p0) * pl.c, pl.c);
      t.write_keys(pl, st, false, keys.data());
    });
    const int64_t per_prior = pl.per_class_boxes ? pl.c : 1;
    const BoxSource<scalar_t> src{b.data_ptr<scalar_t>(), pl.p * per_prior * 4, per_prior * 4,
                                  pl.per_class_boxes ? 4 : 0};
    multiclass_core<scalar_t>(pl, keys, src, iou_threshold, out);
  });
  return as_tuple(out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssd_postprocess_cpu(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& priors,
    at::ArrayRef<double> variances, bool clip, double score_threshold, double iou_threshold,
    int64_t topk_per_class, int64_t max_detections, int64_t background_class) {
  const MulticlassPlan pl =
      plan_ssd_postprocess(loc, conf_logits, priors, variances, score_threshold, iou_threshold,
                           topk_per_class, max_detections, background_class);
  Detections out = empty_detections(pl, loc.options());
  const at::Tensor l = loc.contiguous(), cl = conf_logits.contiguous(), pr = priors.contiguous();
  at::Tensor decoded = at::empty({pl.b, pl.p, 4}, loc.options());
  const auto dtype = l.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ssd_postprocess", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t st = threshold_below<acc_t>(score_threshold);
    const acc_t v[4] = {acc_t(variances[0]), acc_t(variances[1]), acc_t(variances[2]),
                        acc_t(variances[3])};
    const scalar_t* lp = l.data_ptr<scalar_t>();
    const scalar_t* cp = cl.data_ptr<scalar_t>();
    const scalar_t* pp = pr.data_ptr<scalar_t>();
    scalar_t* dp = decoded.data_ptr<scalar_t>();
    std::vector<skey_t<acc_t>> keys(pl.b * pl.segments_per_image * pl.p);
    // No tile when S == 0 (C == 0, or only the background class): nothing to rank or decode;
    // otherwise C >= 1, as the softmax needs.
    for_each_tile<scalar_t>(pl, [&](Tile<scalar_t>& t) {
      std::array<acc_t, kTilePriors> m, sum;
      for (int64_t j = 0; j < t.n; ++j) {  // decode (+ clip), rounded as decode_boxes rounds
        const int64_t bp = t.b * pl.p + t.p0 + j;
        acc_t x[4], d[4], y[4];
        for (int q = 0; q < 4; ++q) {
          x[q] = static_cast<acc_t>(lp[4 * bp + q]);
          d[q] = static_cast<acc_t>(pp[4 * (t.p0 + j) + q]);
        }
        decode_one(x, d, v, y);
        for (int q = 0; q < 4; ++q) {
          dp[4 * bp + q] = static_cast<scalar_t>(clip ? clip01(y[q]) : y[q]);
        }
      }
      t.load(cp + (t.b * pl.p + t.p0) * pl.c, pl.c);
      softmax_tile(t.buf.data(), m.data(), sum.data(), pl.c, t.n, cpu::TileExp::kDet);
      t.write_keys(pl, st, true, keys.data());
    });
    const BoxSource<scalar_t> src{dp, pl.p * 4, 4, 0};
    multiclass_core<scalar_t>(pl, keys, src, iou_threshold, out);
  });
  return as_tuple(out);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("multiclass_nms", &multiclass_nms_cpu);
  m.impl("ssd_postprocess", &ssd_postprocess_cpu);
}

}  // namespace ssd_fast
