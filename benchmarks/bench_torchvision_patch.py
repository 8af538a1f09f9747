"""torchvision's detectors with and without ``ssd_fast.patch_torchvision()``, CPU, one image.

For each of SSD300-VGG16, SSDlite320-MobileNetV3, RetinaNet, Faster R-CNN and FCOS (ResNet50-FPN),
with random weights whose heads are scaled to give about 1000 scores per image above the
model's score threshold (tests/torchvision_detectors.py):

- ``forward``: ``model([image])`` in eval mode under ``no_grad``: resize + normalise, the
  network, the postprocess, the boxes scaled back.
- ``postprocess``: the steps that hold the NMS, alone, on the head outputs captured from that
  forward: ``postprocess_detections`` (SSD, SSDlite, RetinaNet, FCOS); the RPN's
  ``filter_proposals`` + ``roi_heads.postprocess_detections`` (Faster R-CNN).
- ``batched_nms``: the ``batched_nms`` calls of those steps alone, on their captured inputs.

``impl`` torchvision is the model as it is; ssd_fast the same call with the patch on. Both give
the same detections (checked before timing). The image is 480 x 640, COCO's usual size: the FPN
models resize it to 800 x 1067, the SSDs to 300 x 300 and 320 x 320.
"""
import sys
from pathlib import Path

import pytest
import torch
from torchvision.ops import boxes as tv_boxes

import ssd_fast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import torchvision_detectors as detectors  # noqa: E402

IMAGE = (480, 640)
_MODELS = {}


def detector(name):
    """(model, [image], its captured postprocess calls, their batched_nms calls, detections an
    image) of `name`, built once; the outputs of the forward, of the postprocess and of the
    batched_nms calls checked the same with and without the patch (equal scores as sets)."""
    if name not in _MODELS:
        images = detectors.images([IMAGE], seed=7)
        model = detectors.build(name, images)
        expected, calls = detectors.capture_postprocess(name, model, images)
        nms_calls = nms_inputs(calls)
        with torch.no_grad():
            tail, keep = run_postprocess(calls), run_nms(nms_calls)
            with ssd_fast.torchvision_ops():
                detectors.same_detections(model(images), expected)
                patched_tail, patched_keep = run_postprocess(calls), run_nms(nms_calls)
        for a, b in zip(patched_tail, tail):
            detectors.same_detections(as_detections(a), as_detections(b))
        for (boxes, scores, *_), a, b in zip(nms_calls, patched_keep, keep):
            assert torch.equal(scores[a], scores[b]) and set(a.tolist()) == set(b.tolist())
        _MODELS[name] = model, images, calls, nms_calls, len(expected[0]["scores"])
    return _MODELS[name]


def nms_inputs(calls):
    """[(boxes, scores, idxs, iou_threshold)] of the batched_nms calls the postprocess makes."""
    seen = []
    original = tv_boxes.batched_nms

    def record(*args):
        seen.append(args)
        return original(*args)
    tv_boxes.batched_nms = record
    try:
        with torch.no_grad():
            run_postprocess(calls)
    finally:
        tv_boxes.batched_nms = original
    return seen


def run_nms(inputs):
    return [tv_boxes.batched_nms(*args) for args in inputs]  # the patched function when patched


def as_detections(out):
    """A postprocess step's output as a list of detection dicts: postprocess_detections' already
    is one; filter_proposals' (boxes, scores) and roi_heads.postprocess_detections' (boxes,
    scores, labels) are lists by image (proposals: label 0)."""
    if isinstance(out, list):
        return out
    boxes, scores, *labels = out
    labels = labels[0] if labels else [torch.zeros(len(s), dtype=torch.int64) for s in scores]
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)]


def run_postprocess(calls):
    return [fn(*args, **kwargs) for fn, args, kwargs in calls]


# the two impls of a case run one after the other (the topmost parameter varies fastest)
@pytest.mark.parametrize("impl", ["torchvision", "ssd_fast"])
@pytest.mark.parametrize("stage", ["batched_nms", "postprocess", "forward"])
@pytest.mark.parametrize("name", detectors.NAMES)
def test_detector(benchmark, name, stage, impl):
    model, images, calls, nms_calls, detections = detector(name)
    if stage == "forward":
        def call():
            with torch.no_grad():
                return model(images)
    elif stage == "postprocess":
        def call():
            with torch.no_grad():
                return run_postprocess(calls)
    else:
        def call():
            return run_nms(nms_calls)
    benchmark.group = f"{name} {stage} cpu"
    benchmark.extra_info.update(op=f"{name} {stage}", size=f"1 image {IMAGE[0]}x{IMAGE[1]}", device="cpu",
                                impl=impl, threads=torch.get_num_threads(), detections=detections)
    patched = impl == "ssd_fast"
    if patched:
        ssd_fast.patch_torchvision()
    try:
        call()  # warm-up
        benchmark(call)
    finally:
        if patched:
            ssd_fast.unpatch_torchvision()
