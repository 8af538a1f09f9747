"""SSD's training augmentation (Liu et al. 2016, §2.2 and Caffe's ``ssd_pascal.py``) and the
test-time transform, on numpy images ``[H, W, 3]`` (RGB) and pixel boxes ``[G, 4]``.

Every random choice draws from the ``numpy.random.Generator`` passed in, so a sample's
augmentation is a pure function of its seed (exact resume, identical workers).

Pipeline (:class:`TrainTransform`): photometric distortion -> expand -> min-IoU crop ->
horizontal flip -> resize -> normalize. Output: ``(image [3, S, S] float32 tensor, boxes [G, 4]
float32 normalized to [0, 1], labels, difficult)``.
"""
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

#: ImageNet statistics (RGB, 0-255): normalization and the expand fill.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
_MEAN_T = torch.tensor(MEAN).view(3, 1, 1)
_STD_T = torch.tensor(STD).view(3, 1, 1)
#: Caffe's batch samplers: (min IoU with some GT or None = no constraint).
CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9, None)

# RGB <-> YIQ: hue is a rotation of the (I, Q) plane, saturation a scaling of it.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ).astype(np.float32)


def photometric_distort(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness (+-32), contrast [0.5, 1.5], saturation [0.5, 1.5], hue (+-18 deg),
    each with p=0.5, contrast before or after the colour changes (p=0.5), as ssd.pytorch's
    ``PhotometricDistort``; saturation and hue act in YIQ space (one 3x3 matrix) instead of
    HSV. ``img`` uint8 [H, W, 3]; returns a new uint8 array (rounded, clipped to [0, 255])."""
    img = img.astype(np.float32, copy=True)
    if rng.random() < 0.5:
        img += rng.uniform(-32, 32)

    def contrast(x):
        return x * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else x

    contrast_first = rng.random() < 0.5
    if contrast_first:
        img = contrast(img)
    m = np.eye(3, dtype=np.float32)
    if rng.random() < 0.5:
        sat = rng.uniform(0.5, 1.5)
        m = np.diag([1.0, sat, sat]).astype(np.float32)
    if rng.random() < 0.5:
        a = math.radians(rng.uniform(-18, 18))
        rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], np.float32)
        m = rot @ m
    if not np.array_equal(m, np.eye(3, dtype=np.float32)):
        img = img @ (_YIQ2RGB @ m @ _RGB2YIQ).T
    if not contrast_first:
        img = contrast(img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _expand_geometry(h: int, w: int, rng: np.random.Generator, max_ratio: float) -> Tuple[int, int, int, int]:
    """The canvas of :func:`expand`: ``(H, W, left, top)`` (the image's place on it)."""
    ratio = rng.uniform(1, max_ratio)
    H, W = int(h * ratio), int(w * ratio)
    left, top = int(rng.uniform(0, W - w)), int(rng.uniform(0, H - h))
    return H, W, left, top


def _on_canvas(boxes: np.ndarray, canvas: Tuple[int, int, int, int]) -> np.ndarray:
    """Pixel boxes moved with the image onto ``canvas`` (:func:`_expand_geometry`)."""
    _, _, left, top = canvas
    return boxes + np.array([left, top, left, top], np.float32)


def _canvas_region(img: np.ndarray, canvas: Optional[Tuple[int, int, int, int]], region,
                   fill: Sequence[float] = MEAN) -> np.ndarray:
    """Pixels ``region`` ``[x1, y1, x2, y2]`` of ``img`` placed on ``canvas`` (``(H, W, left,
    top)`` as :func:`_expand_geometry`, filled with ``fill``; None: no canvas, a view of
    ``img``), without drawing the rest of the canvas."""
    x1, y1, x2, y2 = (int(v) for v in region)
    if canvas is None:
        return img[y1:y2, x1:x2]
    _, _, left, top = canvas
    h, w, _ = img.shape
    out = np.empty((y2 - y1, x2 - x1, 3), img.dtype)
    out[...] = np.rint(np.asarray(fill))
    ya, yb, xa, xb = max(y1, top), min(y2, top + h), max(x1, left), min(x2, left + w)
    if ya < yb and xa < xb:
        out[ya - y1:yb - y1, xa - x1:xb - x1] = img[ya - top:yb - top, xa - left:xb - left]
    return out


def expand(img: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, max_ratio: float = 4.0,
           fill: Sequence[float] = MEAN) -> Tuple[np.ndarray, np.ndarray]:
    """Zoom out: put the image at a random place on a canvas ``ratio`` in [1, max_ratio] times
    larger, filled with ``fill`` (the mean). Always applies; the caller draws p=0.5."""
    h, w, _ = img.shape
    H, W, _, _ = canvas = _expand_geometry(h, w, rng, max_ratio)
    return _canvas_region(img, canvas, (0, 0, W, H), fill), _on_canvas(boxes, canvas)


def _iou(boxes, patches):
    """IoU [N, G] of ``patches`` [N, 4] with ``boxes`` [G, 4]."""
    b, p = boxes[None], patches[:, None]
    iw = np.clip(np.minimum(b[..., 2], p[..., 2]) - np.maximum(b[..., 0], p[..., 0]), 0, None)
    ih = np.clip(np.minimum(b[..., 3], p[..., 3]) - np.maximum(b[..., 1], p[..., 1]), 0, None)
    inter = iw * ih
    union = ((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             + (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1]) - inter)
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _draw_patches(h: int, w: int, n: int, rng: np.random.Generator, scale: Tuple[float, float],
                  aspect: Tuple[float, float]) -> np.ndarray:
    """``n`` random integer pixel patches ``[n, 4]`` (see :func:`sample_patch`)."""
    s = rng.uniform(*scale, n)
    a = rng.uniform(np.maximum(aspect[0], s * s), np.minimum(aspect[1], 1 / (s * s)))
    pw, ph = s * np.sqrt(a), s / np.sqrt(a)
    x0, y0 = rng.uniform(0, 1 - pw), rng.uniform(0, 1 - ph)
    return np.round(np.stack([x0 * w, y0 * h, (x0 + pw) * w, (y0 + ph) * h], -1)).astype(np.int64)


def _accepted(patches: np.ndarray, boxes: np.ndarray, min_ious: np.ndarray) -> np.ndarray:
    """``[S, T]`` bool: patch ``[s, t]`` is not empty and (``min_ious[s]`` is NaN = no
    constraint, or some GT has IoU >= ``min_ious[s]`` with it)."""
    ok = (patches[..., 2] > patches[..., 0]) & (patches[..., 3] > patches[..., 1])
    S, T = ok.shape
    if len(boxes):
        best = _iou(boxes, patches.reshape(-1, 4)).max(1).reshape(S, T)
        ok &= np.isnan(min_ious)[:, None] | (best >= min_ious[:, None])
    else:
        ok &= np.isnan(min_ious)[:, None]
    return ok


def sample_patch(h: int, w: int, boxes: np.ndarray, min_iou: Optional[float], rng: np.random.Generator,
                 scale: Tuple[float, float] = (0.1, 1.0), aspect: Tuple[float, float] = (0.5, 2.0),
                 trials: int = 50) -> Optional[np.ndarray]:
    """Caffe's ``SampleBBox`` + ``SatisfySampleConstraint``: a patch of side scale ``s`` in
    ``scale`` and aspect ``a`` in ``aspect`` (limited to [s^2, 1/s^2] so it fits), i.e. width
    ``s*sqrt(a)`` and height ``s/sqrt(a)`` of the image's, at a random place; accepted when
    ``min_iou`` is None or some GT has IoU >= ``min_iou`` with it. Returns the integer pixel
    patch ``[x1, y1, x2, y2]`` of the first of ``trials`` tries (drawn at once) that is
    accepted, else None."""
    patches = _draw_patches(h, w, trials, rng, scale, aspect)[None]
    ok = _accepted(patches, boxes, np.array([np.nan if min_iou is None else min_iou]))[0]
    hits = np.flatnonzero(ok)
    return patches[0, hits[0]] if len(hits) else None


def _centres_inside(boxes: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """``[..., G]`` bool: GT g's centre lies inside patch ``[..., 4]`` (half-open: x1 <= cx < x2)."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    p = patches[..., None, :]
    return (cx >= p[..., 0]) & (cx < p[..., 2]) & (cy >= p[..., 1]) & (cy < p[..., 3])


def crop_boxes(boxes: np.ndarray, patch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """GTs whose centre lies inside ``patch`` (half-open: x1 <= cx < x2), clipped to it and
    shifted to its origin. Returns ``(kept boxes, keep mask)``."""
    keep = _centres_inside(boxes, patch)
    kept = boxes[keep].copy()
    kept[:, 0::2] = np.clip(kept[:, 0::2], patch[0], patch[2]) - patch[0]
    kept[:, 1::2] = np.clip(kept[:, 1::2], patch[1], patch[3]) - patch[1]
    return kept, keep


def _crop_patch(h: int, w: int, boxes: np.ndarray, rng: np.random.Generator, min_ious=CROP_MIN_IOUS,
                trials: int = 50) -> Optional[np.ndarray]:
    """The patch :func:`random_crop` picks, or None for the whole image."""
    need = np.array([np.nan if m is None else m for m in min_ious], np.float64)
    patches = _draw_patches(h, w, len(need) * trials, rng, (0.1, 1.0), (0.5, 2.0))
    patches = patches.reshape(len(need), trials, 4)
    ok = _accepted(patches, boxes, need)
    first = patches[np.arange(len(need)), ok.argmax(1)][ok.any(1)]  # each sampler's first accepted
    first = first[_centres_inside(boxes, first).any(1)]  # a crop must keep some GT
    pick = rng.integers(len(first) + 1)  # 0: the whole image
    return first[pick - 1] if pick else None


def random_crop(img, boxes, rng, min_ious=CROP_MIN_IOUS, trials: int = 50):
    """The min-IoU random crop: each sampler of ``{whole image} + min_ious`` proposes a patch
    (the first of ``trials`` accepted as in :func:`sample_patch`, all samplers' tries drawn and
    tested at once), kept when it holds at least one GT centre; one of the proposals is picked
    uniformly (Caffe keeps the original image as one of them). Returns ``(image, boxes, keep
    mask)``."""
    patch = _crop_patch(img.shape[0], img.shape[1], boxes, rng, min_ious, trials)
    if patch is None:
        return img, boxes, np.ones(len(boxes), bool)
    kept, keep = crop_boxes(boxes, patch)
    return img[patch[1]:patch[3], patch[0]:patch[2]], kept, keep


def hflip(img, boxes):
    """Mirror left-right; a box [x1, x2] becomes [W - x2, W - x1] (pixel edges, exact)."""
    w = img.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return img[:, ::-1], out


def to_tensor(img: np.ndarray, size: int, normalize: bool = True) -> torch.Tensor:
    """Resize ``img`` (uint8 [H, W, 3]) to ``size`` x ``size`` (Pillow bilinear) and normalize
    by MEAN/STD: ``[3, size, size]`` float32. ``normalize=False``: the resized uint8 pixels as
    ``[3, size, size]`` (a view of the HWC array: stacked, a channels-last batch), for
    :func:`normalize_image` to convert a whole batch at once (4x less to collate and copy)."""
    img = np.ascontiguousarray(img)
    if img.shape[:2] != (size, size):
        img = np.array(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    elif not img.flags.writeable:  # a PIL image's own buffer: torch wants memory it may write
        img = img.copy()
    t = torch.from_numpy(img).permute(2, 0, 1)
    return normalize_image(t) if normalize else t


def normalize_image(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0-255) ``[..., 3, H, W]`` -> float32 ``(x - MEAN) / STD``, on the
    tensor's device, keeping its memory format; the same arithmetic one image or a batch."""
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"normalize_image: images must be [..., 3, H, W], got {tuple(images.shape)}")
    mean, std = _MEAN_T.to(images.device), _STD_T.to(images.device)
    return (images.float() - mean) / std


def _normalized(boxes, h, w):
    return (boxes / np.array([w, h, w, h], np.float32)).astype(np.float32)


class TrainTransform:
    """The paper's augmentation (module docstring) to ``size`` px.

    ``transform(image uint8 [H, W, 3], target, rng) -> (image [3, size, size], target)`` with
    ``target["boxes"]`` normalized [0, 1] corners (only the kept GTs; labels and difficult
    filtered alike). ``expand_p=0`` / ``crop=False`` / ``photometric=False`` turn parts off;
    ``normalize=False`` returns uint8 pixels (normalize the batch with :func:`normalize_image`).
    """

    def __init__(self, size: int, expand_p: float = 0.5, max_expand: float = 4.0, crop: bool = True,
                 flip_p: float = 0.5, photometric: bool = True, normalize: bool = True):
        self.size, self.expand_p, self.max_expand = size, expand_p, max_expand
        self.crop, self.flip_p, self.photometric = crop, flip_p, photometric
        self.normalize = normalize

    def __call__(self, image, target, rng):
        img = image
        boxes = target["boxes"].astype(np.float32)
        labels, difficult = target["labels"], target["difficult"]
        if self.photometric:
            img = photometric_distort(img, rng)
        # expand and crop decide the geometry first; only the cropped part of the canvas is drawn
        canvas = None
        if rng.random() < self.expand_p:
            canvas = _expand_geometry(img.shape[0], img.shape[1], rng, self.max_expand)
            boxes = _on_canvas(boxes, canvas)
        H, W = canvas[:2] if canvas else img.shape[:2]
        region = (0, 0, W, H)
        if self.crop and len(boxes):
            patch = _crop_patch(H, W, boxes, rng)
            if patch is not None:
                boxes, keep = crop_boxes(boxes, patch)
                labels, difficult = labels[keep], difficult[keep]
                region = patch
        img = _canvas_region(img, canvas, region)
        if rng.random() < self.flip_p:
            img, boxes = hflip(img, boxes)
        h, w, _ = img.shape
        target = {"boxes": _normalized(boxes, h, w), "labels": labels, "difficult": difficult}
        return to_tensor(img, self.size, self.normalize), target


class TestTransform:
    """Resize + normalize only (``normalize=False``: uint8 pixels); boxes normalized to [0, 1]."""

    __test__ = False  # not a pytest test class

    def __init__(self, size: int, normalize: bool = True):
        self.size, self.normalize = size, normalize

    def __call__(self, image, target, rng=None):
        h, w, _ = image.shape
        boxes = _normalized(target["boxes"], h, w)
        return to_tensor(image, self.size, self.normalize), {**target, "boxes": boxes}
