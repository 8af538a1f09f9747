"""Fake (meta) kernels: output shapes for torch.compile and FakeTensor tracing. Every check
raises the same error, with the same text, as its twin in csrc/ops/box_checks.h."""
import math

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def _shape(t):
    return str(list(t.shape))


def check_boxes(op, name, t, min_dim, layout):
    if t.dtype not in _FLOATS:
        raise RuntimeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, "
                           f"got {_dtype_name(t.dtype)}")
    if t.dim() < min_dim or t.shape[-1] != 4:
        raise RuntimeError(f"{op}: {name} must have shape {layout}, got {_shape(t)}")


def check_same_device_dtype(op, name_a, a, name_b, b):
    if a.device != b.device:
        raise RuntimeError(f"{op}: {name_a} and {name_b} must be on the same device, "
                           f"got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise RuntimeError(f"{op}: {name_a} and {name_b} must have the same dtype, "
                           f"got {_dtype_name(a.dtype)} and {_dtype_name(b.dtype)}")


def check_variances(op, variances):
    v = list(variances)
    if len(v) != 4 or not all(math.isfinite(x) and x > 0 for x in v):
        raise ValueError(f"{op}: variances must be 4 positive finite numbers, "
                         f"got [{', '.join(format(x, 'g') for x in v)}]")


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
