// Argument checks and shape plans of the NMS family (nms, batched_nms, multiclass_nms,
// ssd_postprocess): the one home of their checks and messages, run by the CPU and CUDA kernels
// and by the meta functions of ops/meta.cpp (sizes may be symbolic there: see box_checks.h).
#pragma once

#include <ATen/ATen.h>

#include <limits>
#include <vector>

#include "ops/box_checks.h"

namespace ssd_fast {

inline void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                       const char* layout) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have shape ", layout, ", got ",
              t.sym_sizes());
}

inline void check_iou_threshold(const char* op, double t) {
  TORCH_CHECK_VALUE(t >= 0.0 && t <= 1.0, op, ": iou_threshold must be in [0, 1], got ",
                    format_number(t));
}

// nms / batched_nms: boxes [N, 4], scores [N] (same dtype), idxs [N] integer.
inline void check_nms_shapes(const char* op, const at::Tensor& boxes, const at::Tensor& scores,
                             double iou_threshold) {
  check_boxes(op, "boxes", boxes, 2, "[N, 4]");
  check_rank(op, "boxes", boxes, 2, "[N, 4]");
  check_same_device_dtype(op, "boxes", boxes, "scores", scores);
  const c10::SymInt n = boxes.sym_size(0);
  TORCH_CHECK(scores.dim() == 1 && scores.sym_size(0) == n, op,
              ": scores must have shape [N] = [", n, "] (N from boxes), got ", scores.sym_sizes());
  TORCH_CHECK(n < std::numeric_limits<int32_t>::max(), op,
              ": at most 2^31 - 2 boxes are supported, got ", n);
  check_iou_threshold(op, iou_threshold);
}

// The kernels' entry: the checks, then N.
inline int64_t check_nms_args(const char* op, const at::Tensor& boxes, const at::Tensor& scores,
                              double iou_threshold) {
  check_nms_shapes(op, boxes, scores, iou_threshold);
  return boxes.size(0);
}

inline void check_idxs(const char* op, const at::Tensor& boxes, const at::Tensor& idxs) {
  TORCH_CHECK(boxes.device() == idxs.device(), op,
              ": boxes and idxs must be on the same device, got ", boxes.device(), " and ",
              idxs.device());
  TORCH_CHECK(at::isIntegralType(idxs.scalar_type(), /*includeBool=*/false), op,
              ": idxs must be an integer tensor, got ", dtype_name(idxs.scalar_type()));
  TORCH_CHECK(idxs.dim() == 1 && idxs.sym_size(0) == boxes.sym_size(0), op,
              ": idxs must have shape [N] = [", boxes.sym_size(0), "] (N from boxes), got ",
              idxs.sym_sizes());
}

// multiclass_nms / ssd_postprocess: B images, P priors, C classes; S = C minus the
// background class: the (image, class) segments are (b, s) with class_of(s).
struct MulticlassPlan {
  int64_t b, p, c;
  int64_t segments_per_image;  // S
  int64_t topk;                // per segment, clamped to [0, P]
  int64_t max_det;             // K
  int64_t background;          // -1: none
  bool per_class_boxes;        // boxes [B, P, C, 4]
  int64_t class_of(int64_t s) const { return s + (background >= 0 && s >= background); }
};

// The parameters of the detection tail, for P priors and C classes.
inline void check_detection_params(const char* op, const c10::SymInt& p, const c10::SymInt& c,
                                   double score_threshold, double iou_threshold,
                                   int64_t topk_per_class, int64_t max_detections,
                                   int64_t background_class) {
  TORCH_CHECK_VALUE(score_threshold == score_threshold, op,
                    ": score_threshold must be a number, got ", format_number(score_threshold));
  check_iou_threshold(op, iou_threshold);
  TORCH_CHECK_VALUE(topk_per_class > 0 || topk_per_class == -1, op,
                    ": topk_per_class must be positive or -1 (no limit), got ", topk_per_class);
  TORCH_CHECK_VALUE(max_detections >= 0, op, ": max_detections must be >= 0, got ",
                    max_detections);
  const c10::SymInt classes = c.max(1);
  TORCH_CHECK_VALUE(background_class >= -1 && background_class < classes, op,
                    ": background_class must be -1 (none) or in [0, C) with C = ", c, ", got ",
                    background_class);
  // Composite keys hold class * P + prior in 32 bits.
  TORCH_CHECK(p * classes <= std::numeric_limits<uint32_t>::max(), op,
              ": P * C must be < 2^32, got P = ", p, " and C = ", c);
}

// multiclass_nms's checks; returns B (B, P, C from scores [B, P, C]).
inline c10::SymInt check_multiclass_nms(const at::Tensor& boxes, const at::Tensor& scores,
                                        double score_threshold, double iou_threshold,
                                        int64_t topk_per_class, int64_t max_detections,
                                        int64_t background_class) {
  constexpr const char* op = "multiclass_nms";
  constexpr const char* layout = "[B, P, 4] or [B, P, C, 4]";
  check_boxes(op, "boxes", boxes, 3, layout);
  TORCH_CHECK(boxes.dim() <= 4, op, ": boxes must have shape ", layout, ", got ",
              boxes.sym_sizes());
  check_same_device_dtype(op, "boxes", boxes, "scores", scores);
  check_rank(op, "scores", scores, 3, "[B, P, C]");
  const bool per_class = boxes.dim() == 4;
  TORCH_CHECK(boxes.sym_size(0) == scores.sym_size(0) && boxes.sym_size(1) == scores.sym_size(1) &&
                  (!per_class || boxes.sym_size(2) == scores.sym_size(2)),
              op, ": boxes ", boxes.sym_sizes(), " and scores ", scores.sym_sizes(),
              " must agree on B and P", per_class ? " and C" : "");
  check_detection_params(op, scores.sym_size(1), scores.sym_size(2), score_threshold,
                         iou_threshold, topk_per_class, max_detections, background_class);
  return scores.sym_size(0);
}

// ssd_postprocess's checks; returns B (B, P, C from conf_logits [B, P, C]).
inline c10::SymInt check_ssd_postprocess(const at::Tensor& loc, const at::Tensor& conf_logits,
                                         const at::Tensor& priors, at::ArrayRef<double> variances,
                                         double score_threshold, double iou_threshold,
                                         int64_t topk_per_class, int64_t max_detections,
                                         int64_t background_class) {
  constexpr const char* op = "ssd_postprocess";
  check_boxes(op, "loc", loc, 3, "[B, P, 4]");
  check_rank(op, "loc", loc, 3, "[B, P, 4]");
  check_same_device_dtype(op, "loc", loc, "conf_logits", conf_logits);
  check_rank(op, "conf_logits", conf_logits, 3, "[B, P, C]");
  check_boxes(op, "priors", priors, 2, "[P, 4]");
  check_rank(op, "priors", priors, 2, "[P, 4]");
  check_same_device_dtype(op, "loc", loc, "priors", priors);
  TORCH_CHECK(loc.sym_size(0) == conf_logits.sym_size(0) &&
                  loc.sym_size(1) == conf_logits.sym_size(1) &&
                  loc.sym_size(1) == priors.sym_size(0),
              op, ": loc ", loc.sym_sizes(), ", conf_logits ", conf_logits.sym_sizes(),
              " and priors ", priors.sym_sizes(), " must agree on B and P");
  check_variances(op, variances);
  check_detection_params(op, conf_logits.sym_size(1), conf_logits.sym_size(2), score_threshold,
                         iou_threshold, topk_per_class, max_detections, background_class);
  return conf_logits.sym_size(0);
}

// The kernels' plan, from checked scores or conf_logits [B, P, C].
inline MulticlassPlan multiclass_plan(const at::Tensor& scores, bool per_class_boxes,
                                      int64_t topk_per_class, int64_t max_detections,
                                      int64_t background_class) {
  MulticlassPlan p;
  p.b = scores.size(0);
  p.p = scores.size(1);
  p.c = scores.size(2);
  p.per_class_boxes = per_class_boxes;
  p.background = p.c > 0 ? background_class : -1;
  p.segments_per_image = p.c - (p.background >= 0 ? 1 : 0);
  p.topk = topk_per_class == -1 ? p.p : std::min(topk_per_class, p.p);
  p.max_det = max_detections;
  return p;
}

inline MulticlassPlan plan_multiclass_nms(const at::Tensor& boxes, const at::Tensor& scores,
                                          double score_threshold, double iou_threshold,
                                          int64_t topk_per_class, int64_t max_detections,
                                          int64_t background_class) {
  check_multiclass_nms(boxes, scores, score_threshold, iou_threshold, topk_per_class,
                       max_detections, background_class);
  return multiclass_plan(scores, boxes.dim() == 4, topk_per_class, max_detections,
                         background_class);
}

inline MulticlassPlan plan_ssd_postprocess(const at::Tensor& loc, const at::Tensor& conf_logits,
                                           const at::Tensor& priors,
                                           at::ArrayRef<double> variances, double score_threshold,
                                           double iou_threshold, int64_t topk_per_class,
                                           int64_t max_detections, int64_t background_class) {
  check_ssd_postprocess(loc, conf_logits, priors, variances, score_threshold, iou_threshold,
                        topk_per_class, max_detections, background_class);
  return multiclass_plan(conf_logits, false, topk_per_class, max_detections, background_class);
}

// The four outputs of multiclass_nms / ssd_postprocess.
struct Detections {
  at::Tensor boxes, scores, labels, num;
};

inline Detections empty_detections(const c10::SymInt& b, int64_t max_det,
                                   const at::TensorOptions& opts) {
  Detections d;
  d.boxes = at::empty_symint({b, max_det, 4}, opts);
  d.scores = at::empty_symint({b, max_det}, opts);
  d.labels = at::empty_symint({b, max_det}, opts.dtype(at::kLong));
  d.num = at::empty_symint({b}, opts.dtype(at::kLong));
  return d;
}

inline Detections empty_detections(const MulticlassPlan& p, const at::TensorOptions& opts) {
  return empty_detections(p.b, p.max_det, opts);
}

}  // namespace ssd_fast
