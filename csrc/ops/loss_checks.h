// Argument checks of multibox_loss and multibox_loss_backward: the one home of their checks and
// messages, run by the CPU and CUDA kernels and by the meta functions of ops/meta.cpp (sizes may
// be symbolic: see box_checks.h).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cmath>

#include "ops/box_checks.h"
#include "ops/target_checks.h"

namespace ssd_fast {

// loc [B, P, 4], conf_logits [B, P, C] with C >= 2, loc_targets [B, P, 4], one dtype (float32 or
// float64: MultiBoxLoss upcasts half types), labels [B, P] integer, all on one device.
inline void check_multibox_tensors(const char* op, const at::Tensor& loc,
                                   const at::Tensor& conf_logits, const at::Tensor& loc_targets,
                                   const at::Tensor& labels) {
  const auto st = conf_logits.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble, op,
              ": conf_logits must be float32 or float64, got ", dtype_name(st));
  TORCH_CHECK(conf_logits.dim() == 3 && conf_logits.sym_size(2) >= 2, op,
              ": conf_logits must have shape [B, P, C] with C >= 2, got ", conf_logits.sym_sizes());
  const std::array<c10::SymInt, 3> box_shape{conf_logits.sym_size(0), conf_logits.sym_size(1), 4};
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"loc", loc},
                                {"loc_targets", loc_targets}}) {
    check_same_device_dtype(op, "conf_logits", conf_logits, name, t);
    TORCH_CHECK(t.sym_sizes() == c10::SymIntArrayRef(box_shape), op, ": ", name,
                " must have shape [B, P, 4] = ", c10::SymIntArrayRef(box_shape), ", got ",
                t.sym_sizes());
  }
  check_same_device(op, "conf_logits", conf_logits, "labels", labels);
  check_labels(op, "labels", labels, conf_logits.sym_sizes().slice(0, 2), "[B, P]");
}

inline void check_multibox_args(const at::Tensor& loc, const at::Tensor& conf_logits,
                                const at::Tensor& loc_targets, const at::Tensor& labels,
                                double neg_pos_ratio) {
  constexpr const char* op = "multibox_loss";
  check_multibox_tensors(op, loc, conf_logits, loc_targets, labels);
  TORCH_CHECK_VALUE(std::isfinite(neg_pos_ratio) && neg_pos_ratio >= 0, op,
                    ": neg_pos_ratio must be a finite number >= 0, got ",
                    format_number(neg_pos_ratio));
}

// The forward's tensors, the two 0-dim output gradients (conf_logits' dtype) and its mask.
inline void check_multibox_backward_args(const at::Tensor& grad_loc_loss,
                                         const at::Tensor& grad_conf_loss, const at::Tensor& loc,
                                         const at::Tensor& conf_logits,
                                         const at::Tensor& loc_targets, const at::Tensor& labels,
                                         const at::Tensor& mask) {
  constexpr const char* op = "multibox_loss_backward";
  check_multibox_tensors(op, loc, conf_logits, loc_targets, labels);
  for (const auto& [name, g] : {std::pair<const char*, const at::Tensor&>{"grad_loc_loss", grad_loc_loss},
                                {"grad_conf_loss", grad_conf_loss}}) {
    check_same_device_dtype(op, "conf_logits", conf_logits, name, g);
    TORCH_CHECK(g.dim() == 0, op, ": ", name, " must be a 0-dim tensor, got shape ",
                g.sym_sizes());
  }
  check_same_device(op, "conf_logits", conf_logits, "mask", mask);
  TORCH_CHECK(mask.scalar_type() == at::kBool, op, ": mask must be a bool tensor, got ",
              dtype_name(mask.scalar_type()));
  TORCH_CHECK(mask.sym_sizes() == labels.sym_sizes(), op, ": mask must have shape [B, P] = ",
              labels.sym_sizes(), ", got ", mask.sym_sizes());
}

}  // namespace ssd_fast
