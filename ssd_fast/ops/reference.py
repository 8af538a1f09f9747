"""Pure-PyTorch references of every ssd_fast op: short, obviously correct, independent of the
kernels. Tests and benchmarks compare the kernels against these. Each computes in float32
for float16/bfloat16 inputs (float64 stays float64) and returns the input dtype, as the ops do.
"""
import torch

DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def box_area(boxes):
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    return w * h


def box_iou(boxes1, boxes2):
    """IoU of every pair: [..., N, 4] x [..., M, 4] -> [..., N, M]; 0 where the union is <= 0."""
    ct = _compute_dtype(boxes1.dtype)
    a, b = boxes1.to(ct), boxes2.to(ct)
    a_, b_ = a.unsqueeze(-2), b.unsqueeze(-3)  # [..., N, 1, 4], [..., 1, M, 4]
    w = (torch.minimum(a_[..., 2], b_[..., 2]) - torch.maximum(a_[..., 0], b_[..., 0])).clamp(min=0)
    h = (torch.minimum(a_[..., 3], b_[..., 3]) - torch.maximum(a_[..., 1], b_[..., 1])).clamp(min=0)
    inter = w * h
    union = box_area(a).unsqueeze(-1) + box_area(b).unsqueeze(-2) - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0)
    return iou.to(boxes1.dtype)


def _center_size(boxes):
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(gt, priors, variances=DEFAULT_VARIANCES):
    """SSD offsets of gt boxes relative to priors (both corners; leading dims broadcast)."""
    ct = _compute_dtype(gt.dtype)
    gcx, gcy, gw, gh = _center_size(gt.to(ct))
    pcx, pcy, pw, ph = _center_size(priors.to(ct))
    v = variances
    out = torch.stack([(gcx - pcx) / (v[0] * pw), (gcy - pcy) / (v[1] * ph),
                       torch.log(gw / pw) / v[2], torch.log(gh / ph) / v[3]], dim=-1)
    return out.to(gt.dtype)


def decode_boxes(offsets, priors, variances=DEFAULT_VARIANCES):
    """Corners of the boxes that offsets encode relative to priors: the inverse of encode."""
    ct = _compute_dtype(offsets.dtype)
    t = offsets.to(ct)
    pcx, pcy, pw, ph = _center_size(priors.to(ct))
    v = variances
    cx = t[..., 0] * v[0] * pw + pcx
    cy = t[..., 1] * v[1] * ph + pcy
    w = torch.exp(t[..., 2] * v[2]) * pw
    h = torch.exp(t[..., 3] * v[3]) * ph
    out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    return out.to(offsets.dtype)
