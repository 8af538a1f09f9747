"""The public ops of ssd_fast, registered as ``torch.ops.ssd_fast.<op>``.

Conventions (SPEC §1): boxes are ``(x1, y1, x2, y2)`` corners; a box with ``x2 < x1`` or
``y2 < y1`` has zero area; float32, float16, bfloat16 and float64 inputs (half types compute
in float32, float64 in float64, and the output has the input dtype); every tensor argument on
one device (CPU or CUDA); bad input raises ``RuntimeError`` (shapes, dtypes, devices) or
``ValueError`` (bad numbers) naming the argument and the value.
"""
from typing import Sequence

import torch
from torch import Tensor

from . import _autograd, _fake  # noqa: F401  (register the fake kernels and backward formulas)
from . import reference

DEFAULT_VARIANCES = reference.DEFAULT_VARIANCES

__all__ = ["box_iou", "encode_boxes", "decode_boxes", "reference", "DEFAULT_VARIANCES"]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU, a drop-in for ``torchvision.ops.box_iou``.

    Args:
        boxes1: ``[..., N, 4]`` corners.
        boxes2: ``[..., M, 4]`` corners, on the same device and of the same dtype. Leading
            (batch) dims must equal those of ``boxes1``, or one of the two has none and is
            shared by every batch of the other (``[B, G, 4]`` against priors ``[P, 4]``).

    Returns:
        ``[..., N, M]`` IoU in the input dtype. IoU = inter / (area1 + area2 - inter); where
        the union is <= 0 the IoU is 0, so it is never NaN: identical zero-area boxes give 0
        (torchvision: NaN), and boxes with ``x2 < x1`` count as empty (torchvision gives them
        a negative area). A NaN coordinate gives IoU 0 with every box; infinite coordinates
        give a value in [0, 1]. Values agree with torchvision wherever torchvision's are
        finite and the boxes are well formed.
    """
    return torch.ops.ssd_fast.box_iou(boxes1, boxes2)


def encode_boxes(gt: Tensor, priors: Tensor,
                 variances: Sequence[float] = DEFAULT_VARIANCES) -> Tensor:
    """SSD centre-size encoding of ``gt`` boxes relative to ``priors``.

    With g = gt and d = prior in centre form (cx, cy, w, h)::

        t = ((g.cx - d.cx) / (v0 * d.w), (g.cy - d.cy) / (v1 * d.h),
             log(g.w / d.w) / v2,        log(g.h / d.h) / v3)

    Args:
        gt: ``[..., 4]`` corners.
        priors: ``[..., 4]`` corners; leading dims broadcast against ``gt``'s (``[P, 4]``
            priors against ``[B, P, 4]`` matched boxes is read without a copy).
        variances: 4 positive numbers ``(v0, v1, v2, v3)``.

    Returns:
        ``[*broadcast(gt, priors), 4]`` offsets in the input dtype. A gt box of zero width or
        height encodes to ``-inf`` in that log term (negative width: NaN), as in Caffe and
        torchvision; no value is clamped.
    """
    return torch.ops.ssd_fast.encode_boxes(gt, priors, [float(v) for v in variances])


def decode_boxes(offsets: Tensor, priors: Tensor,
                 variances: Sequence[float] = DEFAULT_VARIANCES) -> Tensor:
    """Inverse of :func:`encode_boxes`: corners of the boxes ``offsets`` encode.

    Args:
        offsets: ``[..., 4]`` encoded offsets ``(tx, ty, tw, th)``.
        priors: ``[..., 4]`` corners; leading dims broadcast against ``offsets``'.
        variances: 4 positive numbers.

    Returns:
        ``[*broadcast(offsets, priors), 4]`` corners in the input dtype. ``tw``/``th`` are
        not clamped: ``exp`` may overflow to ``inf`` for very large offsets (float16/bfloat16
        inputs overflow only when the result does not fit the output dtype).
    """
    return torch.ops.ssd_fast.decode_boxes(offsets, priors, [float(v) for v in variances])
