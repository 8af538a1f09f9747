"""torchvision's ``nms``, ``batched_nms`` and ``box_iou`` routed to ssd_fast's kernels.

``patch_torchvision()`` replaces the three functions wherever torchvision holds them, so
torchvision's detection models (SSD, SSDlite, RetinaNet, FCOS, Faster/Mask/Keypoint R-CNN) and
any code calling ``torchvision.ops.nms`` & co. run ssd_fast's ops; ``unpatch_torchvision()``
puts torchvision's own functions back; ``with torchvision_ops():`` does both.

Where torchvision holds them (torchvision 0.29; the patch does not rely on this list, it swaps
every module attribute of torchvision that is one of the three functions):

- ``torchvision.ops.boxes.{nms, batched_nms, box_iou}``, looked up at each call as module
  attributes: by the detection models (``from torchvision.ops import boxes as box_ops``, then
  ``box_ops.batched_nms`` in every ``postprocess_detections`` and in the RPN's
  ``filter_proposals``, ``box_ops.box_iou`` in the training matchers) and by torchvision.ops.boxes
  itself (``batched_nms`` calls ``nms``, ``distance_box_iou`` and ``complete_box_iou`` call
  ``box_iou``).
- ``torchvision.ops.{nms, batched_nms, box_iou}`` (``from .boxes import ...``) and
  ``torchvision.transforms.v2._geometry.box_iou`` (``RandomIoUCrop``): bindings of their own.
- A module of torchvision imported while the patch is on binds the patched function: the unpatch
  finds and restores it too.
- ``RegionProposalNetwork.box_similarity`` and ``RoIHeads.box_similarity`` hold ``box_iou`` as
  an instance attribute, taken when the model is built. A model built before the patch keeps
  torchvision's there (the RPN's training matcher is the one user); one built while patched holds
  the patched function, which behaves as torchvision's own once unpatched (every patched function
  runs torchvision's while the patch is off), so nothing captured outlives the patch.

What changes for the user: nothing but speed, with these exceptions (measured against
torchvision 0.29.1 on the CPU; tests/test_torchvision_patch.py):

- The order of detections with exactly equal scores. ssd_fast orders them by index, always.
  torchvision's ``nms`` does too (its CPU sort is stable), and so does its ``batched_nms`` up to
  1000 boxes; above 1000 boxes on the CPU its final sort is not stable: the same kept boxes, the
  same scores in the same order, but equal scores in another order (3000 boxes, 1000 of them
  each three times, 4 score values: 931 of the 935 kept indices at other places than
  ssd_fast's). A detector that cuts its list after sorting (``detections_per_img``, the RPN's
  ``post_nms_top_n``) can then keep another member of a tie that straddles the cut.
- ``batched_nms`` of at most 1000 boxes (4000 numbers; 100k on CUDA): torchvision shifts each
  class's boxes by ``class * (max coordinate + 1)`` and runs one ``nms``, and the shifted
  coordinates are rounded, so an IoU within rounding of ``iou_threshold`` can be decided the
  other way (pairs of 1-2 px boxes in class 79 of 80, coordinates up to 1000, IoU within 1e-3 of
  0.5: 946 of 2000 decided otherwise). ssd_fast decides on the boxes as given, as torchvision's
  ``nms`` of each class alone does, and as its ``batched_nms`` does above 1000 boxes.
- ``box_iou`` of degenerate boxes: where torchvision's IoU is NaN (two zero-area boxes) ssd_fast's
  is 0, and a box with ``x2 < x1`` or ``y2 < y1`` is empty (torchvision gives it a negative area).
  Well-formed float32/float64 boxes give bit-identical values; the gradient (ssd_fast's own
  backward) agrees to rounding.
- ``nms`` / ``batched_nms`` of float16/bfloat16 boxes on the CPU, which torchvision refuses
  ("not implemented for 'Half'"), are computed (IoU in float32).

The five detectors of the tests (random weights, about 1000 candidates an image) give the very
same detections with and without the patch. CUDA was not measured (no GPU when this was written);
ssd_fast's own tests hold its CUDA nms and box_iou to torchvision's.

Which calls ssd_fast takes; all others run torchvision's own function, unchanged, so the patch
never raises where torchvision would not:

- plain ``torch.Tensor`` arguments (not subclasses such as ``tv_tensors.BoundingBoxes``, not FX
  proxies), strided, of one device and dtype, the shapes of the op (``nms``: boxes ``[N, 4]``,
  scores ``[N]``; ``batched_nms``: also idxs ``[N]`` of an integer dtype; ``box_iou``: ``[..., N,
  4]`` and ``[..., M, 4]`` whose leading dims are equal, or one of them has none, and ``fmt`` is
  ``"xyxy"``);
- on the CPU: float16, bfloat16, float32, float64 (``box_iou``: float32, float64, since
  torchvision returns float32 for half boxes); on CUDA, when :func:`ssd_fast.has_cuda_kernels`:
  float32, float64 (torchvision's CUDA NMS computes half IoUs in half). Quantized tensors, integer
  boxes, meta tensors and other devices go to torchvision;
- ``iou_threshold`` a real number in [0, 1] (torchvision also takes others, and NaN).

Compilers and tracers:

- ``torch.jit.script`` of a patched function, or of a model that calls one, compiles
  torchvision's own function (the patched functions are scriptable and take that branch): a
  scripted model is the same with and without the patch, and its saved file needs no ssd_fast.
- ``torch.jit.trace`` and ONNX export through it, and ``torch.export``: the patched functions
  run torchvision's while tracing or exporting, so the graph holds torchvision's ops, as without
  the patch.
- ``torch.compile``: Dynamo traces through the patched functions, and the graph calls
  ``torch.ops.ssd_fast.*`` (which have fake kernels). The NMS output size depends on the data,
  as torchvision's does: without ``fullgraph=True`` (or ``capture_dynamic_output_shape_ops``)
  Dynamo breaks the graph there, and the op runs eagerly, ssd_fast's all the same. Switching the
  patch on or off compiles the other version once (the patch state is guarded).
- ``torch.fx.symbolic_trace``: proxies are not tensors, so torchvision's functions see them, as
  without the patch.
- The torch ops ``torch.ops.torchvision.nms`` / ``qnms`` are left registered as they are: the
  models and ``torchvision.ops`` reach them only through the Python functions patched here, and
  code (or a TorchScript graph) that calls the torch op directly keeps torchvision's kernel.
"""
import contextlib
import numbers
import sys
import threading

import torch
from torch import Tensor
from torchvision.ops import boxes as _tv_boxes

from . import has_cuda_kernels, ops

__all__ = ["patch_torchvision", "unpatch_torchvision", "torchvision_ops"]

_CPU_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
_WIDE_DTYPES = frozenset({torch.float32, torch.float64})
_CUDA = has_cuda_kernels()

# torchvision's functions, as torchvision.ops.boxes holds them when this module is first imported
# (by the first use of ssd_fast.patch_torchvision & co.).
_tv_nms = _tv_boxes.nms
_tv_batched_nms = _tv_boxes.batched_nms
_tv_box_iou = _tv_boxes.box_iou

_lock = threading.Lock()
_active = False  # read by every patched function: off, they are torchvision's
# The patch is on while patch_torchvision() was called (and no unpatch_torchvision() since), or
# while a `with torchvision_ops():` block is open in any thread.
_explicit = False
_blocks = 0


def _dtypes(t: Tensor):
    """The dtypes ssd_fast's NMS takes on the device of `t` (empty: none)."""
    kind = t.device.type
    if kind == "cpu":
        return _CPU_DTYPES
    if kind == "cuda" and _CUDA:
        return _WIDE_DTYPES
    return ()


def _is_threshold(x) -> bool:
    return (type(x) is float or (isinstance(x, numbers.Real) and not isinstance(x, bool))) and 0.0 <= x <= 1.0


def _takes_nms(boxes, scores, iou_threshold) -> bool:
    return (_active and type(boxes) is Tensor and type(scores) is Tensor
            and not torch.jit.is_tracing() and not torch.compiler.is_exporting()
            and boxes.layout == torch.strided and scores.layout == torch.strided
            and boxes.dim() == 2 and boxes.shape[1] == 4 and scores.shape == boxes.shape[:1]
            and scores.dtype == boxes.dtype and scores.device == boxes.device
            and boxes.dtype in _dtypes(boxes) and _is_threshold(iou_threshold))


def _takes_batched_nms(boxes, scores, idxs, iou_threshold) -> bool:
    return (_takes_nms(boxes, scores, iou_threshold) and type(idxs) is Tensor
            and idxs.layout == torch.strided and idxs.shape == scores.shape
            and idxs.device == boxes.device
            and not (idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool))


def _takes_box_iou(boxes1, boxes2, fmt) -> bool:
    if not (_active and type(boxes1) is Tensor and type(boxes2) is Tensor and fmt == "xyxy"
            and not torch.jit.is_tracing() and not torch.compiler.is_exporting()
            and boxes1.layout == torch.strided and boxes2.layout == torch.strided
            and boxes1.dim() >= 2 and boxes2.dim() >= 2
            and boxes1.shape[-1] == 4 and boxes2.shape[-1] == 4
            and boxes1.dtype == boxes2.dtype and boxes1.dtype in _WIDE_DTYPES
            and boxes1.device == boxes2.device and _dtypes(boxes1)):
        return False
    lead1, lead2 = boxes1.shape[:-2], boxes2.shape[:-2]
    return lead1 == lead2 or len(lead1) == 0 or len(lead2) == 0


# The patched functions. Under torch.jit.script the first branch is all that is compiled (the
# rest is dead code to TorchScript), so a scripted caller gets torchvision's function.

def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.nms`` on ssd_fast's kernel (:func:`ssd_fast.ops.nms`): the same indices
    in the same order. Calls ssd_fast does not take run torchvision's function (see
    :mod:`ssd_fast.torchvision_patch`)."""
    if torch.jit.is_scripting():
        return _tv_nms(boxes, scores, iou_threshold)
    if _takes_nms(boxes, scores, iou_threshold):
        return ops.nms(boxes, scores, iou_threshold)
    return _tv_nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms`` on ssd_fast's kernel (:func:`ssd_fast.ops.batched_nms`):
    the boxes torchvision keeps, by score, equal scores by index (torchvision orders those
    otherwise above 1000 boxes on the CPU). Calls ssd_fast does not take run torchvision's
    function."""
    if torch.jit.is_scripting():
        return _tv_batched_nms(boxes, scores, idxs, iou_threshold)
    if _takes_batched_nms(boxes, scores, idxs, iou_threshold):
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)
    return _tv_batched_nms(boxes, scores, idxs, iou_threshold)


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """``torchvision.ops.box_iou`` on ssd_fast's kernel (:func:`ssd_fast.ops.box_iou`) for
    ``"xyxy"`` float32/float64 boxes (bit-identical values for well-formed boxes); other formats,
    dtypes and broadcasts run torchvision's function (``ssd_fast.ops.box_iou`` takes ``"xywh"``
    and ``"cxcywh"`` too, but converts them to corners first, which rounds: here torchvision's
    values are kept)."""
    if torch.jit.is_scripting():
        return _tv_box_iou(boxes1, boxes2, fmt)
    if _takes_box_iou(boxes1, boxes2, fmt):
        return ops.box_iou(boxes1, boxes2)
    return _tv_box_iou(boxes1, boxes2, fmt)


# Keyed by id (the functions live as long as this module): an attribute is looked up by
# identity, never compared with ==.
_ORIGINAL = {id(_tv_nms): nms, id(_tv_batched_nms): batched_nms, id(_tv_box_iou): box_iou}
_PATCHED = {id(nms): _tv_nms, id(batched_nms): _tv_batched_nms, id(box_iou): _tv_box_iou}


def _swap(table) -> None:
    """In every loaded module of torchvision, replace each attribute that is one of `table`'s."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "torchvision" or name.startswith("torchvision.")):
            continue
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            replacement = table.get(id(value))
            if replacement is not None:
                setattr(module, attr, replacement)


def _set_active(active: bool) -> None:
    """Patch or unpatch; the caller holds _lock."""
    global _active
    if active:
        _swap(_ORIGINAL)
        _active = True
    elif _active:
        _active = False
        _swap(_PATCHED)


def patch_torchvision() -> None:
    """Route torchvision's ``nms``, ``batched_nms`` and ``box_iou`` to ssd_fast's ops.

    Every attribute of a loaded torchvision module that is one of the three functions (see
    :mod:`ssd_fast.torchvision_patch` for where they are) is replaced by a function that runs
    ssd_fast's op on the inputs it takes and torchvision's own on the rest. Nothing but speed
    changes, except the order of detections with exactly equal scores (ssd_fast's is by index;
    torchvision's ``batched_nms`` of more than 1000 boxes on the CPU has another), the rounding
    of torchvision's class offsets in ``batched_nms`` of at most 1000 boxes, and ``box_iou`` of
    degenerate boxes (0, not NaN): the module docstring gives the details.

    Idempotent: a second call changes nothing. Thread-safe; the patch stays on after any
    ``with torchvision_ops():`` block ends. Imports torchvision. ::

        import ssd_fast, torchvision
        ssd_fast.patch_torchvision()
        model = torchvision.models.detection.retinanet_resnet50_fpn(weights="DEFAULT").eval()
        detections = model(images)  # its batched_nms is ssd_fast's
    """
    global _explicit
    with _lock:
        _explicit = True
        _set_active(True)


def unpatch_torchvision() -> None:
    """Put torchvision's own ``nms``, ``batched_nms`` and ``box_iou`` back: every attribute of a
    torchvision module that holds a patched function gets torchvision's function again (the very
    same object), and patched functions captured elsewhere run torchvision's. Takes effect at
    once, also inside open ``with torchvision_ops():`` blocks (a block entered later patches
    again). Without a patch, does nothing."""
    global _explicit
    with _lock:
        _explicit = False
        _set_active(False)


@contextlib.contextmanager
def torchvision_ops():
    """``with ssd_fast.torchvision_ops(): ...`` runs the block with the patch on.

    The open blocks of every thread are counted: the patch goes off when the last one ends,
    unless :func:`patch_torchvision` was called (and not undone) before or during them. So blocks
    nest, overlap across threads, and leave a patch made outside in place."""
    global _blocks
    with _lock:
        _blocks += 1
        _set_active(True)
    try:
        yield
    finally:
        with _lock:
            _blocks -= 1
            if _blocks == 0 and not _explicit:
                _set_active(False)
