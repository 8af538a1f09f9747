"""Detection metrics: PASCAL VOC AP@0.5 (VOC07 11-point and VOC12 area) and COCO AP through
pycocotools.

Inputs, one entry per image:

- detections: ``(boxes [K, 4] pixel corners, scores [K], labels [K])`` numpy arrays;
- ground truths: ``(boxes [G, 4], labels [G], difficult [G] bool)``.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np


def _iou_one(box, boxes):
    """IoU of ``box`` [4] with ``boxes`` [G, 4] (SPEC §1: no +1, 0 where the union is <= 0)."""
    iw = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = iw * ih
    union = ((box[2] - box[0]) * (box[3] - box[1])
             + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07: bool) -> float:
    """AP from a precision/recall curve (detections in decreasing score order).

    ``use_07``: VOC2007's 11-point AP, the mean over t in {0, 0.1, ..., 1} of the largest
    precision at recall >= t (0 when recall never reaches t). Otherwise VOC2010+'s area: the
    area under the monotone (right-to-left running max) precision envelope.
    """
    if use_07:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def voc_ap_per_class(detections: Sequence[Tuple], ground_truths: Sequence[Tuple], label: int,
                     iou_threshold: float = 0.5, use_07: bool = True) -> float:
    """AP of class ``label`` as the VOC devkit computes it: detections of all images by score
    descending (stable); each is a true positive when its best-IoU GT of that class in its image
    has IoU > ``iou_threshold`` (strictly, as ``voc_eval.py``), is not difficult and not already
    taken; a detection whose best GT is difficult counts as neither; others are false positives.
    Recall is over the non-difficult GTs. NaN when the class has no non-difficult GT."""
    gts = []
    npos = 0
    for boxes, labels, difficult in ground_truths:
        m = np.asarray(labels) == label
        gts.append((np.asarray(boxes, np.float64)[m].reshape(-1, 4), np.asarray(difficult, bool)[m]))
        npos += int((~gts[-1][1]).sum())
    if npos == 0:
        return float("nan")
    img, scores, boxes = [], [], []
    for i, (b, s, l) in enumerate(detections):
        m = np.asarray(l) == label
        img.append(np.full(int(m.sum()), i))
        scores.append(np.asarray(s, np.float64)[m])
        boxes.append(np.asarray(b, np.float64)[m].reshape(-1, 4))
    img, scores, boxes = np.concatenate(img), np.concatenate(scores), np.concatenate(boxes)
    order = np.argsort(-scores, kind="stable")
    taken = [np.zeros(len(g[0]), bool) for g in gts]
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for k, d in enumerate(order):
        gboxes, gdiff = gts[img[d]]
        if len(gboxes) == 0:
            fp[k] = 1
            continue
        iou = _iou_one(boxes[d], gboxes)
        j = int(np.argmax(iou))
        if iou[j] > iou_threshold:
            if gdiff[j]:
                continue
            if not taken[img[d]][j]:
                taken[img[d]][j] = True
                tp[k] = 1
            else:
                fp[k] = 1
        else:
            fp[k] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision(recall, precision, use_07)


def voc_map(detections, ground_truths, num_classes: int, iou_threshold: float = 0.5) -> Dict:
    """``{"voc07_map50", "voc12_map50", "ap07": [per class], "ap12": [...]}`` over classes
    1..num_classes-1; classes without a non-difficult GT (AP NaN, stored as None) are left out
    of the means."""
    out = {}
    for key, use_07 in (("07", True), ("12", False)):
        aps = [voc_ap_per_class(detections, ground_truths, c, iou_threshold, use_07)
               for c in range(1, num_classes)]
        valid = [a for a in aps if not np.isnan(a)]
        out[f"voc{key}_map50"] = float(np.mean(valid)) if valid else float("nan")
        out[f"ap{key}"] = [None if np.isnan(a) else a for a in aps]
    return out


def coco_ground_truth(ground_truths, image_ids: List[int], category_ids: List[int], sizes) -> Dict:
    """A COCO-format ground-truth dict for datasets without one (VOC, synthetic): difficult
    GTs get ``iscrowd=1``, which pycocotools ignores (as VOC ignores difficult ones);
    ``category_ids[label]`` maps labels, ``sizes`` are (h, w)."""
    images = [{"id": int(i), "height": int(h), "width": int(w)} for i, (h, w) in zip(image_ids, sizes)]
    anns = []
    for img_id, (boxes, labels, difficult) in zip(image_ids, ground_truths):
        for b, l, d in zip(np.asarray(boxes, np.float64).reshape(-1, 4), labels, difficult):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": int(img_id), "category_id": int(category_ids[l]),
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)], "area": float(w * h),
                         "iscrowd": int(bool(d))})
    cats = [{"id": int(c)} for c in category_ids[1:]]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_results(detections, image_ids, category_ids) -> List[Dict]:
    """Detections as COCO result dicts (``bbox`` = x, y, w, h)."""
    res = []
    for img_id, (boxes, scores, labels) in zip(image_ids, detections):
        for b, s, l in zip(np.asarray(boxes, np.float64).reshape(-1, 4), scores, labels):
            res.append({"image_id": int(img_id), "category_id": int(category_ids[int(l)]),
                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                        "score": float(s)})
    return res


def coco_ap(gt, results: List[Dict]) -> Dict:
    """pycocotools' bbox evaluation. ``gt``: a ``pycocotools.coco.COCO`` or a ground-truth dict.
    Returns ``{"coco_ap": AP@[.5:.95], "coco_ap50": AP@.5}`` (-1 where pycocotools has nothing
    to measure; 0 when there is no detection)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if not isinstance(gt, COCO):
            coco = COCO()
            coco.dataset = gt
            coco.createIndex()
            gt = coco
        if not results:
            return {"coco_ap": 0.0, "coco_ap50": 0.0}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"coco_ap": float(ev.stats[0]), "coco_ap50": float(ev.stats[1])}
