// CPU kernel of hard_negative_mining (SPEC §2); the selection itself is cpu::mine_rows
// (ops/cpu/detail/mining.h), shared with multibox_loss.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/cpu/detail/mining.h"
#include "ops/target_checks.h"

namespace ssd_fast {
namespace {

at::Tensor hard_negative_mining_cpu(const at::Tensor& conf_loss, const at::Tensor& labels,
                                    double neg_pos_ratio,
                                    const c10::optional<at::Tensor>& matched_iou,
                                    double neg_overlap) {
  check_mining_args(conf_loss, labels, neg_pos_ratio, matched_iou, neg_overlap);
  const int64_t B = conf_loss.size(0), P = conf_loss.size(1);
  at::Tensor mask = at::empty({B, P}, conf_loss.options().dtype(at::kBool));
  if (mask.numel() == 0) return mask;
  const at::Tensor loss = conf_loss.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  const at::Tensor miou = matched_iou.has_value() ? matched_iou->contiguous() : loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, loss.scalar_type(), "hnm_cpu", [&] {
    using loss_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, miou.scalar_type(), "hnm_cpu", [&] {
      cpu::mine_rows<loss_t, scalar_t>(loss.data_ptr<loss_t>(), lab.data_ptr<int64_t>(),
                                       matched_iou.has_value() ? miou.data_ptr<scalar_t>() : nullptr,
                                       neg_pos_ratio, neg_overlap, B, P, mask.data_ptr<bool>());
    });
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("hard_negative_mining", &hard_negative_mining_cpu);
}

}  // namespace ssd_fast
