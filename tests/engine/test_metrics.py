"""VOC AP on hand-computed fixtures; COCO AP equals pycocotools run directly on the files."""
import json

import numpy as np
import pytest

from detection_fixtures import coco_fixture
from ssd_fast.engine.metrics import average_precision, coco_ap, coco_results, voc_ap_per_class, voc_map


def _gt(boxes, labels, difficult=None):
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels),
            np.array(difficult if difficult is not None else [False] * len(labels)))


def _det(boxes, scores, labels):
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(scores), np.array(labels)


def test_voc_ap_hand_computed():
    # 3 GTs of class 1 over two images; detections by score: TP, FP, TP, (duplicate) FP
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1]), _gt([[0, 0, 10, 10]], [1])]
    dets = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8, 0.6], [1, 1, 1]),
            _det([[0, 0, 10, 10]], [0.7], [1])]
    # order: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP (duplicate); recall 1/3, 1/3, 2/3, 2/3;
    # precision 1, 1/2, 2/3, 1/2
    # VOC07: t=0..0.3 -> 1 (4 points), t=0.4..0.6 -> 2/3 (3 points), t=0.7..1 -> 0
    assert voc_ap_per_class(dets, gts, 1, use_07=True) == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)
    # area: 1/3 * 1 + 1/3 * 2/3
    assert voc_ap_per_class(dets, gts, 1, use_07=False) == pytest.approx(1 / 3 + 2 / 9)


def test_difficult_is_ignored_and_iou_is_strict():
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True])]
    dets = [_det([[20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.5], [1, 1])]
    assert voc_ap_per_class(dets, gts, 1, use_07=False) == pytest.approx(1.0)
    # IoU exactly 0.5 is not a match (VOC uses ">")
    gts = [_gt([[0, 0, 10, 10]], [1])]
    dets = [_det([[0, 0, 10, 5]], [0.9], [1])]
    assert voc_ap_per_class(dets, gts, 1) == 0.0


def test_average_precision_curves():
    r, p = np.array([0.5, 1.0]), np.array([1.0, 0.5])
    assert average_precision(r, p, use_07=False) == pytest.approx(0.75)
    assert average_precision(r, p, use_07=True) == pytest.approx((6 * 1 + 5 * 0.5) / 11)


def test_voc_map_skips_classes_without_gt():
    gts = [_gt([[0, 0, 10, 10]], [1])]
    dets = [_det([[0, 0, 10, 10], [0, 0, 5, 5]], [0.9, 0.9], [1, 2])]
    m = voc_map(dets, gts, num_classes=3)
    assert m["voc07_map50"] == 1.0 and m["ap07"] == [1.0, None]


@pytest.mark.filterwarnings("ignore:coco.*annotations fixed or skipped")  # the fixture's bad entries, on purpose
def test_coco_ap_equals_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from ssd_fast.data import build_dataset

    images, ann = coco_fixture(tmp_path)
    ds = build_dataset(f"coco:{images},{ann}")
    rng = np.random.default_rng(0)
    dets = []
    for i in range(len(ds)):
        b = ds.target(i)["boxes"]
        noisy = np.concatenate([b + rng.normal(0, 1.5, b.shape), [[0, 0, 20, 20]]])
        dets.append((noisy, rng.uniform(0.1, 1, len(noisy)), np.concatenate([ds.target(i)["labels"], [1]])))
    ids = [ds.image_id(i) for i in range(len(ds))]
    results = coco_results(dets, ids, ds.category_ids)
    ours = coco_ap(ds.coco, results)
    res_file = tmp_path / "res.json"
    res_file.write_text(json.dumps(results))
    gt = COCO(ann)
    ev = COCOeval(gt, gt.loadRes(str(res_file)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ours == {"coco_ap": pytest.approx(ev.stats[0]), "coco_ap50": pytest.approx(ev.stats[1])}
    assert 0 < ours["coco_ap"] <= 1
