"""SSD300 and SSD512 on VGG16, as in the paper (Liu et al. 2016, Fig. 2 and Sec. 3).

Layout of the backbone (the state-dict keys ``backbone.*``):

- ``vgg`` (``nn.Sequential``, 35 modules, the indices of ssd.pytorch's ``vgg``): VGG16's
  conv1_1 .. conv5_3 with their ReLUs and pools (pool3 with ``ceil_mode`` so that 300 px gives
  38x38 maps), then pool5 3x3/s1/p1 (30), fc6 as a 3x3 conv with dilation 6, 1024 channels (31),
  ReLU, fc7 as a 1x1 conv, 1024 channels (33), ReLU. conv4_3's ReLU is index 22.
- ``l2norm.weight`` [512]: L2 normalisation of conv4_3 across channels, scaled per channel
  (initial scale 20, learnt).
- ``extras.k`` (``nn.Sequential(conv 1x1, ReLU, conv 3x3, ReLU)``): conv8_2 .. conv11_2
  (SSD512: .. conv12_2).

Feature maps: conv4_3 (after L2Norm), fc7, then each extra; SSD300: 38, 19, 10, 5, 3, 1;
SSD512: 64, 32, 16, 8, 4, 2, 1. The VGG convs get torchvision's VGG initialisation (kaiming
normal, fan-out); fc6, fc7, the extras and the heads xavier (uniform), zero biases.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _checks
from .priors import get_prior_spec
from .ssd import SSD, spatial_size, xavier_init

#: VGG16 up to conv5_3; "M": max-pool 2x2/2, "C": the same with ceil_mode (pool3).
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)
CONV4_3 = 22  #: index in ``vgg`` of conv4_3's ReLU, the first feature map
#: Extras: (1x1 channels, 3x3 channels, 3x3 stride, 3x3 padding, 3x3 kernel) per feature map.
EXTRAS = {
    300: ((256, 512, 2, 1, 3), (128, 256, 2, 1, 3), (128, 256, 1, 0, 3), (128, 256, 1, 0, 3)),
    512: ((256, 512, 2, 1, 3), (128, 256, 2, 1, 3), (128, 256, 2, 1, 3), (128, 256, 2, 1, 3),
          (128, 256, 1, 1, 4)),
}


class L2Norm(nn.Module):
    """``weight[c] * x / ||x||_2`` over channels (ParseNet; the paper's conv4_3 normalisation),
    as torchvision computes it (``F.normalize``, eps 1e-12); float16/bfloat16 inputs are
    normalized in float32 (their sum of squares overflows float16) and returned in their dtype.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int, scale: float = 20.0):
        super().__init__()
        channels = _checks.integer("L2Norm", "channels", channels, 1)
        scale = _checks.number("L2Norm", "scale", scale, "a finite number")
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        return (self.weight.view(1, -1, 1, 1) * F.normalize(xf, dim=1)).to(x.dtype)


def vgg16_layers() -> List[nn.Module]:
    """The 35 modules of ``backbone.vgg`` (module docstring), initialised."""
    layers: List[nn.Module] = []
    c = 3
    for v in VGG16_LAYERS:
        if v in ("M", "C"):
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=v == "C"))
        else:
            conv = nn.Conv2d(c, v, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            c = v
    fc = [nn.MaxPool2d(3, stride=1, padding=1),                   # pool5
          nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),  # fc6, atrous
          nn.ReLU(inplace=True),
          nn.Conv2d(1024, 1024, kernel_size=1),                    # fc7
          nn.ReLU(inplace=True)]
    for m in fc:
        xavier_init(m)
    return layers + fc


class VGG16Backbone(nn.Module):
    """VGG16 + L2Norm + extras (module docstring); ``forward`` returns the feature maps.

    Args:
        image_size: 300 or 512 (selects the extras).
    """

    def __init__(self, image_size: int = 300):
        super().__init__()
        if type(image_size) is not int or image_size not in EXTRAS:
            raise ValueError(f"VGG16Backbone: image_size must be one of {sorted(EXTRAS)}, got {image_size!r}")
        self.vgg = nn.Sequential(*vgg16_layers())
        self.l2norm = L2Norm(512, 20.0)
        extras, c = [], 1024
        for mid, out, stride, pad, k in EXTRAS[image_size]:
            extras.append(nn.Sequential(nn.Conv2d(c, mid, kernel_size=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(mid, out, kernel_size=k, stride=stride, padding=pad),
                                        nn.ReLU(inplace=True)))
            c = out
        self.extras = nn.ModuleList(extras)
        xavier_init(self.extras)
        self.out_channels = [512, 1024] + [e[2].out_channels for e in extras]

    def feature_map_sizes(self, image_size: Tuple[int, int]) -> List[Tuple[int, int]]:
        sizes = [spatial_size(self.vgg[: CONV4_3 + 1], image_size)]
        sizes.append(spatial_size(self.vgg[CONV4_3 + 1:], sizes[-1]))
        for e in self.extras:
            sizes.append(spatial_size([e], sizes[-1]))
        return sizes

    def forward(self, x: Tensor) -> List[Tensor]:
        features = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i == CONV4_3:
                features.append(self.l2norm(x))
        features.append(x)
        for extra in self.extras:
            x = extra(x)
            features.append(x)
        return features


def _ssd_vgg16(size: int, name: str, num_classes: int, priors, classes) -> SSD:
    spec = get_prior_spec(priors, size)
    return SSD(VGG16Backbone(size), num_classes, spec, classes=classes, arch=name)


def ssd300_vgg16(num_classes: int = 21, priors="voc", classes: Optional[Sequence[str]] = None) -> SSD:
    """SSD300 on VGG16 (the paper's network; module docstring).

    Args:
        num_classes: classes including the background (21 for VOC, 81 for COCO, 91 for
            torchvision's COCO weights).
        priors: ``"voc"`` (8732 Caffe boxes), ``"coco"``, ``"torchvision"`` (torchvision's
            ssd300_vgg16 boxes; also turns ``detect``'s clipping on), ``"ssd_pytorch"``, or a
            :class:`PriorSpec` for 300x300 images.
        classes: optional class names (background first).

    Parameters: 26,285,486 for 21 classes; 35,641,826 for 91 (= torchvision's ssd300_vgg16).
    """
    return _ssd_vgg16(300, "ssd300_vgg16", num_classes, priors, classes)


def ssd512_vgg16(num_classes: int = 21, priors="voc", classes: Optional[Sequence[str]] = None) -> SSD:
    """SSD512 on VGG16: SSD300's network with one more extra (conv12_2, 4x4) and seven maps
    (64, 32, 16, 8, 4, 2, 1); ``priors``: ``"voc"``/``"coco"`` (24564 Caffe boxes) or a
    :class:`PriorSpec` for 512x512 images."""
    return _ssd_vgg16(512, "ssd512_vgg16", num_classes, priors, classes)
