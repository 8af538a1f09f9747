"""Run a model over a dataset and score it: VOC07/VOC12 mAP@0.5, optionally COCO AP.

Under ``torchrun`` every rank detects on its share of the images (index % world == rank) and
rank 0 gathers them; all ranks return the same metrics.
"""
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from ..data import Augmented, TestTransform, collate, normalize_image
from .distributed import world
from .metrics import coco_ap, coco_ground_truth, coco_results, voc_map


@torch.no_grad()
def detect_dataset(model, dataset, batch_size: int = 32, device="cpu", workers: int = 0,
                   **postprocess_kw) -> Tuple[List[int], List[Tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """``model.detect`` on this rank's share of ``dataset``; boxes scaled to each image's
    original pixels. Returns ``(indices, detections)`` (see :mod:`.metrics`)."""
    rank, size = world()
    indices = list(range(rank, len(dataset), size))
    data = Augmented(dataset, TestTransform(model.image_size[0], normalize=False))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, indices), batch_size=batch_size,
                                         collate_fn=collate, num_workers=workers)
    model.eval()
    H, W = model.image_size
    out = []
    for images, target in loader:
        images = normalize_image(images.to(device)).contiguous(memory_format=torch.channels_last)
        boxes, scores, labels, num = model.detect(images, **postprocess_kw)
        boxes, scores, labels, num = boxes.cpu(), scores.cpu(), labels.cpu(), num.cpu()
        for i in range(len(num)):
            h, w = target["orig_size"][i].tolist()
            n = int(num[i])
            scale = torch.tensor([w / W, h / H, w / W, h / H])
            out.append(((boxes[i, :n] * scale).numpy(), scores[i, :n].numpy(), labels[i, :n].numpy()))
    return indices, out


def _gather(indices, detections):
    rank, size = world()
    if size == 1:
        return indices, detections
    parts = [None] * size
    dist.all_gather_object(parts, (indices, detections))
    pairs = sorted((i, d) for idx, det in parts for i, d in zip(idx, det))
    return [i for i, _ in pairs], [d for _, d in pairs]


def evaluate(model, dataset, batch_size: int = 32, device="cpu", coco: bool = False,
             workers: int = 0, **postprocess_kw) -> Dict:
    """Metrics of ``model`` on ``dataset``: ``voc07_map50``, ``voc12_map50``, per-class ``ap07``
    / ``ap12``, ``images``, ``seconds``; with ``coco=True`` also ``coco_ap``, ``coco_ap50``
    (pycocotools; a COCO dataset is scored against its own annotation file)."""
    t0 = time.perf_counter()
    indices, detections = _gather(*detect_dataset(model, dataset, batch_size, device, workers,
                                                  **postprocess_kw))
    gts = [ground_truth(dataset, i) for i in indices]
    metrics = voc_map(detections, gts, model.num_classes)
    if coco:
        ids = [dataset.image_id(i) for i in indices]
        cat_ids = getattr(dataset, "category_ids", list(range(model.num_classes)))
        gt = getattr(dataset, "coco", None)
        if gt is None:
            sizes = [dataset[i][0].shape[:2] for i in indices]
            gt = coco_ground_truth(gts, ids, cat_ids, sizes)
        metrics.update(coco_ap(gt, coco_results(detections, ids, cat_ids)))
    metrics.update(images=len(indices), seconds=time.perf_counter() - t0)
    return metrics


def ground_truth(dataset, index: int):
    """``(boxes, labels, difficult)`` of image ``index`` in original pixels (datasets may offer
    a cheaper ``target(index)`` that skips decoding the image)."""
    target = dataset.target(index) if hasattr(dataset, "target") else dataset[index][1]
    return target["boxes"], target["labels"], target["difficult"]
