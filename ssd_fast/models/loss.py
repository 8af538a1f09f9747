"""MultiBoxLoss (SPEC §3): ``ssd_targets`` + ``multibox_loss`` (smooth L1 over positives + softmax
cross-entropy over positives and hard-mined negatives, both over the batch's positives)."""
import math
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from ssd_fast.ops import multibox_loss, ssd_targets

from . import _checks
from .priors import DEFAULT_VARIANCES

MODES = ("bipartite", "argmax")


class MultiBoxLoss(nn.Module):
    """The SSD training loss (Liu et al. 2016, eq. 1 with alpha = 1).

    Args:
        priors: ``[P, 4]`` normalized corners (a buffer here: ``.to(device)`` moves it).
        num_classes: classes including the background (class 0).
        neg_pos_ratio: negatives kept per positive, per image.
        iou_threshold: matching threshold of ``ssd_targets``.
        variances: box-coding variances.
        mode: ``"bipartite"`` (Caffe) or ``"argmax"`` (ssd.pytorch, torchvision) matching.
        check_labels: look for labels >= ``num_classes`` (below).

    Each argument is checked here (type and range; ``ValueError`` naming it and quoting the
    value), not at the first forward.

    ``forward(loc, conf_logits, gt_boxes, gt_labels) -> (loc_loss, conf_loss)``:

    - ``loc [B, P, 4]``, ``conf_logits [B, P, C]``: the model's outputs (any float dtype;
      float16/bfloat16 are upcast, the loss is computed in float32 (float64 stays float64),
      so it is finite under autocast).
    - ``gt_boxes [B, G, 4]`` normalized corners, ``gt_labels [B, G]`` int64 in 1..C-1;
      padding rows have a negative label (images with fewer boxes).
    - A label >= ``num_classes`` is a ``ValueError`` naming it, on every device: on a GPU
      that check reads one flag back (a host synchronisation per call; ``check_labels=False``
      skips it, and a bad label then makes ``conf_loss`` NaN). Under ``torch.compile``
      (``fullgraph=True`` works) the check is left to the ops: ``ValueError`` on the CPU, NaN on
      CUDA. Bool labels are refused.
    - ``loc_loss``: smooth L1 (beta 1) between ``loc`` and the encoded matched GT, summed
      over positive priors; ``conf_loss``: softmax cross-entropy summed over positives and the
      negatives ``hard_negative_mining`` selects, ranked by background cross-entropy
      ``-log softmax(conf)[0]``. Both are divided by the number of positives in the whole
      batch (by 1 when there is none: then both are 0, with zero gradients). Scalars in the
      compute dtype; the total loss is their sum. Targets are computed in the priors' dtype
      (float32).
    """

    def __init__(self, priors: Tensor, num_classes: int, neg_pos_ratio: float = 3.0,
                 iou_threshold: float = 0.5, variances: Sequence[float] = DEFAULT_VARIANCES,
                 mode: str = "bipartite", check_labels: bool = True):
        super().__init__()
        owner = "MultiBoxLoss"
        if not isinstance(priors, Tensor) or priors.dim() != 2 or priors.shape[1] != 4:
            got = tuple(priors.shape) if isinstance(priors, Tensor) else type(priors).__name__
            raise ValueError(f"{owner}: priors must be a [P, 4] tensor, got {got}")
        if not priors.is_floating_point():
            raise ValueError(f"{owner}: priors must be a floating-point tensor, got {priors.dtype}")
        # Values are read only where that costs no host synchronisation: priors on a GPU are
        # checked where they are made (PriorSpec on the CPU), not read back here.
        if priors.device.type == "cpu" and not bool(priors.isfinite().all()):
            raise ValueError(f"{owner}: priors must be finite, got non-finite values")
        self.register_buffer("priors", priors.detach().float(), persistent=False)
        self.num_classes = _checks.integer(owner, "num_classes", num_classes, 2)
        self.neg_pos_ratio = _checks.number(owner, "neg_pos_ratio", neg_pos_ratio,
                                            "a finite number >= 0", lambda v: 0 <= v < math.inf)
        self.iou_threshold = _checks.number(owner, "iou_threshold", iou_threshold, "in [0, 1]",
                                            lambda v: 0 <= v <= 1)
        self.variances = _checks.variances(owner, variances)
        self.mode = _checks.choice(owner, "mode", mode, MODES)
        self.check_labels = _checks.flag(owner, "check_labels", check_labels)

    @classmethod
    def for_model(cls, model, **kwargs) -> "MultiBoxLoss":
        """The loss for an :class:`~ssd_fast.models.SSD`: its priors, classes and variances."""
        kwargs.setdefault("variances", model.variances)
        return cls(model.priors, model.num_classes, **kwargs)

    def _check(self, loc, conf_logits, gt_boxes, gt_labels):
        P, C = self.priors.shape[0], self.num_classes
        if loc.dim() != 3 or loc.shape[1:] != (P, 4):
            raise ValueError(f"MultiBoxLoss: loc must be [B, {P}, 4], got {tuple(loc.shape)}")
        if conf_logits.dim() != 3 or conf_logits.shape[1:] != (P, C):
            raise ValueError(f"MultiBoxLoss: conf_logits must be [B, {P}, num_classes={C}], got "
                             f"{tuple(conf_logits.shape)}")
        B = loc.shape[0]
        if conf_logits.shape[0] != B:
            raise ValueError(f"MultiBoxLoss: conf_logits must have loc's batch size {B}, got "
                             f"{tuple(conf_logits.shape)}")
        if gt_boxes.dim() != 3 or gt_boxes.shape[0] != B or gt_boxes.shape[2] != 4:
            raise ValueError(f"MultiBoxLoss: gt_boxes must be [B={B}, G, 4], got {tuple(gt_boxes.shape)}")
        if (gt_labels.shape != gt_boxes.shape[:2] or gt_labels.dtype.is_floating_point
                or gt_labels.dtype == torch.bool):
            raise ValueError(f"MultiBoxLoss: gt_labels must be integer [B, G] = {tuple(gt_boxes.shape[:2])}, "
                             f"got {gt_labels.dtype} {tuple(gt_labels.shape)}")
        # On a GPU the comparison runs there and one flag comes back (the value only on error).
        # Not under torch.compile, which cannot trace a value read back: there the ops
        # themselves are what sees a label >= C (CPU: ValueError, CUDA: a NaN conf_loss).
        if (self.check_labels and gt_labels.numel() and not torch.compiler.is_compiling()
                and bool((gt_labels >= C).any())):
            raise ValueError(f"MultiBoxLoss: gt_labels must be < num_classes={C}, got {int(gt_labels.max())}")

    def forward(self, loc: Tensor, conf_logits: Tensor, gt_boxes: Tensor,
                gt_labels: Tensor) -> Tuple[Tensor, Tensor]:
        self._check(loc, conf_logits, gt_boxes, gt_labels)
        loc_t, labels, _ = ssd_targets(_cast(gt_boxes, self.priors.dtype), _cast(gt_labels, torch.int64),
                                       self.priors, self.iou_threshold, self.variances, self.mode)
        # One fused kernel (multibox_loss): logsumexp, mining on the background cross-entropy,
        # both sums and the division by the positives, with its own backward kernel.
        dtype = torch.promote_types(torch.promote_types(loc.dtype, conf_logits.dtype), torch.float32)
        loc_loss, conf_loss, _ = multibox_loss(_cast(loc, dtype), _cast(conf_logits, dtype),
                                               _cast(loc_t, dtype), labels, self.neg_pos_ratio)
        return loc_loss, conf_loss


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)`` without the dispatcher round trip when it is already of that dtype."""
    return t if t.dtype == dtype else t.to(dtype)
