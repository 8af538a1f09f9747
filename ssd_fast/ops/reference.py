"""Pure-PyTorch references of every ssd_fast op: short, obviously correct, independent of the
kernels. Tests and benchmarks compare the kernels against these. Each computes in float32
for float16/bfloat16 inputs (float64 stays float64) and returns the input dtype, as the ops do.
"""
import math

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


def _iou_matrix(gt, priors):
    """IoU [g, P] in the compute dtype (the ops compare against thresholds in that dtype)."""
    ct = _compute_dtype(gt.dtype)
    return box_iou(gt.to(ct), priors.to(ct))


def match_priors(gt_boxes, gt_labels, priors, iou_threshold=0.5, mode="bipartite"):
    """SSD matching, one image at a time (SPEC §2 `match_priors`).

    Returns (matched_idx [B, P] int64: GT index or -1, matched_iou [B, P] in the input dtype).
    """
    B, G = gt_labels.shape
    P = priors.shape[0]
    ct = _compute_dtype(gt_boxes.dtype)
    matched_idx = torch.full((B, P), -1, dtype=torch.int64, device=priors.device)
    matched_iou = torch.zeros((B, P), dtype=ct, device=priors.device)
    for b in range(B):
        valid = torch.nonzero(gt_labels[b] >= 0).flatten()
        if valid.numel() == 0 or P == 0:
            continue
        iou = _iou_matrix(gt_boxes[b, valid], priors)  # [g, P]
        best_iou, best_g = iou.max(dim=0)  # ties: first (lowest) GT index
        idx = torch.full((P,), -1, dtype=torch.int64, device=priors.device)
        miou = best_iou.clone()
        if mode == "bipartite":
            work = torch.where(iou > 1e-6, iou, torch.full_like(iou, -1.0))
            while True:
                top = work.max()
                if top <= 0:
                    break
                pairs = torch.nonzero(work == top)  # rows (g, p)
                order = pairs[:, 1] * (work.shape[0] + 1) + pairs[:, 0]  # lowest prior, then GT
                g, p = pairs[order.argmin()].tolist()
                idx[p] = g
                miou[p] = iou[g, p]
                work[g, :] = -1.0
                work[:, p] = -1.0
            free = (idx < 0) & (best_iou >= iou_threshold)
            idx[free] = best_g[free]
        elif mode == "argmax":
            keep = best_iou >= iou_threshold
            idx[keep] = best_g[keep]
            best_prior = iou.argmax(dim=1)  # ties: first (lowest) prior index
            for g in range(valid.numel()):  # increasing GT index: a later GT wins a shared prior
                idx[best_prior[g]] = g
                miou[best_prior[g]] = 2.0
        else:
            raise ValueError(f"match_priors: mode must be 'bipartite' or 'argmax', got {mode!r}")
        matched_idx[b] = torch.where(idx >= 0, valid[idx.clamp(min=0)], idx)
        matched_iou[b] = miou
    return matched_idx, matched_iou.to(gt_boxes.dtype)


def ssd_targets(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=DEFAULT_VARIANCES,
                mode="bipartite"):
    """match_priors, then encode the matched GT of every prior and take its label.

    Returns (loc_targets [B, P, 4] (zeros where background), labels [B, P] int64 (0 where
    background), matched_iou [B, P]).
    """
    matched_idx, matched_iou = match_priors(gt_boxes, gt_labels, priors, iou_threshold, mode)
    pos = matched_idx >= 0
    safe = matched_idx.clamp(min=0)
    if gt_boxes.shape[1] == 0:  # no GT rows at all: nothing to gather from
        gt_boxes = gt_boxes.new_zeros(gt_boxes.shape[0], 1, 4)
        gt_labels = gt_labels.new_zeros(gt_labels.shape[0], 1)
    matched_boxes = torch.gather(gt_boxes, 1, safe.unsqueeze(-1).expand(*safe.shape, 4))
    loc = encode_boxes(matched_boxes, priors.expand_as(matched_boxes), variances)
    loc = torch.where(pos.unsqueeze(-1), loc, torch.zeros_like(loc))
    labels = torch.where(pos, torch.gather(gt_labels.to(torch.int64), 1, safe),
                         torch.zeros_like(matched_idx))
    return loc, labels, matched_iou


def hard_negative_mining(conf_loss, labels, neg_pos_ratio=3.0, matched_iou=None, neg_overlap=0.5):
    """Positives (labels > 0) OR, per image, the k eligible negatives of highest conf_loss,
    k = min(floor(num_pos * neg_pos_ratio), num_eligible); ties: lower prior index first.
    Eligible: labels == 0 (and matched_iou < neg_overlap when given). NaN losses rank highest.
    """
    pos = labels > 0
    eligible = labels == 0
    if matched_iou is not None:
        eligible = eligible & (matched_iou < neg_overlap)
    mask = pos.clone()
    for b in range(labels.shape[0]):
        cand = torch.nonzero(eligible[b]).flatten()
        want = int(pos[b].sum()) * neg_pos_ratio  # may overflow to inf for huge ratios
        k = cand.numel() if want >= cand.numel() else math.floor(want)
        if k <= 0:
            continue
        # stable descending sort: equal losses keep increasing prior order; NaN sorts first
        order = torch.sort(conf_loss[b, cand].double(), descending=True, stable=True).indices
        mask[b, cand[order[:k]]] = True
    return mask
