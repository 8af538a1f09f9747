"""The networks: output shapes, parameter counts, L2Norm, detect, autocast, and errors.

SSD300/SSD512 shapes are checked on the meta device (no arithmetic); a real SSD300 forward runs
in the torchvision parity test (test_convert.py).
"""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssd_fast.models import (PRESETS, SSD, L2Norm, MultiBoxLoss, PriorSpec, ssd300_vgg16, ssd512_vgg16, ssd_tiny,
                              ssdlite, ssdlite_priors)
from ssd_fast.models.ssdlite import LiteBackbone
from ssd_fast.models.vgg import VGG16Backbone

from model_helpers import postprocess, ssd_postprocess_ref  # noqa: F401  (postprocess: a fixture)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("build,size,priors", [(ssd300_vgg16, 300, 8732), (ssd512_vgg16, 512, 24564)])
@pytest.mark.parametrize("num_classes", [21, 81])
def test_vgg_output_shapes(build, size, priors, num_classes):
    with torch.device("meta"):  # no initialisation, no arithmetic: shapes only
        model = build(num_classes)
    loc, conf = model(torch.empty(2, 3, size, size, device="meta"))
    assert loc.shape == (2, priors, 4) and conf.shape == (2, priors, num_classes)
    assert model.priors.shape == (priors, 4)


def test_vgg_feature_maps():
    with torch.device("meta"):
        model = ssd512_vgg16()
    maps = model.backbone(torch.empty(1, 3, 512, 512, device="meta"))
    assert [tuple(m.shape[1:]) for m in maps] == [(512, 64, 64), (1024, 32, 32), (512, 16, 16), (256, 8, 8),
                                                   (256, 4, 4), (256, 2, 2), (256, 1, 1)]
    with torch.device("meta"):
        model = ssd300_vgg16()
    maps = model.backbone(torch.empty(1, 3, 300, 300, device="meta"))
    assert [m.shape[-1] for m in maps] == [38, 19, 10, 5, 3, 1]


def test_parameter_counts():
    """SSD300-VGG16: 26,285,486 parameters for VOC's 21 classes (ssd.pytorch's 26.3M);
    35,641,826 for 91 classes, exactly torchvision's ssd300_vgg16 (its weights' meta data)."""
    assert num_params(ssd300_vgg16(21)) == 26_285_486
    assert num_params(ssd300_vgg16(91, "torchvision")) == 35_641_826
    with torch.device("meta"):
        assert num_params(ssd512_vgg16(21)) == 27_188_676


@pytest.mark.parametrize("builder,params,boxes", [(ssdlite, (100_000, 250_000), [4, 6, 6, 6, 4, 4]),
                                                  (ssd_tiny, (900_000, 1_300_000), [4, 4, 6, 6, 6, 4, 4])])
@pytest.mark.parametrize("size", [128, 160])
def test_light_ssd_forward(builder, params, boxes, size):
    maps = {(ssdlite, 128): [16, 8, 4, 2, 1, 1], (ssdlite, 160): [20, 10, 5, 3, 2, 1],
            (ssd_tiny, 128): [32, 16, 8, 4, 2, 1, 1], (ssd_tiny, 160): [40, 20, 10, 5, 3, 2, 1]}[builder, size]
    torch.manual_seed(0)
    model = builder(num_classes=5, image_size=size)
    assert [h for h, _ in model.prior_spec.feature_maps] == maps
    loc, conf = model(torch.randn(2, 3, size, size))
    P = model.priors.shape[0]
    assert loc.shape == (2, P, 4) and conf.shape == (2, P, 5)
    assert P == sum(a * m * m for a, m in zip(boxes, maps))
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all()
    assert params[0] < num_params(model) < params[1]
    assert model.config["arch"] == builder.__name__


def test_ssd_tiny_priors():
    """5%/10% of the image on the stride-4 map, then 10% .. 90% (+16% per map), Caffe's sizes."""
    spec = ssd_tiny(num_classes=3, image_size=128).prior_spec
    assert spec.name == "ssd_tiny" and spec.steps is None
    assert spec.min_sizes == pytest.approx([6.4, 12.8, 33.28, 53.76, 74.24, 94.72, 115.2])
    assert spec.max_sizes == pytest.approx([12.8, 33.28, 53.76, 74.24, 94.72, 115.2, 135.68])
    # first box of the stride-4 map: centre (2, 2) px, the 6.4 px square (Caffe truncates: 6 px)
    assert ssd_tiny(num_classes=3, image_size=128).priors[0].tolist() == pytest.approx(
        [(2 - 3) / 128, (2 - 3) / 128, (2 + 3) / 128, (2 + 3) / 128])


def test_head_layout_matches_priors():
    """Output row p is prior p: layer by layer, cell by cell (rows, then columns), then box;
    head channel a * K + k is box a, value k."""
    model = ssdlite(num_classes=3, image_size=128).eval()
    x = torch.randn(1, 3, 128, 128)
    loc, conf = model(x)
    features = model.backbone(x)
    layer, row, col, box = 1, 3, 5, 4  # the 8x8 map, 6 boxes per cell
    start = 16 * 16 * 4
    p = start + (row * 8 + col) * 6 + box
    raw_loc = model.loc_head[layer](features[layer])[0, :, row, col]
    raw_conf = model.conf_head[layer](features[layer])[0, :, row, col]
    torch.testing.assert_close(loc[0, p], raw_loc[box * 4:(box + 1) * 4])
    torch.testing.assert_close(conf[0, p], raw_conf[box * 3:(box + 1) * 3])


def test_l2norm():
    norm = L2Norm(4, scale=20.0)
    x = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 4, 1, 1)
    out = norm(x).view(2, 4)
    torch.testing.assert_close(out, torch.tensor([[12.0, 16.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    big = torch.full((1, 512, 2, 2), 300.0, dtype=torch.float16)  # sum of squares overflows float16
    out = L2Norm(512)(big)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), torch.full_like(out, 20 / 512 ** 0.5, dtype=torch.float32),
                               rtol=1e-3, atol=1e-3)


def test_xavier_init_of_new_layers():
    model = ssd300_vgg16()
    fc6 = model.backbone.vgg[31].weight
    bound = (6 / (fc6.shape[1] * 9 + fc6.shape[0] * 9)) ** 0.5
    assert fc6.abs().max() <= bound and fc6.abs().max() > 0.9 * bound
    for conv in list(model.loc_head) + list(model.conf_head) + [e[2] for e in model.backbone.extras]:
        assert (conv.bias == 0).all()
    assert torch.equal(model.backbone.l2norm.weight, torch.full((512,), 20.0))


def test_autocast_forward_and_loss_are_finite():
    torch.manual_seed(0)
    model = ssdlite(num_classes=4, image_size=128)
    loss_fn = MultiBoxLoss.for_model(model)
    gt_boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.6], [0.5, 0.5, 0.9, 0.8]]]).repeat(2, 1, 1)
    gt_labels = torch.tensor([[1, 3], [2, -1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loc, conf = model(torch.randn(2, 3, 128, 128))
        assert conf.dtype == torch.bfloat16
        loc_loss, conf_loss = loss_fn(loc, conf, gt_boxes, gt_labels)
    assert loc_loss.dtype == conf_loss.dtype == torch.float32
    (loc_loss + conf_loss).backward()
    assert torch.isfinite(loc_loss + conf_loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_detect(postprocess):
    torch.manual_seed(0)
    model = ssdlite(num_classes=3, image_size=128).eval()
    images = torch.randn(2, 3, 128, 128)
    boxes, scores, labels, num = model.detect(images, max_detections=7, score_threshold=0.2)
    assert boxes.shape == (2, 7, 4) and scores.shape == (2, 7) and labels.shape == (2, 7) and num.shape == (2,)
    assert labels.dtype == num.dtype == torch.int64
    with torch.no_grad():
        loc, conf = model(images)
    exp = ssd_postprocess_ref(loc, conf, model.priors, model.variances, max_detections=7, score_threshold=0.2)
    torch.testing.assert_close(boxes, exp[0] * 128)  # pixels of the input
    torch.testing.assert_close(scores, exp[1])
    assert torch.equal(labels, exp[2]) and torch.equal(num, exp[3])
    assert num.min() > 0


@pytest.mark.parametrize("builder", [ssd300_vgg16, ssdlite, ssd_tiny])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_empty_batch(builder, mode):
    """No images in, correctly shaped empty results out (and a backward that runs)."""
    model = builder(num_classes=3).train(mode == "train")
    H, W = model.image_size
    P = model.priors.shape[0]
    loc, conf = model(torch.zeros(0, 3, H, W))
    assert loc.shape == (0, P, 4) and conf.shape == (0, P, 3)
    if mode == "train":
        (loc.sum() + conf.sum()).backward()
        return
    boxes, scores, labels, num = model.detect(torch.zeros(0, 3, H, W), max_detections=5)
    assert boxes.shape == (0, 5, 4) and scores.shape == (0, 5) and labels.shape == (0, 5) and num.shape == (0,)
    assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == num.dtype == torch.int64


def test_detect_defaults():
    assert ssd300_vgg16(priors="voc").postprocess_defaults == dict(
        score_threshold=0.01, iou_threshold=0.45, topk_per_class=400, max_detections=200, clip=False,
        background_class=0)
    assert ssd300_vgg16(91, priors="torchvision").postprocess_defaults["clip"] is True


def test_errors():
    with pytest.raises(ValueError, match="num_classes must be an int >= 2 .* got 1"):
        ssd300_vgg16(num_classes=1)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2 .* got 21.0"):
        ssdlite(num_classes=21.0)
    with pytest.raises(ValueError, match=r"unknown preset 'pascal' for 300x300 images; presets: \['coco', "):
        ssd300_vgg16(priors="pascal")
    with pytest.raises(ValueError, match="classes must name num_classes=3 classes .* got 2"):
        ssdlite(3, classes=["background", "cat"])
    with pytest.raises(ValueError, match="image_size must be an int >= 32, got 16"):
        ssdlite(image_size=16)
    with pytest.raises(ValueError, match="image_size must be an int >= 32, got 16"):
        ssd_tiny(image_size=16)
    with pytest.raises(ValueError, match="width_mult must be a finite number > 0, got 0"):
        ssd_tiny(width_mult=0)
    model = ssdlite(3, image_size=128)
    with pytest.raises(ValueError, match=r"images: expected a \[B, C, 128, 128\] tensor .* got \(1, 3, 160, 160\)"):
        model(torch.zeros(1, 3, 160, 160))
    with pytest.raises(ValueError, match=r"got \(3, 128, 128\)"):
        model(torch.zeros(3, 128, 128))
    with pytest.raises(TypeError, match=r"unknown postprocess argument\(s\) \['nms_thresh'\]"):
        model.detect(torch.zeros(1, 3, 128, 128), nms_thresh=0.5)
    # priors whose feature maps the network does not produce
    wrong = PRESETS["voc", 300].replace(feature_maps=[(37, 37)] + list(PRESETS["voc", 300].feature_maps[1:]))
    with pytest.raises(ValueError, match=r"priors: made for feature maps \[\(37, 37\), .* backbone gives \[\(38, 38\)"):
        ssd300_vgg16(priors=wrong)
    spec = PriorSpec(160, [20, 10, 5, 3, 2, 1], None, [16] * 6, [], [[2]] * 6)
    with pytest.raises(ValueError, match="this network takes 128x128 images, but the priors were made for "
                                         r"image_size=\(160, 160\)"):
        ssdlite(image_size=128, priors=spec)
    assert ssdlite(image_size=160, priors=spec).priors.shape == (spec.num_priors, 4)


@pytest.mark.parametrize("builder", [ssdlite, ssd_tiny])
def test_gradients_reach_every_parameter(builder):
    torch.manual_seed(0)
    model = builder(num_classes=3, image_size=128)
    loc, conf = model(torch.randn(2, 3, 128, 128))
    (loc.square().mean() + F.log_softmax(conf, -1)[..., 0].mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


BAD_CONSTRUCTOR_ARGUMENTS = {
    "width_mult-inf": (lambda: LiteBackbone(float("inf")), "LiteBackbone: width_mult must be a finite number > 0, got inf"),
    "width_mult-str": (lambda: LiteBackbone("1"), "LiteBackbone: width_mult must be a finite number > 0, got '1'"),
    "width_mult-nan": (lambda: ssdlite(width_mult=float("nan")), "LiteBackbone: width_mult must be a finite number > 0, got nan"),
    "style-none": (lambda: LiteBackbone(1.0, None), "LiteBackbone: style must be one of ('mobilenet', 'vgg'), got None"),
    "vgg_image_size-float": (lambda: VGG16Backbone(300.0), "VGG16Backbone: image_size must be one of [300, 512], got 300.0"),
    "vgg_image_size-bool": (lambda: VGG16Backbone(True), "VGG16Backbone: image_size must be one of [300, 512], got True"),
    "l2norm_channels-zero": (lambda: L2Norm(0), "L2Norm: channels must be an int >= 1, got 0"),
    "l2norm_channels-float": (lambda: L2Norm(512.0), "L2Norm: channels must be an int >= 1, got 512.0"),
    "l2norm_scale-nan": (lambda: L2Norm(8, float("nan")), "L2Norm: scale must be a finite number, got nan"),
    "l2norm_scale-str": (lambda: L2Norm(8, "20"), "L2Norm: scale must be a finite number, got '20'"),
    "ssd_priors-preset_name": (lambda: SSD(LiteBackbone(), 3, "voc"), "SSD: priors must be a PriorSpec, got 'voc'"),
    "ssd_backbone-plain_module": (lambda: SSD(nn.Identity(), 3, ssdlite_priors(160)),
                                  "SSD: backbone must have out_channels and feature_map_sizes, got Identity()"),
    "ssd_make_head-none": (lambda: SSD(LiteBackbone(), 3, ssdlite_priors(160), make_head=None),
                           "SSD: make_head must be callable, got None"),
    "ssd_classes-str": (lambda: SSD(LiteBackbone(), 3, ssdlite_priors(160), classes="abc"),
                        "SSD: classes must be a list of num_classes=3 strings (background first), got 'abc'"),
    "ssd_classes-numbers": (lambda: SSD(LiteBackbone(), 3, ssdlite_priors(160), classes=[0, 1, 2]),
                            "SSD: classes must be a list of num_classes=3 strings (background first), got [0, 1, 2]"),
    "ssd_arch-none": (lambda: SSD(LiteBackbone(), 3, ssdlite_priors(160), arch=None), "SSD: arch must be a str, got None"),
    "ssd_arch_kwargs-list": (lambda: SSD(LiteBackbone(), 3, ssdlite_priors(160), arch_kwargs=[1]),
                             "SSD: arch_kwargs must be a dict or None, got [1]"),
}


@pytest.mark.parametrize("case", BAD_CONSTRUCTOR_ARGUMENTS)
def test_bad_constructor_argument_raises(case):
    build, message = BAD_CONSTRUCTOR_ARGUMENTS[case]
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        build()
