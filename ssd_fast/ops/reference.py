"""Pure-PyTorch references of every ssd_fast op: short, obviously correct, independent of the
kernels. Tests and benchmarks compare the kernels against these. Each computes in float32
for float16/bfloat16 inputs (float64 stays float64) and returns the input dtype, as the ops do.
"""
import math

import torch
import torch.nn.functional as F

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


def multibox_loss(loc, conf_logits, loc_targets, labels, neg_pos_ratio=3.0):
    """The SSD loss from its definition: smooth L1 (beta 1) over the positives, softmax
    cross-entropy over the positives and the negatives :func:`hard_negative_mining` selects on
    -log softmax(conf)[..., 0], both divided by max(number of positives in the batch, 1).

    Returns (loc_loss, conf_loss, mask [B, P] bool).
    """
    logp = F.log_softmax(conf_logits, -1)
    pos = labels > 0
    n = pos.sum().clamp(min=1)
    mask = hard_negative_mining(-logp[..., 0].detach(), labels, neg_pos_ratio)
    ce = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    conf_loss = torch.where(mask, ce, 0.0).sum() / n
    loc_loss = F.smooth_l1_loss(loc[pos], loc_targets[pos], beta=1.0, reduction="sum") / n
    return loc_loss, conf_loss, mask


def multibox_loss_backward(grad_loc_loss, grad_conf_loss, loc, conf_logits, loc_targets, labels,
                           mask):
    """The gradients of :func:`multibox_loss` in (loc, conf_logits) for the mask it selected:
    ``grad_loc_loss * clamp(loc - loc_targets, -1, 1) / n`` on the positives and
    ``grad_conf_loss * (softmax(conf_logits) - onehot(label)) / n`` on the masked priors, 0
    elsewhere (a label >= C has no one-hot entry). Differentiable in every float argument.

    Returns (grad_loc [B, P, 4], grad_conf_logits [B, P, C]).
    """
    pos = labels > 0
    n = pos.sum().clamp(min=1)
    grad_loc = torch.where(pos.unsqueeze(-1), (loc - loc_targets).clamp(-1, 1), 0) * (grad_loc_loss / n)
    classes = torch.arange(conf_logits.shape[-1], device=labels.device)
    onehot = (labels.unsqueeze(-1) == classes).to(conf_logits.dtype)
    grad_conf = (torch.where(mask.unsqueeze(-1), torch.softmax(conf_logits, -1) - onehot, 0)
                 * (grad_conf_loss / n))
    return grad_loc, grad_conf


# --- NMS family --------------------------------------------------------------------------------
# Thresholds mean "value > threshold" exactly: the float32/float64 value against the Python
# float, compared in float64 (torch would otherwise round the threshold to float32 first).

def _greater(x, threshold):
    return x.double() > threshold


def _rank(scores):
    """Indices by score descending, equal scores by lower index; NaN first (torch.sort)."""
    return torch.sort(scores, descending=True, stable=True).indices


def nms(boxes, scores, iou_threshold):
    """Greedy NMS: visit the boxes by rank; keep a box unless a kept one has IoU > threshold."""
    order = _rank(scores)
    b = boxes.to(_compute_dtype(boxes.dtype))[order]
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        iou = box_iou(b[i:i + 1], b[i + 1:])[0]  # the kept box first, as the kernels do
        suppressed[i + 1:] |= _greater(iou, iou_threshold)
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(boxes, scores, idxs, iou_threshold):
    """nms per value of idxs; kept indices by score descending, equal scores by lower index."""
    keep = [members[nms(boxes[members], scores[members], iou_threshold)]
            for members in (torch.nonzero(idxs == c).flatten() for c in torch.unique(idxs))]
    keep = torch.cat(keep).sort().values if keep else idxs.new_zeros(0, dtype=torch.int64)
    return keep[_rank(scores[keep])]


def multiclass_nms(boxes, scores, score_threshold=0.01, iou_threshold=0.45, topk_per_class=400,
                   max_detections=200, background_class=0):
    """Per image, per class: candidates above score_threshold, their topk_per_class best,
    nms; then the max_detections best over all classes (score, then class, then prior)."""
    B, P, C = scores.shape
    K = max_detections
    det_boxes = torch.zeros(B, K, 4, dtype=boxes.dtype, device=boxes.device)
    det_scores = torch.zeros(B, K, dtype=scores.dtype, device=scores.device)
    det_labels = torch.full((B, K), -1, dtype=torch.int64, device=scores.device)
    num = torch.zeros(B, dtype=torch.int64, device=scores.device)
    for b in range(B):
        dets = []  # (class, prior)
        for c in range(C):
            if c == background_class:
                continue
            s = scores[b, :, c]
            cand = torch.nonzero(_greater(s, score_threshold)).flatten()
            cand = cand[_rank(s[cand])]
            if topk_per_class != -1:
                cand = cand[:topk_per_class]
            bx = boxes[b, cand, c] if boxes.dim() == 4 else boxes[b, cand]
            dets += [(c, int(p)) for p in cand[nms(bx, s[cand], iou_threshold)]]
        dets.sort()  # class, then prior: the order equal scores keep below
        if not dets:
            continue
        cls = torch.tensor([c for c, _ in dets], dtype=torch.int64, device=scores.device)
        pri = torch.tensor([p for _, p in dets], dtype=torch.int64, device=scores.device)
        sel = _rank(scores[b, pri, cls])[:K]
        n = len(sel)
        num[b] = n
        det_boxes[b, :n] = boxes[b, pri[sel], cls[sel]] if boxes.dim() == 4 else boxes[b, pri[sel]]
        det_scores[b, :n] = scores[b, pri[sel], cls[sel]]
        det_labels[b, :n] = cls[sel]
    return det_boxes, det_scores, det_labels, num


def ssd_postprocess(loc, conf_logits, priors, variances=DEFAULT_VARIANCES, clip=False,
                    score_threshold=0.01, iou_threshold=0.45, topk_per_class=400,
                    max_detections=200, background_class=0):
    """decode_boxes (+ clamp to [0, 1]), softmax over classes, multiclass_nms."""
    boxes = decode_boxes(loc, priors, variances)
    if clip:
        boxes = boxes.clamp(0, 1)
    probs = torch.softmax(conf_logits.to(_compute_dtype(conf_logits.dtype)), dim=-1)
    return multiclass_nms(boxes, probs.to(conf_logits.dtype), score_threshold, iou_threshold,
                          topk_per_class, max_detections, background_class)
