// The CUDA selection of hard_negative_mining (radix select, one block per image), shared by the
// hard_negative_mining and multibox_loss kernels; defined in ops/cuda/hard_negative_mining.cu.
#pragma once

#include <ATen/ATen.h>

namespace ssd_fast {

// Fills mask [B, P] (bool) on the current stream; loss [B, P] contiguous float, labels [B, P]
// contiguous int64, matched_iou optional [B, P] float. Arguments already checked.
void launch_mining(const at::Tensor& loss, const at::Tensor& labels,
                   const c10::optional<at::Tensor>& matched_iou, double neg_pos_ratio,
                   double neg_overlap, at::Tensor& mask);

}  // namespace ssd_fast
