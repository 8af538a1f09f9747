// The meta functions: each op X's twin ssd_fast::_X_meta runs X's argument checks (the very ones
// of its CPU and CUDA kernels, from ops/*_checks.h) and, where X's output shapes follow from its
// input shapes, returns X's outputs uninitialised. ssd_fast/ops/_fake.py's fake kernels call
// them, so that eager, meta, FakeTensor and torch.compile calls raise the same errors.
//
// Registered as CompositeImplicitAutograd, not Meta: FakeTensorMode then runs them on the fake
// tensors themselves, whose devices are the real ones (a Meta kernel sees every fake tensor on
// "meta", and the device checks could not tell cpu from cuda). Sizes may be symbolic.
#include <torch/library.h>

#include "ops/box_checks.h"
#include "ops/loss_checks.h"
#include "ops/nms_checks.h"
#include "ops/target_checks.h"

namespace ssd_fast {
namespace {

using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::Tensor box_iou_meta(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return at::empty_symint(check_box_iou(boxes1, boxes2), boxes1.options());
}

at::Tensor encode_boxes_meta(const at::Tensor& gt, const at::Tensor& priors,
                             at::ArrayRef<double> variances) {
  return at::empty_symint(check_coder("encode_boxes", "gt", gt, priors, variances), gt.options());
}

at::Tensor decode_boxes_meta(const at::Tensor& offsets, const at::Tensor& priors,
                             at::ArrayRef<double> variances) {
  return at::empty_symint(check_coder("decode_boxes", "offsets", offsets, priors, variances),
                          offsets.options());
}

// matched_idx [B, P] int64 and matched_iou [B, P]
Tensor2 matches_meta(const at::Tensor& gt_boxes, const at::Tensor& gt_labels,
                     const at::Tensor& priors) {
  const c10::SymInt b = gt_boxes.sym_size(0), p = priors.sym_size(0);
  return {at::empty_symint({b, p}, gt_labels.options().dtype(at::kLong)),
          at::empty_symint({b, p}, gt_boxes.options())};
}

Tensor2 match_priors_meta(const at::Tensor& gt_boxes, const at::Tensor& gt_labels,
                          const at::Tensor& priors, double iou_threshold, c10::string_view mode) {
  check_match_args("match_priors", gt_boxes, gt_labels, priors, iou_threshold, mode);
  return matches_meta(gt_boxes, gt_labels, priors);
}

Tensor3 ssd_targets_meta(const at::Tensor& gt_boxes, const at::Tensor& gt_labels,
                         const at::Tensor& priors, double iou_threshold,
                         at::ArrayRef<double> variances, c10::string_view mode) {
  check_match_args("ssd_targets", gt_boxes, gt_labels, priors, iou_threshold, mode);
  check_variances("ssd_targets", variances);
  auto [labels, iou] = matches_meta(gt_boxes, gt_labels, priors);
  return {at::empty_symint({iou.sym_size(0), iou.sym_size(1), 4}, gt_boxes.options()), labels,
          iou};
}

at::Tensor hard_negative_mining_meta(const at::Tensor& conf_loss, const at::Tensor& labels,
                                     double neg_pos_ratio,
                                     const c10::optional<at::Tensor>& matched_iou,
                                     double neg_overlap) {
  check_mining_args(conf_loss, labels, neg_pos_ratio, matched_iou, neg_overlap);
  return at::empty_symint(conf_loss.sym_sizes(), conf_loss.options().dtype(at::kBool));
}

Tensor3 multibox_loss_meta(const at::Tensor& loc, const at::Tensor& conf_logits,
                           const at::Tensor& loc_targets, const at::Tensor& labels,
                           double neg_pos_ratio) {
  check_multibox_args(loc, conf_logits, loc_targets, labels, neg_pos_ratio);
  return {at::empty({}, conf_logits.options()), at::empty({}, conf_logits.options()),
          at::empty_symint(conf_logits.sym_sizes().slice(0, 2),
                           conf_logits.options().dtype(at::kBool))};
}

Tensor2 multibox_loss_backward_meta(const at::Tensor& grad_loc_loss,
                                    const at::Tensor& grad_conf_loss, const at::Tensor& loc,
                                    const at::Tensor& conf_logits, const at::Tensor& loc_targets,
                                    const at::Tensor& labels, const at::Tensor& mask) {
  check_multibox_backward_args(grad_loc_loss, grad_conf_loss, loc, conf_logits, loc_targets,
                               labels, mask);
  return {at::empty_symint(loc.sym_sizes(), loc.options()),
          at::empty_symint(conf_logits.sym_sizes(), conf_logits.options())};
}

// nms and batched_nms keep a data-dependent number of boxes: their fakes allocate the output.
void nms_meta(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_shapes("nms", boxes, scores, iou_threshold);
}

void batched_nms_meta(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                      double iou_threshold) {
  check_nms_shapes("batched_nms", boxes, scores, iou_threshold);
  check_idxs("batched_nms", boxes, idxs);
}

Tensor4 as_tuple(const Detections& d) { return {d.boxes, d.scores, d.labels, d.num}; }

Tensor4 multiclass_nms_meta(const at::Tensor& boxes, const at::Tensor& scores,
                            double score_threshold, double iou_threshold, int64_t topk_per_class,
                            int64_t max_detections, int64_t background_class) {
  const c10::SymInt b = check_multiclass_nms(boxes, scores, score_threshold, iou_threshold,
                                             topk_per_class, max_detections, background_class);
  return as_tuple(empty_detections(b, max_detections, boxes.options()));
}

Tensor4 ssd_postprocess_meta(const at::Tensor& loc, const at::Tensor& conf_logits,
                             const at::Tensor& priors, at::ArrayRef<double> variances, bool clip,
                             double score_threshold, double iou_threshold,
                             int64_t topk_per_class, int64_t max_detections,
                             int64_t background_class) {
  const c10::SymInt b =
      check_ssd_postprocess(loc, conf_logits, priors, variances, score_threshold, iou_threshold,
                            topk_per_class, max_detections, background_class);
  return as_tuple(empty_detections(b, max_detections, loc.options()));
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CompositeImplicitAutograd, m) {
  m.impl("_box_iou_meta", &box_iou_meta);
  m.impl("_encode_boxes_meta", &encode_boxes_meta);
  m.impl("_decode_boxes_meta", &decode_boxes_meta);
  m.impl("_match_priors_meta", &match_priors_meta);
  m.impl("_ssd_targets_meta", &ssd_targets_meta);
  m.impl("_hard_negative_mining_meta", &hard_negative_mining_meta);
  m.impl("_multibox_loss_meta", &multibox_loss_meta);
  m.impl("_multibox_loss_backward_meta", &multibox_loss_backward_meta);
  m.impl("_nms_meta", &nms_meta);
  m.impl("_batched_nms_meta", &batched_nms_meta);
  m.impl("_multiclass_nms_meta", &multiclass_nms_meta);
  m.impl("_ssd_postprocess_meta", &ssd_postprocess_meta);
}

}  // namespace ssd_fast
