"""Fake (meta) kernels: output shapes for torch.compile and FakeTensor tracing. Every check
raises the same error, with the same text, as its twin in csrc/ops/box_checks.h or
csrc/ops/target_checks.h."""
import math

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def _shape(t):
    return str(list(t.shape))


def check_float(op, name, t):
    if t.dtype not in _FLOATS:
        raise RuntimeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, "
                           f"got {_dtype_name(t.dtype)}")


def check_boxes(op, name, t, min_dim, layout):
    check_float(op, name, t)
    if t.dim() < min_dim or t.shape[-1] != 4:
        raise RuntimeError(f"{op}: {name} must have shape {layout}, got {_shape(t)}")


def check_same_device(op, name_a, a, name_b, b):
    if a.device != b.device:
        raise RuntimeError(f"{op}: {name_a} and {name_b} must be on the same device, "
                           f"got {a.device} and {b.device}")


def check_same_device_dtype(op, name_a, a, name_b, b):
    check_same_device(op, name_a, a, name_b, b)
    if a.dtype != b.dtype:
        raise RuntimeError(f"{op}: {name_a} and {name_b} must have the same dtype, "
                           f"got {_dtype_name(a.dtype)} and {_dtype_name(b.dtype)}")


def format_number(x):
    """A number as the error messages show it (twin of format_number in box_checks.h)."""
    s = f"{x:.15g}"
    if math.isfinite(x) and float(s) != x:
        s = f"{x:.17g}"
    return s


def check_variances(op, variances):
    v = list(variances)
    if len(v) != 4 or not all(math.isfinite(x) and x > 0 for x in v):
        raise ValueError(f"{op}: variances must be 4 positive finite numbers, "
                         f"got [{', '.join(format_number(x) for x in v)}]")


@torch.library.register_fake("ssd_fast::box_iou")
def _box_iou_fake(boxes1, boxes2):
    op = "box_iou"
    check_boxes(op, "boxes1", boxes1, 2, "[..., N, 4]")
    check_boxes(op, "boxes2", boxes2, 2, "[..., M, 4]")
    check_same_device_dtype(op, "boxes1", boxes1, "boxes2", boxes2)
    lead1, lead2 = boxes1.shape[:-2], boxes2.shape[:-2]
    if len(lead1) and len(lead2) and lead1 != lead2:
        raise RuntimeError(f"{op}: boxes1 and boxes2 must have the same leading (batch) dims, or "
                           f"one of them none, got boxes1 {_shape(boxes1)} and boxes2 {_shape(boxes2)}")
    lead = lead1 if len(lead1) else lead2
    return boxes1.new_empty((*lead, boxes1.shape[-2], boxes2.shape[-2]))


def _coder_fake(op, a_name, a, priors, variances):
    check_boxes(op, a_name, a, 1, "[..., 4]")
    check_boxes(op, "priors", priors, 1, "[..., 4]")
    check_same_device_dtype(op, a_name, a, "priors", priors)
    check_variances(op, variances)
    try:
        lead = torch.broadcast_shapes(a.shape[:-1], priors.shape[:-1])
    except RuntimeError:
        raise RuntimeError(f"{op}: the leading dims of {a_name} {_shape(a)} and priors "
                           f"{_shape(priors)} do not broadcast") from None
    return a.new_empty((*lead, 4))


@torch.library.register_fake("ssd_fast::encode_boxes")
def _encode_boxes_fake(gt, priors, variances):
    return _coder_fake("encode_boxes", "gt", gt, priors, variances)


@torch.library.register_fake("ssd_fast::decode_boxes")
def _decode_boxes_fake(offsets, priors, variances):
    return _coder_fake("decode_boxes", "offsets", offsets, priors, variances)


def _check_labels(op, name, labels, expected, layout):
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise RuntimeError(f"{op}: {name} must be an integer tensor, got {_dtype_name(labels.dtype)}")
    if tuple(labels.shape) != tuple(expected):
        raise RuntimeError(f"{op}: {name} must have shape {layout} = {list(expected)}, "
                           f"got {_shape(labels)}")


def check_match_args(op, gt_boxes, gt_labels, priors, iou_threshold, mode):
    check_boxes(op, "gt_boxes", gt_boxes, 3, "[B, G, 4]")
    if gt_boxes.dim() != 3:
        raise RuntimeError(f"{op}: gt_boxes must have shape [B, G, 4], got {_shape(gt_boxes)}")
    check_boxes(op, "priors", priors, 2, "[P, 4]")
    if priors.dim() != 2:
        raise RuntimeError(f"{op}: priors must have shape [P, 4], got {_shape(priors)}")
    check_same_device_dtype(op, "gt_boxes", gt_boxes, "priors", priors)
    check_same_device(op, "gt_boxes", gt_boxes, "gt_labels", gt_labels)
    _check_labels(op, "gt_labels", gt_labels, gt_boxes.shape[:2], "[B, G]")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"{op}: iou_threshold must be in [0, 1], got {format_number(iou_threshold)}")
    if mode not in ("bipartite", "argmax"):
        raise ValueError(f"{op}: mode must be 'bipartite' or 'argmax', got '{mode}'")


@torch.library.register_fake("ssd_fast::match_priors")
def _match_priors_fake(gt_boxes, gt_labels, priors, iou_threshold, mode):
    check_match_args("match_priors", gt_boxes, gt_labels, priors, iou_threshold, mode)
    B, P = gt_boxes.shape[0], priors.shape[0]
    return gt_labels.new_empty((B, P), dtype=torch.int64), gt_boxes.new_empty((B, P))


@torch.library.register_fake("ssd_fast::ssd_targets")
def _ssd_targets_fake(gt_boxes, gt_labels, priors, iou_threshold, variances, mode):
    check_match_args("ssd_targets", gt_boxes, gt_labels, priors, iou_threshold, mode)
    check_variances("ssd_targets", variances)
    B, P = gt_boxes.shape[0], priors.shape[0]
    return (gt_boxes.new_empty((B, P, 4)), gt_labels.new_empty((B, P), dtype=torch.int64),
            gt_boxes.new_empty((B, P)))


@torch.library.register_fake("ssd_fast::hard_negative_mining")
def _hard_negative_mining_fake(conf_loss, labels, neg_pos_ratio, matched_iou, neg_overlap):
    op = "hard_negative_mining"
    check_float(op, "conf_loss", conf_loss)
    if conf_loss.dim() != 2:
        raise RuntimeError(f"{op}: conf_loss must have shape [B, P], got {_shape(conf_loss)}")
    check_same_device(op, "conf_loss", conf_loss, "labels", labels)
    _check_labels(op, "labels", labels, conf_loss.shape, "[B, P]")
    if matched_iou is not None:
        check_float(op, "matched_iou", matched_iou)
        check_same_device(op, "conf_loss", conf_loss, "matched_iou", matched_iou)
        if matched_iou.shape != conf_loss.shape:
            raise RuntimeError(f"{op}: matched_iou must have shape [B, P] = {_shape(conf_loss)}, "
                               f"got {_shape(matched_iou)}")
    if not (math.isfinite(neg_pos_ratio) and neg_pos_ratio >= 0):
        raise ValueError(f"{op}: neg_pos_ratio must be a finite number >= 0, got "
                         f"{format_number(neg_pos_ratio)}")
    if not math.isfinite(neg_overlap):
        raise ValueError(f"{op}: neg_overlap must be finite, got {format_number(neg_overlap)}")
    return conf_loss.new_empty(conf_loss.shape, dtype=torch.bool)
def _check_multibox_tensors(op, loc, conf_logits, loc_targets, labels):
    if conf_logits.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"{op}: conf_logits must be float32 or float64, got "
                           f"{_dtype_name(conf_logits.dtype)}")
    if conf_logits.dim() != 3 or conf_logits.shape[2] < 2:
        raise RuntimeError(f"{op}: conf_logits must have shape [B, P, C] with C >= 2, got "
                           f"{_shape(conf_logits)}")
    box_shape = [conf_logits.shape[0], conf_logits.shape[1], 4]
    for name, t in (("loc", loc), ("loc_targets", loc_targets)):
        check_same_device_dtype(op, "conf_logits", conf_logits, name, t)
        if list(t.shape) != box_shape:
            raise RuntimeError(f"{op}: {name} must have shape [B, P, 4] = {box_shape}, "
                               f"got {_shape(t)}")
    check_same_device(op, "conf_logits", conf_logits, "labels", labels)
    _check_labels(op, "labels", labels, conf_logits.shape[:2], "[B, P]")


@torch.library.register_fake("ssd_fast::multibox_loss")
def _multibox_loss_fake(loc, conf_logits, loc_targets, labels, neg_pos_ratio):
    op = "multibox_loss"
    _check_multibox_tensors(op, loc, conf_logits, loc_targets, labels)
    if not (math.isfinite(neg_pos_ratio) and neg_pos_ratio >= 0):
        raise ValueError(f"{op}: neg_pos_ratio must be a finite number >= 0, got "
                         f"{format_number(neg_pos_ratio)}")
    return (conf_logits.new_empty(()), conf_logits.new_empty(()),
            conf_logits.new_empty(conf_logits.shape[:2], dtype=torch.bool))


@torch.library.register_fake("ssd_fast::multibox_loss_backward")
def _multibox_loss_backward_fake(grad_loc_loss, grad_conf_loss, loc, conf_logits, loc_targets,
                                 labels, mask):
    op = "multibox_loss_backward"
    _check_multibox_tensors(op, loc, conf_logits, loc_targets, labels)
    for name, g in (("grad_loc_loss", grad_loc_loss), ("grad_conf_loss", grad_conf_loss)):
        check_same_device_dtype(op, "conf_logits", conf_logits, name, g)
        if g.dim() != 0:
            raise RuntimeError(f"{op}: {name} must be a 0-dim tensor, got shape {_shape(g)}")
    check_same_device(op, "conf_logits", conf_logits, "mask", mask)
    if mask.dtype != torch.bool:
        raise RuntimeError(f"{op}: mask must be a bool tensor, got {_dtype_name(mask.dtype)}")
    if mask.shape != labels.shape:
        raise RuntimeError(f"{op}: mask must have shape [B, P] = {_shape(labels)}, got {_shape(mask)}")
    return loc.new_empty(loc.shape), conf_logits.new_empty(conf_logits.shape)


# --- NMS family (twins of csrc/ops/nms_checks.h) ---------------------------------------------

_INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
         torch.uint32, torch.uint64)


def check_rank(op, name, t, dim, layout):
    if t.dim() != dim:
        raise RuntimeError(f"{op}: {name} must have shape {layout}, got {_shape(t)}")


def check_iou_threshold(op, t):
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{op}: iou_threshold must be in [0, 1], got {format(t, 'g')}")


def check_nms_args(op, boxes, scores, iou_threshold):
    check_boxes(op, "boxes", boxes, 2, "[N, 4]")
    check_rank(op, "boxes", boxes, 2, "[N, 4]")
    check_same_device_dtype(op, "boxes", boxes, "scores", scores)
    n = boxes.shape[0]
    if scores.dim() != 1 or scores.shape[0] != n:
        raise RuntimeError(f"{op}: scores must have shape [N] = [{n}] (N from boxes), "
                           f"got {_shape(scores)}")
    if n >= 2**31 - 1:
        raise RuntimeError(f"{op}: at most 2^31 - 2 boxes are supported, got {n}")
    check_iou_threshold(op, iou_threshold)
    return n


def _dynamic_keep(boxes, n):
    k = torch.library.get_ctx().new_dynamic_size(max=n) if isinstance(n, int) else \
        torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((k,), dtype=torch.int64)


@torch.library.register_fake("ssd_fast::nms")
def _nms_fake(boxes, scores, iou_threshold):
    n = check_nms_args("nms", boxes, scores, iou_threshold)
    return _dynamic_keep(boxes, n)


@torch.library.register_fake("ssd_fast::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    op = "batched_nms"
    n = check_nms_args(op, boxes, scores, iou_threshold)
    if boxes.device != idxs.device:
        raise RuntimeError(f"{op}: boxes and idxs must be on the same device, "
                           f"got {boxes.device} and {idxs.device}")
    if idxs.dtype not in _INTS:
        raise RuntimeError(f"{op}: idxs must be an integer tensor, got {_dtype_name(idxs.dtype)}")
    if idxs.dim() != 1 or idxs.shape[0] != n:
        raise RuntimeError(f"{op}: idxs must have shape [N] = [{n}] (N from boxes), "
                           f"got {_shape(idxs)}")
    return _dynamic_keep(boxes, n)


def _check_detection_params(op, c, p, score_threshold, iou_threshold, topk_per_class,
                            max_detections, background_class):
    if math.isnan(score_threshold):
        raise ValueError(f"{op}: score_threshold must be a number, "
                         f"got {format(score_threshold, 'g')}")
    check_iou_threshold(op, iou_threshold)
    if not (topk_per_class > 0 or topk_per_class == -1):
        raise ValueError(f"{op}: topk_per_class must be positive or -1 (no limit), "
                         f"got {topk_per_class}")
    if max_detections < 0:
        raise ValueError(f"{op}: max_detections must be >= 0, got {max_detections}")
    if not -1 <= background_class < max(c, 1):
        raise ValueError(f"{op}: background_class must be -1 (none) or in [0, C) with C = {c}, "
                         f"got {background_class}")
    if p * max(c, 1) > 2**32 - 1:
        raise RuntimeError(f"{op}: P * C must be < 2^32, got P = {p} and C = {c}")


def _detections(like, b, k):
    return (like.new_empty((b, k, 4)), like.new_empty((b, k)),
            like.new_empty((b, k), dtype=torch.int64), like.new_empty((b,), dtype=torch.int64))


@torch.library.register_fake("ssd_fast::multiclass_nms")
def _multiclass_nms_fake(boxes, scores, score_threshold, iou_threshold, topk_per_class,
                         max_detections, background_class):
    op = "multiclass_nms"
    layout = "[B, P, 4] or [B, P, C, 4]"
    check_boxes(op, "boxes", boxes, 3, layout)
    if boxes.dim() > 4:
        raise RuntimeError(f"{op}: boxes must have shape {layout}, got {_shape(boxes)}")
    check_same_device_dtype(op, "boxes", boxes, "scores", scores)
    check_rank(op, "scores", scores, 3, "[B, P, C]")
    per_class = boxes.dim() == 4
    if (boxes.shape[0] != scores.shape[0] or boxes.shape[1] != scores.shape[1]
            or (per_class and boxes.shape[2] != scores.shape[2])):
        raise RuntimeError(f"{op}: boxes {_shape(boxes)} and scores {_shape(scores)} must agree "
                           f"on B and P{' and C' if per_class else ''}")
    b, p, c = scores.shape
    _check_detection_params(op, c, p, score_threshold, iou_threshold, topk_per_class,
                            max_detections, background_class)
    return _detections(boxes, b, max_detections)


@torch.library.register_fake("ssd_fast::ssd_postprocess")
def _ssd_postprocess_fake(loc, conf_logits, priors, variances, clip, score_threshold,
                          iou_threshold, topk_per_class, max_detections, background_class):
    op = "ssd_postprocess"
    check_boxes(op, "loc", loc, 3, "[B, P, 4]")
    check_rank(op, "loc", loc, 3, "[B, P, 4]")
    check_same_device_dtype(op, "loc", loc, "conf_logits", conf_logits)
    check_rank(op, "conf_logits", conf_logits, 3, "[B, P, C]")
    check_boxes(op, "priors", priors, 2, "[P, 4]")
    check_rank(op, "priors", priors, 2, "[P, 4]")
    check_same_device_dtype(op, "loc", loc, "priors", priors)
    if (loc.shape[0] != conf_logits.shape[0] or loc.shape[1] != conf_logits.shape[1]
            or loc.shape[1] != priors.shape[0]):
        raise RuntimeError(f"{op}: loc {_shape(loc)}, conf_logits {_shape(conf_logits)} and "
                           f"priors {_shape(priors)} must agree on B and P")
    check_variances(op, variances)
    b, p, c = conf_logits.shape
    _check_detection_params(op, c, p, score_threshold, iou_threshold, topk_per_class,
                            max_detections, background_class)
    return _detections(loc, b, max_detections)
