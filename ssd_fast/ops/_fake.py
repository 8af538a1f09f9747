"""Fake kernels: the outputs' shapes for meta tensors, FakeTensor tracing and torch.compile.

The argument checks and their messages live in one place, csrc/ops/*_checks.h: every op X has
a meta function ``torch.ops.ssd_fast._X_meta`` (csrc/ops/meta.cpp) that runs X's checks on the
tensors' metadata and, where X's output shapes follow from its input shapes, returns X's outputs
uninitialised. The fakes only call it; nms and batched_nms then allocate a keep of unknown size.
"""
import torch

FIXED_SHAPE_OPS = ("box_iou", "encode_boxes", "decode_boxes", "match_priors", "ssd_targets",
                   "hard_negative_mining", "multibox_loss", "multibox_loss_backward",
                   "multiclass_nms", "ssd_postprocess")


def _meta_function(name):
    return getattr(torch.ops.ssd_fast, f"_{name}_meta").default


def _register_fixed_shape(name):
    meta = _meta_function(name)
    torch.library.register_fake(f"ssd_fast::{name}")(
        lambda *args, **kwargs: meta(*args, **kwargs))


for _name in FIXED_SHAPE_OPS:
    _register_fixed_shape(_name)


def _keep(boxes):
    """nms's output: int64 [K], K unknown until the kernel runs (at most N)."""
    n = boxes.shape[0]
    ctx = torch.library.get_ctx()
    k = ctx.new_dynamic_size(max=n) if isinstance(n, int) else ctx.new_dynamic_size()
    return boxes.new_empty((k,), dtype=torch.int64)


@torch.library.register_fake("ssd_fast::nms")
def _nms_fake(boxes, scores, iou_threshold):
    _meta_function("nms")(boxes, scores, iou_threshold)
    return _keep(boxes)


@torch.library.register_fake("ssd_fast::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    _meta_function("batched_nms")(boxes, scores, idxs, iou_threshold)
    return _keep(boxes)
