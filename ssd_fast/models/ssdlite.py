"""Light SSDs for CPUs and small inputs, on the same priors machinery, loss and postprocess as
SSD300.

- ``ssdlite``: a MobileNet-style backbone of depthwise-separable convolutions (depthwise 3x3 +
  BN + ReLU6, pointwise 1x1 + BN + ReLU6) and separable heads (depthwise 3x3 + BN + ReLU6,
  then a 1x1 conv). At ``width_mult=1`` for 21 classes: 198k parameters, 21M multiply-adds
  per 160 px image (13M at 128 px). Few multiply-adds, but slow to train from scratch: on the
  synthetic data it needs several times the iterations of ``ssd_tiny``. Six feature maps at
  strides 8, 16, 32, 64, 128, 256 (160 px: 20, 10, 5, 3, 2, 1; 128 px: 16, 8, 4, 2, 1, 1).
- ``ssd_tiny``: a slim VGG-style backbone (plain 3x3 conv + BN + ReLU, as SSD300's VGG16 but
  24-128 channels) and one 3x3 conv per head, as SSD300's, with seven feature maps: a first
  one at stride 4 (48 channels) for objects of 5-10% of the image, then strides 8 .. 256
  (128 px: 32, 16, 8, 4, 2, 1, 1). 1.1M parameters and 118M multiply-adds per 128 px image for
  6 classes (1.6M, 167M for 21). It learns the synthetic shapes within a few hundred
  iterations, so the demo trains it; the stride-4 map lifts the demo's VOC07 mAP by ~0.03
  (small objects).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import _checks
from .priors import SSD300_RATIOS, PriorSpec, get_prior_spec, ssd_sizes
from .ssd import SSD, conv3x3_head, spatial_size, xavier_init

#: The blocks of each stage at width_mult 1: (out channels, stride); the first block of
#: ``MOBILENET_STAGES`` is a full 3x3 conv, the others depthwise-separable.
MOBILENET_STAGES = (
    ((16, 2), (32, 2), (48, 1), (64, 2), (64, 1)),  # stem (a full 3x3 conv), then separable
    ((128, 2), (128, 1), (128, 1)),
    ((128, 2),),
    ((128, 2),),
    ((64, 2),),
    ((64, 2),),
)
#: ``ssd_tiny``'s stages, all full 3x3 convs; the first ends at stride 4.
VGG_STAGES = (
    ((24, 2), (48, 2), (48, 1)),
    ((96, 2), (96, 1)),
    ((128, 2), (128, 1)),
    ((128, 2),),
    ((128, 2),),
    ((64, 2),),
    ((64, 2),),
)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: type = nn.ReLU6) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act(inplace=True))


def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (stride) + pointwise 1x1, each with BN and ReLU6 (MobileNet's block)."""
    return nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1))


def separable_head(in_channels: int, out_channels: int) -> nn.Module:
    """SSDLite's predictor: depthwise 3x3 + BN + ReLU6, then a 1x1 conv with bias (xavier)."""
    head = nn.Sequential(_conv_bn(in_channels, in_channels, 3, groups=in_channels),
                         nn.Conv2d(in_channels, out_channels, 1))
    xavier_init(head[1])
    return head


def _scaled(c: int, width_mult: float) -> int:
    return max(8, int(round(c * width_mult / 8)) * 8)


class LiteBackbone(nn.Module):
    """The light feature extractors; ``forward(images) -> [6 feature maps]``.

    Args:
        width_mult: channel multiplier (channels rounded to multiples of 8).
        style: ``"mobilenet"`` (``ssdlite``: depthwise-separable blocks after a 3x3 conv) or
            ``"vgg"`` (``ssd_tiny``: 3x3 conv + BN + ReLU blocks).
    """

    def __init__(self, width_mult: float = 1.0, style: str = "mobilenet"):
        super().__init__()
        width_mult = _checks.positive("LiteBackbone", "width_mult", width_mult)
        style = _checks.choice("LiteBackbone", "style", style, ("mobilenet", "vgg"))
        table = MOBILENET_STAGES if style == "mobilenet" else VGG_STAGES
        stages, c = [], 3
        for i, blocks in enumerate(table):
            layers = []
            for j, (out, stride) in enumerate(blocks):
                out = _scaled(out, width_mult)
                if style == "vgg":
                    layers.append(_conv_bn(c, out, 3, stride, act=nn.ReLU))
                else:
                    layers.append(_conv_bn(c, out, 3, stride) if i == j == 0 else separable(c, out, stride))
                c = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = [_scaled(blocks[-1][0], width_mult) for blocks in table]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_map_sizes(self, image_size: Tuple[int, int]) -> List[Tuple[int, int]]:
        sizes, size = [], image_size
        for stage in self.stages:
            size = spatial_size([stage], size)
            sizes.append(size)
        return sizes

    def forward(self, x: Tensor) -> List[Tensor]:
        features = []
        for stage in self.stages:
            if x.shape[-2:] == (1, 1) and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
                # oneDNN's bfloat16 weight gradient of a stride-2 3x3 conv on a 1x1 input leaves
                # the unused taps uninitialised (inf/NaN about every other step, torch 2.14):
                # these stages cost nothing, run them in float32
                with torch.autocast("cpu", enabled=False):
                    x = stage(x.float())
            else:
                x = stage(x)
            features.append(x)
        return features


def ssdlite_priors(image_size: int, width_mult: float = 1.0) -> PriorSpec:
    """The light SSDs' default boxes at ``image_size`` (both backbones give the same maps):
    SSD300's recipe (Caffe arithmetic, sizes from :func:`ssd_sizes`: 10%/20% on the first map,
    then 20% .. 90% of the image, 4 or 6 boxes per cell), steps = image side / feature-map side."""
    maps = LiteBackbone(width_mult).feature_map_sizes((image_size, image_size))
    mins, maxs = ssd_sizes(image_size, len(maps))
    return PriorSpec(image_size, maps, None, mins, maxs, SSD300_RATIOS, name="ssdlite")


def ssd_tiny_priors(image_size: int, width_mult: float = 1.0) -> PriorSpec:
    """``ssd_tiny``'s default boxes at ``image_size``: 5%/10% of the image on the stride-4 map,
    then SSD300's recipe over the other six (:func:`ssd_sizes`: 10%/26% on the stride-8 map,
    then 26% .. 90% in steps of 16%), 4 boxes per cell (ratio 2) on the first two maps and the
    last two, 6 (ratios 2, 3) on the middle three."""
    maps = LiteBackbone(width_mult, "vgg").feature_map_sizes((image_size, image_size))
    mins, maxs = ssd_sizes(image_size, len(maps) - 1, min_ratio=26, max_ratio=90, first=(10, 26))
    ratios = ((2,), (2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    return PriorSpec(image_size, maps, None, [image_size * 0.05] + list(mins),
                     [image_size * 0.10] + list(maxs), ratios, name="ssd_tiny")


def _lite_ssd(arch: str, style: str, make_head, own_priors, num_classes: int, image_size: int, priors,
              width_mult: float, classes: Optional[Sequence[str]]) -> SSD:
    """``priors == arch`` means the builder's own default boxes, ``own_priors(image_size, width_mult)``."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
    backbone = LiteBackbone(width_mult, style)
    spec = own_priors(image_size, width_mult) if priors == arch else get_prior_spec(priors, image_size)
    return SSD(backbone, num_classes, spec, make_head=make_head, classes=classes, arch=arch,
               arch_kwargs={"image_size": image_size, "width_mult": width_mult})


def ssdlite(num_classes: int = 21, image_size: int = 160, priors="ssdlite", width_mult: float = 1.0,
            classes: Optional[Sequence[str]] = None) -> SSD:
    """SSDLite (module docstring) for ``image_size`` x ``image_size`` inputs.

    Args:
        num_classes: classes including the background.
        image_size: input side in pixels (>= 32).
        priors: ``"ssdlite"`` (:func:`ssdlite_priors` at ``image_size``) or a :class:`PriorSpec`
            made for ``image_size``.
        width_mult: channel multiplier of the backbone.
        classes: optional class names (background first).
    """
    return _lite_ssd("ssdlite", "mobilenet", separable_head, ssdlite_priors, num_classes, image_size, priors,
                     width_mult, classes)


def ssd_tiny(num_classes: int = 21, image_size: int = 128, priors="ssd_tiny", width_mult: float = 1.0,
             classes: Optional[Sequence[str]] = None) -> SSD:
    """A slim VGG-style SSD (module docstring) for ``image_size`` x ``image_size`` inputs; the
    arguments are :func:`ssdlite`'s, with ``priors="ssd_tiny"`` (:func:`ssd_tiny_priors`) by
    default."""
    return _lite_ssd("ssd_tiny", "vgg", conv3x3_head, ssd_tiny_priors, num_classes, image_size, priors,
                     width_mult, classes)
