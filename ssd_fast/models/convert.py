"""Weights of other SSD300-VGG16 implementations, mapped onto ``ssd300_vgg16``'s state dict.

The head outputs of all three are laid out alike (per location, then box, then value; channel
``a * K + k`` of a head conv is box ``a``, value ``k``), so converting is renaming keys:

=================================================  =============================  ==========================
ours                                               torchvision ``ssd300_vgg16``   ssd.pytorch
=================================================  =============================  ==========================
``backbone.vgg.i`` (i <= 21: conv1_1..conv4_3)      ``backbone.features.i``        ``vgg.i``
``backbone.vgg.{24,26,28}`` (conv5_1..conv5_3)      ``backbone.extra.0.{1,3,5}``   ``vgg.{24,26,28}``
``backbone.vgg.31`` / ``.33`` (fc6 / fc7)           ``backbone.extra.0.7.1`` / ``.7.3``  ``vgg.31`` / ``vgg.33``
``backbone.l2norm.weight``                          ``backbone.scale_weight``      ``L2Norm.weight``
``backbone.extras.k.0`` / ``.k.2``                  ``backbone.extra.{k+1}.0`` / ``.2``  ``extras.{2k}`` / ``extras.{2k+1}``
``loc_head.k`` / ``conf_head.k``                    ``head.{regression,classification}_head.module_list.k``  ``loc.k`` / ``conf.k``
=================================================  =============================  ==========================

Inputs the converted models expect (they do no normalisation themselves):

- torchvision: RGB in [0, 1], ``(x - TORCHVISION_MEAN) / TORCHVISION_STD`` (i.e. 0..255 minus
  the mean), resized to 300x300; use ``priors="torchvision"`` (:func:`load_torchvision` does).
- ssd.pytorch: BGR in 0..255 minus ``SSD_PYTORCH_MEAN_BGR``, resized to 300x300; their boxes
  are ``priors="ssd_pytorch"`` (:func:`load_ssd_pytorch`).
"""
from collections import OrderedDict
from typing import Dict, Mapping

from torch import Tensor

from .ssd import SSD
from .vgg import CONV4_3, ssd300_vgg16

TORCHVISION_MEAN = (0.48235, 0.45882, 0.40784)
TORCHVISION_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)
SSD_PYTORCH_MEAN_BGR = (104.0, 117.0, 123.0)

VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33)  #: conv indices in backbone.vgg
NUM_EXTRAS, NUM_HEADS = 4, 6  # SSD300
_TORCHVISION_AFTER_CONV4_3 = {24: "backbone.extra.0.1", 26: "backbone.extra.0.3",
                              28: "backbone.extra.0.5", 31: "backbone.extra.0.7.1",
                              33: "backbone.extra.0.7.3"}


def _with_params(modules: Dict[str, str]) -> Dict[str, str]:
    return {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in modules.items() for p in ("weight", "bias")}


def torchvision_keys() -> Dict[str, str]:
    """Our key -> torchvision ``ssd300_vgg16`` key, for every tensor of the state dict."""
    m = {f"backbone.vgg.{i}": (f"backbone.features.{i}" if i <= CONV4_3 else _TORCHVISION_AFTER_CONV4_3[i])
         for i in VGG_CONVS}
    m.update({f"backbone.extras.{k}.{j}": f"backbone.extra.{k + 1}.{j}"
              for k in range(NUM_EXTRAS) for j in (0, 2)})
    m.update({f"loc_head.{k}": f"head.regression_head.module_list.{k}" for k in range(NUM_HEADS)})
    m.update({f"conf_head.{k}": f"head.classification_head.module_list.{k}" for k in range(NUM_HEADS)})
    return {**_with_params(m), "backbone.l2norm.weight": "backbone.scale_weight"}


def ssd_pytorch_keys() -> Dict[str, str]:
    """Our key -> ssd.pytorch (amdegroot) ``SSD`` key, for every tensor of the state dict."""
    m = {f"backbone.vgg.{i}": f"vgg.{i}" for i in VGG_CONVS}
    m.update({f"backbone.extras.{k}.{j}": f"extras.{2 * k + j // 2}" for k in range(NUM_EXTRAS) for j in (0, 2)})
    m.update({f"loc_head.{k}": f"loc.{k}" for k in range(NUM_HEADS)})
    m.update({f"conf_head.{k}": f"conf.{k}" for k in range(NUM_HEADS)})
    return {**_with_params(m), "backbone.l2norm.weight": "L2Norm.weight"}


def _strip_module_prefix(sd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """Drop the ``module.`` prefix of state dicts saved from (Distributed)DataParallel."""
    if sd and all(k.startswith("module.") for k in sd):
        return OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return sd


def _list(keys, limit=12):
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{keys[:limit]}{more}"


def _convert(state_dict: Mapping[str, Tensor], keys: Dict[str, str], source: str) -> "OrderedDict[str, Tensor]":
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    sd = _strip_module_prefix(state_dict)
    missing = set(keys.values()) - set(sd)
    unexpected = set(sd) - set(keys.values())
    if missing or unexpected:
        raise ValueError(f"not a {source} SSD300-VGG16 state dict: {len(missing)} missing key(s) "
                         f"{_list(missing)}; {len(unexpected)} unexpected key(s) {_list(unexpected)}")
    return OrderedDict((ours, sd[theirs]) for ours, theirs in keys.items())


def from_torchvision(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """torchvision ``ssd300_vgg16(...).state_dict()`` -> a state dict for our ``ssd300_vgg16``
    (same tensors, not copied). Raises ``ValueError`` listing the missing and unexpected keys
    when the key set is not exactly torchvision's (a leading ``module.`` is accepted)."""
    return _convert(state_dict, torchvision_keys(), "torchvision")


def from_ssd_pytorch(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """ssd.pytorch (github.com/amdegroot/ssd.pytorch) ``SSD`` state dict (``vgg.N``,
    ``L2Norm.weight``, ``extras.N``, ``loc.k``, ``conf.k``) -> ours; errors as
    :func:`from_torchvision`."""
    return _convert(state_dict, ssd_pytorch_keys(), "ssd.pytorch")


def num_classes_of(state_dict: Mapping[str, Tensor]) -> int:
    """Number of classes of a converted state dict (from the first classification conv, which
    predicts 4 boxes per location)."""
    return state_dict["conf_head.0.weight"].shape[0] // 4


def _load(sd, priors, classes) -> SSD:
    model = ssd300_vgg16(num_classes=num_classes_of(sd), priors=priors, classes=classes)
    model.load_state_dict(sd)
    return model


def load_torchvision(state_dict: Mapping[str, Tensor], classes=None) -> SSD:
    """Our ``ssd300_vgg16(priors="torchvision")`` with torchvision's weights: same detections
    as torchvision's model on the same normalized input (module docstring)."""
    return _load(from_torchvision(state_dict), "torchvision", classes)


def load_ssd_pytorch(state_dict: Mapping[str, Tensor], priors="ssd_pytorch", classes=None) -> SSD:
    """Our ``ssd300_vgg16`` with ssd.pytorch's weights and (by default) its default boxes."""
    return _load(from_ssd_pytorch(state_dict), priors, classes)
