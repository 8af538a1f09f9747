"""Augmentation: boxes stay on the drawn pixels, crops keep the GTs whose centre is inside,
flip is exact, the pipeline is a pure function of its seed."""
import numpy as np
import pytest

from ssd_fast.data import TrainTransform
from ssd_fast.data.transforms import MEAN, STD, crop_boxes, expand, hflip, random_crop, sample_patch


def _image_with_box(h=60, w=80, box=(10, 20, 30, 45)):
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img, np.array([box], np.float32)


def _white_bounds(img):
    ys, xs = np.nonzero(img[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_expand_moves_box_with_pixels():
    img, boxes = _image_with_box()
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, b = expand(img, boxes, rng, fill=(0, 0, 0))
        np.testing.assert_array_equal(_white_bounds(out), b[0])


def test_flip_is_exact():
    img, boxes = _image_with_box()
    out, b = hflip(img, boxes)
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_array_equal(_white_bounds(out), b[0])
    back, b2 = hflip(out, b)
    np.testing.assert_array_equal(back, img)
    np.testing.assert_array_equal(b2, boxes)


def test_crop_keeps_centres_inside_and_matches_pixels():
    img, _ = _image_with_box()
    boxes = np.array([[10, 20, 30, 45], [50, 5, 70, 15], [0, 0, 4, 4], [0, 0, 12, 4]], np.float32)
    patch = np.array([5, 0, 40, 50])
    kept, keep = crop_boxes(boxes, patch)
    np.testing.assert_array_equal(keep, [True, False, False, True])  # centres x 20, 60, 2, 6
    np.testing.assert_array_equal(kept, [[5, 20, 25, 45], [0, 0, 7, 4]])
    crop = img[patch[1]:patch[3], patch[0]:patch[2]]
    np.testing.assert_array_equal(_white_bounds(crop), kept[0])


@pytest.mark.parametrize("min_iou", [0.1, 0.5, 0.9])
def test_sample_patch_meets_the_iou_constraint(min_iou):
    boxes = np.array([[10, 10, 50, 40]], np.float32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = sample_patch(60, 80, boxes, min_iou, rng)
        if p is None:
            continue
        assert 0 <= p[0] < p[2] <= 80 and 0 <= p[1] < p[3] <= 60
        iw = min(p[2], 50) - max(p[0], 10)
        ih = min(p[3], 40) - max(p[1], 10)
        inter = max(iw, 0) * max(ih, 0)
        union = 40 * 30 + (p[2] - p[0]) * (p[3] - p[1]) - inter
        assert inter / union >= min_iou


def test_random_crop_box_consistency():
    img, boxes = _image_with_box(box=(20, 15, 50, 40))
    rng = np.random.default_rng(2)
    for _ in range(30):
        out, b, keep = random_crop(img, boxes, rng)
        assert keep.all() and len(b) == 1
        np.testing.assert_array_equal(_white_bounds(out), b[0])


def test_train_transform_boxes_follow_pixels_and_is_seeded():
    img, boxes = _image_with_box(box=(20, 15, 50, 40))
    target = {"boxes": boxes, "labels": np.array([1]), "difficult": np.array([False])}
    t = TrainTransform(64, photometric=False)
    for seed in range(10):
        x, out = t(img, target, np.random.default_rng(seed))
        y, out2 = t(img, target, np.random.default_rng(seed))
        assert x.shape == (3, 64, 64) and (x == y).all()
        np.testing.assert_array_equal(out["boxes"], out2["boxes"])
        pixels = x[0].numpy() * STD[0] + MEAN[0]
        ys, xs = np.nonzero(pixels > 200)
        if len(out["boxes"]) == 0 or len(xs) == 0:
            continue
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 64
        np.testing.assert_allclose(found, out["boxes"][0], atol=2.5 / 64)


def test_photometric_keeps_geometry():
    img, boxes = _image_with_box()
    target = {"boxes": boxes, "labels": np.array([1]), "difficult": np.array([False])}
    t = TrainTransform(80, expand_p=0, crop=False, flip_p=0)
    x, out = t(img, target, np.random.default_rng(3))
    np.testing.assert_allclose(out["boxes"][0] * [80, 60, 80, 60], boxes[0], rtol=1e-6)
