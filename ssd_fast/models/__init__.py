"""The SSD model (SPEC §3): default boxes, SSD300/SSD512 on VGG16, SSDLite, the MultiBox loss."""
from .loss import MultiBoxLoss
from .priors import PRESETS, PriorSpec, get_prior_spec, prior_boxes, ssd_sizes
from .ssd import DEFAULT_POSTPROCESS, SSD
from .ssdlite import ssdlite, ssdlite_priors
from .vgg import L2Norm, ssd300_vgg16, ssd512_vgg16

__all__ = [
    "SSD", "ssd300_vgg16", "ssd512_vgg16", "ssdlite", "MultiBoxLoss",
    "PriorSpec", "PRESETS", "prior_boxes", "get_prior_spec", "ssd_sizes", "ssdlite_priors",
    "L2Norm", "DEFAULT_POSTPROCESS",
]
