"""The built-in synthetic detection dataset: procedurally drawn shapes, no download.

Every image is a pure function of ``(seed, split, index)``: a gradient background with noise
and clutter (thin lines, specks: distractors that are no class), then 1-6 objects of
:data:`CLASSES` in random colours and textures (solid, stripes, checker, noise), rotated
(except circles), with sides from 4% to 70% of the image. Objects may overlap: a new object
may cover at most 40% of an earlier one's box. Boxes are the tight bounds of the drawn
pixels. As in VOC, objects hard to recognise are flagged ``difficult`` (evaluation ignores
them): those whose longer side is under 6% of the image.

Drawing is vectorised numpy over each object's bounding square: about 1 ms per 160 px image.
"""
import math
from typing import Dict, Tuple

import numpy as np

from .dataset import DetectionDataset, Option, register_format

CLASSES = ("__background__", "circle", "rectangle", "triangle", "cross", "star")
SPLITS = {"train": 0, "test": 1}
DIFFICULT_BELOW = 0.06


def _texture(rng, h, w, colour):
    """[h, w, 3] float32 fill: one of solid, stripes, checker, noise around ``colour``."""
    kind = rng.integers(4)
    base = np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
    if kind == 0:
        return base
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    other = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 1:
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(3, 10)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        mask = (np.floor(t) % 2 == 0)[..., None]
    elif kind == 2:
        cell = rng.uniform(3, 10)
        mask = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2 == 0)[..., None]
    else:
        noise = rng.normal(0, 30, (h, w, 1)).astype(np.float32)
        return np.clip(base + noise, 0, 255)
    return np.where(mask, base, 0.6 * base + 0.4 * other)


def _polygon_mask(u, v, vertices):
    """Inside test of a convex polygon (counter-clockwise ``vertices`` [K, 2]) on grids u, v."""
    inside = np.ones(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return inside


def _regular(n, radius, phase=0.0):
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def _shape_mask(rng, label, side):
    """Boolean [side, side] mask of class ``label`` filling about the square (before rotation)."""
    c = (side - 1) / 2.0
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    x, y = (xx - c) / (side / 2.0), (yy - c) / (side / 2.0)  # [-1, 1]
    aspect = math.sqrt(rng.uniform(0.5, 2.0))
    if label == 1:  # ellipse (no rotation needed: axis-aligned)
        return (x * aspect) ** 2 + (y / aspect) ** 2 <= 1.0 / max(aspect, 1 / aspect) ** 2
    theta = rng.uniform(0, 2 * math.pi)
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    if label == 2:  # rectangle of aspect in [0.5, 2]
        hw, hh = 0.7 * min(aspect, 1.0), 0.7 * min(1 / aspect, 1.0)
        return (np.abs(u) <= hw) & (np.abs(v) <= hh)
    if label == 3:
        return _polygon_mask(u, v, _regular(3, 1.0))
    if label == 4:  # a plus sign
        arm = 0.3
        return ((np.abs(u) <= arm) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= arm) & (np.abs(u) <= 0.95))
    # six-pointed star: two triangles
    return _polygon_mask(u, v, _regular(3, 1.0)) | _polygon_mask(u, v, _regular(3, 1.0, math.pi))


def _background(rng, size):
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    grad = t[:, None] if rng.random() < 0.5 else t[None, :]
    img = a + (b - a) * grad[..., None]
    img = np.broadcast_to(img, (size, size, 3)) + rng.normal(0, 8, (size, size, 3))
    return img.astype(np.float32)


def _clutter(rng, img):
    """Distractors: thin lines and specks (no class)."""
    size = img.shape[0]
    for _ in range(rng.integers(0, 6)):
        x0, y0 = rng.uniform(0, size, 2)
        length, angle = rng.uniform(0.2, 0.8) * size, rng.uniform(0, math.pi)
        t = np.linspace(0, length, int(length) * 2)
        xs = np.clip((x0 + t * math.cos(angle)).astype(int), 0, size - 1)
        ys = np.clip((y0 + t * math.sin(angle)).astype(int), 0, size - 1)
        img[ys, xs] = rng.uniform(0, 255, 3)
    n = rng.integers(0, 30)
    ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
    img[ys, xs] = rng.uniform(0, 255, (n, 3))


def render(seed: int, split: str, index: int, size: int = 160,
           max_objects: int = 6) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Draw one image; returns ``(image [size, size, 3] uint8 RGB, target)`` with ``target =
    {"boxes": [G, 4] float32 pixel corners, "labels": [G] int64 in 1..5, "difficult": [G] bool}``."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    img = _background(rng, size).copy()
    _clutter(rng, img)
    boxes, labels = [], []
    for _ in range(rng.integers(1, max_objects + 1)):
        # mostly 10-70% of the side (log-uniform), sometimes tiny (4-10%)
        frac = rng.uniform(0.04, 0.1) if rng.random() < 0.1 else math.exp(rng.uniform(math.log(0.1), math.log(0.7)))
        side = max(3, int(round(frac * size / 0.95)))
        label = int(rng.integers(1, len(CLASSES)))
        for _ in range(10):  # a few tries to place it without hiding earlier objects
            x0, y0 = rng.integers(-side // 4, size - 3 * side // 4 + 1, 2)
            mask = _shape_mask(rng, label, side)
            # clip the square to the image
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, size), min(y0 + side, size)
            m = mask[ya - y0:yb - y0, xa - x0:xb - x0]
            rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
            if len(rows) == 0:
                continue
            box = np.array([xa + cols[0], ya + rows[0], xa + cols[-1] + 1, ya + rows[-1] + 1], np.float32)
            if boxes and _max_covered(np.stack(boxes), box) > 0.4:
                continue
            colour = rng.uniform(0, 255, 3)
            tex = _texture(rng, yb - ya, xb - xa, colour)
            region = img[ya:yb, xa:xb]
            region[m] = tex[m]
            boxes.append(box)
            labels.append(label)
            break
    boxes = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    longest = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    target = {"boxes": boxes, "labels": np.array(labels, np.int64),
              "difficult": longest < DIFFICULT_BELOW * size}
    return np.clip(img, 0, 255).astype(np.uint8), target


def _max_covered(boxes, box):
    """Largest fraction of any of ``boxes`` [N, 4] that ``box`` covers."""
    iw = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float((iw * ih / area).max())


@register_format(
    "synthetic", help="procedurally drawn shapes (no download), each image a function of (seed, split, index)",
    options=(Option("seed", int, "the random stream", range=(0, 2 ** 63 - 1), shown="S"),
             Option("n", int, "number of images", range=(1, 2 ** 31 - 1), shown="N"),
             Option("size", int, "image side in pixels", range=(32, 8192), shown="PX"),
             Option("split", str, "train or test (other random streams of the same seed)", choices=tuple(SPLITS))))
class SyntheticDataset(DetectionDataset):
    """``synthetic[:seed=S,n=N,size=PX,split=train|test]``: ``n`` images of ``size`` px.

    ``dataset[i] -> (image [H, W, 3] uint8 RGB, target)`` (see :func:`render`); the test split
    draws from another random stream than the train split of the same seed.
    """

    classes = CLASSES

    def __init__(self, seed: int = 0, n: int = 2000, size: int = 160, split: str = "train"):
        self._cache = None
        self.spec_format.check(split=split, seed=seed, n=n, size=size)
        self.seed, self.n, self.size, self.split = seed, n, size, split

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if not 0 <= index < self.n:
            raise IndexError(f"synthetic: index {index} out of range [0, {self.n})")
        if self._cache is not None:
            return self._cache[index]
        return render(self.seed, self.split, index, self.size)

    @property
    def files(self):
        """None: the images are drawn in memory."""
        return ()

    def cache(self) -> "SyntheticDataset":
        """Render every image now and keep them in memory (``n * size^2 * 3`` bytes; DataLoader
        workers then share them copy-on-write instead of drawing them again every epoch)."""
        self._cache = [render(self.seed, self.split, i, self.size) for i in range(self.n)]
        return self

    def __repr__(self):
        return f"synthetic:seed={self.seed},n={self.n},size={self.size},split={self.split}"
