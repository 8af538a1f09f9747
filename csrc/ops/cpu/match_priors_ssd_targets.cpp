// CPU kernels of match_priors and ssd_targets (SPEC §2): SSD matching, then (ssd_targets)
// encoding of the matched GT and its label, fused in one pass per image.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ops/box_math.h"
#include "ops/coder_math.h"
#include "ops/cpu/detail/clones.h"
#include "ops/cpu/detail/iou_rows.h"
#include "ops/cpu/detail/parallel.h"
#include "ops/target_checks.h"
#include "ops/target_math.h"

namespace ssd_fast {
namespace {

// A match decided before the threshold step (argmax: forced best priors; bipartite: the greedy
// pairs): prior p gets the k-th valid GT with IoU iou, whatever its own best.
template <typename acc_t>
struct Forced {
  int32_t prior, gt;
  acc_t iou;
};

// Per-thread scratch for P priors and G GTs, kept between calls (thread_local): every element
// match_image reads it has written in the same call.
template <typename acc_t>
struct MatchScratch {
  std::vector<acc_t> best_iou, gbest_iou;
  std::vector<int32_t> best_g, gbest_p, valid;
  std::vector<uint8_t> taken, gt_done;
  std::vector<acc_t> gbox;
  std::vector<Forced<acc_t>> forced;
  void resize(int64_t P, int64_t G) {
    best_iou.resize(P);
    best_g.resize(P);
    taken.resize(P);
    gbest_iou.resize(G);
    gbest_p.resize(G);
    gt_done.resize(G);
    gbox.resize(4 * G);
    valid.reserve(G);
    forced.reserve(G);
  }
};

// Match one image: per prior its best valid GT and IoU (s.best_g, s.best_iou; ties: lowest GT)
// and the forced matches (s.forced, applied in order after the threshold step, so a later
// one wins a shared prior). gt [G, 4], labels [G]; priors as SoA (compute type). Returns the
// number of valid GTs (labels >= 0, listed in s.valid); 0 leaves best_g/best_iou unset.
template <typename scalar_t>
int64_t match_image(MatchMode mode, const scalar_t* gt, const int64_t* labels, int64_t G,
                    cpu::SoaView<at::opmath_type<scalar_t>> pri,
                    const at::opmath_type<scalar_t>* chunks, int64_t P,
                    MatchScratch<at::opmath_type<scalar_t>>& s) {
  using acc_t = at::opmath_type<scalar_t>;
  s.valid.clear();
  s.forced.clear();
  for (int64_t g = 0; g < G; ++g)
    if (labels[g] >= 0) s.valid.push_back(static_cast<int32_t>(g));
  const int64_t ng = static_cast<int64_t>(s.valid.size());
  if (ng == 0) return 0;
  // Every row of IoUs: per prior its best GT (ties: lowest GT), per GT its best prior.
  std::fill(s.best_iou.begin(), s.best_iou.end(), acc_t(0));
  std::fill(s.best_g.begin(), s.best_g.end(), 0);
  for (int64_t k = 0; k < ng; ++k) {
    acc_t* box = s.gbox.data() + 4 * k;
    for (int q = 0; q < 4; ++q) box[q] = static_cast<acc_t>(gt[4 * s.valid[k] + q]);
    int64_t argmax;
    s.gbest_iou[k] = cpu::match_row(box, pri, chunks, P, s.best_iou.data(), s.best_g.data(),
                                    static_cast<int32_t>(k), &argmax);
    s.gbest_p[k] = static_cast<int32_t>(argmax);
  }
  if (mode == MatchMode::kArgmax) {
    for (int64_t k = 0; k < ng; ++k)  // increasing GT index: a later GT wins a shared prior
      s.forced.push_back({s.gbest_p[k], static_cast<int32_t>(k), static_cast<acc_t>(kForcedIou)});
    return ng;
  }
  // Greedy bipartite: the globally best (free prior, unmatched GT) pair, again and again.
  // Each GT keeps its best free prior; only GTs whose best was just taken rescan.
  std::fill(s.taken.begin(), s.taken.end(), 0);
  std::fill(s.gt_done.begin(), s.gt_done.begin() + ng, 0);
  const acc_t eps = static_cast<acc_t>(kMatchEps);
  while (true) {
    int64_t gk = -1;
    for (int64_t k = 0; k < ng; ++k) {
      if (s.gt_done[k] || !(s.gbest_iou[k] > eps)) continue;
      if (gk < 0 || s.gbest_iou[k] > s.gbest_iou[gk] ||
          (s.gbest_iou[k] == s.gbest_iou[gk] && s.gbest_p[k] < s.gbest_p[gk]))
        gk = k;
    }
    if (gk < 0) break;
    const int32_t pk = s.gbest_p[gk];
    s.forced.push_back({pk, static_cast<int32_t>(gk), s.gbest_iou[gk]});
    s.taken[pk] = 1;
    s.gt_done[gk] = 1;
    for (int64_t k = 0; k < ng; ++k) {
      if (s.gt_done[k] || s.gbest_p[k] != pk) continue;
      // Only IoU > eps matters from here on: below it the GT is never picked again.
      int64_t argmax;
      s.gbest_iou[k] = cpu::best_free_row(s.gbox.data() + 4 * k, pri, chunks, P,
                                          s.taken.data(), &argmax);
      s.gbest_p[k] = static_cast<int32_t>(argmax);
    }
  }
  return ng;
}

// Calls f(p, k) for every prior p whose best IoU reaches thr (k: its best GT), in increasing
// order: a few percent of the priors, clustered around the GTs, so blocks without one are
// skipped after one vectorised test.
template <typename acc_t, typename F>
SSD_FAST_INLINE void for_each_above(const MatchScratch<acc_t>& s, acc_t thr, int64_t P, F f) {
  constexpr int64_t kBlock = 16;
  const acc_t* __restrict best_iou = s.best_iou.data();
  int64_t p0 = 0;
  for (; p0 + kBlock <= P; p0 += kBlock) {
    bool any = false;
    for (int64_t l = 0; l < kBlock; ++l) any |= best_iou[p0 + l] >= thr;
    if (!any) continue;
    for (int64_t p = p0; p < p0 + kBlock; ++p) {
      if (best_iou[p] >= thr) f(p, s.best_g[p]);
    }
  }
  for (int64_t p = p0; p < P; ++p) {
    if (best_iou[p] >= thr) f(p, s.best_g[p]);
  }
}

template <typename scalar_t, typename acc_t>
void copy_iou(const acc_t* __restrict from, int64_t P, scalar_t* __restrict to) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    std::copy(from, from + P, to);
  } else {
    for (int64_t p = 0; p < P; ++p) to[p] = static_cast<scalar_t>(from[p]);
  }
}

// match_priors' outputs of one image (ng valid GTs, match_image): idx (the GT's row in
// gt_boxes, -1 for the background) and the IoU of every prior; the background everywhere,
// then the matched priors, then the forced matches over them.
template <typename scalar_t, typename acc_t>
void write_matches(const MatchScratch<acc_t>& s, int64_t ng, acc_t thr, int64_t P,
                   int64_t* __restrict idx, scalar_t* __restrict iou) {
  const int32_t* __restrict valid = s.valid.data();
  std::fill(idx, idx + P, -1);
  if (ng == 0) {  // best_iou unset: no GT, IoU 0 everywhere
    std::fill(iou, iou + P, scalar_t(0));
    return;
  }
  copy_iou(s.best_iou.data(), P, iou);
  for_each_above(s, thr, P, [&](int64_t p, int32_t k) { idx[p] = valid[k]; });
  for (const Forced<acc_t>& f : s.forced) {
    idx[f.prior] = valid[f.gt];
    iou[f.prior] = static_cast<scalar_t>(f.iou);
  }
}

// ssd_targets' outputs of one image (ng valid GTs, match_image): per prior the encoded GT
// (zeros for the background), its label (0 for the background) and the IoU; the background
// everywhere, then the matched priors, then the forced matches over them.
template <typename scalar_t, typename acc_t>
void write_targets(const MatchScratch<acc_t>& s, int64_t ng, acc_t thr, int64_t P,
                   const scalar_t* gt, const int64_t* gt_labels, const scalar_t* priors,
                   const acc_t v[4], scalar_t* __restrict loc, int64_t* __restrict labels,
                   scalar_t* __restrict iou) {
  const int32_t* __restrict valid = s.valid.data();
  std::fill(loc, loc + 4 * P, scalar_t(0));
  std::fill(labels, labels + P, 0);
  if (ng == 0) {  // best_iou unset: no GT, IoU 0 everywhere
    std::fill(iou, iou + P, scalar_t(0));
    return;
  }
  copy_iou(s.best_iou.data(), P, iou);
  auto match = [&](int64_t p, int32_t k) {
    const int64_t g = valid[k];
    labels[p] = gt_labels[g];
    acc_t gb[4], pb[4], t[4];
    for (int q = 0; q < 4; ++q) {
      gb[q] = static_cast<acc_t>(gt[4 * g + q]);
      pb[q] = static_cast<acc_t>(priors[4 * p + q]);
    }
    encode_one(gb, pb, v, t);
    for (int q = 0; q < 4; ++q) loc[4 * p + q] = static_cast<scalar_t>(t[q]);
  };
  for_each_above(s, thr, P, match);
  for (const Forced<acc_t>& f : s.forced) {
    match(f.prior, f.gt);
    iou[f.prior] = static_cast<scalar_t>(f.iou);
  }
}

// Shared driver, in parallel over images: match, then write the outputs of every prior:
// match_priors' idx and iou, or (loc non-null) ssd_targets' encoded GT, label and iou.
void run_targets(const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& priors,
                 double iou_threshold, MatchMode mode, const double* variances, at::Tensor* idx,
                 at::Tensor& iou, at::Tensor* loc, at::Tensor* labels) {
  const int64_t B = gt_boxes.size(0), G = gt_boxes.size(1), P = priors.size(0);
  if (B == 0 || P == 0) return;
  const at::Tensor gt = gt_boxes.contiguous();
  const at::Tensor lab = gt_labels.to(at::kLong).contiguous();
  const at::Tensor pr = priors.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt.scalar_type(), "ssd_targets_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const cpu::SoaBoxes<acc_t> soa(pr.data_ptr<scalar_t>(), P);
    const std::vector<acc_t> chunks = cpu::chunk_bounds(soa.view(), P);
    const scalar_t* gtp = gt.data_ptr<scalar_t>();
    const int64_t* labp = lab.data_ptr<int64_t>();
    const scalar_t* prp = pr.data_ptr<scalar_t>();
    const acc_t thr = static_cast<acc_t>(iou_threshold);
    acc_t v[4];
    for (int q = 0; q < 4 && loc; ++q) v[q] = static_cast<acc_t>(variances[q]);
    // images with more GTs first: their cost grows with the GTs
    std::vector<int64_t> order(B), num_gt(B, 0);
    for (int64_t b = 0; b < B; ++b) {
      order[b] = b;
      for (int64_t g = 0; g < G; ++g) num_gt[b] += labp[b * G + g] >= 0;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return num_gt[a] > num_gt[b]; });
    cpu::parallel_dynamic(B, order.data(), [&](int64_t b) {
      thread_local MatchScratch<acc_t> scratch;
      MatchScratch<acc_t>& s = scratch;
      s.resize(P, G);
      const scalar_t* g_b = gtp + 4 * b * G;
      const int64_t* lab_b = labp + b * G;
      scalar_t* __restrict iou_b = iou.data_ptr<scalar_t>() + b * P;
      const int64_t ng = match_image<scalar_t>(mode, g_b, lab_b, G, soa.view(), chunks.data(), P, s);
      if (loc) {
        write_targets(s, ng, thr, P, g_b, lab_b, prp, v, loc->data_ptr<scalar_t>() + 4 * b * P,
                      labels->data_ptr<int64_t>() + b * P, iou_b);
      } else {
        write_matches(s, ng, thr, P, idx->data_ptr<int64_t>() + b * P, iou_b);
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> match_priors_cpu(const at::Tensor& gt_boxes,
                                                    const at::Tensor& gt_labels,
                                                    const at::Tensor& priors, double iou_threshold,
                                                    c10::string_view mode) {
  const MatchMode m =
      check_match_args("match_priors", gt_boxes, gt_labels, priors, iou_threshold, mode);
  const int64_t B = gt_boxes.size(0), P = priors.size(0);
  at::Tensor idx = at::empty({B, P}, gt_labels.options().dtype(at::kLong));
  at::Tensor iou = at::empty({B, P}, gt_boxes.options());
  run_targets(gt_boxes, gt_labels, priors, iou_threshold, m, nullptr, &idx, iou, nullptr, nullptr);
  return {idx, iou};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ssd_targets_cpu(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& priors,
    double iou_threshold, at::ArrayRef<double> variances, c10::string_view mode) {
  const MatchMode m =
      check_match_args("ssd_targets", gt_boxes, gt_labels, priors, iou_threshold, mode);
  check_variances("ssd_targets", variances);
  const int64_t B = gt_boxes.size(0), P = priors.size(0);
  at::Tensor iou = at::empty({B, P}, gt_boxes.options());
  at::Tensor loc = at::empty({B, P, 4}, gt_boxes.options());
  at::Tensor labels = at::empty({B, P}, gt_labels.options().dtype(at::kLong));
  run_targets(gt_boxes, gt_labels, priors, iou_threshold, m, variances.data(), nullptr, iou, &loc,
              &labels);
  return {loc, labels, iou};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("match_priors", &match_priors_cpu);
  m.impl("ssd_targets", &ssd_targets_cpu);
}

}  // namespace ssd_fast
