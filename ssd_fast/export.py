"""Export a whole SSD detector, detection tail included, to ONNX (``pip install .[onnx]``).

``to_onnx(model, path)`` writes one self-contained ``.onnx`` file: it takes the images
``SSD.forward`` takes (``[B, 3, H, W]`` float32, already resized to the model's size and
normalized, see below) and returns what ``SSD.detect`` returns: ``det_boxes [B, K, 4]`` (corners,
pixels of the input), ``det_scores [B, K]``, ``det_labels [B, K]`` int64 and
``num_detections [B]`` int64, K = ``max_detections``, rows past ``num_detections`` holding
zeros and label -1. The batch is dynamic unless told otherwise. The priors, variances,
thresholds and class count are constants of the graph, and the file's metadata says what it
expects (``image_size``, ``normalization``, ``mean``, ``std``, ``classes``, the thresholds).

The tail is written in standard operators only, so any runtime implementing the opset runs it
(no custom-op domain): decode (``Exp``, ``Mul``, ``Add``), ``Softmax``, a ``TopK`` of each
class's ``topk_per_class`` best priors, one ``NonMaxSuppression`` over all (image, class)
pairs, each its own NMS "batch" holding its own candidates, a ``ScatterND`` of what it kept
into a score mask, and a final ``TopK`` of ``max_detections`` over all classes. It is a tensor
twin of :func:`ssd_fast.ops.multiclass_nms`, and gives the same detections. Measured in
onnxruntime (1.32, CPU), ``NonMaxSuppression`` agrees with ``multiclass_nms`` wherever it
matters: a box suppresses another only when their IoU is *above* the threshold (equal: both
kept), a score equal to ``score_threshold`` is dropped, equal scores rank by lower index (its
sort and ``TopK`` are stable), and zero-area boxes suppress nothing. What can differ:

- the decode's ``Exp``: ssd_fast's kernels use their own exp (within 0.9 ulp), the runtime its
  own, so boxes may differ in the last bits (about 1e-5 px at 300 px) and an IoU lying within
  a few ulp of ``iou_threshold`` may go the other way;
- the IoU itself is the runtime's float32 arithmetic (onnxruntime: the same formula), with the
  same caveat at the threshold;
- the softmax is the runtime's (scores within about 4e-7 of ssd_fast's), so a score within
  that of ``score_threshold`` may be kept by one and dropped by the other;
- detections of exactly equal score (rare after a softmax) are ordered by lower class then
  lower prior index in both, but a runtime's ``TopK`` is only required to be stable by the
  standard from opset 11 on; a runtime that is not may order them differently.

Caffe-style per-class boxes (``[B, P, C, 4]``) are not part of SSD and are not exported.
"""
import json
import logging
import math
import os
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import ops
from .data.transforms import MEAN, STD
from .models.ssd import SSD
from .outputs import write_atomically

OPSETS = range(18, 24)  # the dynamo exporter's floor; onnxruntime 1.32 runs up to 23
DEFAULT_OPSET = 18


# --- NMS of many independent rows, as one ONNX NonMaxSuppression -------------------------------

@torch.library.custom_op("ssd_fast_export::nms_rows", mutates_args=())
def nms_rows(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    """Greedy NMS of each row of ``boxes [R, k, 4]`` / ``scores [R, k]`` on its own, keeping
    scores above ``score_threshold``: ``[S, 2]`` int64 ``(row, index)`` of the boxes kept (in
    no particular order). In the ONNX graph: one ``NonMaxSuppression``, the rows as its batch."""
    R, k = scores.shape
    rows = torch.arange(R, device=scores.device).repeat_interleave(k)
    flat_scores = scores.reshape(-1)
    candidate = (flat_scores > score_threshold).nonzero().squeeze(1)
    keep = ops.batched_nms(boxes.reshape(-1, 4)[candidate], flat_scores[candidate], rows[candidate],
                           iou_threshold)
    kept = candidate[keep]
    return torch.stack([kept // k, kept % k], 1)


@nms_rows.register_fake
def _(boxes, scores, iou_threshold, score_threshold):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(), 2), dtype=torch.int64)


def _nms_rows_onnx(boxes, scores, iou_threshold: float, score_threshold: float):
    from onnxscript import opset18 as op
    per_row = op.Slice(op.Shape(boxes), op.Constant(value_ints=[1]), op.Constant(value_ints=[2]))
    selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, op.Constant(value_ints=[1])), per_row,
                                    op.Constant(value_floats=[iou_threshold]),
                                    op.Constant(value_floats=[score_threshold]))
    return op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # (batch, class, box) -> (row, box)


# --- The detector as one module of exportable tensor operations --------------------------------

class ExportableDetector(nn.Module):
    """``model``'s network and detection tail as one module of exportable tensor operations:
    ``forward(images) -> (det_boxes, det_scores, det_labels, num_detections)``, equal to
    ``model.detect(images, **postprocess)`` (module docstring). Runs in PyTorch too."""

    def __init__(self, model: SSD, score_threshold: float, iou_threshold: float, topk_per_class: int,
                 max_detections: int, clip: bool, background_class: int):
        super().__init__()
        self.model = model
        P, C = model.priors.shape[0], model.num_classes
        foreground = [c for c in range(C) if c != background_class]
        self.register_buffer("foreground", torch.tensor(foreground, dtype=torch.int64), persistent=False)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.k = min(topk_per_class, P) if topk_per_class >= 0 else P
        self.max_detections, self.clip = max_detections, clip
        H, W = model.image_size
        self.register_buffer("scale", torch.tensor([W, H, W, H], dtype=torch.float32), persistent=False)

    def forward(self, images: Tensor):
        loc, conf = self.model(images)
        boxes = ops.reference.decode_boxes(loc.float(), self.model.priors, self.model.variances)
        if self.clip:
            boxes = boxes.clamp(0, 1)                                        # [B, P, 4]
        scores = conf.float().softmax(-1).index_select(2, self.foreground)   # [B, P, C']
        B, P, Cf = scores.shape
        k, K = self.k, self.max_detections
        # each class's k best priors (ties: lower prior index), each (image, class) an NMS row
        best, prior = scores.transpose(1, 2).topk(k, dim=2)                  # [B, C', k]
        offset = (torch.arange(B, device=images.device) * P).view(B, 1, 1)
        candidates = boxes.reshape(B * P, 4).index_select(0, (prior + offset).reshape(-1))
        kept = nms_rows(candidates.reshape(B * Cf, k, 4), best.reshape(B * Cf, k),
                        self.iou_threshold, self.score_threshold)
        mask = torch.zeros(B * Cf, k, dtype=torch.bool, device=images.device)
        mask = mask.index_put((kept[:, 0], kept[:, 1]), torch.ones_like(kept[:, 0], dtype=torch.bool))
        ranked = torch.where(mask, best.reshape(B * Cf, k), -math.inf).reshape(B, Cf * k)
        # the K best over all classes: flat index = class * k + rank (ties: lower class, prior)
        n = min(K, Cf * k)
        top, where = ranked.topk(n, dim=1)                                   # [B, n]
        valid = top > -math.inf
        det_scores = torch.where(valid, top, 0.0)
        det_labels = torch.where(valid, self.foreground[where // k], -1)
        flat = (where + (torch.arange(B, device=images.device) * (Cf * k)).view(B, 1)).reshape(-1)
        det_boxes = candidates.index_select(0, flat).reshape(B, n, 4) * self.scale
        det_boxes = torch.where(valid.unsqueeze(2), det_boxes, 0.0)
        num = valid.sum(1)
        if n < K:  # fewer candidates than K in all: pad as multiclass_nms does
            pad = K - n
            det_boxes = torch.cat([det_boxes, det_boxes.new_zeros(B, pad, 4)], 1)
            det_scores = torch.cat([det_scores, det_scores.new_zeros(B, pad)], 1)
            det_labels = torch.cat([det_labels, det_labels.new_full((B, pad), -1)], 1)
        return det_boxes, det_scores, det_labels, num


def _settings(model: SSD, overrides) -> dict:
    kw = {**model.postprocess_defaults, **{k: v for k, v in overrides.items() if v is not None}}
    for name in ("score_threshold", "iou_threshold"):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"to_onnx: {name} must be a number in [0, 1], got {v!r}")
    for name, low in (("topk_per_class", -1), ("max_detections", 1)):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < low or v == 0:
            raise ValueError(f"to_onnx: {name} must be an integer >= 1{' (or -1: all)' if low < 0 else ''}, "
                             f"got {v!r}")
    b = kw["background_class"]
    if isinstance(b, bool) or not isinstance(b, int) or not -1 <= b < model.num_classes:
        raise ValueError(f"to_onnx: background_class must be -1 or a class of the model "
                         f"(0..{model.num_classes - 1}), got {b!r}")
    if not isinstance(kw["clip"], bool):
        raise ValueError(f"to_onnx: clip must be a bool, got {kw['clip']!r}")
    return kw


def _metadata(model: SSD, kw: dict, batch) -> dict:
    H, W = model.image_size
    classes = model.classes or [str(c) for c in range(model.num_classes)]
    return {
        "producer": "ssd_fast.export.to_onnx",
        "arch": model.arch,
        "input": f"images float32 [{'B' if batch == 'dynamic' else batch}, 3, {H}, {W}]: RGB resized to "
                 f"{W}x{H} (no letterbox), then (pixel - mean) / std per channel, pixels 0-255",
        "image_size": f"{H},{W}",
        "normalization": "(x - mean) / std, x in 0..255, RGB",
        "mean": ",".join(f"{m:g}" for m in MEAN),
        "std": ",".join(f"{s:g}" for s in STD),
        "num_classes": str(model.num_classes),
        "classes": json.dumps(classes),
        "outputs": "det_boxes [B, K, 4] x1,y1,x2,y2 pixels of the input; det_scores [B, K]; "
                   "det_labels [B, K] int64 (-1: padding); num_detections [B] int64",
        **{k: str(v) for k, v in kw.items()},
    }


def to_onnx(model: SSD, path: Union[str, os.PathLike], *, batch: Union[str, int] = "dynamic",
            opset: int = DEFAULT_OPSET, score_threshold: Optional[float] = None,
            iou_threshold: Optional[float] = None, topk_per_class: Optional[int] = None,
            max_detections: Optional[int] = None, clip: Optional[bool] = None,
            background_class: Optional[int] = None) -> str:
    """Write ``model`` with its detection tail to ``path`` as ONNX (module docstring).

    Args:
        model: an :class:`~ssd_fast.models.SSD` (any device; exported from a CPU copy, in eval
            mode; the model itself is left as it was).
        path: the ``.onnx`` file, written atomically (a temporary file, then renamed).
        batch: ``"dynamic"`` (default) or the fixed batch size of the graph.
        opset: the ONNX opset, 18..23.
        score_threshold, iou_threshold, topk_per_class, max_detections, clip,
        background_class: the tail's settings; ``None`` keeps the model's
            ``postprocess_defaults`` (those of ``SSD.detect``).

    Returns:
        ``path`` as a string. Needs ``onnx`` and ``onnxscript`` (``pip install .[onnx]``).
    """
    if not isinstance(model, SSD):
        raise TypeError(f"to_onnx: model must be an ssd_fast SSD, got {type(model).__name__}")
    if batch != "dynamic" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"to_onnx: batch must be 'dynamic' or an integer >= 1, got {batch!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"to_onnx: opset {opset!r} is not supported: use {OPSETS.start}..{OPSETS.stop - 1}")
    kw = _settings(model, dict(score_threshold=score_threshold, iou_threshold=iou_threshold,
                               topk_per_class=topk_per_class, max_detections=max_detections, clip=clip,
                               background_class=background_class))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"to_onnx: path {path!r} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise ValueError(f"to_onnx: the folder of {path!r} does not exist")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"to_onnx needs onnx and onnxscript: pip install 'ssd_fast[onnx]' ({e})") from None

    import copy
    net = copy.deepcopy(model).float().cpu().eval()
    detector = ExportableDetector(net, **kw).eval()
    H, W = model.image_size
    example = torch.zeros(2 if batch == "dynamic" else batch, 3, H, W)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1)}} if batch == "dynamic" else None
    import warnings
    quiet = logging.getLogger("onnx_ir")  # warns of an empty attribute list of its own making
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's chatter about its own passes
            program = _export(detector, example, opset, dynamic)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    del proto.metadata_props[:]
    for key, value in _metadata(model, kw, batch).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    _check_standard(proto)
    write_atomically(path, lambda f: f.write(proto.SerializeToString()))
    return path


def _export(detector, example, opset, dynamic):
    return torch.onnx.export(
        detector, (example,), dynamo=True, opset_version=opset, external_data=False,
        input_names=["images"], dynamic_shapes=dynamic,
        output_names=["det_boxes", "det_scores", "det_labels", "num_detections"],
        custom_translation_table={torch.ops.ssd_fast_export.nms_rows.default: _nms_rows_onnx},
        report=False, verbose=False)


def _check_standard(proto) -> None:
    """Every node in the default ONNX domain (no custom ops, no functions left behind)."""
    import onnx
    onnx.checker.check_model(proto, full_check=True)
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign or len(proto.functions):
        raise RuntimeError(f"to_onnx: the graph uses non-standard operators {foreign} or functions "
                           f"{[f.name for f in proto.functions]}: a bug of ssd_fast's exporter")


def metadata(path) -> dict:
    """The metadata ``to_onnx`` wrote into an ONNX file (``image_size``, ``mean``, ...)."""
    import onnx
    return {p.key: p.value for p in onnx.load(os.fspath(path), load_external_data=False).metadata_props}
