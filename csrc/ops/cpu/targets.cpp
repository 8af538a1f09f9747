// CPU kernels of match_priors and ssd_targets (SPEC §2): SSD matching, then (ssd_targets)
// encoding of the matched GT and its label, fused in one pass per image.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "ops/box_math.h"
#include "ops/cpu/iou_rows.h"
#include "ops/target_checks.h"
#include "ops/target_math.h"

namespace ssd_fast {
namespace {

template <typename scalar_t>
struct TargetOut {  // one image's rows of match_priors' outputs
  int64_t* idx;
  scalar_t* iou;
};

// Per-thread scratch for P priors and G GTs, kept between calls (thread_local): every element
// match_image reads it has written in the same call.
template <typename acc_t>
struct MatchScratch {
  std::vector<acc_t> best_iou, gbest_iou, assign_iou;
  std::vector<int32_t> best_g, gbest_p, assign, valid;
  std::vector<uint8_t> taken, gt_done;
  std::vector<acc_t> gbox;
  void resize(int64_t P, int64_t G) {
    for (auto* v : {&best_iou, &assign_iou}) v->resize(P);
    for (auto* v : {&best_g, &assign}) v->resize(P);
    taken.resize(P);
    gbest_iou.resize(G);
    gbest_p.resize(G);
    gt_done.resize(G);
    gbox.resize(4 * G);
    valid.reserve(G);
  }
};

// The threshold step of matching, branch free: prior p takes its best GT where best_iou >= thr.
// keep: priors already assigned (bipartite) keep their GT and IoU.
template <typename acc_t>
void threshold_rows(const acc_t* __restrict best_iou, const int32_t* __restrict best_g, acc_t thr,
                    int64_t P, bool keep, int32_t* __restrict assign, acc_t* __restrict assign_iou) {
  for (int64_t p = 0; p < P; ++p) {
    const bool kept = keep && assign[p] >= 0;
    const int32_t a = best_iou[p] >= thr ? best_g[p] : -1;
    assign[p] = kept ? assign[p] : a;
    assign_iou[p] = kept ? assign_iou[p] : best_iou[p];
  }
}

// Match one image. gt [G, 4], labels [G]; priors as SoA (compute type) and raw [P, 4].
template <typename scalar_t>
void match_image(MatchMode mode, const scalar_t* gt, const int64_t* labels, int64_t G,
                 cpu::SoaView<at::opmath_type<scalar_t>> pri,
                 const at::opmath_type<scalar_t>* chunks, int64_t P, double iou_threshold,
                 MatchScratch<at::opmath_type<scalar_t>>& s, TargetOut<scalar_t> out) {
  using acc_t = at::opmath_type<scalar_t>;
  s.valid.clear();
  for (int64_t g = 0; g < G; ++g)
    if (labels[g] >= 0) s.valid.push_back(static_cast<int32_t>(g));
  const int64_t ng = static_cast<int64_t>(s.valid.size());
  std::fill(s.assign.begin(), s.assign.end(), -1);
  if (ng > 0) {
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
    const acc_t thr = static_cast<acc_t>(iou_threshold);
    if (mode == MatchMode::kBipartite) {
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
        s.assign[pk] = static_cast<int32_t>(gk);
        s.assign_iou[pk] = s.gbest_iou[gk];
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
      threshold_rows(s.best_iou.data(), s.best_g.data(), thr, P, true, s.assign.data(), s.assign_iou.data());
    } else {
      threshold_rows(s.best_iou.data(), s.best_g.data(), thr, P, false, s.assign.data(), s.assign_iou.data());
      for (int64_t k = 0; k < ng; ++k) {  // increasing GT index: a later GT wins a shared prior
        s.assign[s.gbest_p[k]] = static_cast<int32_t>(k);
        s.assign_iou[s.gbest_p[k]] = static_cast<acc_t>(kForcedIou);
      }
    }
  }
  int64_t* __restrict idx = out.idx;
  scalar_t* __restrict iou = out.iou;
  const int32_t* __restrict assign = s.assign.data();
  const acc_t* __restrict assign_iou = s.assign_iou.data();
  const int32_t* __restrict valid = s.valid.data();
  for (int64_t p = 0; p < P; ++p) {
    const int32_t a = assign[p];
    idx[p] = a >= 0 ? valid[a] : -1;
    iou[p] = static_cast<scalar_t>(ng > 0 ? assign_iou[p] : acc_t(0));
  }
}

// ssd_targets' other outputs of priors [p0, p1) of one image, from its matches idx.
template <typename scalar_t>
void encode_rows(const int64_t* __restrict idx, const scalar_t* __restrict gt,
                 const int64_t* __restrict labels, const scalar_t* __restrict priors,
                 const double* variances, int64_t p0, int64_t p1, scalar_t* __restrict loc,
                 int64_t* __restrict out_labels) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t v[4];
  for (int q = 0; q < 4; ++q) v[q] = static_cast<acc_t>(variances[q]);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t g = idx[p];
    out_labels[p] = g >= 0 ? labels[g] : 0;
    acc_t t[4] = {0, 0, 0, 0};
    if (g >= 0) {  // a few percent of the priors
      acc_t gb[4], pb[4];
      for (int q = 0; q < 4; ++q) {
        gb[q] = static_cast<acc_t>(gt[4 * g + q]);
        pb[q] = static_cast<acc_t>(priors[4 * p + q]);
      }
      encode_one(gb, pb, v, t);
    }
    for (int q = 0; q < 4; ++q) loc[4 * p + q] = static_cast<scalar_t>(t[q]);
  }
}

// Shared driver: match every image (in parallel over images), then (ssd_targets) encode the
// matched GTs and take their labels in a second pass, in parallel over all B * P priors, so
// that images with many GTs do not leave a thread waiting on the cheap part.
void run_targets(const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& priors,
                 double iou_threshold, MatchMode mode, const double* variances, at::Tensor& idx,
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
    int64_t* idxp = idx.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      thread_local MatchScratch<acc_t> scratch;
      scratch.resize(P, G);
      for (int64_t b = begin; b < end; ++b) {
        match_image<scalar_t>(mode, gtp + 4 * b * G, labp + b * G, G, soa.view(), chunks.data(), P,
                              iou_threshold, scratch, {idxp + b * P, iou.data_ptr<scalar_t>() + b * P});
      }
    });
    if (!loc) return;
    scalar_t* locp = loc->data_ptr<scalar_t>();
    int64_t* outlab = labels->data_ptr<int64_t>();
    at::parallel_for(0, B * P, 2048, [&](int64_t begin, int64_t end) {
      while (begin < end) {  // the range may span images
        const int64_t b = begin / P, p1 = std::min(end, (b + 1) * P);
        encode_rows<scalar_t>(idxp + b * P, gtp + 4 * b * G, labp + b * G, pr.data_ptr<scalar_t>(),
                              variances, begin - b * P, p1 - b * P, locp + 4 * b * P, outlab + b * P);
        begin = p1;
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
  run_targets(gt_boxes, gt_labels, priors, iou_threshold, m, nullptr, idx, iou, nullptr, nullptr);
  return {idx, iou};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ssd_targets_cpu(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& priors,
    double iou_threshold, at::ArrayRef<double> variances, c10::string_view mode) {
  const MatchMode m =
      check_match_args("ssd_targets", gt_boxes, gt_labels, priors, iou_threshold, mode);
  check_variances("ssd_targets", variances);
  const int64_t B = gt_boxes.size(0), P = priors.size(0);
  at::Tensor idx = at::empty({B, P}, gt_labels.options().dtype(at::kLong));
  at::Tensor iou = at::empty({B, P}, gt_boxes.options());
  at::Tensor loc = at::empty({B, P, 4}, gt_boxes.options());
  at::Tensor labels = at::empty({B, P}, gt_labels.options().dtype(at::kLong));
  run_targets(gt_boxes, gt_labels, priors, iou_threshold, m, variances.data(), idx, iou, &loc,
              &labels);
  return {loc, labels, iou};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("match_priors", &match_priors_cpu);
  m.impl("ssd_targets", &ssd_targets_cpu);
}

}  // namespace ssd_fast
