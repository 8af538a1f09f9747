"""The public ops of ssd_fast, registered as ``torch.ops.ssd_fast.<op>``.

Conventions (SPEC §1): boxes are ``(x1, y1, x2, y2)`` corners; a box with ``x2 < x1`` or
``y2 < y1`` has zero area; float32, float16, bfloat16 and float64 inputs (half types compute
in float32, float64 in float64, and the output has the input dtype); every tensor argument on
one device (CPU or CUDA); bad input raises ``RuntimeError`` (shapes, dtypes, devices) or
``ValueError`` (bad numbers) naming the argument and the value.

The wrappers take their arguments as torch's own op schemas do, but never convert one silently:
a tensor argument must be a ``Tensor``; a number (thresholds, ratios, variances) a Python or NumPy
real number, or a one-element real tensor (read with ``.item()``: a host synchronisation on
CUDA); a count (``topk_per_class``, ``max_detections``, ``background_class``) an integer (Python,
NumPy, or a one-element integer tensor), never a float (not even 3.0) nor a bool; ``clip`` a
bool; ``mode`` a string. Anything else, ``None`` and strings included, raises ``TypeError``
naming the argument and quoting the value.

Only box_iou, encode_boxes, decode_boxes and multibox_loss are differentiable; the outputs of the
other ops never require grad.

TorchScript: ``torch.jit.script`` compiles :func:`box_iou`, :func:`nms` and :func:`batched_nms`
(the drop-ins for torchvision's, which script) into calls of ``torch.ops.ssd_fast.*``; there the
argument types are TorchScript's to check (a float threshold, a str ``fmt``). The other wrappers
are not scriptable: they take a number as any of several types (Python, NumPy, a one-element
tensor), which TorchScript's static types cannot express, and TorchScript is deprecated in torch;
use ``torch.compile`` (``fullgraph=True`` works) or ``torch.export``, which trace every wrapper, or
call ``torch.ops.ssd_fast.<op>`` from the script directly (plain float and int arguments).
"""
import numbers
import operator
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _autograd, _fake  # noqa: F401  (register the fake kernels and backward formulas)
from . import reference

DEFAULT_VARIANCES = reference.DEFAULT_VARIANCES

__all__ = ["box_iou", "encode_boxes", "decode_boxes", "match_priors", "ssd_targets",
           "hard_negative_mining", "multibox_loss", "nms", "batched_nms", "multiclass_nms", "ssd_postprocess",
           "reference", "DEFAULT_VARIANCES"]


# --- Argument checks. Each returns at once for the common type (one `type(x) is ...` test), so
# a call pays a few tens of nanoseconds for them; the messages are built only on failure.

def _show(x):
    """A value as the messages quote it: its repr (cut short) and its type."""
    if isinstance(x, Tensor):
        return f"a {str(x.dtype).removeprefix('torch.')} tensor of shape {list(x.shape)}"
    text = repr(x)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({type(x).__name__})"


def _not_tensors(op, **named):
    """Raise for the first of `named` that is not a Tensor."""
    for name, x in named.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {_show(x)}")


def _real(op, name, x):
    """`x` as a float: a real number (not a bool) or a one-element real tensor."""
    if type(x) is float:
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return float(x)
    if (isinstance(x, Tensor) and x.numel() == 1 and x.dtype != torch.bool
            and not x.dtype.is_complex):
        return float(x)
    raise TypeError(f"{op}: {name} must be a number, got {_show(x)}")


def _count(op, name, x):
    """`x` as an int: an integer (not a bool) or a one-element integer tensor, never a float."""
    if type(x) is int:
        return x
    if not isinstance(x, bool) and not (isinstance(x, Tensor) and x.dtype == torch.bool):
        try:
            return operator.index(x)
        except TypeError:
            pass
    raise TypeError(f"{op}: {name} must be an int, got {_show(x)}")


def _variances(op, variances):
    """`variances` as a list of floats (their count and values are the op's to check)."""
    if isinstance(variances, (list, tuple)) or (isinstance(variances, Tensor) and variances.dim() == 1):
        return [v if type(v) is float else _real(op, f"variances[{i}]", v)
                for i, v in enumerate(variances)]
    raise TypeError(f"{op}: variances must be a list, tuple or 1-D tensor of numbers, "
                    f"got {_show(variances)}")


def _mode(op, mode):
    if not isinstance(mode, str):
        raise TypeError(f"{op}: mode must be 'bipartite' or 'argmax', got {_show(mode)}")
    return mode


#: box_iou's formats, torchvision 0.29's: the axis-aligned ones computed here, the rotated ones by
#: torchvision.ops.box_iou.
AXIS_ALIGNED_FORMATS = ("xyxy", "xywh", "cxcywh")
ROTATED_FORMATS = ("cxcywhr", "xywhr", "xyxyxyxy")


def _box_format(op, fmt):
    if isinstance(fmt, str) and (fmt in AXIS_ALIGNED_FORMATS or fmt in ROTATED_FORMATS):
        return fmt
    formats = ", ".join(map(repr, AXIS_ALIGNED_FORMATS + ROTATED_FORMATS))
    if isinstance(fmt, str):
        raise ValueError(f"{op}: fmt must be one of {formats}, got {fmt!r}")
    raise TypeError(f"{op}: fmt must be one of {formats}, got {_show(fmt)}")


def _corners(boxes: Tensor, fmt: str) -> Tensor:
    """Boxes of an axis-aligned format as ``(x1, y1, x2, y2)``, as torchvision's box_convert
    computes them; a tensor without 4 coordinates is left as it is, for the op to refuse."""
    if fmt == "xyxy" or boxes.dim() == 0 or boxes.shape[-1] != 4:
        return boxes
    xy, wh = boxes[..., :2], boxes[..., 2:]
    if fmt == "xywh":
        return torch.cat([xy, xy + wh], -1)
    return torch.cat([xy - 0.5 * wh, xy + 0.5 * wh], -1)  # cxcywh


def _is_integer(t: Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _iou_of_integers(boxes1: Tensor, boxes2: Tensor, fmt: str, dtype: torch.dtype) -> Tensor:
    """box_iou of integer boxes, as torchvision computes it (integer area and intersection, then
    a true division, which gives torch's default dtype `dtype`): here in float64, which holds
    them exactly, then rounded once to `dtype`."""
    iou = torch.ops.ssd_fast.box_iou(_corners(boxes1.to(torch.float64), fmt),
                                     _corners(boxes2.to(torch.float64), fmt))
    return iou.to(dtype)


def _integer_box_iou(boxes1, boxes2, fmt):
    if _is_integer(boxes1) and _is_integer(boxes2):
        return _iou_of_integers(boxes1, boxes2, fmt, torch.get_default_dtype())
    if _is_integer(boxes1) != _is_integer(boxes2) and not (boxes1.is_complex() or boxes2.is_complex()
                                                            or torch.bool in (boxes1.dtype, boxes2.dtype)):
        raise RuntimeError(f"box_iou: boxes1 and boxes2 must both be integer, or both floating point "
                           f"of one dtype, got {str(boxes1.dtype).removeprefix('torch.')} and "
                           f"{str(boxes2.dtype).removeprefix('torch.')}")
    return torch.ops.ssd_fast.box_iou(boxes1, boxes2)  # bool, complex: the op's own message


def _torchvision_box_iou(boxes1, boxes2, fmt):
    from torchvision.ops import boxes as tv_boxes  # imported here: ssd_fast does not need it

    return tv_boxes.box_iou(boxes1, boxes2, fmt=fmt)


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise IoU, a drop-in for ``torchvision.ops.box_iou``.

    Args:
        boxes1: ``[..., N, 4]`` boxes of format ``fmt``.
        boxes2: ``[..., M, 4]`` boxes, on the same device and of the same dtype. Leading
            (batch) dims must equal those of ``boxes1``, or one of the two has none and is
            shared by every batch of the other (``[B, G, 4]`` against priors ``[P, 4]``).
        fmt: torchvision's formats: ``"xyxy"`` corners (the ops' own), ``"xywh"`` (corner,
            width, height) or ``"cxcywh"`` (centre, width, height), which are converted to
            corners first (as ``torchvision.ops.box_convert``: that rounds, so the IoU is within
            a few ulps of torchvision's, whose areas are ``w * h``), and differentiable through
            the conversion; the rotated ``"cxcywhr"``, ``"xywhr"``, ``"xyxyxyxy"`` are computed
            by ``torchvision.ops.box_iou`` itself (which ssd_fast then imports). Anything else:
            ``ValueError`` (a string) or ``TypeError`` naming ``fmt``.

    Returns:
        ``[..., N, M]`` IoU in the input dtype. IoU = inter / (area1 + area2 - inter); where
        the union is <= 0 the IoU is 0, so it is never NaN: identical zero-area boxes give 0
        (torchvision: NaN), and boxes with ``x2 < x1`` count as empty (torchvision gives them
        a negative area). A NaN coordinate gives IoU 0 with every box; infinite coordinates
        give a value in [0, 1]. Values agree with torchvision wherever torchvision's are
        finite and the boxes are well formed.

        Integer boxes (any integer dtype, both of them), which torchvision accepts, are
        computed in float64 (exact: torchvision's integer areas and intersections) and returned
        in torch's default dtype (float32 unless changed), the dtype torchvision's division gives;
        equal to torchvision's wherever the areas and intersections are below 2^24 (and its
        int32 areas do not overflow). An integer and a floating-point tensor together: an error.
    """
    if torch.jit.is_scripting():  # TorchScript: the arguments' types are its own to check
        if fmt != "xyxy" and fmt != "xywh" and fmt != "cxcywh":  # AXIS_ALIGNED_FORMATS
            raise ValueError("box_iou: fmt must be 'xyxy', 'xywh' or 'cxcywh' in TorchScript "
                             "(torchvision.ops.box_iou takes the rotated ones), got " + fmt)
        if _is_integer(boxes1) and _is_integer(boxes2):  # empty(0): the default dtype
            return _iou_of_integers(boxes1, boxes2, fmt, torch.empty(0).dtype)
    else:
        if not (isinstance(boxes1, Tensor) and isinstance(boxes2, Tensor)):
            _not_tensors("box_iou", boxes1=boxes1, boxes2=boxes2)
        if type(fmt) is not str or fmt != "xyxy":
            fmt = _box_format("box_iou", fmt)
            if fmt in ROTATED_FORMATS:
                return _torchvision_box_iou(boxes1, boxes2, fmt)
        if not (boxes1.is_floating_point() and boxes2.is_floating_point()):
            return _integer_box_iou(boxes1, boxes2, fmt)
    return torch.ops.ssd_fast.box_iou(_corners(boxes1, fmt), _corners(boxes2, fmt))


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
        torchvision; no value is clamped. The log is ssd_fast's own (within 0.9 ulp, subnormal
        ratios included), not the platform's: CPU and CUDA give the same bits (so do
        :func:`ssd_targets`' loc targets).
    """
    if not (isinstance(gt, Tensor) and isinstance(priors, Tensor)):
        _not_tensors("encode_boxes", gt=gt, priors=priors)
    return torch.ops.ssd_fast.encode_boxes(gt, priors, _variances("encode_boxes", variances))


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
        inputs overflow only when the result does not fit the output dtype). The exp is
        ssd_fast's own (within 0.9 ulp), not the platform's: CPU and CUDA give the same bits
        (so do :func:`ssd_postprocess`' boxes, and every IoU taken of them).
    """
    if not (isinstance(offsets, Tensor) and isinstance(priors, Tensor)):
        _not_tensors("decode_boxes", offsets=offsets, priors=priors)
    return torch.ops.ssd_fast.decode_boxes(offsets, priors, _variances("decode_boxes", variances))


def match_priors(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor, iou_threshold: float = 0.5,
                 mode: str = "bipartite") -> Tuple[Tensor, Tensor]:
    """SSD matching of default boxes (priors) to ground truth, for a whole batch.

    Args:
        gt_boxes: ``[B, G, 4]`` GT corners, padded per image.
        gt_labels: ``[B, G]`` integer labels; rows with a label < 0 are padding and ignored.
        priors: ``[P, 4]`` prior corners (same dtype and device as ``gt_boxes``).
        iou_threshold: in [0, 1].
        mode: ``"bipartite"``, the original SSD (Caffe ``MatchBBox``): greedily, the globally
            best (free prior, unmatched GT) pair by IoU (ties: lowest prior, then lowest GT) is
            matched, while any pair with IoU > 1e-6 remains, so no two GTs share a prior
            (greedy, as Caffe: a GT whose only overlapping priors were all taken by other GTs
            first stays unmatched in this step); then every other prior takes its best GT (ties:
            lowest GT) if that IoU >= ``iou_threshold``. ``"argmax"``, ssd.pytorch /
            torchvision: each prior takes its best GT if IoU >= threshold, then each valid GT,
            in increasing index order, is forced onto its best prior (ties: lowest prior;
            even at IoU 0, as they do), a later GT winning a shared prior; forced priors get
            ``matched_iou`` 2.0.

    Returns:
        ``matched_idx [B, P]`` int64, the GT index (into G) or -1; ``matched_iou [B, P]`` in the
        input dtype: the IoU with the matched GT, else the best IoU over the valid GTs (0 for
        an image without GT). IoU is computed as :func:`box_iou` does (float32 for half
        inputs), so NaN coordinates give IoU 0. CUDA: one launch, no host synchronisation.
    """
    op = "match_priors"
    if not (isinstance(gt_boxes, Tensor) and isinstance(gt_labels, Tensor)
            and isinstance(priors, Tensor)):
        _not_tensors(op, gt_boxes=gt_boxes, gt_labels=gt_labels, priors=priors)
    return torch.ops.ssd_fast.match_priors(gt_boxes, gt_labels, priors,
                                           _real(op, "iou_threshold", iou_threshold), _mode(op, mode))


def ssd_targets(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor, iou_threshold: float = 0.5,
                variances: Sequence[float] = DEFAULT_VARIANCES,
                mode: str = "bipartite") -> Tuple[Tensor, Tensor, Tensor]:
    """Training targets of a batch: :func:`match_priors` + :func:`encode_boxes` + labels, fused.

    Returns:
        ``loc_targets [B, P, 4]`` (the matched GT encoded against the prior; zeros where the
        prior is background), ``labels [B, P]`` int64 (the matched GT's label, 0 =
        background), ``matched_iou [B, P]`` (as :func:`match_priors`). Classes are 1..C-1;
        a valid GT with label 0 still claims its priors, which then count as background.
    """
    op = "ssd_targets"
    if not (isinstance(gt_boxes, Tensor) and isinstance(gt_labels, Tensor)
            and isinstance(priors, Tensor)):
        _not_tensors(op, gt_boxes=gt_boxes, gt_labels=gt_labels, priors=priors)
    return torch.ops.ssd_fast.ssd_targets(gt_boxes, gt_labels, priors,
                                          _real(op, "iou_threshold", iou_threshold),
                                          _variances(op, variances), _mode(op, mode))


def hard_negative_mining(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: float = 3.0,
                         matched_iou: Optional[Tensor] = None,
                         neg_overlap: float = 0.5) -> Tensor:
    """SSD hard negative mining: which priors enter the confidence loss.

    Args:
        conf_loss: ``[B, P]`` background cross-entropy per prior (-log p(background)).
        labels: ``[B, P]`` integer: > 0 positive, 0 background, < 0 ignored.
        neg_pos_ratio: negatives per positive (finite, >= 0).
        matched_iou: optional ``[B, P]``; with it, only priors with
            ``matched_iou < neg_overlap`` (compared in its dtype) are eligible negatives.

    Returns:
        ``mask [B, P]`` bool: the positives, and per image the ``k`` eligible negatives of
        highest loss, ``k = min(floor(num_pos * neg_pos_ratio), num_eligible)``, ties to the
        lower prior index; an image without positives selects nothing. NaN losses rank above
        every number (as in a descending ``torch.sort``). Selection, not sorting: O(P) per row.
    """
    op = "hard_negative_mining"
    if not (isinstance(conf_loss, Tensor) and isinstance(labels, Tensor)
            and (matched_iou is None or isinstance(matched_iou, Tensor))):
        _not_tensors(op, conf_loss=conf_loss, labels=labels)
        raise TypeError(f"{op}: matched_iou must be a Tensor or None, got {_show(matched_iou)}")
    return torch.ops.ssd_fast.hard_negative_mining(conf_loss, labels,
                                                   _real(op, "neg_pos_ratio", neg_pos_ratio),
                                                   matched_iou, _real(op, "neg_overlap", neg_overlap))


def multibox_loss(loc: Tensor, conf_logits: Tensor, loc_targets: Tensor, labels: Tensor,
                  neg_pos_ratio: float = 3.0) -> Tuple[Tensor, Tensor, Tensor]:
    """The SSD loss of a batch given its targets (:func:`ssd_targets`), fused: one pass over
    the logits, no ``[B, P, C]`` temporary, differentiable in ``loc`` and ``conf_logits``.

    Args:
        loc: ``[B, P, 4]`` predicted offsets.
        conf_logits: ``[B, P, C]`` class logits, ``C >= 2`` (class 0 = background).
        loc_targets: ``[B, P, 4]`` encoded targets; same dtype (float32 or float64) and device.
        labels: ``[B, P]`` integer: > 0 positive (must be < C), 0 background, < 0 ignored.
        neg_pos_ratio: negatives kept per positive, per image (finite, >= 0).

    Returns:
        ``(loc_loss, conf_loss, mask)``. With n = max(number of positives in the batch, 1):
        ``loc_loss`` = sum over positives of smooth L1 (beta 1) of ``loc - loc_targets``, / n;
        ``mask [B, P]`` bool = :func:`hard_negative_mining` of the background cross-entropy
        ``logsumexp(conf) - conf[..., 0]`` (positives, and per image the hardest negatives);
        ``conf_loss`` = sum over ``mask`` of ``logsumexp(conf) - conf[label]``, / n. Losses are
        0-dim in the input dtype, summed in float64. Backward (``multibox_loss_backward``):
        ``clamp(loc - loc_targets, -1, 1) / n`` on positives, ``(softmax - onehot) / n`` on
        masked priors, 0 elsewhere; none for ``loc_targets`` and ``labels``. That backward is
        differentiable in turn (``create_graph=True``: second derivatives with the mask held, as
        the reference's autograd gives them). A label >= C:
        ``ValueError`` naming it on the CPU; on CUDA (no host synchronisation, so nothing looks
        at the labels) ``conf_loss`` is NaN and that prior's ``conf_logits`` gradient is the
        softmax alone, never a device assertion. :class:`~ssd_fast.models.MultiBoxLoss` checks
        its labels on every device.
    """
    op = "multibox_loss"
    if not (isinstance(loc, Tensor) and isinstance(conf_logits, Tensor)
            and isinstance(loc_targets, Tensor) and isinstance(labels, Tensor)):
        _not_tensors(op, loc=loc, conf_logits=conf_logits, loc_targets=loc_targets, labels=labels)
    return torch.ops.ssd_fast.multibox_loss(loc, conf_logits, loc_targets, labels,
                                            _real(op, "neg_pos_ratio", neg_pos_ratio))


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
    if not torch.jit.is_scripting():
        if not (isinstance(boxes, Tensor) and isinstance(scores, Tensor)):
            _not_tensors("nms", boxes=boxes, scores=scores)
        iou_threshold = _real("nms", "iou_threshold", iou_threshold)
    return torch.ops.ssd_fast.nms(boxes, scores, iou_threshold)


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

        Empty ``boxes`` (shape ``[0, 4]``, or ``[0]`` as torchvision also takes them) give an
        empty result whatever the other arguments are, as in torchvision (whose own tests call
        ``batched_nms(empty, None, None, None)``).
    """
    if not torch.jit.is_scripting() and not isinstance(boxes, Tensor):
        _not_tensors("batched_nms", boxes=boxes)
    if boxes.numel() == 0 and (boxes.dim() == 1 or (boxes.dim() == 2 and boxes.shape[1] == 4)):
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)  # [0] or [0, 4]
    if not torch.jit.is_scripting():
        if not (isinstance(scores, Tensor) and isinstance(idxs, Tensor)):
            _not_tensors("batched_nms", scores=scores, idxs=idxs)
        iou_threshold = _real("batched_nms", "iou_threshold", iou_threshold)
    return torch.ops.ssd_fast.batched_nms(boxes, scores, idxs, iou_threshold)


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

    Memory on CUDA, beyond the outputs, with S the classes taking part, k = ``topk_per_class``
    (P for -1) and w = 4 bytes for float32/half scores, 8 for float64: the score keys, B * S * P
    * w; the kept detections, B * S * min(k, K) * 2w; and where an (image, class) pair's scratch,
    next_pow2(k) * (4 + 6w) bytes (28 or 52), is above 40 KiB, that scratch in global memory for
    at most 128 MiB of pairs at once, whatever B and C (SSD512 with 24564 priors and k = -1:
    917 KiB a pair, 146 pairs at once).
    """
    op = "multiclass_nms"
    if not (isinstance(boxes, Tensor) and isinstance(scores, Tensor)):
        _not_tensors(op, boxes=boxes, scores=scores)
    return torch.ops.ssd_fast.multiclass_nms(
        boxes, scores, _real(op, "score_threshold", score_threshold),
        _real(op, "iou_threshold", iou_threshold), _count(op, "topk_per_class", topk_per_class),
        _count(op, "max_detections", max_detections),
        _count(op, "background_class", background_class))


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
    ``torch.softmax``'s by a few ulps (both are that far from the exact value). A row of
    logits with a NaN (or +inf) gives NaN probabilities, which are never candidates.

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
    op = "ssd_postprocess"
    if not (isinstance(loc, Tensor) and isinstance(conf_logits, Tensor)
            and isinstance(priors, Tensor)):
        _not_tensors(op, loc=loc, conf_logits=conf_logits, priors=priors)
    if clip is not True and clip is not False:
        raise TypeError(f"{op}: clip must be a bool, got {_show(clip)}")
    return torch.ops.ssd_fast.ssd_postprocess(
        loc, conf_logits, priors, _variances(op, variances), clip,
        _real(op, "score_threshold", score_threshold), _real(op, "iou_threshold", iou_threshold),
        _count(op, "topk_per_class", topk_per_class), _count(op, "max_detections", max_detections),
        _count(op, "background_class", background_class))
