"""Default boxes ("priors") of SSD: a generator, the presets, and the spec that checkpoints store.

A :class:`PriorSpec` describes the boxes completely (image size, feature-map sizes, steps,
min/max sizes, aspect ratios, clipping, the arithmetic to use); :meth:`PriorSpec.generate`
turns it into a ``[P, 4]`` float32 tensor of normalized ``(x1, y1, x2, y2)`` corners.

Order (Caffe ``PriorBox``, also ssd.pytorch and torchvision): layer by layer; within a layer,
row by row, then column by column; within a location: the ``min_size`` square, the
``sqrt(min_size * max_size)`` square (when max sizes are given), then ``(ar, 1/ar)`` for each
aspect ratio ``ar`` of that layer. The box of ratio ``ar`` is ``min_size * sqrt(ar)`` wide and
``min_size / sqrt(ar)`` high.

Two arithmetics, chosen by ``style``:

- ``"caffe"`` — Caffe's ``PriorBox`` (weiliu89/caffe, ``prior_box_layer.cpp``): min and max sizes
  are truncated to integers (Caffe reads them into an ``int``: SSD512's 35.84 px box is 35 px);
  centres ``(i + offset) * step`` in float32; box sides in float32; corners
  ``(centre -/+ side / 2) / image_side`` computed in double and stored as float32; ``clip``
  clamps the corners to [0, 1]. ``steps=None`` uses ``image_side / feature_map_side`` (float32),
  as Caffe does when no step is given.
- ``"torchvision"`` — torchvision's ``DefaultBoxGenerator``: scales ``s = size / image_side``
  (double), box sides ``s * sqrt(ar)`` rounded to float32, centres ``(i + 0.5) / (image_side /
  step)`` in float32, corners ``centre -/+ 0.5 * side`` in float32; ``clip`` clamps the *widths
  and heights* to [0, 1] (not the corners). Square images only; max sizes are required
  (torchvision's last scale is the extra one).
- ``"ssd_pytorch"`` — ssd.pytorch's ``PriorBox``: as ``"torchvision"``, but centres computed in
  double, and ``clip`` clamps the centres as well as the sizes (its 10x10 layer of step 32
  has centres past the image, which it moves to the border).
"""
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _checks

DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)
STYLES = ("caffe", "torchvision", "ssd_pytorch")

SSD300_FEATURE_MAPS = (38, 19, 10, 5, 3, 1)
SSD300_STEPS = (8, 16, 32, 64, 100, 300)
SSD300_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSD512_FEATURE_MAPS = (64, 32, 16, 8, 4, 2, 1)
SSD512_STEPS = (8, 16, 32, 64, 128, 256, 512)
SSD512_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))


def _is_count(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def _is_size(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < float(v) < math.inf


def _pairs(values, name, ok, what):
    """(h, w) pairs from single values or pairs, every element passing ``ok``."""
    out = []
    for v in values if isinstance(values, (list, tuple)) else [None]:
        pair = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
        if len(pair) != 2 or not all(ok(x) for x in pair):
            raise ValueError(f"PriorSpec: {name} must hold {what} or (h, w) pairs of them, got {values!r}")
        out.append(pair)
    return tuple(out)


def _sizes(values, name):
    if not (isinstance(values, (list, tuple)) and all(_is_size(v) for v in values)):
        raise ValueError(f"PriorSpec: {name} must hold finite numbers > 0, got {values!r}")
    return tuple(float(v) for v in values)


def expand_ratios(ratios: Sequence[float]):
    """Caffe's aspect-ratio list of one layer without the implicit 1: ``[2, 3] -> [2, 1/2, 3,
    1/3]`` (each ratio, then its inverse, skipping ratios already present or equal to 1)."""
    out = [1.0]
    for ar in ratios:
        for r in (float(ar), 1.0 / float(ar)):
            if all(abs(r - q) >= 1e-6 for q in out):
                out.append(r)
    return out[1:]


@dataclass(frozen=True)
class PriorSpec:
    """Everything that defines a set of default boxes; see the module docstring.

    Args:
        image_size: ``(H, W)`` of the network input in pixels (an int means square).
        feature_maps: one ``(h, w)`` (or int) per prediction layer.
        steps: pixels between neighbouring centres, one number per layer (or ``(sh, sw)``
            pairs); ``None``: ``image_side / feature_map_side``.
        min_sizes: side of the small square box of each layer, in pixels.
        max_sizes: one per layer (the ``sqrt(min * max)`` square), or empty for none.
        aspect_ratios: ratios > 0 of each layer besides 1 (each adds the box and its inverse).
        clip: clamp the boxes (see ``style``).
        offset: centre offset within a cell, in cells (0.5 = the middle).
        variances: the box-coding variances models use with these boxes.
        style: ``"caffe"``, ``"torchvision"`` or ``"ssd_pytorch"`` arithmetic.
        name: the preset name, or ``"custom"``.

    Every argument is checked (types and ranges: counts are ints, never truncated floats; sizes
    finite and > 0): ``ValueError`` naming it and quoting the value.
    """
    image_size: Tuple[int, int]
    feature_maps: Tuple[Tuple[int, int], ...]
    steps: Optional[Tuple[Tuple[float, float], ...]]
    min_sizes: Tuple[float, ...]
    max_sizes: Tuple[float, ...]
    aspect_ratios: Tuple[Tuple[float, ...], ...]
    clip: bool = False
    offset: float = 0.5
    variances: Tuple[float, float, float, float] = DEFAULT_VARIANCES
    style: str = "caffe"
    name: str = "custom"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        size = self.image_size
        if _is_count(size):
            size = (size, size)
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_count(s) for s in size)):
            raise ValueError(f"PriorSpec: image_size must be a positive int or (H, W) of them, got "
                             f"{self.image_size!r}")
        set_("image_size", tuple(int(s) for s in size))
        set_("feature_maps", tuple((int(h), int(w)) for h, w in
                                   _pairs(self.feature_maps, "feature_maps", _is_count, "positive ints")))
        if self.steps is not None:
            set_("steps", tuple((float(h), float(w)) for h, w in
                                _pairs(self.steps, "steps", _is_size, "finite numbers > 0")))
        set_("min_sizes", _sizes(self.min_sizes, "min_sizes"))
        set_("max_sizes", _sizes(self.max_sizes, "max_sizes"))
        ratios = self.aspect_ratios
        if not (isinstance(ratios, (list, tuple)) and all(isinstance(rs, (list, tuple)) for rs in ratios)):
            raise ValueError(f"PriorSpec: aspect_ratios must hold one list of ratios per feature map, "
                             f"got {ratios!r}")
        if not all(_is_size(r) for rs in ratios for r in rs):
            raise ValueError(f"PriorSpec: aspect_ratios must hold finite numbers > 0, got {ratios!r}")
        set_("aspect_ratios", tuple(tuple(float(r) for r in rs) for rs in ratios))
        set_("variances", _checks.variances("PriorSpec", self.variances))
        set_("clip", _checks.flag("PriorSpec", "clip", self.clip))
        set_("offset", _checks.number("PriorSpec", "offset", self.offset, "a finite number"))
        _checks.choice("PriorSpec", "style", self.style, STYLES)
        if not isinstance(self.name, str):
            raise ValueError(f"PriorSpec: name must be a str, got {self.name!r}")
        self._check()

    def _check(self):
        n = len(self.feature_maps)
        if n == 0:
            raise ValueError("PriorSpec: feature_maps must not be empty, got ()")
        lengths = {"min_sizes": len(self.min_sizes), "aspect_ratios": len(self.aspect_ratios)}
        if self.steps is not None:
            lengths["steps"] = len(self.steps)
        if self.max_sizes:
            lengths["max_sizes"] = len(self.max_sizes)
        for k, v in lengths.items():
            if v != n:
                raise ValueError(f"PriorSpec: {k} must have one entry per feature map ({n}), got {v}: "
                                 f"{getattr(self, k)!r}")
        if self.style == "caffe" and any(int(s) < 1 for s in self.min_sizes):
            raise ValueError(f"PriorSpec: style='caffe' truncates sizes to integers, so min_sizes "
                             f"must be >= 1, got {self.min_sizes!r}")
        if self.style != "caffe":
            if self.image_size[0] != self.image_size[1]:
                raise ValueError(f"PriorSpec: style={self.style!r} needs a square image_size, got "
                                 f"{self.image_size!r}")
            if not self.max_sizes:
                raise ValueError(f"PriorSpec: style={self.style!r} needs max_sizes, got ()")

    @property
    def boxes_per_location(self) -> Tuple[int, ...]:
        """Boxes per feature-map cell, layer by layer (e.g. ``(4, 6, 6, 6, 4, 4)``)."""
        if self.style != "caffe":  # no de-duplication there: 2 squares + 2 per ratio
            return tuple(2 + 2 * len(rs) for rs in self.aspect_ratios)
        extra = 1 if self.max_sizes else 0
        return tuple(1 + extra + len(expand_ratios(rs)) for rs in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(a * h * w for a, (h, w) in zip(self.boxes_per_location, self.feature_maps))

    def generate(self, device=None) -> Tensor:
        """The default boxes: ``[num_priors, 4]`` float32 normalized corners, on ``device``
        (computed on the CPU, also inside a ``torch.device("meta")`` context)."""
        with torch.device("cpu"):
            layers = [(_caffe_layer if self.style == "caffe" else _torchvision_layer)(self, k)
                      for k in range(len(self.feature_maps))]
            return torch.cat(layers).to(device)

    def to_dict(self) -> Dict[str, Any]:
        """Plain lists, numbers and strings (what checkpoints store)."""
        d = dataclasses.asdict(self)
        return {k: (_lists(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PriorSpec":
        return cls(**d)

    def replace(self, **changes) -> "PriorSpec":
        return dataclasses.replace(self, **changes)


def _lists(v):
    return [_lists(x) for x in v] if isinstance(v, (tuple, list)) else v


def _layer_steps(spec, k):
    (fh, fw), (H, W) = spec.feature_maps[k], spec.image_size
    return spec.steps[k] if spec.steps is not None else (H / fh, W / fw)


def _caffe_layer(spec: PriorSpec, k: int) -> Tensor:
    """One layer of Caffe ``PriorBox`` (module docstring): [fh * fw * A, 4] float32."""
    (fh, fw), (H, W) = spec.feature_maps[k], spec.image_size
    f32 = torch.float32
    step_h, step_w = (torch.tensor(s, dtype=f32) for s in _layer_steps(spec, k))
    cy = (torch.arange(fh, dtype=f32) + spec.offset) * step_h  # float32, as Caffe
    cx = (torch.arange(fw, dtype=f32) + spec.offset) * step_w
    lo = int(spec.min_sizes[k])  # Caffe: `int min_size_ = min_sizes_[s];`
    sides = [(float(lo), float(lo))]
    if spec.max_sizes:
        side = math.sqrt(lo * int(spec.max_sizes[k]))
        sides.append((side, side))
    for ar in expand_ratios(spec.aspect_ratios[k]):
        r = math.sqrt(float(torch.tensor(ar, dtype=f32)))  # Caffe keeps ratios as float
        sides.append((lo * r, lo / r))
    wh = torch.tensor(sides, dtype=f32).double()  # box sides are floats in Caffe
    cy, cx = torch.meshgrid(cy.double(), cx.double(), indexing="ij")
    c = torch.stack([cx, cy], -1).reshape(-1, 1, 2)  # [fh * fw, 1, 2]
    size = torch.tensor([W, H], dtype=torch.float64)
    boxes = torch.cat([(c - wh / 2) / size, (c + wh / 2) / size], -1).float()  # double, stored float
    if spec.clip:
        boxes = boxes.clamp(0.0, 1.0)
    return boxes.reshape(-1, 4)


def _torchvision_layer(spec: PriorSpec, k: int) -> Tensor:
    """One layer of torchvision's ``DefaultBoxGenerator`` or ssd.pytorch's ``PriorBox``
    (module docstring)."""
    (fh, fw), (H, W) = spec.feature_maps[k], spec.image_size
    s, s_next = spec.min_sizes[k] / W, spec.max_sizes[k] / W
    sides = [[s, s], [math.sqrt(s * s_next)] * 2]
    for ar in spec.aspect_ratios[k]:
        w, h = s * math.sqrt(ar), s / math.sqrt(ar)
        sides += [[w, h], [h, w]]
    wh = torch.tensor(sides, dtype=torch.float32)
    if spec.clip:
        wh = wh.clamp(0.0, 1.0)
    if spec.steps is not None:
        step_h, step_w = _layer_steps(spec, k)
        y_fk, x_fk = H / step_h, W / step_w
    else:
        y_fk, x_fk = fh, fw
    # torchvision: float32 arithmetic; ssd.pytorch: python floats
    dtype = torch.float32 if spec.style == "torchvision" else torch.float64
    cx = (torch.arange(fw, dtype=dtype) + spec.offset) / x_fk
    cy = (torch.arange(fh, dtype=dtype) + spec.offset) / y_fk
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    c = torch.stack([cx, cy], -1).reshape(-1, 1, 2).float()
    if spec.clip and spec.style == "ssd_pytorch":
        c = c.clamp(0.0, 1.0)
    return torch.cat([c - 0.5 * wh, c + 0.5 * wh], -1).reshape(-1, 4)


def prior_boxes(image_size, feature_maps, steps, min_sizes, max_sizes, aspect_ratios,
                clip=False, offset=0.5, style="caffe", device=None) -> Tensor:
    """Generate default boxes: ``PriorSpec(...).generate(device)`` (see :class:`PriorSpec`)."""
    return PriorSpec(image_size, feature_maps, steps, min_sizes, max_sizes, aspect_ratios,
                     clip=clip, offset=offset, style=style).generate(device)


def ssd_sizes(image_size: int, num_maps: int, min_ratio: int = 20, max_ratio: int = 90,
              first: Tuple[int, int] = (10, 20), last_max: Optional[int] = None):
    """The min/max sizes of Caffe's SSD scripts (``ssd_pascal.py``): ratios in integer percent
    from ``min_ratio`` to ``max_ratio`` over layers 2..m in steps of
    ``floor((max - min) / (m - 2))``, each max the next ratio; layer 1 gets ``first``
    (min%, max%). ``ssd_sizes(300, 6)`` is the SSD300 VOC preset.

    Returns:
        ``(min_sizes, max_sizes)`` in pixels (floats; the caffe style truncates them).
    """
    if num_maps < 3:
        raise ValueError(f"ssd_sizes: num_maps must be >= 3, got {num_maps}")
    step = (max_ratio - min_ratio) // (num_maps - 2)
    ratios = list(range(min_ratio, max_ratio + 1, step))[: num_maps - 1]
    mins = [image_size * first[0] / 100.0] + [image_size * r / 100.0 for r in ratios]
    maxs = [image_size * first[1] / 100.0] + [image_size * (r + step) / 100.0 for r in ratios]
    if last_max is not None:
        maxs[-1] = image_size * last_max / 100.0
    return mins, maxs


def _preset(image_size, feature_maps, steps, ratios, mins, maxs, name, style="caffe", clip=False):
    return PriorSpec(image_size, feature_maps, steps, mins, maxs, ratios, clip=clip, style=style,
                     name=name)


_SSD512_VOC_MIN = (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8)
_SSD512_COCO_MIN = (20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8)

#: (preset name, image size) -> PriorSpec. ``voc``/``coco``: Caffe's SSD300/SSD512 boxes
#: (8732 / 24564); ``torchvision``: exactly ``torchvision.models.detection.ssd300_vgg16``'s;
#: ``ssd_pytorch``: ssd.pytorch's VOC ``PriorBox``.
PRESETS: Dict[Tuple[str, int], PriorSpec] = {
    ("voc", 300): _preset(300, SSD300_FEATURE_MAPS, SSD300_STEPS, SSD300_RATIOS,
                          (30, 60, 111, 162, 213, 264), (60, 111, 162, 213, 264, 315), "voc"),
    ("coco", 300): _preset(300, SSD300_FEATURE_MAPS, SSD300_STEPS, SSD300_RATIOS,
                           (21, 45, 99, 153, 207, 261), (45, 99, 153, 207, 261, 315), "coco"),
    ("voc", 512): _preset(512, SSD512_FEATURE_MAPS, SSD512_STEPS, SSD512_RATIOS,
                          _SSD512_VOC_MIN, _SSD512_VOC_MIN[1:] + (537.6,), "voc"),
    ("coco", 512): _preset(512, SSD512_FEATURE_MAPS, SSD512_STEPS, SSD512_RATIOS,
                           _SSD512_COCO_MIN, _SSD512_COCO_MIN[1:] + (542.72,), "coco"),
    ("torchvision", 300): _preset(300, SSD300_FEATURE_MAPS, SSD300_STEPS, SSD300_RATIOS,
                                  (21, 45, 99, 153, 207, 261), (45, 99, 153, 207, 261, 315),
                                  "torchvision", style="torchvision", clip=True),
    ("ssd_pytorch", 300): _preset(300, SSD300_FEATURE_MAPS, SSD300_STEPS, SSD300_RATIOS,
                                  (30, 60, 111, 162, 213, 264), (60, 111, 162, 213, 264, 315),
                                  "ssd_pytorch", style="ssd_pytorch", clip=True),
}


def get_prior_spec(priors: Union[str, PriorSpec, Dict[str, Any]], image_size: int) -> PriorSpec:
    """Resolve ``priors`` (a preset name, a :class:`PriorSpec`, or its ``to_dict()``) for a
    network of input ``image_size``; raises ``ValueError`` naming the value when the preset
    does not exist for that size or the spec was made for another image size."""
    if isinstance(priors, dict):
        priors = PriorSpec.from_dict(priors)
    if isinstance(priors, PriorSpec):
        if priors.image_size != (image_size, image_size):
            raise ValueError(f"priors: this network takes {image_size}x{image_size} images, but the "
                             f"priors were made for image_size={priors.image_size}")
        return priors
    if not isinstance(priors, str):
        raise TypeError(f"priors must be a preset name, a PriorSpec or a dict, got {type(priors).__name__}")
    spec = PRESETS.get((priors, image_size))
    if spec is None:
        names = sorted(n for n, s in PRESETS if s == image_size)
        raise ValueError(f"priors: unknown preset {priors!r} for {image_size}x{image_size} images; "
                         f"presets: {names}")
    return spec
