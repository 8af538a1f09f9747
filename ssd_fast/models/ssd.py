"""The SSD module: backbone feature maps -> per-layer 3x3 heads -> (loc, conf_logits); priors as a
buffer; ``detect`` = forward + ``ssd_fast.ops.ssd_postprocess``."""
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import _show
from .priors import PriorSpec

#: ``detect`` defaults (SPEC §3); ``priors="torchvision"`` turns ``clip`` on, as torchvision.
DEFAULT_POSTPROCESS = dict(score_threshold=0.01, iou_threshold=0.45, topk_per_class=400,
                           max_detections=200, clip=False, background_class=0)


def xavier_init(module: nn.Module) -> None:
    """``xavier_uniform_`` weights and zero biases for every conv in ``module`` (the paper's
    initialisation of the layers SSD adds to its base network)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv3x3_head(in_channels: int, out_channels: int) -> nn.Module:
    """The paper's predictor: one 3x3 conv (padding 1), xavier init."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    xavier_init(conv)
    return conv


def _layer_size(m: nn.Module, n: int, axis: int) -> int:
    pick = lambda v: v if isinstance(v, int) else v[axis]  # noqa: E731
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
        k, s, p, d = (pick(getattr(m, a)) for a in ("kernel_size", "stride", "padding", "dilation"))
        span = (n + 2 * p - d * (k - 1) - 1) / s
        if isinstance(m, nn.MaxPool2d) and m.ceil_mode:
            out = math.ceil(span) + 1
            return out - 1 if (out - 1) * s >= n + p else out  # PyTorch's rule for ceil_mode
        return math.floor(span) + 1
    return n


def spatial_size(modules: Iterable[nn.Module], size: Tuple[int, int]) -> Tuple[int, int]:
    """Output (h, w) of the convs and max-pools among ``modules`` (run in order, recursing into
    containers) for an input of ``size``; other layers keep the size."""
    h, w = size
    for top in modules:
        for m in top.modules():
            h, w = _layer_size(m, h, 0), _layer_size(m, w, 1)
    return h, w


class SSD(nn.Module):
    """Single Shot MultiBox Detector.

    Args:
        backbone: a module mapping images ``[B, 3, H, W]`` to a list of feature maps, with
            ``out_channels`` (one per map) and ``feature_map_sizes(image_size)`` (their (h, w)).
        num_classes: number of classes including the background (class 0).
        priors: the :class:`PriorSpec` of the default boxes; its feature maps must be the
            backbone's at ``priors.image_size``.
        make_head: ``(in_channels, out_channels) -> module`` building each predictor
            (default: one 3x3 conv, xavier init).
        classes: optional class names, ``num_classes`` of them (index 0: background).
        arch, arch_kwargs: the builder and its extra arguments, so a checkpoint rebuilds the
            model (set by the builders in ``ssd_fast.models``).

    Every argument is checked here (``ValueError`` naming it and quoting the value).

    Attributes:
        priors: buffer ``[P, 4]`` float32 normalized corners (not in the state dict: the spec
            regenerates it).
        postprocess_defaults: the keyword defaults of :meth:`detect`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, priors: PriorSpec,
                 make_head: Callable[[int, int], nn.Module] = conv3x3_head,
                 classes: Optional[Sequence[str]] = None, arch: str = "custom",
                 arch_kwargs: Optional[Dict] = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background included), got {num_classes!r}")
        if not (hasattr(backbone, "out_channels") and callable(getattr(backbone, "feature_map_sizes", None))):
            raise ValueError(f"SSD: backbone must have out_channels and feature_map_sizes, got {backbone!r}")
        if not isinstance(priors, PriorSpec):
            raise ValueError(f"SSD: priors must be a PriorSpec, got {_show(priors)}")
        if not callable(make_head):
            raise ValueError(f"SSD: make_head must be callable, got {_show(make_head)}")
        if classes is not None and (isinstance(classes, str) or not all(isinstance(c, str) for c in classes)):
            raise ValueError(f"SSD: classes must be a list of num_classes={num_classes} strings "
                             f"(background first), got {_show(classes)}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"classes must name num_classes={num_classes} classes (background "
                             f"first), got {len(classes)}: {list(classes)!r}")
        if not isinstance(arch, str):
            raise ValueError(f"SSD: arch must be a str, got {_show(arch)}")
        if arch_kwargs is not None and not isinstance(arch_kwargs, dict):
            raise ValueError(f"SSD: arch_kwargs must be a dict or None, got {_show(arch_kwargs)}")
        sizes = [tuple(s) for s in backbone.feature_map_sizes(priors.image_size)]
        if sizes != list(priors.feature_maps):
            raise ValueError(f"priors: made for feature maps {list(priors.feature_maps)} at image_size="
                             f"{priors.image_size}, but the backbone gives {sizes} at that size")
        anchors = priors.boxes_per_location
        self.backbone = backbone
        self.loc_head = nn.ModuleList(make_head(c, a * 4) for c, a in zip(backbone.out_channels, anchors))
        self.conf_head = nn.ModuleList(make_head(c, a * num_classes)
                                       for c, a in zip(backbone.out_channels, anchors))
        self.num_classes = num_classes
        self.prior_spec = priors
        self.classes = list(classes) if classes is not None else None
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs or {})
        self.postprocess_defaults = dict(DEFAULT_POSTPROCESS, clip=priors.name == "torchvision")
        self.register_buffer("priors", priors.generate(), persistent=False)

    @property
    def image_size(self) -> Tuple[int, int]:
        """``(H, W)`` the network takes."""
        return self.prior_spec.image_size

    @property
    def variances(self) -> Tuple[float, float, float, float]:
        return self.prior_spec.variances

    @property
    def config(self) -> Dict:
        """What rebuilds this model (architecture, classes, priors); checkpoints store it."""
        return {"arch": self.arch, "arch_kwargs": dict(self.arch_kwargs),
                "num_classes": self.num_classes, "classes": self.classes,
                "priors": self.prior_spec.to_dict(),
                "postprocess_defaults": dict(self.postprocess_defaults)}

    def _check_images(self, images: Tensor) -> None:
        H, W = self.image_size
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[-2:]) != (H, W):
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images: expected a [B, C, {H}, {W}] tensor (this model's priors are "
                             f"for {H}x{W}; resize first), got {got}")

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """Head outputs for already-normalized ``images [B, C, H, W]`` (H, W = ``image_size``).

        Returns:
            ``loc [B, P, 4]`` encoded offsets and ``conf_logits [B, P, num_classes]``, in the
            order of ``priors`` (layer, row, column, box), dtype of the convs' output (float16 or
            bfloat16 under autocast).
        """
        self._check_images(images)
        B = images.shape[0]
        locs: List[Tensor] = []
        confs: List[Tensor] = []
        for x, loc_head, conf_head in zip(self.backbone(images), self.loc_head, self.conf_head):
            # [B, A*K, h, w] -> [B, h, w, A*K] -> [B, h*w*A, K]: channel a*K + k is box a, value k
            # (the sizes spelled out: an empty batch has no -1 to infer)
            loc, conf = loc_head(x), conf_head(x)
            hw = x.shape[2] * x.shape[3]
            locs.append(loc.permute(0, 2, 3, 1).reshape(B, hw * loc.shape[1] // 4, 4))
            confs.append(conf.permute(0, 2, 3, 1).reshape(B, hw * conf.shape[1] // self.num_classes,
                                                          self.num_classes))
        return torch.cat(locs, 1), torch.cat(confs, 1)

    @torch.no_grad()
    def detect(self, images: Tensor, **postprocess_kw):
        """Detections for ``images``: forward, then ``ssd_fast.ops.ssd_postprocess``.

        Runs without autograd; the module's mode is left alone (call ``model.eval()`` first
        when the backbone has batch norm).

        Args:
            images: normalized ``[B, C, H, W]``, H and W equal to ``image_size``.
            **postprocess_kw: overrides of ``postprocess_defaults``: ``score_threshold``,
                ``iou_threshold``, ``topk_per_class``, ``max_detections``, ``clip``,
                ``background_class`` (see SPEC §2 ``multiclass_nms``).

        Returns:
            ``(boxes [B, K, 4] float32 corners in pixels of the input, scores [B, K] float32,
            labels [B, K] int64, num_detections [B] int64)`` with K = ``max_detections``;
            rows past ``num_detections`` hold zeros and label -1.
        """
        unknown = sorted(set(postprocess_kw) - set(DEFAULT_POSTPROCESS))
        if unknown:
            raise TypeError(f"detect: unknown postprocess argument(s) {unknown}; "
                            f"known: {sorted(DEFAULT_POSTPROCESS)}")
        kw = {**self.postprocess_defaults, **postprocess_kw}
        loc, conf = self(images)
        # the heads may run in half precision under autocast; decode and NMS in float32
        boxes, scores, labels, num = ops.ssd_postprocess(loc.float(), conf.float(), self.priors,
                                                         self.variances, **kw)
        H, W = self.image_size
        scale = torch.tensor([W, H, W, H], dtype=boxes.dtype, device=boxes.device)
        return boxes * scale, scores, labels, num

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, num_classes={self.num_classes}, priors={self.prior_spec.name!r} "
                f"({self.priors.shape[0]} boxes, {self.image_size[0]}x{self.image_size[1]})")
