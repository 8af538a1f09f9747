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

__all__ = ["box_iou", "encode_boxes", "decode_boxes", "nms", "batched_nms", "multiclass_nms",
           "ssd_postprocess", "reference", "DEFAULT_VARIANCES"]


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


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, a drop-in for ``torchvision.ops.nms``.

    Boxes are visited by rank (score descending; equal scores: lower index first); a box is
    kept unless a kept box of higher rank overlaps it with IoU > ``iou_threshold``.

    Args:
        boxes: ``[N, 4]`` corners, float16/bfloat16/float32/float64 (half types compute the
            IoU in float32, float64 in float64).
        scores: ``[N]``, same dtype and device as ``boxes``.
        iou_threshold: in [0, 1]. The test is ``IoU > iou_threshold`` exactly (the IoU, a
            float32 or float64 number, against the threshold as a Python float), as
            torchvision's CPU kernel does; ``iou_threshold=1`` keeps every box.

    Returns:
        int64 ``[K]``: the indices of the kept boxes, by rank: the very same indices in the
        same order as torchvision (which runs half types as float32 on the CPU). IoU follows
        SPEC: 0 where the union is <= 0, so degenerate boxes (zero area, ``x2 < x1``) and boxes
        with a NaN coordinate never suppress nor get suppressed (torchvision: NaN IoU, the same
        decisions). NaN scores rank above every number, as in ``torch.sort`` (so torchvision).
        The output size depends on the data: on CUDA the op synchronises the host once, to
        read it; under ``torch.compile`` it is a dynamic (unbacked) size.
    """
    return torch.ops.ssd_fast.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """:func:`nms` independently within each category, a drop-in for
    ``torchvision.ops.batched_nms``.

    Runs per category natively (no coordinate offsets, which round coordinates, and no
    per-category Python loop): memory is linear in N, for any N and number of categories.

    Args:
        boxes: ``[N, 4]``; scores: ``[N]`` (same dtype and device).
        idxs: ``[N]`` integer category of each box (any integer dtype, any values).
        iou_threshold: in [0, 1], as in :func:`nms`.

    Returns:
        int64 ``[K]``: the kept indices sorted by score descending, equal scores by lower index.
        torchvision returns the same set in the same order, except that on CPU with more than
        1000 boxes its final sort is not stable, so it may order equal scores differently
        (and with at most 1000 boxes its coordinate offsets round the IoU of some boxes).
        Synchronises the host once on CUDA (output size).
    """
    return torch.ops.ssd_fast.batched_nms(boxes, scores, idxs, float(iou_threshold))


def multiclass_nms(boxes: Tensor, scores: Tensor, score_threshold: float = 0.01,
                   iou_threshold: float = 0.45, topk_per_class: int = 400,
                   max_detections: int = 200, background_class: int = 0):
    """The detection tail of SSD (Caffe ``DetectionOutput``) for a whole batch, padded to a
    fixed size: no host synchronisation, capturable in a CUDA graph.

    For each image and each class except ``background_class``: the candidates are the priors
    whose score is > ``score_threshold``; the ``topk_per_class`` best are kept (score
    descending, equal scores by lower prior index) and reduced by greedy NMS (as :func:`nms`).
    Then, over all classes, the ``max_detections`` best detections (score descending, then
    lower class, then lower prior index) are returned, in that order.

    Args:
        boxes: ``[B, P, 4]`` (shared by all classes) or ``[B, P, C, 4]`` (per class) corners.
        scores: ``[B, P, C]``, same dtype and device as ``boxes`` (float16/bfloat16 compare in
            float32). NaN scores are never candidates.
        score_threshold: any number (``-inf`` keeps every non-NaN score); the test is
            ``score > score_threshold`` exactly (the score against the Python float).
        iou_threshold: in [0, 1].
        topk_per_class: positive, or -1 for no limit.
        max_detections: K >= 0, the padded output size.
        background_class: the class to skip, or -1 for none.

    Returns:
        ``(det_boxes [B, K, 4], det_scores [B, K], det_labels [B, K] int64,
        num_detections [B] int64)``; boxes and scores in the input dtype, labels are class
        indices into C. Rows past ``num_detections`` hold zeros (boxes, scores) and -1 (labels).
    """
    return torch.ops.ssd_fast.multiclass_nms(boxes, scores, float(score_threshold),
                                             float(iou_threshold), int(topk_per_class),
                                             int(max_detections), int(background_class))


def ssd_postprocess(loc: Tensor, conf_logits: Tensor, priors: Tensor,
                    variances: Sequence[float] = DEFAULT_VARIANCES, clip: bool = False,
                    score_threshold: float = 0.01, iou_threshold: float = 0.45,
                    topk_per_class: int = 400, max_detections: int = 200,
                    background_class: int = 0):
    """The fused inference tail of SSD: decode + softmax + :func:`multiclass_nms`, one call.

    Equal to ``multiclass_nms(decode_boxes(loc, priors, variances) (clamped to [0, 1] when
    ``clip``), softmax(conf_logits, -1), ...)``, with the boxes and probabilities rounded to
    the input dtype before they are ranked, as those ops would return them. The softmax is
    computed here with an exp of its own (within 2 ulp of ``torch.exp``), the same on CPU and
    CUDA so that both devices rank the same probabilities; a probability may differ from
    ``torch.softmax``'s by a few ulps (both are that far from the exact value). A row of logits with a NaN (or +inf) gives NaN
    probabilities, which are never candidates.

    Args:
        loc: ``[B, P, 4]`` encoded offsets; conf_logits: ``[B, P, C]``; priors: ``[P, 4]``
            corners (all the same dtype and device).
        variances: 4 positive numbers. clip: clamp decoded boxes to [0, 1] (torchvision does,
            Caffe does not).
        score_threshold, iou_threshold, topk_per_class, max_detections, background_class:
            as in :func:`multiclass_nms`.

    Returns:
        the :func:`multiclass_nms` tuple, boxes in the coordinates of ``priors``.
    """
    return torch.ops.ssd_fast.ssd_postprocess(
        loc, conf_logits, priors, [float(v) for v in variances], bool(clip),
        float(score_threshold), float(iou_threshold), int(topk_per_class), int(max_detections),
        int(background_class))
