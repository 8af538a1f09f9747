"""Inputs shared by the tests of the training-target ops (match_priors, ssd_targets,
hard_negative_mining): the SSD300 "voc" priors, random padded GT batches, and adversarial
matching cases. Everything is built in float64 on the CPU from a seeded generator; each test
casts and moves it."""
import contextlib
import functools
import math

import torch

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
EPS = {dt: torch.finfo(dt).eps for dt in DTYPES}
MODES = ["bipartite", "argmax"]
THRESHOLDS = [0.0, 0.5, 1.0]
NAN, INF = math.nan, math.inf


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def one_thread():
    """Run the oracles (the references, torchvision) on one CPU thread: they are sequences of
    small tensor ops, which on a loaded 2-core machine spend far more time handing work to a
    second thread than computing. The kernels under test keep every thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def on(args, device):
    return [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]


# ---------------------------------------------------------------------------------------------
# SSD300 "voc" priors (SPEC §3), built here independently of the package

SSD300_VOC = dict(feature_maps=[38, 19, 10, 5, 3, 1], steps=[8, 16, 32, 64, 100, 300],
                  min_sizes=[30, 60, 111, 162, 213, 264], max_sizes=[60, 111, 162, 213, 264, 315],
                  ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]], image=300)


@functools.lru_cache(maxsize=None)
def _ssd300_voc_priors():
    c = SSD300_VOC
    rows = []
    for f, step, smin, smax, ratios in zip(c["feature_maps"], c["steps"], c["min_sizes"],
                                            c["max_sizes"], c["ratios"]):
        sizes = [(smin, smin), (math.sqrt(smin * smax),) * 2]  # min size, then sqrt(min * max)
        for r in ratios:  # then (ar, 1 / ar) for each ratio
            sizes += [(smin * math.sqrt(r), smin / math.sqrt(r)),
                      (smin / math.sqrt(r), smin * math.sqrt(r))]
        for i in range(f):  # rows, then columns, then the boxes of one location
            for j in range(f):
                cx, cy = (j + 0.5) * step, (i + 0.5) * step
                for w, h in sizes:
                    rows.append([(cx - w / 2) / c["image"], (cy - h / 2) / c["image"],
                                 (cx + w / 2) / c["image"], (cy + h / 2) / c["image"]])
    priors = torch.tensor(rows, dtype=torch.float64)
    assert priors.shape == (8732, 4)
    # first location of conv4_3: centre (4, 4) px, min size 30, then sqrt(30 * 60)
    s = math.sqrt(30 * 60) / 2
    assert torch.allclose(priors[:2] * 300, torch.tensor([[-11.0, -11.0, 19.0, 19.0],
                                                          [4 - s, 4 - s, 4 + s, 4 + s]],
                                                         dtype=torch.float64))
    return priors


def ssd300_voc_priors():
    """The 8732 SSD300 "voc" priors, normalised corners, no clipping, float64."""
    return _ssd300_voc_priors().clone()


# ---------------------------------------------------------------------------------------------
# GT batches

def random_gt(gen, B, G, *, num_valid=None, pad_prob=0.25, num_classes=21, min_size=0.02,
              max_size=0.6):
    """Random GT boxes [B, G, 4] in the unit square and labels [B, G] (0..num_classes-1, so
    some valid GTs have label 0), with padding rows (label -1, or another negative value)
    scattered among the valid ones. Padding rows hold ordinary boxes, so they would be matched
    if they were not ignored. num_valid: per-image count of valid rows (the first ones, the rest
    padding), else each row is padding with probability pad_prob."""
    wh = min_size + torch.rand(B, G, 2, generator=gen, dtype=torch.float64) * (max_size - min_size)
    xy = torch.rand(B, G, 2, generator=gen, dtype=torch.float64) * (1 - wh)
    boxes = torch.cat([xy, xy + wh], dim=-1)
    labels = torch.randint(0, num_classes, (B, G), generator=gen)
    if num_valid is not None:
        pad = torch.arange(G).unsqueeze(0) >= torch.as_tensor(num_valid).view(-1, 1)
    else:
        pad = torch.rand(B, G, generator=gen) < pad_prob
    pad_value = torch.where(torch.rand(B, G, generator=gen) < 0.8, -1, -7)
    return boxes, torch.where(pad, pad_value, labels)


def dyadic_boxes(gen, n, cells=8, max_cells=4):
    """n boxes with corners on a 1/cells grid of the unit square (exact in every dtype, so
    IoUs tie exactly)."""
    wh = torch.randint(1, max_cells + 1, (n, 2), generator=gen)
    xy = (torch.rand(n, 2, generator=gen) * (cells - wh + 1)).floor()
    return torch.cat([xy, xy + wh], dim=-1).double() / cells


def dyadic_grid_priors(sizes=(1, 2, 4), cells=8):
    """Every box of side s/cells (s in sizes) whose corners lie on a (s/2)/cells grid."""
    rows = []
    for s in sizes:
        half = s / 2
        n = int((cells - s) / half) + 1
        for i in range(n):
            for j in range(n):
                rows.append([j * half, i * half, j * half + s, i * half + s])
    return torch.tensor(rows, dtype=torch.float64) / cells


def _batch(boxes_per_image, labels_per_image):
    """Pad the per-image lists to one [B, G, 4] / [B, G] batch (padding boxes: zeros)."""
    G = max(len(b) for b in boxes_per_image)
    B = len(boxes_per_image)
    boxes = torch.zeros(B, G, 4, dtype=torch.float64)
    labels = torch.full((B, G), -1, dtype=torch.int64)
    for i, (b, l) in enumerate(zip(boxes_per_image, labels_per_image)):
        b = torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)
        boxes[i, :len(b)] = b
        labels[i, :len(b)] = torch.as_tensor(l, dtype=torch.int64)
    return boxes, labels


# Adversarial matching cases: gen -> (gt_boxes [B, G, 4], gt_labels [B, G], priors [P, 4]).

def _duplicate_gts(gen):
    base = dyadic_boxes(gen, 3)
    boxes = torch.stack([base[0], base[1], base[0], base[2], base[0], base[1]])
    gt = torch.stack([boxes, boxes.flip(0)])
    labels = torch.tensor([[1, 2, 3, -1, 5, 6], [4, 4, -1, 4, 4, 4]])
    return gt, labels, dyadic_grid_priors()


def _tied_gts(gen):
    # The prior [1/4, 1/4, 3/4, 3/4] has IoU 3/5 with both mirrored GTs, and both GTs have the
    # same IoU with mirrored grid priors too.
    prior = torch.tensor([[0.25, 0.25, 0.75, 0.75]], dtype=torch.float64)
    a = [0.125, 0.25, 0.625, 0.75]
    b = [0.375, 0.25, 0.875, 0.75]
    c = [0.25, 0.125, 0.75, 0.625]  # the same IoU again, shifted vertically
    gt, labels = _batch([[a, b, c], [b, a, c], [c, a, b, a]], [[1, 2, 3], [1, 2, 3], [1, 2, 3, 4]])
    priors = torch.cat([dyadic_grid_priors(sizes=(2, 4)), prior, prior])
    return gt, labels, priors


def _identical_priors(gen):
    grid = dyadic_grid_priors(sizes=(2, 4))
    priors = torch.cat([grid, grid.flip(0), grid[:5]])  # every prior at least twice
    gt = dyadic_boxes(gen, 3 * 7).view(3, 7, 4)
    labels = torch.randint(1, 5, (3, 7), generator=gen)
    labels[1, 2] = -1
    return gt, labels, priors


def _whole_image_gt(gen):
    whole = [0.0, 0.0, 1.0, 1.0]
    gt, labels = _batch([[whole], [whole] + dyadic_boxes(gen, 3).tolist(),
                         dyadic_boxes(gen, 2).tolist() + [whole]],
                        [[3], [3, 1, 2, 1], [1, 1, 3]])
    priors = torch.cat([dyadic_grid_priors(), torch.tensor([whole], dtype=torch.float64)])
    return gt, labels, priors


def _tiny_gts(gen):
    # IoU 0 (outside every prior, or between priors), IoU in (0, 1e-6] (a tiny box inside a
    # prior: no bipartite pair), a zero-area point, and ordinary GTs next to them.
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0],
                           [0.25, 0.25, 0.75, 0.75]], dtype=torch.float64)
    outside = [1.5, 1.5, 1.5 + 1e-3, 1.5 + 1e-3]
    tiny = [0.1, 0.1, 0.1 + 2e-4, 0.1 + 2e-4]          # IoU 1.6e-7 with prior 0
    small = [0.1, 0.1, 0.1 + 2e-3, 0.1 + 2e-3]         # IoU 1.6e-5 with prior 0
    point = [0.3, 0.3, 0.3, 0.3]
    ordinary = [0.0, 0.0, 0.5, 0.5]
    gt, labels = _batch([[outside, tiny, point], [tiny, ordinary, small, outside],
                         [small, tiny, point, outside], [outside]],
                        [[1, 2, 3], [1, 2, 3, 4], [4, 5, 6, 7], [1]])
    return gt, labels, priors


def _all_padding(gen):
    gt = dyadic_boxes(gen, 4 * 5).view(4, 5, 4)
    labels = torch.randint(1, 5, (4, 5), generator=gen)
    labels[1] = -1          # an image of padding only (its boxes would match)
    labels[3] = -4
    labels[2, ::2] = -1
    return gt, labels, dyadic_grid_priors(sizes=(2, 4))


def _more_gts_than_priors(gen):
    gt = dyadic_boxes(gen, 2 * 24).view(2, 24, 4)
    labels = torch.randint(0, 5, (2, 24), generator=gen)
    labels[0, 3] = -1
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.25, 0.25, 0.75, 0.75],
                           [0.0, 0.0, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0], [0.0, 0.0, 0.5, 0.5]],
                          dtype=torch.float64)
    return gt, labels, priors


def _dyadic_grid(gen):
    gt = dyadic_boxes(gen, 5 * 12).view(5, 12, 4)
    labels = torch.randint(0, 5, (5, 12), generator=gen)
    labels[torch.rand(5, 12, generator=gen) < 0.2] = -1
    priors = torch.cat([dyadic_grid_priors(), dyadic_boxes(gen, 40)])
    return gt, labels, priors


def _degenerate(gen):
    # zero-width, zero-height, inverted GTs and priors (zero area: IoU 0 with everything)
    bad = [[0.25, 0.25, 0.25, 0.75], [0.25, 0.25, 0.75, 0.25], [0.75, 0.25, 0.25, 0.75],
           [0.75, 0.75, 0.25, 0.25]]
    good = dyadic_boxes(gen, 3).tolist()
    gt, labels = _batch([bad, bad[:2] + good, good[:1] + bad], [[1, 2, 3, 4], [1, 2, 3, 4, 5],
                                                              [1, 2, 3, 4, 5]])
    priors = torch.cat([torch.tensor(bad, dtype=torch.float64), dyadic_grid_priors(sizes=(2, 4))])
    return gt, labels, priors


def _non_finite(gen):
    # NaN / inf coordinates in valid GTs and in priors: IoU 0 with a NaN box (documented), a
    # value in [0, 1] with infinite ones; nothing may crash or read out of bounds.
    gt = [[NAN, 0.25, 0.5, 0.5], [0.0, 0.0, INF, 0.5], [-INF, -INF, INF, INF],
          [0.25, 0.25, 0.5, NAN],
          [0.0, 0.0, 0.5, 0.5]]
    gt, labels = _batch([gt, gt[:1], gt[::-1]], [[1, 2, 3, 4, 5], [1], [1, 2, 3, 4, 5]])
    priors = torch.cat([dyadic_grid_priors(sizes=(2, 4)),
                        torch.tensor([[NAN, NAN, NAN, NAN], [0.0, 0.0, INF, INF],
                                      [0.0, 0.0, 0.5, 0.5]], dtype=torch.float64)])
    return gt, labels, priors


def _nested(gen):
    # GTs inside priors and priors inside GTs, sharing centres: many equal-IoU pairs.
    priors = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.375, 0.375, 0.625, 0.625],
                           [0.0, 0.0, 1.0, 1.0], [0.125, 0.125, 0.875, 0.875]], dtype=torch.float64)
    gt, labels = _batch([[[0.375, 0.375, 0.625, 0.625], [0.125, 0.125, 0.875, 0.875],
                          [0.4375, 0.4375, 0.5625, 0.5625]],
                         [[0.125, 0.125, 0.875, 0.875], [0.375, 0.375, 0.625, 0.625]]],
                        [[1, 2, 3], [2, 1]])
    return gt, labels, priors


def _single(gen):
    return (torch.tensor([[[0.0, 0.0, 0.5, 0.5]]], dtype=torch.float64), torch.tensor([[1]]),
            torch.tensor([[0.25, 0.25, 0.75, 0.75]], dtype=torch.float64))


MATCH_CASES = {
    "duplicate_gts": _duplicate_gts, "tied_gts": _tied_gts, "identical_priors": _identical_priors,
    "whole_image_gt": _whole_image_gt, "tiny_gts": _tiny_gts, "all_padding": _all_padding,
    "more_gts_than_priors": _more_gts_than_priors, "dyadic_grid": _dyadic_grid,
    "degenerate": _degenerate, "non_finite": _non_finite, "nested": _nested, "single": _single,
}


# ---------------------------------------------------------------------------------------------
# Bad input

def _z(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def _l(*shape, dtype=torch.int64):
    return torch.ones(shape, dtype=dtype)


FLOATS = "must be float16, bfloat16, float32 or float64"
# Bad arguments of match_priors / ssd_targets (they share the checks):
# name -> ((gt_boxes, gt_labels, priors, iou_threshold, mode), exception, message without the
# "<op>: " prefix).
MATCH_BAD_INPUTS = {
    "gt_boxes_2d": ((_z(5, 4), _l(5), _z(3, 4), 0.5, "bipartite"), RuntimeError,
                    "gt_boxes must have shape [B, G, 4], got [5, 4]"),
    "gt_boxes_4d": ((_z(1, 2, 3, 4), _l(1, 2), _z(3, 4), 0.5, "bipartite"), RuntimeError,
                    "gt_boxes must have shape [B, G, 4], got [1, 2, 3, 4]"),
    "gt_boxes_last_dim": ((_z(2, 3, 5), _l(2, 3), _z(3, 4), 0.5, "bipartite"), RuntimeError,
                          "gt_boxes must have shape [B, G, 4], got [2, 3, 5]"),
    "priors_1d": ((_z(2, 3, 4), _l(2, 3), _z(4), 0.5, "argmax"), RuntimeError,
                  "priors must have shape [P, 4], got [4]"),
    "priors_3d": ((_z(2, 3, 4), _l(2, 3), _z(2, 5, 4), 0.5, "bipartite"), RuntimeError,
                  "priors must have shape [P, 4], got [2, 5, 4]"),
    "priors_last_dim": ((_z(2, 3, 4), _l(2, 3), _z(5, 2), 0.5, "bipartite"), RuntimeError,
                        "priors must have shape [P, 4], got [5, 2]"),
    "labels_wrong_g": ((_z(2, 3, 4), _l(2, 4), _z(5, 4), 0.5, "bipartite"), RuntimeError,
                       "gt_labels must have shape [B, G] = [2, 3], got [2, 4]"),
    "labels_1d": ((_z(2, 3, 4), _l(2), _z(5, 4), 0.5, "bipartite"), RuntimeError,
                  "gt_labels must have shape [B, G] = [2, 3], got [2]"),
    "labels_transposed": ((_z(2, 3, 4), _l(3, 2), _z(5, 4), 0.5, "argmax"), RuntimeError,
                          "gt_labels must have shape [B, G] = [2, 3], got [3, 2]"),
    "labels_3d": ((_z(2, 3, 4), _l(2, 3, 1), _z(5, 4), 0.5, "argmax"), RuntimeError,
                  "gt_labels must have shape [B, G] = [2, 3], got [2, 3, 1]"),
    "labels_float": ((_z(2, 3, 4), _l(2, 3, dtype=torch.float32), _z(5, 4), 0.5, "bipartite"),
                     RuntimeError, "gt_labels must be an integer tensor, got float32"),
    "labels_float64": ((_z(2, 3, 4), _l(2, 3, dtype=torch.float64), _z(5, 4), 0.5, "argmax"),
                       RuntimeError, "gt_labels must be an integer tensor, got float64"),
    "labels_bool": ((_z(2, 3, 4), _l(2, 3, dtype=torch.bool), _z(5, 4), 0.5, "bipartite"),
                    RuntimeError, "gt_labels must be an integer tensor, got bool"),
    "gt_boxes_int": ((_z(2, 3, 4, dtype=torch.int64), _l(2, 3), _z(5, 4), 0.5, "bipartite"),
                     RuntimeError, f"gt_boxes {FLOATS}, got int64"),
    "priors_int": ((_z(2, 3, 4), _l(2, 3), _z(5, 4, dtype=torch.int32), 0.5, "bipartite"),
                   RuntimeError, f"priors {FLOATS}, got int32"),
    "dtype_mismatch": ((_z(2, 3, 4), _l(2, 3), _z(5, 4, dtype=torch.float64), 0.5, "bipartite"),
                       RuntimeError, "gt_boxes and priors must have the same dtype, "
                                     "got float32 and float64"),
    "half_mismatch": ((_z(2, 3, 4, dtype=torch.float16), _l(2, 3),
                       _z(5, 4, dtype=torch.bfloat16), 0.5, "argmax"), RuntimeError,
                      "gt_boxes and priors must have the same dtype, got float16 and bfloat16"),
    "threshold_negative": ((_z(2, 3, 4), _l(2, 3), _z(5, 4), -0.1, "bipartite"), ValueError,
                           "iou_threshold must be in [0, 1], got -0.1"),
    "threshold_above_1": ((_z(2, 3, 4), _l(2, 3), _z(5, 4), 1.5, "argmax"), ValueError,
                          "iou_threshold must be in [0, 1], got 1.5"),
    "threshold_nan": ((_z(2, 3, 4), _l(2, 3), _z(5, 4), NAN, "bipartite"), ValueError,
                      "iou_threshold must be in [0, 1], got nan"),
    "threshold_inf": ((_z(2, 3, 4), _l(2, 3), _z(5, 4), INF, "bipartite"), ValueError,
                      "iou_threshold must be in [0, 1], got inf"),
    "threshold_empty_batch": ((_z(0, 0, 4), _l(0, 0), _z(0, 4), -2.0, "bipartite"), ValueError,
                              "iou_threshold must be in [0, 1], got -2"),
    "mode_unknown": ((_z(2, 3, 4), _l(2, 3), _z(5, 4), 0.5, "greedy"), ValueError,
                     "mode must be 'bipartite' or 'argmax', got 'greedy'"),
    "mode_case": ((_z(2, 3, 4), _l(2, 3), _z(5, 4), 0.5, "Bipartite"), ValueError,
                  "mode must be 'bipartite' or 'argmax', got 'Bipartite'"),
    "mode_empty": ((_z(2, 3, 4), _l(2, 3), _z(5, 4), 0.5, ""), ValueError,
                   "mode must be 'bipartite' or 'argmax', got ''"),
}



def iou_matrix(gt, priors):
    """IoU [G, P] of one image as the ops compute it (float32 for half inputs)."""
    from ssd_fast.ops import reference
    ct = torch.float64 if gt.dtype == torch.float64 else torch.float32
    with one_thread():
        return reference.box_iou(gt.to(ct), priors.to(ct))
