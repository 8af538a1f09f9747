"""Default boxes: preset counts, first and last box of every layer computed by hand, the order
within a location, torchvision's and ssd.pytorch's boxes, the spec's checks and round trip."""
import math

import pytest
import torch

from ssd_fast.models import PRESETS, PriorSpec, get_prior_spec, prior_boxes, ssd_sizes

CAFFE = {  # preset: image size, maps, steps, ratios, min sizes, max sizes (as the Caffe scripts write them)
    ("voc", 300): (300, [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300], [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                   [30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315]),
    ("coco", 300): (300, [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300], [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                    [21, 45, 99, 153, 207, 261], [45, 99, 153, 207, 261, 315]),
    ("voc", 512): (512, [64, 32, 16, 8, 4, 2, 1], [8, 16, 32, 64, 128, 256, 512],
                   [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
                   [35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8],
                   [76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6]),
    ("coco", 512): (512, [64, 32, 16, 8, 4, 2, 1], [8, 16, 32, 64, 128, 256, 512],
                    [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
                    [20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8],
                    [51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72]),
}


def caffe_box(cx, cy, w, h, size):
    return [(cx - w / 2) / size, (cy - h / 2) / size, (cx + w / 2) / size, (cy + h / 2) / size]


@pytest.mark.parametrize("preset,count", [(("voc", 300), 8732), (("coco", 300), 8732), (("voc", 512), 24564),
                                          (("coco", 512), 24564), (("torchvision", 300), 8732),
                                          (("ssd_pytorch", 300), 8732)])
def test_preset_counts(preset, count):
    spec = PRESETS[preset]
    boxes = spec.generate()
    assert boxes.shape == (count, 4) and boxes.dtype == torch.float32
    assert spec.num_priors == count
    assert torch.isfinite(boxes).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()


@pytest.mark.parametrize("preset", list(CAFFE), ids=lambda p: f"{p[0]}{p[1]}")
def test_caffe_first_and_last_box_of_every_layer(preset):
    """By hand: Caffe truncates sizes to ints; the first box of a layer is the min-size square
    at the first cell; the last is the 1/ar box of the last ratio at the last cell."""
    size, maps, steps, ratios, mins, maxs = CAFFE[preset]
    boxes = PRESETS[preset].generate().double()
    start = 0
    for f, step, rs, lo, hi in zip(maps, steps, ratios, mins, maxs):
        per_cell = 2 + 2 * len(rs)
        lo = int(lo)  # e.g. SSD512 VOC: 35.84 px -> 35 px
        c0, c1 = 0.5 * step, (f - 0.5) * step
        first = caffe_box(c0, c0, lo, lo, size)
        ar = rs[-1]
        last = caffe_box(c1, c1, lo / math.sqrt(ar), lo * math.sqrt(ar), size)
        torch.testing.assert_close(boxes[start].tolist(), first, rtol=0, atol=1e-7)
        torch.testing.assert_close(boxes[start + f * f * per_cell - 1].tolist(), last, rtol=0, atol=1e-7)
        start += f * f * per_cell
    assert start == boxes.shape[0]


def test_order_within_a_location():
    """SSD300 VOC, layer 2 (19x19, step 16, sizes 60/111, ratios 2 and 3), cell (row 1, col 2):
    min square, sqrt(min*max) square, ar 2, 1/2, 3, 1/3; boxes of a cell are consecutive,
    cells go row by row."""
    boxes = PRESETS["voc", 300].generate().double() * 300
    start = 38 * 38 * 4 + (1 * 19 + 2) * 6
    cell = boxes[start:start + 6]
    cx, cy = 2.5 * 16, 1.5 * 16
    wh = [(60, 60), (math.sqrt(60 * 111),) * 2, (60 * math.sqrt(2), 60 / math.sqrt(2)),
          (60 / math.sqrt(2), 60 * math.sqrt(2)), (60 * math.sqrt(3), 60 / math.sqrt(3)),
          (60 / math.sqrt(3), 60 * math.sqrt(3))]
    expected = [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for w, h in wh]
    torch.testing.assert_close(cell, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-4)


def test_caffe_sizes_are_truncated_to_integers():
    spec = PRESETS["voc", 512]
    first = spec.generate()[0] * 512
    torch.testing.assert_close(first, torch.tensor([4 - 17.5, 4 - 17.5, 4 + 17.5, 4 + 17.5]))  # 35 px, not 35.84
    # float sizes outside Caffe's style keep their value: torchvision arithmetic at 35.84 px
    tv = spec.replace(style="torchvision").generate()[0] * 512
    torch.testing.assert_close(tv, torch.tensor([4 - 17.92, 4 - 17.92, 4 + 17.92, 4 + 17.92]))


def test_ssd_pytorch_priors():
    """ssd.pytorch's PriorBox (VOC): centre-form boxes in double, clamped to [0, 1]."""
    mean = []
    for k, f in enumerate([38, 19, 10, 5, 3, 1]):
        f_k = 300 / [8, 16, 32, 64, 100, 300][k]
        s_k = [30, 60, 111, 162, 213, 264][k] / 300
        s_kp = math.sqrt(s_k * [60, 111, 162, 213, 264, 315][k] / 300)
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
                mean += [cx, cy, s_k, s_k, cx, cy, s_kp, s_kp]
                for ar in [[2], [2, 3], [2, 3], [2, 3], [2], [2]][k]:
                    r = math.sqrt(ar)
                    mean += [cx, cy, s_k * r, s_k / r, cx, cy, s_k / r, s_k * r]
    c = torch.tensor(mean).view(-1, 4).clamp(0, 1)
    expected = torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], 1)
    torch.testing.assert_close(PRESETS["ssd_pytorch", 300].generate(), expected, rtol=0, atol=1e-6)


def test_clip():
    kw = dict(image_size=300, feature_maps=[3], steps=[100], min_sizes=[200], max_sizes=[], aspect_ratios=[[2]])
    caffe = prior_boxes(**kw, clip=True)
    assert caffe.shape == (3 * 3 * 3, 4) and caffe.min() == 0 and caffe.max() == 1
    assert prior_boxes(**kw).min() < 0
    # torchvision clamps widths and heights (then corners may leave [0, 1])
    tv = prior_boxes(**dict(kw, max_sizes=[320]), clip=True, style="torchvision")
    assert ((tv[:, 2:] - tv[:, :2]) <= 1 + 1e-6).all() and tv.min() < 0


def test_default_steps_are_image_over_map():
    spec = PriorSpec(160, [(3, 5)], None, [50], [], [[]])
    boxes = spec.generate() * 160
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    expected = [((j + 0.5) * 160 / 5, (i + 0.5) * 160 / 3) for i in range(3) for j in range(5)]
    torch.testing.assert_close(centres, torch.tensor(expected))


def test_ssd_sizes_reproduce_the_caffe_scripts():
    assert ssd_sizes(300, 6) == (CAFFE["voc", 300][4], CAFFE["voc", 300][5])
    mins, maxs = ssd_sizes(512, 7, 15, 90, first=(7, 15))
    torch.testing.assert_close(torch.tensor(mins, dtype=torch.float64), torch.tensor(CAFFE["voc", 512][4], dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(maxs, dtype=torch.float64), torch.tensor(CAFFE["voc", 512][5], dtype=torch.float64))


def test_spec_round_trip():
    spec = PRESETS["coco", 512]
    again = PriorSpec.from_dict(spec.to_dict())
    assert again == spec
    assert torch.equal(again.generate(), spec.generate())
    assert isinstance(spec.to_dict()["feature_maps"], list)


@pytest.mark.parametrize("kwargs,match", [
    (dict(min_sizes=[30]), "min_sizes must have one entry per feature map"),
    (dict(steps=[8]), "steps must have one entry per feature map"),
    (dict(aspect_ratios=[[2], [-1]]), r"aspect_ratios must hold finite numbers > 0, got \[\[2\], \[-1\]\]"),
    (dict(min_sizes=[0, 60]), r"min_sizes must hold finite numbers > 0, got \[0, 60\]"),
    (dict(style="yolo"), "style must be one of .* got 'yolo'"),
    (dict(image_size=(300, 200), style="torchvision"), r"square image_size, got \(300, 200\)"),
    (dict(max_sizes=[], style="torchvision"), "needs max_sizes"),
    (dict(feature_maps=[]), "feature_maps must not be empty"),
    (dict(variances=(0.1, 0.1, 0.2)), "variances must be 4 finite positive numbers"),
    # every stored argument, by type and range, never truncated or converted silently
    (dict(image_size=300.5), r"image_size must be a positive int or \(H, W\) of them, got 300.5"),
    (dict(image_size="300"), r"image_size must be a positive int .* got '300'"),
    (dict(image_size=True), r"image_size must be a positive int .* got True"),
    (dict(feature_maps=[38, 19.5]), r"feature_maps must hold positive ints or \(h, w\) pairs of them, got \[38, 19.5\]"),
    (dict(feature_maps=["38", 19]), r"feature_maps must hold positive ints .* got \['38', 19\]"),
    (dict(steps=[8, "16"]), r"steps must hold finite numbers > 0 or \(h, w\) pairs of them, got \[8, '16'\]"),
    (dict(steps=[8, float("inf")]), r"steps must hold finite numbers > 0 .* got \[8, inf\]"),
    (dict(min_sizes=[30, float("inf")]), r"min_sizes must hold finite numbers > 0, got \[30, inf\]"),
    (dict(max_sizes=[60, None]), r"max_sizes must hold finite numbers > 0, got \[60, None\]"),
    (dict(aspect_ratios=[[2], [float("nan")]]), r"aspect_ratios must hold finite numbers > 0, got \[\[2\], \[nan\]\]"),
    (dict(aspect_ratios=[2, 3]), r"aspect_ratios must hold one list of ratios per feature map, got \[2, 3\]"),
    (dict(variances=(0, 0, 0, 0)), r"variances must be 4 finite positive numbers, got \(0, 0, 0, 0\)"),
    (dict(variances=(0.1, 0.1, 0.2, float("inf"))), r"variances must be 4 finite positive numbers"),
    (dict(clip="no"), "clip must be a bool, got 'no'"),
    (dict(clip=1), "clip must be a bool, got 1"),
    (dict(offset=float("nan")), "offset must be a finite number, got nan"),
    (dict(offset="0.5"), "offset must be a finite number, got '0.5'"),
    (dict(style=None), "style must be one of .* got None"),
    (dict(name=3), "name must be a str, got 3"),
])
def test_spec_errors(kwargs, match):
    base = dict(image_size=300, feature_maps=[38, 19], steps=[8, 16], min_sizes=[30, 60],
                max_sizes=[60, 111], aspect_ratios=[[2], [2, 3]])
    with pytest.raises(ValueError, match=match):
        PriorSpec(**{**base, **kwargs})


def test_get_prior_spec():
    assert get_prior_spec("voc", 512) is PRESETS["voc", 512]
    assert get_prior_spec(PRESETS["coco", 300].to_dict(), 300) == PRESETS["coco", 300]
    with pytest.raises(ValueError, match=r"unknown preset 'torchvision' for 512x512 images; presets: \['coco', 'voc'\]"):
        get_prior_spec("torchvision", 512)
    with pytest.raises(ValueError, match=r"takes 512x512 images, but the priors were made for image_size=\(300, 300\)"):
        get_prior_spec(PRESETS["voc", 300], 512)
