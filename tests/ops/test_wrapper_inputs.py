"""The public wrappers of ssd_fast.ops (ssd_fast/ops/__init__.py), argument by argument: the
types each argument takes, the TypeError naming the argument and quoting the value for every
other (None, strings, a float where a count belongs, bools), which outputs are differentiable,
and, where torchvision takes an input, the same answer as torchvision.

The kernels' own checks (shapes, dtypes, devices, value ranges) have their tables in the op's
test file (test_box_ops.py, test_nms.py, ...); this table is the wrappers' layer above them."""
import re

import numpy as np
import pytest
import torch
import torchvision

from ssd_fast import ops
from emu_device import opcheck


# ---------------------------------------------------------------------------------------------
# Valid arguments of every wrapper, all of them by name: a bad-input row changes exactly one.

def _boxes(gen, *shape, scale=1.0):
    xy = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * scale
    wh = (torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * 0.4 + 0.05) * scale
    return torch.cat([xy, xy + wh], -1)


def valid_arguments(name, gen, dtype=torch.float32):
    """Keyword arguments on which ops.<name> runs (on the CPU; see `on`)."""
    B, G, P, C = 2, 3, 12, 4
    boxes = _boxes(gen, P).to(dtype)
    gt = _boxes(gen, B, G).to(dtype)
    labels = torch.tensor([[1, 2, -1], [3, 1, 2]])
    scores = torch.rand(P, generator=gen, dtype=torch.float64).to(dtype)
    probs = torch.softmax(torch.randn(B, P, C, generator=gen, dtype=torch.float64), -1).to(dtype)
    loc = (torch.randn(B, P, 4, generator=gen, dtype=torch.float64) * 0.5).to(dtype)
    prior_labels = torch.randint(0, C, (B, P), generator=gen)
    return {
        "box_iou": lambda: dict(boxes1=gt, boxes2=boxes, fmt="xyxy"),
        "encode_boxes": lambda: dict(gt=_boxes(gen, B, P).to(dtype), priors=boxes, variances=(0.1, 0.1, 0.2, 0.2)),
        "decode_boxes": lambda: dict(offsets=loc, priors=boxes, variances=(0.1, 0.1, 0.2, 0.2)),
        "match_priors": lambda: dict(gt_boxes=gt, gt_labels=labels, priors=boxes,
                                     iou_threshold=0.5, mode="bipartite"),
        "ssd_targets": lambda: dict(gt_boxes=gt, gt_labels=labels, priors=boxes,
                                    iou_threshold=0.5, variances=(0.1, 0.1, 0.2, 0.2),
                                    mode="argmax"),
        "hard_negative_mining": lambda: dict(conf_loss=probs[..., 0], labels=prior_labels,
                                             neg_pos_ratio=3.0, matched_iou=probs[..., 1],
                                             neg_overlap=0.5),
        "multibox_loss": lambda: dict(loc=loc, conf_logits=probs.log(), loc_targets=loc.flip(1),
                                      labels=prior_labels, neg_pos_ratio=3.0),
        "nms": lambda: dict(boxes=boxes, scores=scores, iou_threshold=0.5),
        "batched_nms": lambda: dict(boxes=boxes, scores=scores, idxs=prior_labels[0],
                                    iou_threshold=0.5),
        "multiclass_nms": lambda: dict(boxes=_boxes(gen, B, P).to(dtype), scores=probs,
                                       score_threshold=0.01, iou_threshold=0.45,
                                       topk_per_class=400, max_detections=20, background_class=0),
        "ssd_postprocess": lambda: dict(loc=loc, conf_logits=probs.log(), priors=boxes,
                                        variances=(0.1, 0.1, 0.2, 0.2), clip=False,
                                        score_threshold=0.01, iou_threshold=0.45,
                                        topk_per_class=400, max_detections=20, background_class=0),
    }[name]()


def on(kwargs, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


# What each argument of each wrapper is: a tensor, an optional tensor, a number (`real`), a count,
# the variances, a bool, a mode string, a box format string.
ARGUMENTS = {
    "box_iou": {"boxes1": "tensor", "boxes2": "tensor", "fmt": "fmt"},
    "encode_boxes": {"gt": "tensor", "priors": "tensor", "variances": "variances"},
    "decode_boxes": {"offsets": "tensor", "priors": "tensor", "variances": "variances"},
    "match_priors": {"gt_boxes": "tensor", "gt_labels": "tensor", "priors": "tensor",
                     "iou_threshold": "real", "mode": "mode"},
    "ssd_targets": {"gt_boxes": "tensor", "gt_labels": "tensor", "priors": "tensor",
                    "iou_threshold": "real", "variances": "variances", "mode": "mode"},
    "hard_negative_mining": {"conf_loss": "tensor", "labels": "tensor", "neg_pos_ratio": "real",
                             "matched_iou": "optional_tensor", "neg_overlap": "real"},
    "multibox_loss": {"loc": "tensor", "conf_logits": "tensor", "loc_targets": "tensor",
                      "labels": "tensor", "neg_pos_ratio": "real"},
    "nms": {"boxes": "tensor", "scores": "tensor", "iou_threshold": "real"},
    "batched_nms": {"boxes": "tensor", "scores": "tensor", "idxs": "tensor",
                    "iou_threshold": "real"},
    "multiclass_nms": {"boxes": "tensor", "scores": "tensor", "score_threshold": "real",
                       "iou_threshold": "real", "topk_per_class": "count",
                       "max_detections": "count", "background_class": "count"},
    "ssd_postprocess": {"loc": "tensor", "conf_logits": "tensor", "priors": "tensor",
                        "variances": "variances", "clip": "bool", "score_threshold": "real",
                        "iou_threshold": "real", "topk_per_class": "count",
                        "max_detections": "count", "background_class": "count"},
}


def test_arguments_cover_every_wrapper_and_argument():
    import inspect
    public = {n for n in ops.__all__ if callable(getattr(ops, n)) and n != "reference"}
    assert set(ARGUMENTS) == public
    for name, args in ARGUMENTS.items():
        assert list(args) == list(inspect.signature(getattr(ops, name)).parameters), name


FORMATS = "'xyxy', 'xywh', 'cxcywh', 'cxcywhr', 'xywhr', 'xyxyxyxy'"  # torchvision 0.29's

# Per kind of argument: (id, bad value, exception, what the message must say after "got ").
_TENSOR_BAD = [("none", None, TypeError, "None (NoneType)"),
               ("str", "boxes", TypeError, "'boxes' (str)"),
               ("list", [[0.0, 0.0, 1.0, 1.0]], TypeError, "[[0.0, 0.0, 1.0, 1.0]] (list)"),
               ("ndarray", np.zeros(4), TypeError, "array([0., 0., 0., 0.]) (ndarray)"),
               ("long_str", "x" * 100, TypeError, f"'{'x' * 56}... (str)"),
               ("number", 0.5, TypeError, "0.5 (float)")]
_REAL_BAD = [("none", None, TypeError, "None (NoneType)"),
             ("str", "0.5", TypeError, "'0.5' (str)"),
             ("bool", True, TypeError, "True (bool)"),
             ("complex", 0.5j, TypeError, "0.5j (complex)"),
             ("list", [0.5], TypeError, "[0.5] (list)"),
             ("bool_tensor", torch.tensor(True), TypeError, "a bool tensor of shape []"),
             ("two_element_tensor", torch.tensor([0.5, 0.5]), TypeError,
              "a float32 tensor of shape [2]")]
_COUNT_BAD = [("float", 2.7, TypeError, "2.7 (float)"),
              ("float_near_int", 2.9, TypeError, "2.9 (float)"),
              ("half", 0.5, TypeError, "0.5 (float)"),
              ("int_valued_float", 3.0, TypeError, "3.0 (float)"),
              ("numpy_float", np.float64(3.0), TypeError, "np.float64(3.0) (float64)"),
              ("float_tensor", torch.tensor(3.0), TypeError, "a float32 tensor of shape []"),
              ("bool", True, TypeError, "True (bool)"),
              ("bool_false", False, TypeError, "False (bool)"),
              ("bool_tensor", torch.tensor(True), TypeError, "a bool tensor of shape []"),
              ("none", None, TypeError, "None (NoneType)"),
              ("str", "3", TypeError, "'3' (str)")]
_BAD = {
    "tensor": [(i, v, e, f"must be a Tensor, got {m}") for i, v, e, m in _TENSOR_BAD],
    "optional_tensor": [(i, v, e, f"must be a Tensor or None, got {m}")
                        for i, v, e, m in _TENSOR_BAD if v is not None],
    "real": [(i, v, e, f"must be a number, got {m}") for i, v, e, m in _REAL_BAD],
    "count": [(i, v, e, f"must be an int, got {m}") for i, v, e, m in _COUNT_BAD],
    "bool": [("none", None, TypeError, "must be a bool, got None (NoneType)"),
             ("str", "no", TypeError, "must be a bool, got 'no' (str)"),
             ("int", 1, TypeError, "must be a bool, got 1 (int)"),
             ("bool_tensor", torch.tensor(False), TypeError,
              "must be a bool, got a bool tensor of shape []")],
    "mode": [("none", None, TypeError, "must be 'bipartite' or 'argmax', got None (NoneType)"),
             ("int", 0, TypeError, "must be 'bipartite' or 'argmax', got 0 (int)"),
             ("unknown", "greedy", ValueError, "must be 'bipartite' or 'argmax', got 'greedy'")],
    "fmt": [(case, value, exc, f"must be one of {FORMATS}, got {shown}") for case, value, exc, shown in [
        ("none", None, TypeError, "None (NoneType)"),
        ("int", 0, TypeError, "0 (int)"),
        ("bytes", b"xyxy", TypeError, "b'xyxy' (bytes)"),
        ("list", ["xyxy"], TypeError, "['xyxy'] (list)"),
        ("unknown", "xyzw", ValueError, "'xyzw'"),
        ("upper_case", "XYXY", ValueError, "'XYXY'"),  # tv_tensors' name: box_iou takes lower case
        ("empty", "", ValueError, "''")]],
    "variances": [
        ("none", None, TypeError, "must be a list, tuple or 1-D tensor of numbers, got None (NoneType)"),
        ("str", "0.1", TypeError, "must be a list, tuple or 1-D tensor of numbers, got '0.1' (str)"),
        ("number", 0.1, TypeError, "must be a list, tuple or 1-D tensor of numbers, got 0.1 (float)"),
        ("set", {0.1}, TypeError, "must be a list, tuple or 1-D tensor of numbers, got {0.1} (set)"),
        ("tensor_2d", torch.ones(2, 2), TypeError,
         "must be a list, tuple or 1-D tensor of numbers, got a float32 tensor of shape [2, 2]"),
        ("str_element", (0.1, "0.1", 0.2, 0.2), TypeError, None),
        ("none_element", [0.1, 0.1, None, 0.2], TypeError, None),
        ("bool_element", (0.1, 0.1, 0.2, True), TypeError, None),
        ("short", (0.1, 0.1, 0.2), ValueError,
         "must be 4 positive finite numbers, got [0.1, 0.1, 0.2]")],
}
# The element rows name the element: variances[i].
_ELEMENT_MESSAGES = {"str_element": "variances[1] must be a number, got '0.1' (str)",
                     "none_element": "variances[2] must be a number, got None (NoneType)",
                     "bool_element": "variances[3] must be a number, got True (bool)"}


def _rows():
    for op, args in ARGUMENTS.items():
        for arg, kind in args.items():
            for case, value, exc, tail in _BAD[kind]:
                message = _ELEMENT_MESSAGES[case] if tail is None else f"{arg} {tail}"
                yield f"{op}-{arg}-{case}", (op, arg, value, exc, f"^{re.escape(f'{op}: {message}')}$")


BAD_ARGUMENTS = dict(_rows())
# Rows that are not one kind's: the mixes the wrappers refuse, and an op's own message that a
# wrapper must leave as it is.
BAD_ARGUMENTS.update({
    "box_iou-boxes2-float_with_integer": (
        "box_iou", "boxes2", torch.zeros(5, 4, dtype=torch.int64), RuntimeError,
        "^" + re.escape("box_iou: boxes1 and boxes2 must both be integer, or both floating point "
                        "of one dtype, got float32 and int64") + "$"),
    "box_iou-boxes2-bool": (
        "box_iou", "boxes2", torch.zeros(5, 4, dtype=torch.bool), RuntimeError,
        "^" + re.escape("box_iou: boxes2 must be float16, bfloat16, float32 or float64, got bool")
        + "$"),
    "nms-boxes-empty_1d": (  # torchvision's nms refuses it too ("boxes should be a 2d tensor")
        "nms", "boxes", torch.zeros(0), RuntimeError,
        "^" + re.escape("nms: boxes must have shape [N, 4], got [0]") + "$"),
    "batched_nms-boxes-empty_wrong_last_dim": (  # not empty boxes: [0, 5] is no box layout
        "batched_nms", "boxes", torch.zeros(0, 5), RuntimeError,
        "^" + re.escape("batched_nms: boxes must have shape [N, 4], got [0, 5]") + "$"),
    "multiclass_nms-topk_per_class-zero": (
        "multiclass_nms", "topk_per_class", 0, ValueError,
        "^" + re.escape("multiclass_nms: topk_per_class must be positive or -1 (no limit), got 0")
        + "$"),
})


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_argument_raises(device, gen, case):
    op, arg, value, exc, pattern = BAD_ARGUMENTS[case]
    kwargs = on(valid_arguments(op, gen), device)
    kwargs[arg] = value.to(device) if isinstance(value, torch.Tensor) else value
    with pytest.raises(exc, match=pattern):
        getattr(ops, op)(**kwargs)


@pytest.mark.parametrize("op", ARGUMENTS)
def test_valid_arguments_run(device, gen, op):
    # the table's baseline: each of its errors comes from the one argument it changes
    getattr(ops, op)(**on(valid_arguments(op, gen), device))


# ---------------------------------------------------------------------------------------------
# What the wrappers accept: the numbers torch's op schemas take, read without rounding.

def _same(a, b):
    a, b = (a,) if isinstance(a, torch.Tensor) else a, (b,) if isinstance(b, torch.Tensor) else b
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("value", [np.float64(0.3), np.float32(0.375), 0, 1, np.int64(1),
                                   torch.tensor(0.375), torch.tensor([0.3], dtype=torch.float64),
                                   torch.tensor(1)],
                         ids=["np_float64", "np_float32", "int_0", "int_1", "np_int64",
                              "tensor_0d", "tensor_1_element", "int_tensor"])
@pytest.mark.parametrize("op, arg", [("nms", "iou_threshold"), ("batched_nms", "iou_threshold"),
                                     ("match_priors", "iou_threshold"),
                                     ("multiclass_nms", "score_threshold"),
                                     ("hard_negative_mining", "neg_pos_ratio")])
def test_numbers_of_any_real_type(device, gen, op, arg, value):
    kwargs = on(valid_arguments(op, gen), device)
    expected = getattr(ops, op)(**{**kwargs, arg: float(value)})
    assert _same(getattr(ops, op)(**{**kwargs, arg: value}), expected)


def test_tensor_threshold_as_torchvision(gen):
    kwargs = valid_arguments("nms", gen)
    thr = torch.tensor(0.05)
    assert torch.equal(ops.nms(kwargs["boxes"], kwargs["scores"], thr),
                       torchvision.ops.nms(kwargs["boxes"], kwargs["scores"], thr))


@pytest.mark.parametrize("value", [np.int64(3), np.int32(3), torch.tensor(3), torch.tensor([3])],
                         ids=["np_int64", "np_int32", "tensor_0d", "tensor_1_element"])
@pytest.mark.parametrize("arg", ["topk_per_class", "max_detections", "background_class"])
@pytest.mark.parametrize("op", ["multiclass_nms", "ssd_postprocess"])
def test_counts_of_any_integer_type(device, gen, op, arg, value):
    kwargs = on(valid_arguments(op, gen), device)
    got = getattr(ops, op)(**{**kwargs, arg: value})
    assert _same(got, getattr(ops, op)(**{**kwargs, arg: 3}))


@pytest.mark.parametrize("variances", [[0.1, 0.1, 0.2, 0.2], (0.1, 0.1, 0.2, 0.2),
                                       torch.tensor([0.1, 0.1, 0.2, 0.2], dtype=torch.float64),
                                       (np.float64(0.1), 0.1, np.float64(0.2), 0.2), (1, 1, 1, 1)],
                         ids=["list", "tuple", "tensor", "numpy_numbers", "ints"])
@pytest.mark.parametrize("op", ["encode_boxes", "decode_boxes", "ssd_targets", "ssd_postprocess"])
def test_variances_as_any_sequence(device, gen, op, variances):
    kwargs = on(valid_arguments(op, gen), device)
    expected = getattr(ops, op)(**{**kwargs, "variances": [float(v) for v in variances]})
    assert _same(getattr(ops, op)(**{**kwargs, "variances": variances}), expected)


# ---------------------------------------------------------------------------------------------
# Differentiability: only box_iou, encode/decode and multibox_loss have a gradient; the other
# ops' outputs (indices, masks, matches, detections) never claim one.

NON_DIFFERENTIABLE = ["match_priors", "ssd_targets", "hard_negative_mining", "nms", "batched_nms",
                      "multiclass_nms", "ssd_postprocess"]


def _requiring_grad(kwargs, dtype):
    return {k: v.to(dtype).requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point()
            else v for k, v in kwargs.items()}


@pytest.mark.parametrize("op", NON_DIFFERENTIABLE)
def test_non_differentiable_outputs_do_not_require_grad(device, gen, op):
    kwargs = _requiring_grad(on(valid_arguments(op, gen), device), torch.float64)
    outputs = getattr(ops, op)(**kwargs)
    for out in (outputs,) if isinstance(outputs, torch.Tensor) else outputs:
        assert not out.requires_grad and out.grad_fn is None


def test_a_loss_through_detections_says_there_is_no_gradient(gen):
    kwargs = _requiring_grad(valid_arguments("ssd_postprocess", gen), torch.float64)
    _, det_scores, _, _ = ops.ssd_postprocess(**kwargs)
    with pytest.raises(RuntimeError, match="does not require grad"):
        det_scores.sum().backward()


@pytest.mark.parametrize("op", NON_DIFFERENTIABLE)
def test_opcheck_with_inputs_requiring_grad(device, gen, op):
    # opcheck's test_autograd_registration (CPU) runs with these inputs: the ops are registered
    # as not differentiable, not left to the autograd fallback
    kwargs = _requiring_grad(on(valid_arguments(op, gen), device), torch.float64)
    schema = getattr(torch.ops.ssd_fast, op).default._schema
    args = [kwargs[a.name] for a in schema.arguments]
    args = [list(map(float, a)) if isinstance(a, tuple) else a for a in args]
    # nms, batched_nms: a data-dependent output size, which the static AOT test cannot trace
    # (test_nms.py's opcheck skips it for the same reason)
    skip = ("test_aot_dispatch_static",) if op in ("nms", "batched_nms") else ()
    opcheck(getattr(torch.ops.ssd_fast, op).default, args, skip=skip)


def _targets_and_detections(gt, labels, priors, loc, logits):
    loc_t, _, iou = ops.ssd_targets(gt, labels, priors)
    return (loc_t, iou, ops.match_priors(gt, labels, priors)[1],
            *ops.ssd_postprocess(loc, logits, priors, max_detections=20),
            *ops.multiclass_nms(ops.decode_boxes(loc, priors), torch.softmax(logits, -1),
                                max_detections=20))


def test_non_differentiable_under_torch_compile(device, gen):
    t = valid_arguments("ssd_targets", gen, torch.float64)
    p = valid_arguments("ssd_postprocess", gen, torch.float64)
    args = [x.to(device) for x in (t["gt_boxes"], t["gt_labels"], t["priors"], p["loc"],
                                   p["conf_logits"])]
    for x in args:
        if x.is_floating_point():
            x.requires_grad_()
    torch._dynamo.reset()
    compiled = torch.compile(_targets_and_detections, backend="aot_eager", fullgraph=True)
    for got, expected in zip(compiled(*args), _targets_and_detections(*args)):
        assert not got.requires_grad and not expected.requires_grad
        assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------
# Drop-in with torchvision where torchvision takes the input

@pytest.mark.parametrize("others", [(None, None, None), ("x", 1, -3.0), "valid"],
                         ids=["none", "garbage", "valid"])
@pytest.mark.parametrize("boxes", [torch.zeros(0), torch.zeros(0, 4),
                                   torch.zeros(0, 4, dtype=torch.int64),
                                   torch.zeros(0, 4, dtype=torch.float16)],
                         ids=["1d", "2d", "int64", "float16"])
def test_batched_nms_of_no_boxes_is_empty_as_torchvision(device, boxes, others):
    if others == "valid":
        others = (torch.zeros(0, dtype=boxes.dtype if boxes.is_floating_point() else torch.float32),
                  torch.zeros(0, dtype=torch.int64), 0.5)
    expected = torchvision.ops.batched_nms(boxes, *others)
    got = ops.batched_nms(boxes.to(device), *[o.to(device) if isinstance(o, torch.Tensor) else o
                                              for o in others])
    assert got.dtype == expected.dtype == torch.int64
    assert got.shape == expected.shape == (0,)
    assert got.device.type == device.type


def test_nms_of_a_1d_empty_tensor_raises_as_torchvision(device):
    with pytest.raises(RuntimeError, match="boxes should be a 2d tensor, got 1D"):
        torchvision.ops.nms(torch.zeros(0), torch.zeros(0), 0.5)
    with pytest.raises(RuntimeError, match=re.escape("nms: boxes must have shape [N, 4], got [0]")):
        ops.nms(torch.zeros(0, device=device), torch.zeros(0, device=device), 0.5)


def _integer_boxes(gen, *shape, high=200, sides=(1, 120)):
    """Well-formed int64 boxes: corners in [0, high), sides in [sides[0], sides[1])."""
    xy = torch.randint(0, high, (*shape, 2), generator=gen)
    wh = torch.randint(*sides, (*shape, 2), generator=gen)
    return torch.cat([xy, xy + wh], -1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("shapes", [((7,), (9,)), ((2, 7), (2, 9)), ((2, 7), (9,)), ((0,), (9,))],
                         ids=["plain", "batched", "shared", "empty"])
def test_box_iou_of_integer_boxes_as_torchvision(device, gen, dtype, shapes):
    high, sides = (60, (1, 60)) if dtype in (torch.uint8, torch.int8) else (200, (1, 120))
    boxes1 = _integer_boxes(gen, *shapes[0], high=high, sides=sides).to(dtype)
    boxes2 = _integer_boxes(gen, *shapes[1], high=high, sides=sides).to(dtype)
    # uint8: torchvision subtracts the corners of disjoint boxes in uint8, which wraps around
    # (IoU > 1); its answer for the same boxes in int16 is the true one, and ours for uint8
    expected = torchvision.ops.box_iou(*[b.to(torch.int16) if dtype == torch.uint8 else b
                                         for b in (boxes1, boxes2)])
    got = ops.box_iou(boxes1.to(device), boxes2.to(device))
    assert got.dtype == expected.dtype == torch.float32 and got.device.type == device.type
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)


def _as_format(boxes, fmt):
    return torchvision.ops.box_convert(boxes, "xyxy", fmt) if fmt != "xyxy" else boxes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_iou_of_every_axis_aligned_format_as_torchvision(device, gen, fmt, dtype):
    if dtype == torch.int64:
        boxes1, boxes2 = _integer_boxes(gen, 2, 7, sides=(2, 120)), _integer_boxes(gen, 9, sides=(2, 120))
        for b in (boxes1, boxes2):
            b[..., 2:] -= (b[..., 2:] - b[..., :2]) % 2  # even sides: integer centres
    else:
        boxes1, boxes2 = _boxes(gen, 2, 7, scale=100).to(dtype), _boxes(gen, 9, scale=100).to(dtype)
    boxes1, boxes2 = (_as_format(b, fmt).to(dtype) for b in (boxes1, boxes2))
    expected = torchvision.ops.box_iou(boxes1, boxes2, fmt=fmt)
    got = ops.box_iou(boxes1.to(device), boxes2.to(device), fmt=fmt)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert (expected > 0).sum() >= 5
    # the other formats are converted to corners first, which rounds (torchvision's areas are
    # w * h): within a few ulps of the IoU
    exact = fmt == "xyxy" or dtype == torch.int64
    torch.testing.assert_close(got.cpu(), expected, rtol=0 if exact else 8 * torch.finfo(expected.dtype).eps,
                               atol=0 if exact else torch.finfo(expected.dtype).eps)
    assert torch.equal(ops.box_iou(boxes1, boxes2, fmt), got.cpu())  # positional, as torchvision's


def test_box_iou_of_other_formats_is_differentiable(gen):
    boxes1 = _as_format(_boxes(gen, 4), "cxcywh").requires_grad_()
    boxes2 = _as_format(_boxes(gen, 5), "cxcywh").requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ops.box_iou(a, b, fmt="cxcywh"), (boxes1, boxes2))


@pytest.mark.parametrize("fmt", ["cxcywhr", "xywhr", "xyxyxyxy"])
def test_box_iou_of_rotated_formats_is_torchvision_s(gen, fmt):
    boxes = torch.cat([_as_format(_boxes(gen, 6, scale=50), "cxcywh"),
                       torch.rand(6, 1, generator=gen, dtype=torch.float64) * 90], -1).float()
    boxes = torchvision.ops.box_convert(boxes, "cxcywhr", fmt)
    expected = torchvision.ops.box_iou(boxes, boxes[:4], fmt=fmt)
    assert torch.equal(ops.box_iou(boxes, boxes[:4], fmt=fmt), expected)


def test_box_iou_of_large_integer_boxes_as_torchvision(device, gen):
    # Areas just below 2^24 and overlapping by all but a strip: area1 + area2 is above 2^24 (so
    # float32 arithmetic on the coordinates rounds it when odd) while the union is below it.
    # torchvision's integer arithmetic is exact, as float64 is, and then divides once.
    boxes1 = _integer_boxes(gen, 60, high=20, sides=(3500, 4000))
    boxes2 = _integer_boxes(gen, 50, high=20, sides=(3500, 4000))
    expected = torchvision.ops.box_iou(boxes1, boxes2)
    assert not torch.equal(ops.box_iou(boxes1.float(), boxes2.float()), expected)  # the trap
    got = ops.box_iou(boxes1.to(device), boxes2.to(device))
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)


def test_box_iou_of_integer_boxes_in_the_default_dtype(device, gen):
    boxes1, boxes2 = _integer_boxes(gen, 5), _integer_boxes(gen, 6)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        expected = torchvision.ops.box_iou(boxes1, boxes2)
        got = ops.box_iou(boxes1.to(device), boxes2.to(device))
    finally:
        torch.set_default_dtype(default)
    assert got.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)
    # the float64 values, exactly: the IoU of the same boxes given as float64
    assert torch.equal(got, ops.box_iou(boxes1.double().to(device), boxes2.double().to(device)))
