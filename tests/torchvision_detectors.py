"""torchvision's detection models with random weights that detect like trained ones in number:
scores spread over (0, 1), about CANDIDATES scores an image above the score threshold. No download: built
on the meta device (no initialisation of the backbones' millions of weights), then given random
weights of our own, the heads scaled on the images they will see. Shared by
tests/test_torchvision_patch.py and benchmarks/bench_torchvision_patch.py.
"""
import contextlib
import math

import torch
from torchvision.models import detection

NAMES = ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn",
         "fasterrcnn_resnet50_fpn", "fcos_resnet50_fpn")

NUM_CLASSES = 91  # COCO's, background included: the builders' default
LOGIT_STD, OFFSET_STD = 2.5, 0.3  # the heads' outputs: spread scores, small box offsets
CANDIDATES = 1000  # scores per image above the score threshold, about


def heads(name, model):
    """[(layers, role)] of a model's heads. `role` is ("offsets", mean) for box offsets; for
    scores ("softmax", threshold) (background logit first) or ("sigmoid", threshold), the score
    a candidate must pass, None where any score goes on (the RPN's objectness)."""
    def layers(*paths):
        return [model.get_submodule(p) for p in paths]
    if name == "ssd300_vgg16" or name.startswith("ssdlite"):
        last = "" if name == "ssd300_vgg16" else ".1"
        n = range(len(model.head.classification_head.module_list))
        return [(layers(*[f"head.classification_head.module_list.{i}{last}" for i in n]),
                 ("softmax", model.score_thresh)),
                (layers(*[f"head.regression_head.module_list.{i}{last}" for i in n]), ("offsets", 0.0))]
    if name.startswith("retinanet"):
        return [(layers("head.classification_head.cls_logits"), ("sigmoid", model.score_thresh)),
                (layers("head.regression_head.bbox_reg"), ("offsets", 0.0))]
    if name.startswith("fcos"):
        # score sqrt(sigmoid(class) * sigmoid(centerness)), the centerness about 1/2
        return [(layers("head.classification_head.cls_logits"), ("sigmoid", 2 * model.score_thresh ** 2)),
                (layers("head.regression_head.bbox_ctrness"), ("sigmoid", None)),
                # distances to the sides, in anchor sizes: about 3, so that neighbours overlap
                (layers("head.regression_head.bbox_reg"), ("offsets", 3.0))]
    if name.startswith("fasterrcnn"):
        return [(layers("rpn.head.cls_logits"), ("sigmoid", None)),
                (layers("rpn.head.bbox_pred"), ("offsets", 0.0)),
                (layers("roi_heads.box_predictor.cls_score"), ("softmax", model.roi_heads.score_thresh)),
                (layers("roi_heads.box_predictor.bbox_pred"), ("offsets", 0.0))]
    raise ValueError(f"unknown detector {name!r}")


def _random_weights(model, gen):
    """He-normal convolutions and linears, zero biases, identity norms (running mean 0,
    variance 1), SSD's L2Norm scale 20."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                m.weight.fill_(1.0)
                m.bias.zero_()
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0)
                    m.num_batches_tracked.zero_()
        for n, p in model.named_parameters():
            if n.endswith("scale_weight"):
                p.fill_(20.0)


@contextlib.contextmanager
def _outputs_of(layers):
    """Collects each layer's outputs while the block runs."""
    seen = {id(layer): [] for layer in layers}
    hooks = [layer.register_forward_hook(lambda mod, args, out: seen[id(mod)].append(out.detach()))
             for layer in layers]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


class _Stop(Exception):
    pass


@contextlib.contextmanager
def _stopped_before(name, model):
    """A forward in the block stops (quietly) where the last step of POSTPROCESS would begin:
    the heads have run, their outputs are all that is needed."""
    owner_path, _, method = POSTPROCESS[name][-1].rpartition(".")
    owner = model.get_submodule(owner_path)

    def stop(*args, **kwargs):
        raise _Stop
    setattr(owner, method, stop)
    try:
        yield
    except _Stop:
        pass
    finally:
        delattr(owner, method)


def _rows(out):
    """A head layer's output as [rows, channels] (a convolution's [B, A * C, H, W] channels last)."""
    return out.movedim(1, -1).reshape(-1, out.shape[1])


def _score_shift(kind, threshold, logits, count):
    """The bias to add so that about `count` scores pass `threshold`, for `logits` [rows, C] (a
    softmax's: the background logit's, column 0)."""
    logits = logits.double()
    if kind == "sigmoid":
        z = logits.flatten()
        return math.log(threshold / (1 - threshold)) - z.kthvalue(max(1, z.numel() - count)).values.item()
    # softmax: class c > 0 of a row passes while b < log((exp(z_c) / threshold - S) / exp(z_0)),
    # S the row's sum of the classes' exp (-inf where it never passes): the count-th largest
    # such bound is the shift
    z = logits.reshape(-1, NUM_CLASSES)
    e = (z - z.max(1, keepdim=True).values).exp()
    bound = (e[:, 1:] / threshold - e[:, 1:].sum(1, keepdim=True)) / e[:, :1]
    bound = torch.where(bound > 0, bound.log(), -math.inf).flatten()
    return bound.kthvalue(max(1, bound.numel() - count)).values.item()


def _scale_heads(name, model, images, gen):
    """Each head layer's weights rescaled so that its output (bias left out) has std LOGIT_STD
    (scores) or OFFSET_STD (box offsets) on `images`; then the biases set: random, plus for the
    score layers with a threshold a shift that lets about CANDIDATES scores an image pass it (a
    softmax's: its background logit's), for box offsets their `offsets` mean. A pass per stage:
    Faster R-CNN's second stage sees proposals only once its first is scaled."""
    groups = heads(name, model)
    layers = [layer for group, _ in groups for layer in group]
    outputs = {}
    with torch.no_grad():
        while len(outputs) < len(layers):
            for layer in layers:
                layer.bias.zero_()
            with _outputs_of(layers) as seen, _stopped_before(name, model):
                model(images)
            for group, role in groups:
                for layer in group:
                    out = torch.cat([_rows(o) for o in seen[id(layer)]])
                    if id(layer) not in outputs and out.numel() > 1:
                        scale = (OFFSET_STD if role[0] == "offsets" else LOGIT_STD) / out.std().item()
                        layer.weight.mul_(scale)
                        outputs[id(layer)] = out * scale
        for group, role in groups:
            for layer in group:
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.05)
            kind, value = role
            if kind == "offsets":
                for layer in group:
                    layer.bias.add_(value)
            elif value is not None:
                width = NUM_CLASSES if kind == "softmax" else 1
                logits = torch.cat([(outputs[id(layer)] + layer.bias).reshape(-1, width) for layer in group])
                shift = _score_shift(kind, value, logits, CANDIDATES * len(images))
                for layer in group:
                    (layer.bias.view(-1, NUM_CLASSES)[:, 0] if kind == "softmax" else layer.bias).add_(shift)


def build(name, images, seed=0, **kwargs):
    """torchvision's `name` (91 COCO classes) in eval mode with random weights, its heads
    scaled on `images` (a list of [3, H, W] tensors in [0, 1]); `kwargs` go to the builder (as
    min_size / max_size for the FPN models)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = getattr(detection, name)(weights=None, weights_backbone=None, **kwargs)
    model.to_empty(device="cpu").eval()
    _random_weights(model, gen)
    _scale_heads(name, model, images, gen)
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        assert t.isfinite().all(), f"{name}: {n} was left uninitialised"
    return model


def images(sizes, seed=1):
    """Smooth random images ([3, H, W] in [0, 1]): noise at 1/8 of the size, upsampled."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        low = torch.rand(1, 3, (h + 7) // 8, (w + 7) // 8, generator=gen)
        out.append(torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear",
                                                   align_corners=False)[0])
    return out


POSTPROCESS = {  # the steps after the network that hold the NMS, by model
    "ssd300_vgg16": ("postprocess_detections",),
    "ssdlite320_mobilenet_v3_large": ("postprocess_detections",),
    "retinanet_resnet50_fpn": ("postprocess_detections",),
    "fcos_resnet50_fpn": ("postprocess_detections",),
    "fasterrcnn_resnet50_fpn": ("rpn.filter_proposals", "roi_heads.postprocess_detections"),
}


def capture_postprocess(name, model, images):
    """Runs `model(images)`; returns its detections and [(bound method, args, kwargs)] of its
    POSTPROCESS steps as they were called, to be timed alone."""
    calls = []
    owners = []
    for path in POSTPROCESS[name]:
        owner_path, _, method = path.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        original = getattr(owner, method)

        def record(*args, _original=original, **kwargs):
            calls.append((_original, args, kwargs))
            return _original(*args, **kwargs)
        setattr(owner, method, record)
        owners.append((owner, method))
    try:
        with torch.no_grad():
            detections = model(images)
    finally:
        for owner, method in owners:
            delattr(owner, method)
    return detections, calls


def same_detections(got, expected):
    """Two detectors' outputs (lists of dicts) are the same: equal scores in the same order,
    and within each run of equal scores the same (label, box) pairs, in any order."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert set(g) == set(e)
        assert torch.equal(g["scores"], e["scores"])
        for d in (g, e):
            assert len(d["labels"]) == len(d["boxes"]) == len(d["scores"])

        def keyed(d):
            return sorted((s, lab, tuple(b)) for s, lab, b in
                          zip(d["scores"].tolist(), d["labels"].tolist(), d["boxes"].tolist()))
        assert keyed(g) == keyed(e)

