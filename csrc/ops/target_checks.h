// Argument checks of the training-target ops (match_priors, ssd_targets,
// hard_negative_mining): the one home of their checks and messages, run by the CPU and CUDA
// kernels and by the meta functions of ops/meta.cpp (sizes may be symbolic: see box_checks.h).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "ops/box_checks.h"

namespace ssd_fast {

enum class MatchMode { kBipartite, kArgmax };

inline bool is_integer_dtype(at::ScalarType t) {
  return at::isIntegralType(t, /*includeBool=*/false);
}

inline void check_labels(const char* op, const char* name, const at::Tensor& labels,
                         c10::SymIntArrayRef expected, const char* layout) {
  TORCH_CHECK(is_integer_dtype(labels.scalar_type()), op, ": ", name,
              " must be an integer tensor, got ", dtype_name(labels.scalar_type()));
  TORCH_CHECK(labels.sym_sizes() == expected, op, ": ", name, " must have shape ", layout, " = ",
              expected, ", got ", labels.sym_sizes());
}

// gt_boxes [B, G, 4], gt_labels [B, G] (integer), priors [P, 4]; returns the mode.
inline MatchMode check_match_args(const char* op, const at::Tensor& gt_boxes,
                                  const at::Tensor& gt_labels, const at::Tensor& priors,
                                  double iou_threshold, c10::string_view mode) {
  check_boxes(op, "gt_boxes", gt_boxes, 3, "[B, G, 4]");
  TORCH_CHECK(gt_boxes.dim() == 3, op, ": gt_boxes must have shape [B, G, 4], got ",
              gt_boxes.sym_sizes());
  check_boxes(op, "priors", priors, 2, "[P, 4]");
  TORCH_CHECK(priors.dim() == 2, op, ": priors must have shape [P, 4], got ",
              priors.sym_sizes());
  check_same_device_dtype(op, "gt_boxes", gt_boxes, "priors", priors);
  check_same_device(op, "gt_boxes", gt_boxes, "gt_labels", gt_labels);
  check_labels(op, "gt_labels", gt_labels, gt_boxes.sym_sizes().slice(0, 2), "[B, G]");
  TORCH_CHECK_VALUE(iou_threshold >= 0.0 && iou_threshold <= 1.0, op,
                    ": iou_threshold must be in [0, 1], got ", format_number(iou_threshold));
  if (mode == "bipartite") return MatchMode::kBipartite;
  TORCH_CHECK_VALUE(mode == "argmax", op, ": mode must be 'bipartite' or 'argmax', got '",
                    std::string(mode), "'");
  return MatchMode::kArgmax;
}

// conf_loss [B, P] float, labels [B, P] integer, matched_iou [B, P] float (optional).
inline void check_mining_args(const at::Tensor& conf_loss, const at::Tensor& labels,
                              double neg_pos_ratio, const c10::optional<at::Tensor>& matched_iou,
                              double neg_overlap) {
  constexpr const char* op = "hard_negative_mining";
  check_float(op, "conf_loss", conf_loss);
  TORCH_CHECK(conf_loss.dim() == 2, op, ": conf_loss must have shape [B, P], got ",
              conf_loss.sym_sizes());
  check_same_device(op, "conf_loss", conf_loss, "labels", labels);
  check_labels(op, "labels", labels, conf_loss.sym_sizes(), "[B, P]");
  if (matched_iou.has_value()) {
    const auto& m = *matched_iou;
    check_float(op, "matched_iou", m);
    check_same_device(op, "conf_loss", conf_loss, "matched_iou", m);
    TORCH_CHECK(m.sym_sizes() == conf_loss.sym_sizes(), op,
                ": matched_iou must have shape [B, P] = ", conf_loss.sym_sizes(), ", got ",
                m.sym_sizes());
  }
  TORCH_CHECK_VALUE(std::isfinite(neg_pos_ratio) && neg_pos_ratio >= 0, op,
                    ": neg_pos_ratio must be a finite number >= 0, got ",
                    format_number(neg_pos_ratio));
  TORCH_CHECK_VALUE(std::isfinite(neg_overlap), op, ": neg_overlap must be finite, got ",
                    format_number(neg_overlap));
}

}  // namespace ssd_fast
