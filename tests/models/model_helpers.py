"""Test-only helpers of tests/models.

``ssd_postprocess_ref`` is SPEC §2's ``ssd_postprocess`` written plainly (decode, softmax, per
class: threshold, top-k, ``torchvision.ops.nms``; then the best ``max_detections`` over all
classes). The detect and parity tests run once with it patched in as ``ssd_fast.ops.
ssd_postprocess`` (so they run before the kernel exists) and once with the real op.
"""
import pytest
import torch
import torchvision

from ssd_fast import ops
from ssd_fast.ops import reference as ref


def ssd_postprocess_ref(loc, conf_logits, priors, variances=ref.DEFAULT_VARIANCES, clip=False,
                        score_threshold=0.01, iou_threshold=0.45, topk_per_class=400,
                        max_detections=200, background_class=0):
    boxes = ref.decode_boxes(loc.detach().float(), priors.float(), variances)
    if clip:
        boxes = boxes.clamp(0.0, 1.0)
    scores = torch.softmax(conf_logits.detach().float(), dim=-1)
    B, P, C = scores.shape
    K = max_detections
    out_boxes = torch.zeros(B, K, 4)
    out_scores = torch.zeros(B, K)
    out_labels = torch.full((B, K), -1, dtype=torch.int64)
    num = torch.zeros(B, dtype=torch.int64)
    for b in range(B):
        rows = []  # (score, class, prior)
        for c in range(C):
            if c == background_class:
                continue
            s = scores[b, :, c]
            idx = torch.nonzero(s > score_threshold).flatten()
            order = torch.sort(s[idx], descending=True, stable=True).indices[:topk_per_class]
            idx = idx[order]
            keep = torchvision.ops.nms(boxes[b, idx], s[idx], iou_threshold)
            rows += [(float(s[p]), c, int(p)) for p in idx[keep]]
        rows.sort(key=lambda r: (-r[0], r[1], r[2]))
        rows = rows[:K]
        num[b] = len(rows)
        for i, (score, c, p) in enumerate(rows):
            out_boxes[b, i] = boxes[b, p]
            out_scores[b, i] = scores[b, p, c]
            out_labels[b, i] = c
    return out_boxes, out_scores, out_labels, num


@pytest.fixture(params=["ssd_fast.ops", "test reference"])
def postprocess(request, monkeypatch):
    """Which ``ssd_postprocess`` ``SSD.detect`` calls: the op (skipped until it exists) or
    ``ssd_postprocess_ref`` patched in."""
    if request.param == "ssd_fast.ops":
        if not hasattr(ops, "ssd_postprocess"):
            pytest.skip("ssd_fast.ops.ssd_postprocess is not on this branch yet (it lands with the "
                        "nms work); the 'test reference' case covers the logic until then")
    else:
        monkeypatch.setattr(ops, "ssd_postprocess", ssd_postprocess_ref, raising=False)
    return request.param
