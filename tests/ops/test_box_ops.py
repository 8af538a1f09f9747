"""box_iou, encode_boxes and decode_boxes (SPEC §1, §2) on every device, against the
pure-PyTorch references of ssd_fast.ops.reference and against torchvision."""
import itertools
import math
import re

import mpmath  # torch's own dependency (sympy): exact references
import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_fast import ops
from ssd_fast.ops import reference as ref

from _fake_parity import assert_fake_raises_the_same
from emu_device import opcheck

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
HALF_DTYPES = [torch.float16, torch.bfloat16]
EPS = {dt: torch.finfo(dt).eps for dt in DTYPES}
OTHER_VARIANCES = (0.2, 0.3, 0.5, 0.4)
NAN, INF = math.nan, math.inf


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")

OPS = {"box_iou": ops.box_iou, "encode_boxes": ops.encode_boxes, "decode_boxes": ops.decode_boxes}
REFS = {"box_iou": ref.box_iou, "encode_boxes": ref.encode_boxes,
        "decode_boxes": ref.decode_boxes}


# ---------------------------------------------------------------------------------------------
# Inputs: built in float64 on the CPU from the seeded `gen`, then cast and moved by each test.

def random_boxes(gen, *shape, scale=100.0, min_size=0.5):
    """Well-formed boxes [*shape, 4]: x1, y1 in [0, scale], sizes min_size + [0, scale / 2]."""
    xy = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * scale
    wh = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * (scale / 2) + min_size
    return torch.cat([xy, xy + wh], dim=-1)


def random_offsets(gen, *shape, scale=2.0):
    return torch.randn(*shape, 4, generator=gen, dtype=torch.float64) * scale


def nested_in(gen, outer):
    """A box strictly inside each box of `outer`."""
    f = torch.rand(*outer.shape[:-1], 4, generator=gen, dtype=torch.float64) * 0.4 + 0.05
    w = outer[..., 2:] - outer[..., :2]
    return torch.cat([outer[..., :2] + f[..., :2] * w, outer[..., 2:] - f[..., 2:] * w], dim=-1)


DEGENERATE = torch.tensor([
    [5.0, 5.0, 5.0, 15.0],    # zero width
    [5.0, 5.0, 15.0, 5.0],    # zero height
    [5.0, 5.0, 5.0, 5.0],     # a point
    [15.0, 5.0, 5.0, 15.0],   # x2 < x1: zero area
    [5.0, 15.0, 15.0, 5.0],   # y2 < y1: zero area
    [15.0, 15.0, 5.0, 5.0],   # both inverted: zero area (not (-10) * (-10))
    [0.0, 0.0, 20.0, 20.0],   # contains all of the above
    [20.0, 0.0, 30.0, 20.0],  # shares an edge with the previous one
    [30.0, 20.0, 40.0, 30.0],  # shares a corner with the previous one
], dtype=torch.float64)


def _iou_random(gen):
    return random_boxes(gen, 37), random_boxes(gen, 53)  # not multiples of any SIMD width


def _iou_degenerate(gen):
    return DEGENERATE, torch.cat([DEGENERATE, random_boxes(gen, 8, scale=30.0)])


def _iou_identical(gen):
    b = random_boxes(gen, 20)
    return b, b.clone()


def _iou_nested(gen):
    outer = random_boxes(gen, 16)
    inner = nested_in(gen, outer)
    return torch.cat([outer, inner]), torch.cat([inner, outer])


def _iou_far_apart(gen):
    return random_boxes(gen, 12), random_boxes(gen, 9) + 1e4


IOU_CASES = {"random": _iou_random, "degenerate": _iou_degenerate, "identical": _iou_identical,
             "nested": _iou_nested, "far_apart": _iou_far_apart}


def _encode_random(gen):
    return random_boxes(gen, 41), random_boxes(gen, 41)


def _encode_degenerate(gen):
    # zero-size gt -> -inf log terms, inverted gt -> NaN, zero-size priors -> inf / NaN terms
    priors = torch.cat([random_boxes(gen, len(DEGENERATE)), DEGENERATE])
    return torch.cat([DEGENERATE, random_boxes(gen, len(DEGENERATE))]), priors


def _encode_identical(gen):
    b = random_boxes(gen, 20)
    return b, b.clone()


def _encode_nested(gen):
    priors = random_boxes(gen, 24)
    return nested_in(gen, priors), priors


def _encode_far_apart(gen):
    return random_boxes(gen, 15) + 1e4, random_boxes(gen, 15)


ENCODE_CASES = {"random": _encode_random, "degenerate": _encode_degenerate,
                "identical": _encode_identical, "nested": _encode_nested,
                "far_apart": _encode_far_apart}


def _decode_random(gen):
    return random_offsets(gen, 41), random_boxes(gen, 41)


def _decode_zero(gen):
    return torch.zeros(20, 4, dtype=torch.float64), random_boxes(gen, 20)


def _decode_large(gen):
    # |tw|, |th| up to 60: exp(12) * prior size overflows float16, not float32.
    t = random_offsets(gen, 30)
    t[:, 2:] = torch.linspace(-60, 60, 60, dtype=torch.float64).view(30, 2)
    return t, random_boxes(gen, 30)


def _decode_degenerate_priors(gen):
    return random_offsets(gen, len(DEGENERATE)), DEGENERATE


DECODE_CASES = {"random": _decode_random, "zero": _decode_zero, "large": _decode_large,
                "degenerate_priors": _decode_degenerate_priors}


# ---------------------------------------------------------------------------------------------
# Comparisons

def check_against_reference(out, name, inputs, *extra):
    """`out` = the op `name` run on `inputs` (all of out's dtype, on any device).

    1. Against the reference run on the same dtype (it also computes in float32 for half
       types, then rounds): the same NaN and inf positions, and finite values within a couple
       of ulps of the dtype, measured on the magnitude of their column (x - 0.5 * w cancels:
       one ulp of difference in exp(...) is one ulp of the coordinates, not of the result).
    2. Against the reference in float64 on the same (rounded) inputs: the op's error is at
       most a few times that of plain PyTorch in this dtype (flash-attention's rule).
    """
    dtype = inputs[0].dtype
    inputs = [t.cpu() for t in inputs]
    out = out.cpu()
    same = REFS[name](*inputs, *extra)
    assert out.dtype == dtype
    assert out.shape == same.shape
    o, s = out.double(), same.double()
    assert torch.equal(o.isnan(), s.isnan())
    assert torch.equal(o.isinf(), s.isinf()) and torch.equal(o[s.isinf()], s[s.isinf()])
    finite = s.isfinite()
    if finite.any():
        column_scale = s.where(finite, 0).abs().reshape(-1, s.shape[-1]).amax(0)
        tol = 2 * EPS[dtype] * (s.abs() + column_scale)
        bad = ((o - s).abs() > tol) & finite
        assert not bad.any(), (o[bad][:5].tolist(), s[bad][:5].tolist())
    exact = REFS[name](*[t.double() for t in inputs], *extra)
    finite = exact.isfinite() & same.isfinite()
    if finite.any():
        err = (out.double() - exact)[finite].abs().max().item()
        ref_err = (same.double() - exact)[finite].abs().max().item()
        slack = 4 * EPS[dtype] * max(1.0, exact[finite].abs().max().item())
        assert err <= 2 * ref_err + slack, (err, ref_err)


IOU_ATOL = {torch.float16: EPS[torch.float16], torch.bfloat16: EPS[torch.bfloat16],
            torch.float32: 8 * EPS[torch.float32], torch.float64: 8 * EPS[torch.float64]}


def check_iou(out, boxes1, boxes2):
    """box_iou equals the reference bit for bit (same arithmetic in the same order, no FMA
    contraction; half types compute in float32 and round once, as the reference does), and
    is within the dtype's rounding of the float64 IoU of the same inputs."""
    out, boxes1, boxes2 = out.cpu(), boxes1.cpu(), boxes2.cpu()
    expected = ref.box_iou(boxes1, boxes2)
    assert out.dtype == boxes1.dtype and out.shape == expected.shape
    assert torch.equal(out, expected)
    exact = ref.box_iou(boxes1.double(), boxes2.double())
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=IOU_ATOL[boxes1.dtype])


# Non-contiguous views holding the same values as a contiguous [R, 4] tensor `t`.
def _transposed(t):
    return t.t().contiguous().t()


def _row_step(t):
    buf = torch.full((2 * t.shape[0], 4), NAN, dtype=t.dtype, device=t.device)
    buf[::2] = t
    return buf[::2]


def _column_step(t):
    buf = torch.full((t.shape[0], 8), NAN, dtype=t.dtype, device=t.device)
    buf[:, ::2] = t
    return buf[:, ::2]


def _expanded(t):  # stride 0: every row is the first one
    return t[:1].expand(t.shape[0], 4)


VIEWS = {"transposed": _transposed, "row_step": _row_step, "column_step": _column_step,
         "expanded": _expanded}


# ---------------------------------------------------------------------------------------------
# box_iou

@pytest.mark.parametrize("case", IOU_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_box_iou_matches_reference(device, gen, dtype, case):
    boxes1, boxes2 = (b.to(dtype) for b in IOU_CASES[case](gen))
    out = ops.box_iou(boxes1.to(device), boxes2.to(device))
    assert out.device.type == device.type
    check_iou(out, boxes1, boxes2)


def test_box_iou_known_values(device):
    boxes1 = torch.tensor([[0.0, 0.0, 10.0, 10.0]], device=device)
    boxes2 = torch.tensor([[0.0, 0.0, 10.0, 10.0],    # identical
                           [5.0, 0.0, 15.0, 10.0],    # half overlap: 50 / 150
                           [2.0, 2.0, 4.0, 4.0],      # nested: 4 / 100
                           [10.0, 0.0, 20.0, 10.0],   # touching edge
                           [100.0, 100.0, 110.0, 110.0],  # far apart
                           [10.0, 0.0, 0.0, 10.0],    # x2 < x1: zero area, no overlap
                           [5.0, 5.0, 5.0, 5.0]],     # a point inside: zero area
                          device=device)
    expected = torch.tensor([[1.0, 1.0 / 3.0, 0.04, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(ops.box_iou(boxes1, boxes2).cpu(), expected)


@pytest.mark.parametrize("lead1, lead2, n, m", [
    ((2, 3), (2, 3), 9, 11),   # same leading dims
    ((4,), (), 9, 11),         # boxes2 shared by every batch of boxes1
    ((), (4,), 9, 11),         # boxes1 shared by every batch of boxes2
    ((2, 1), (2, 1), 5, 6),
    ((64,), (), 100, 50),      # enough rows to split the CPU work across threads
    ((), (64,), 100, 50),
])
def test_box_iou_batched(device, gen, lead1, lead2, n, m):
    boxes1 = random_boxes(gen, *lead1, n).float()
    boxes2 = random_boxes(gen, *lead2, m).float()
    out = ops.box_iou(boxes1.to(device), boxes2.to(device))
    lead = lead1 or lead2
    assert out.shape == (*lead, n, m)
    check_iou(out, boxes1, boxes2)
    # every batch equals the unbatched op on its own boxes
    full1, full2 = boxes1.expand(*lead, n, 4), boxes2.expand(*lead, m, 4)
    for idx in itertools.product(*map(range, lead)):
        one = ops.box_iou(full1[idx].to(device), full2[idx].to(device))
        assert torch.equal(out[idx], one)


@pytest.mark.parametrize("shape1, shape2, expected", [
    ((0, 4), (5, 4), (0, 5)),
    ((3, 4), (0, 4), (3, 0)),
    ((0, 4), (0, 4), (0, 0)),
    ((0, 3, 4), (0, 5, 4), (0, 3, 5)),
    ((0, 3, 4), (5, 4), (0, 3, 5)),
    ((5, 4), (0, 3, 4), (0, 5, 3)),
    ((2, 0, 4), (2, 7, 4), (2, 0, 7)),
    ((2, 3, 0, 4), (6, 4), (2, 3, 0, 6)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
def test_box_iou_empty(device, shape1, shape2, expected, dtype):
    out = ops.box_iou(torch.zeros(shape1, dtype=dtype, device=device),
                      torch.zeros(shape2, dtype=dtype, device=device))
    assert out.shape == expected
    assert out.dtype == dtype and out.device.type == device.type


@pytest.mark.parametrize("side", ["boxes1", "boxes2"])
@pytest.mark.parametrize("view", VIEWS)
def test_box_iou_non_contiguous(device, gen, view, side):
    boxes = {"boxes1": random_boxes(gen, 40).float().to(device),
             "boxes2": random_boxes(gen, 30).float().to(device)}
    strided = dict(boxes, **{side: VIEWS[view](boxes[side])})
    assert not strided[side].is_contiguous()
    out = ops.box_iou(strided["boxes1"], strided["boxes2"])
    check_iou(out, strided["boxes1"], strided["boxes2"])
    contiguous = {k: v.contiguous() for k, v in strided.items()}
    assert torch.equal(out, ops.box_iou(contiguous["boxes1"], contiguous["boxes2"]))


def test_box_iou_permuted_batch(device, gen):
    boxes1 = random_boxes(gen, 4, 10).float().to(device).transpose(0, 1)  # [10, 4, 4], strided
    boxes2 = random_boxes(gen, 2, 10, 6).float().to(device)[:, :, ::2].transpose(0, 1)[:, 1]
    assert not boxes1.is_contiguous() and not boxes2.is_contiguous()
    out = ops.box_iou(boxes1, boxes2)
    assert out.shape == (10, 4, 3)
    check_iou(out, boxes1, boxes2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_box_iou_matches_torchvision(device, gen, dtype):
    boxes1 = torch.cat([random_boxes(gen, 40, scale=40.0), DEGENERATE[:3]])  # well formed
    boxes2 = torch.cat([random_boxes(gen, 30, scale=40.0), nested_in(gen, boxes1[:10]),
                        boxes1[10:20], DEGENERATE[6:]])
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    expected = torchvision.ops.box_iou(boxes1, boxes2)
    out = ops.box_iou(boxes1.to(device), boxes2.to(device)).cpu()
    finite = expected.isfinite()
    assert finite.all()  # zero-area boxes only against boxes of positive area
    assert (expected > 0).sum() > 100  # plenty of overlaps, not just zeros
    # torchvision does the same operations in the same order: the same bits
    assert torch.equal(out, expected)


def test_box_iou_differs_from_torchvision_where_documented(device):
    boxes = torch.tensor([[1.0, 1.0, 1.0, 1.0],    # zero area
                          [3.0, 0.0, 3.0, 5.0],    # zero width
                          [10.0, 0.0, 0.0, 10.0],  # x2 < x1: torchvision's area is -100
                          [0.0, 0.0, 10.0, 10.0],
                          [0.0, 0.0, 5.0, 10.0]])
    expected_tv = torchvision.ops.box_iou(boxes, boxes)
    out = ops.box_iou(boxes.to(device), boxes.to(device)).cpu()
    # identical zero-area boxes: union 0, torchvision NaN, ours 0
    assert expected_tv[0, 0].isnan() and expected_tv[1, 1].isnan()
    assert out[0, 0] == 0 and out[1, 1] == 0
    # x2 < x1 against a box of area 100: torchvision's union is -100 + 100 - 0 = 0 -> NaN;
    # ours has zero area there, so the union is 100 and the IoU 0
    assert expected_tv[2, 3].isnan() and expected_tv[3, 2].isnan()
    assert out[2, 3] == 0 and out[3, 2] == 0
    # against a box of area 50: torchvision's union is -50 -> IoU -0.0; ours +0.0
    assert expected_tv[2, 4] == 0 and torch.signbit(expected_tv[2, 4])
    assert out[2, 4] == 0 and not torch.signbit(out[2, 4])
    # no NaN anywhere, and elsewhere the very same values
    assert not out.isnan().any()
    finite = expected_tv.isfinite()
    assert torch.equal(out[finite], expected_tv[finite])


@pytest.mark.parametrize("coord", range(4))
@pytest.mark.parametrize("side", ["boxes1", "boxes2"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=dtype_id)
def test_box_iou_nan_coordinate_gives_zero(device, gen, dtype, side, coord):
    """A NaN coordinate gives IoU 0 with every box (docstring), whichever argument holds it."""
    others = torch.cat([torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0],
                                      [1.0, 1.0, 9.0, 8.0], [2.0, 2.0, 6.0, 6.0]],
                                     dtype=torch.float64),
                        random_boxes(gen, 4, scale=10.0)])
    bad = torch.tensor([[1.0, 1.0, 9.0, 8.0]], dtype=torch.float64)  # overlaps every box above
    bad[0, coord] = NAN
    with_nan = torch.cat([others[:2], bad, others[2:]]).to(dtype)
    others = others.to(dtype)
    if side == "boxes1":
        out = ops.box_iou(with_nan.to(device), others.to(device)).cpu()
        nan_iou, rest = out[2], torch.cat([out[:2], out[3:]])
    else:
        out = ops.box_iou(others.to(device), with_nan.to(device)).cpu()
        nan_iou, rest = out[:, 2], torch.cat([out[:, :2], out[:, 3:]], dim=1)
    assert nan_iou.tolist() == [0.0] * len(others), nan_iou.tolist()
    assert torch.equal(rest, ref.box_iou(others, others))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=dtype_id)
def test_box_iou_infinite_coordinates(device, dtype):
    boxes = torch.tensor([[0.0, 0.0, INF, INF], [-INF, -INF, INF, INF], [0.0, 0.0, 1.0, INF],
                          [-INF, 0.0, 1.0, 1.0], [INF, 0.0, INF, 10.0], [0.0, 0.0, INF, 10.0],
                          [-INF, -INF, -INF, -INF], [0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 4.0, 4.0]],
                         dtype=dtype)
    out = ops.box_iou(boxes.to(device), boxes.to(device)).cpu()
    assert not out.isnan().any()
    assert ((out >= 0) & (out <= 1)).all()
    assert torch.equal(out, ref.box_iou(boxes, boxes))
    assert out[7, 7] == 1 and out[7, 8] == 0.04  # the finite boxes are unaffected


# ---------------------------------------------------------------------------------------------
# encode_boxes / decode_boxes

@pytest.mark.parametrize("case", ENCODE_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_encode_boxes_matches_reference(device, gen, dtype, case):
    gt, priors = (b.to(dtype) for b in ENCODE_CASES[case](gen))
    out = ops.encode_boxes(gt.to(device), priors.to(device))
    assert out.device.type == device.type
    check_against_reference(out, "encode_boxes", (gt, priors), ops.DEFAULT_VARIANCES)


@pytest.mark.parametrize("case", DECODE_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_decode_boxes_matches_reference(device, gen, dtype, case):
    offsets, priors = (b.to(dtype) for b in DECODE_CASES[case](gen))
    out = ops.decode_boxes(offsets.to(device), priors.to(device))
    assert out.device.type == device.type
    check_against_reference(out, "decode_boxes", (offsets, priors), ops.DEFAULT_VARIANCES)


def test_encode_decode_known_values(device):
    priors = torch.tensor([[0.0, 0.0, 2.0, 4.0]], dtype=torch.float64, device=device)
    gt = torch.tensor([[1.0, 2.0, 5.0, 6.0]], dtype=torch.float64, device=device)
    # centres (1, 2) -> (3, 4), sizes (2, 4) -> (4, 4)
    expected = torch.tensor([[2.0 / (0.1 * 2.0), 2.0 / (0.1 * 4.0), math.log(2.0) / 0.2, 0.0]],
                            dtype=torch.float64)
    torch.testing.assert_close(ops.encode_boxes(gt, priors).cpu(), expected)
    torch.testing.assert_close(ops.decode_boxes(expected.to(device), priors), gt)
    # the variances are applied as given
    expected_v = torch.tensor([[2.0 / (0.2 * 2.0), 2.0 / (0.3 * 4.0), math.log(2.0) / 0.5, 0.0]],
                              dtype=torch.float64)
    torch.testing.assert_close(ops.encode_boxes(gt, priors, OTHER_VARIANCES).cpu(), expected_v)
    torch.testing.assert_close(ops.decode_boxes(expected_v.to(device), priors, OTHER_VARIANCES),
                               gt)


def test_encode_boxes_degenerate_gt_values(device):
    """Documented: zero gt width/height -> -inf log term, negative width -> NaN."""
    priors = torch.tensor([[0.0, 0.0, 2.0, 2.0]] * 3, device=device)
    gt = torch.tensor([[1.0, 0.0, 1.0, 2.0],   # zero width
                       [0.0, 1.0, 2.0, 1.0],   # zero height
                       [2.0, 0.0, 1.0, 2.0]],  # negative width
                      device=device)
    out = ops.encode_boxes(gt, priors).cpu()
    assert out[0, 2] == -INF and out[0, 3] == 0
    assert out[1, 3] == -INF and out[1, 2] == 0
    assert out[2, 2].isnan() and out[2, 3] == 0


def coder_inputs(gen, dtype):
    """Boxes and offsets of every scale, and the edges: zero and negative sides, sides whose
    ratio is subnormal or overflows, huge offsets, NaN and inf."""
    gt = random_boxes(gen, 3000, scale=100.0, min_size=1e-3)
    priors = random_boxes(gen, 3000, scale=100.0, min_size=1e-3)
    offsets = random_offsets(gen, 3000, scale=8.0)
    edges = torch.tensor([[1.0, 1.0, 1.0, 2.0], [2.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1e-38, 1e-39],
                          [0.0, 0.0, 3e38, 1.0], [NAN, 0.0, 1.0, 1.0], [0.0, 0.0, INF, 1.0],
                          [-INF, 0.0, 1.0, 1.0], [0.0, 0.0, 1e-30, 1e30]], dtype=torch.float64)
    big = torch.tensor([[0.0, 0.0, 500.0, -500.0], [1.0, -1.0, 443.0, 444.0],
                        [0.0, 0.0, -4000.0, 4000.0], [NAN, INF, -INF, 0.0]], dtype=torch.float64)
    gt = torch.cat([gt, edges, edges[:, [2, 3, 0, 1]]])
    priors = torch.cat([priors, edges[:, [2, 3, 0, 1]], edges])
    offsets = torch.cat([offsets, big, big.flip(0), torch.zeros(8, 4, dtype=torch.float64)])
    return gt.to(dtype), priors.to(dtype), offsets.to(dtype), priors[: len(offsets)].to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_box_coding_identical_on_every_device(device, gen, dtype):
    """encode/decode (hence ssd_targets' loc targets and ssd_postprocess' boxes) use the exp and
    log of ops/float_math.h, not the platform's (glibc and CUDA's math library differ by an
    ulp), so every device gives the CPU's very bits."""
    gt, priors, offsets, priors_d = coder_inputs(gen, dtype)
    for name, x, p in (("encode_boxes", gt, priors), ("decode_boxes", offsets, priors_d)):
        for v in (ops.DEFAULT_VARIANCES, OTHER_VARIANCES):
            got = OPS[name](x.to(device), p.to(device), v).cpu()
            cpu = OPS[name](x, p, v)
            assert torch.equal(got.isnan(), cpu.isnan()), name
            assert torch.equal(got.nan_to_num(0), cpu.nan_to_num(0)), name


def max_ulps(got, fn, x, dtype):
    """The largest |got - fn(x)| in units in the last place of the dtype at fn(x), computed by
    mpmath at 80 digits."""
    mpmath.mp.dps = 80
    worst = 0.0
    for g, v in zip(got.tolist(), x.double().tolist()):
        exact = fn(mpmath.mpf(v))
        spacing = math.ulp(float(exact)) if dtype == torch.float64 else \
            float(np.spacing(np.float32(float(exact))))
        worst = max(worst, float(abs(mpmath.mpf(g) - exact)) / spacing)
    return worst


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_box_coding_log_and_exp_within_an_ulp(gen, dtype):
    """The coder's own log and exp (float_math.h) are within 0.9 ulp (the docstrings' claim),
    seen through the ops: with unit variances and priors, encode's size terms are log(gw) and
    decode's sizes exp(t), each of them the only rounding."""
    w = torch.cat([torch.logspace(-37, 37, 4001, dtype=torch.float64),
                   torch.rand(4000, generator=gen, dtype=torch.float64) * 4 + 0.25]).to(dtype)
    gt = torch.stack([torch.zeros_like(w), torch.zeros_like(w), w, w.flip(0)], -1)
    unit = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=dtype).expand_as(gt)
    enc = ops.encode_boxes(gt, unit, (1, 1, 1, 1))
    assert max_ulps(enc[:, 2], mpmath.log, w, dtype) <= 0.9
    t = torch.cat([torch.linspace(-80, 80, 4001, dtype=torch.float64),
                   torch.randn(4000, generator=gen, dtype=torch.float64)]).to(dtype)
    offsets = torch.stack([torch.zeros_like(t), torch.zeros_like(t), t, t.flip(0)], -1)
    centred = torch.tensor([[-0.5, -0.5, 0.5, 0.5]], dtype=dtype).expand_as(offsets)
    dec = ops.decode_boxes(offsets, centred, (1, 1, 1, 1))
    assert max_ulps(2 * dec[:, 2], mpmath.exp, t, dtype) <= 0.9


BROADCASTS = [  # leading dims of a (gt / offsets), of priors, of the output
    ((3, 7), (7,), (3, 7)),          # priors [P, 4] shared by a batch [B, P, 4]
    ((7,), (3, 7), (3, 7)),          # and the other way round
    ((1, 7), (3, 7), (3, 7)),
    ((3, 1), (7,), (3, 7)),          # [B, 1, 4] against [P, 4]
    ((), (3, 7), (3, 7)),            # one box against all
    ((3, 7), (), (3, 7)),
    ((2, 1, 7), (5, 7), (2, 5, 7)),
    ((5, 1), (1, 7), (5, 7)),
    ((1, 1, 7), (3, 7), (1, 3, 7)),
    ((1, 2, 1), (3, 1, 1), (3, 2, 1)),
    ((2, 1), (1, 1), (2, 1)),
    ((5, 3001), (3001,), (5, 3001)),  # enough rows to split the CPU work across threads
    ((5, 1), (3001,), (5, 3001)),
]


@pytest.mark.parametrize("lead_a, lead_p, lead_out", BROADCASTS)
@pytest.mark.parametrize("name", ["encode_boxes", "decode_boxes"])
def test_coder_broadcasting(device, gen, name, lead_a, lead_p, lead_out):
    a = (random_boxes(gen, *lead_a) if name == "encode_boxes" else random_offsets(gen, *lead_a))
    a, priors = a.float(), random_boxes(gen, *lead_p).float()
    out = OPS[name](a.to(device), priors.to(device), OTHER_VARIANCES)
    assert out.shape == (*lead_out, 4)
    check_against_reference(out, name, (a, priors), OTHER_VARIANCES)
    # broadcasting changes no value: the same bits as with both inputs materialised
    full = [t.expand(*lead_out, 4).contiguous().to(device) for t in (a, priors)]
    assert torch.equal(out, OPS[name](*full, OTHER_VARIANCES))


@pytest.mark.parametrize("lead_a, lead_p, lead_out", [
    ((0,), (0,), (0,)),
    ((0,), (1,), (0,)),
    ((1,), (0,), (0,)),
    ((3, 0), (0,), (3, 0)),
    ((0, 5), (5,), (0, 5)),
    ((0, 1), (5,), (0, 5)),
    ((2, 0, 3), (3,), (2, 0, 3)),
])
@pytest.mark.parametrize("name", ["encode_boxes", "decode_boxes"])
def test_coder_empty(device, name, lead_a, lead_p, lead_out):
    out = OPS[name](torch.zeros(*lead_a, 4, device=device),
                    torch.zeros(*lead_p, 4, device=device))
    assert out.shape == (*lead_out, 4)
    assert out.dtype == torch.float32 and out.device.type == device.type


@pytest.mark.parametrize("side", ["a", "priors"])
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("name", ["encode_boxes", "decode_boxes"])
def test_coder_non_contiguous(device, gen, name, view, side):
    a = random_boxes(gen, 40) if name == "encode_boxes" else random_offsets(gen, 40)
    inputs = {"a": a.float().to(device), "priors": random_boxes(gen, 40).float().to(device)}
    inputs[side] = VIEWS[view](inputs[side])
    assert not inputs[side].is_contiguous()
    out = OPS[name](inputs["a"], inputs["priors"])
    check_against_reference(out, name, (inputs["a"], inputs["priors"]), ops.DEFAULT_VARIANCES)
    assert torch.equal(out, OPS[name](inputs["a"].contiguous(), inputs["priors"].contiguous()))


@pytest.mark.parametrize("name", ["encode_boxes", "decode_boxes"])
def test_coder_permuted_batch(device, gen, name):
    a = random_boxes(gen, 4, 10) if name == "encode_boxes" else random_offsets(gen, 4, 10)
    a = a.float().to(device).transpose(0, 1)  # [10, 4, 4], strided
    priors = random_boxes(gen, 4, 2).float().to(device)[:, 1]  # [4, 4], row stride 8
    assert not a.is_contiguous() and not priors.is_contiguous()
    out = OPS[name](a, priors)
    assert out.shape == (10, 4, 4)
    check_against_reference(out, name, (a, priors), ops.DEFAULT_VARIANCES)


@pytest.mark.parametrize("name", ["encode_boxes", "decode_boxes"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=dtype_id)
def test_coder_non_finite_inputs(device, dtype, name):
    """NaN / inf inputs do not crash and give what the reference gives."""
    values = [0.0, 1.0, NAN, INF, -INF]
    a = torch.tensor(list(itertools.product(values, repeat=4)), dtype=dtype)  # 625 rows
    priors = torch.tensor([[0.0, 0.0, 2.0, 3.0]], dtype=dtype).expand(len(a), 4)
    for x, p in ((a, priors), (priors, a)):
        out = OPS[name](x.to(device), p.to(device))
        torch.testing.assert_close(out.cpu(), REFS[name](x, p), equal_nan=True, rtol=2 * EPS[dtype],
                                   atol=2 * EPS[dtype])


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)

_coord = st.floats(-1e3, 1e3, allow_nan=False, width=32)
_box = st.tuples(_coord, _coord, _coord, _coord)
_boxes = st.lists(_box, max_size=12)
_size = st.floats(0.5, 100.0)
_positive_box = st.tuples(st.floats(-100.0, 100.0), st.floats(-100.0, 100.0), _size, _size).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))
_variance = st.floats(0.05, 2.0)


def _tensor(boxes, dtype, device):
    return torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4).to(dtype).to(device)


@settings(max_examples=60, deadline=None)
@given(a=_boxes, b=_boxes, dtype=st.sampled_from(DTYPES))
def test_box_iou_symmetric_and_in_unit_range(device, a, b, dtype):
    a, b = _tensor(a, dtype, device), _tensor(b, dtype, device)
    ab = ops.box_iou(a, b)
    # min/max and the sum of the areas commute: exactly symmetric
    assert torch.equal(ab, ops.box_iou(b, a).T)
    assert ((ab >= 0) & (ab <= 1)).all()


@settings(max_examples=60, deadline=None)
@given(boxes=_boxes, dtype=st.sampled_from(DTYPES))
def test_box_iou_of_box_with_itself(device, boxes, dtype):
    boxes = _tensor(boxes, dtype, device)
    self_iou = ops.box_iou(boxes, boxes).diagonal().cpu()
    area = ref.box_area(boxes.cpu().to(torch.float64 if dtype == torch.float64 else torch.float32))
    assert (self_iou[area > 0] == 1).all()  # exactly: inter == area == union
    assert (self_iou[area == 0] == 0).all()


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(_positive_box, _positive_box), min_size=1, max_size=10),
       variances=st.tuples(_variance, _variance, _variance, _variance),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_decode_inverts_encode(device, pairs, variances, dtype):
    gt = _tensor([g for g, _ in pairs], dtype, device)
    priors = _tensor([p for _, p in pairs], dtype, device)
    offsets = ops.encode_boxes(gt, priors, variances)
    assert offsets.isfinite().all()
    back = ops.decode_boxes(offsets, priors, variances)
    torch.testing.assert_close(back, gt, rtol=0, atol=1e4 * EPS[dtype])


# ---------------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile, autograd

def _b(gen, *shape):
    return random_boxes(gen, *shape, scale=10.0)  # small scale: many overlaps


OPCHECK_SAMPLES = {
    "iou": ("box_iou", lambda g: (_b(g, 5), _b(g, 7))),
    "iou_batched": ("box_iou", lambda g: (_b(g, 2, 5), _b(g, 2, 7))),
    "iou_shared_boxes2": ("box_iou", lambda g: (_b(g, 3, 5), _b(g, 7))),
    "iou_shared_boxes1": ("box_iou", lambda g: (_b(g, 5), _b(g, 2, 3, 7))),
    "iou_empty": ("box_iou", lambda g: (_b(g, 0), _b(g, 7))),
    "encode": ("encode_boxes", lambda g: (_b(g, 6), _b(g, 6), list(ops.DEFAULT_VARIANCES))),
    "encode_batched": ("encode_boxes", lambda g: (_b(g, 2, 6), _b(g, 6), list(OTHER_VARIANCES))),
    "encode_broadcast": ("encode_boxes", lambda g: (_b(g, 2, 1), _b(g, 6),
                                                    list(ops.DEFAULT_VARIANCES))),
    "decode": ("decode_boxes", lambda g: (random_offsets(g, 6), _b(g, 6),
                                          list(ops.DEFAULT_VARIANCES))),
    "decode_batched": ("decode_boxes", lambda g: (random_offsets(g, 2, 6), _b(g, 6),
                                                  list(OTHER_VARIANCES))),
    "decode_broadcast": ("decode_boxes", lambda g: (random_offsets(g, 6), _b(g, 3, 1),
                                                    list(ops.DEFAULT_VARIANCES))),
}


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
@pytest.mark.parametrize("dtype, requires_grad", [(torch.float64, True), (torch.float32, False),
                                                  (torch.float16, False)],
                         ids=["float64-requires_grad", "float32", "float16"])
def test_opcheck(device, gen, sample, dtype, requires_grad):
    name, make = OPCHECK_SAMPLES[sample]
    args = [a.to(dtype).to(device).requires_grad_(requires_grad)
            if isinstance(a, torch.Tensor) else a for a in make(gen)]
    opcheck(getattr(torch.ops.ssd_fast, name).default, args)


def _all_ops(boxes1, boxes2, priors):
    iou = ops.box_iou(boxes1, boxes2)
    offsets = ops.encode_boxes(boxes1, priors, OTHER_VARIANCES)
    return iou, offsets, ops.decode_boxes(offsets, priors, OTHER_VARIANCES)


@pytest.mark.parametrize("backend, dynamic", [("aot_eager", False), ("aot_eager", True),
                                              ("inductor", False)])
def test_torch_compile_fullgraph(device, gen, backend, dynamic):
    if backend == "inductor" and device.type == "emu":
        pytest.skip("inductor generates code for CPUs and GPUs only; aot_eager traces the same graph on emu")
    torch._dynamo.reset()
    compiled = torch.compile(_all_ops, backend=backend, fullgraph=True, dynamic=dynamic)
    shapes = [(2, 6), (3, 9)] if dynamic else [(2, 6)]  # dynamic: a second size, no recompile
    for b, n in shapes:
        args = [t.float().to(device) for t in (_b(gen, b, n), _b(gen, 5), _b(gen, n))]
        for got, expected in zip(compiled(*args), _all_ops(*args)):
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


GRAD_CASES = [
    ("box_iou", lambda g: (_b(g, 4), _b(g, 5))),
    ("box_iou", lambda g: (_b(g, 2, 3), _b(g, 4))),
    ("encode_boxes", lambda g: (_b(g, 2, 3), _b(g, 3))),
    ("decode_boxes", lambda g: (random_offsets(g, 2, 3, scale=0.5), _b(g, 3))),
]


@pytest.mark.parametrize("name, make", GRAD_CASES)
def test_gradcheck(device, gen, name, make):
    inputs = [t.to(device).requires_grad_() for t in make(gen)]
    if name == "box_iou":
        assert (ops.box_iou(*inputs) > 0).sum() >= 3  # overlaps, so the gradient is not all 0
    assert torch.autograd.gradcheck(lambda *xs: OPS[name](*xs), inputs)


@pytest.mark.parametrize("name, make", GRAD_CASES)
def test_gradgradcheck(device, gen, name, make):
    # the backward is differentiable (a gradient penalty, a Hessian-vector product): second
    # derivatives in float64 against finite differences of the first
    inputs = [t.to(device).requires_grad_() for t in make(gen)]
    assert torch.autograd.gradgradcheck(lambda *xs: OPS[name](*xs), inputs)


def test_second_derivative_is_the_reference_one(device, gen):
    boxes1, boxes2 = _b(gen, 4), _b(gen, 5)
    weights = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    hessian_rows = []
    for fn, dev in ((ops.box_iou, device), (ref.box_iou, torch.device("cpu"))):
        xs = [t.to(dev).requires_grad_() for t in (boxes1, boxes2)]
        g1, _ = torch.autograd.grad((fn(*xs) * weights.to(dev)).sum(), xs, create_graph=True)
        hessian_rows.append([g.cpu() for g in torch.autograd.grad(g1[0, 2], xs)])
    for got, expected in zip(*hessian_rows):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", OPS)
def test_the_same_tensor_twice(device, gen, name):
    # box_iou(x, x), encode_boxes(x, x): the gradient of x sums both arguments' partials
    x = _b(gen, 6).to(device)
    xs = x.clone().requires_grad_()
    got, = torch.autograd.grad(OPS[name](xs, xs).sum() if name == "box_iou"
                               else (OPS[name](xs, xs) * torch.arange(4.0, device=device)).sum(), xs)
    xr = x.cpu().requires_grad_()
    expected, = torch.autograd.grad(REFS[name](xr, xr).sum() if name == "box_iou"
                                    else (REFS[name](xr, xr) * torch.arange(4.0)).sum(), xr)
    torch.testing.assert_close(got.cpu(), expected)


def test_box_iou_gradient_matches_torchvision(device, gen):
    boxes1, boxes2 = _b(gen, 6), _b(gen, 8)
    weights = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    ours_in = [t.to(device).requires_grad_() for t in (boxes1, boxes2)]
    ours = ops.box_iou(*ours_in)
    ours_grad = torch.autograd.grad((ours * weights.to(device)).sum(), ours_in)
    tv_in = [t.clone().requires_grad_() for t in (boxes1, boxes2)]
    tv = torchvision.ops.box_iou(*tv_in)
    tv_grad = torch.autograd.grad((tv * weights).sum(), tv_in)
    assert (tv > 0).sum() >= 10
    for got, expected in zip(ours_grad, tv_grad):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got.cpu(), expected)


# ---------------------------------------------------------------------------------------------
# Bad input: the C++ checks and the fake kernel raise the same error, naming the argument

def _z(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


V = ops.DEFAULT_VARIANCES
BAD_INPUTS = {
    "iou_rank_1": ("box_iou", lambda: (_z(4), _z(3, 4)), RuntimeError,
                   "box_iou: boxes1 must have shape [..., N, 4], got [4]"),
    "iou_rank_0": ("box_iou", lambda: (_z(3, 4), _z()), RuntimeError,
                   "box_iou: boxes2 must have shape [..., M, 4], got []"),
    "iou_last_dim": ("box_iou", lambda: (_z(3, 5), _z(3, 4)), RuntimeError,
                     "box_iou: boxes1 must have shape [..., N, 4], got [3, 5]"),
    "iou_last_dim_batched": ("box_iou", lambda: (_z(3, 4), _z(2, 6, 3)), RuntimeError,
                             "box_iou: boxes2 must have shape [..., M, 4], got [2, 6, 3]"),
    "iou_int_with_float": ("box_iou", lambda: (_z(3, 4, dtype=torch.int64), _z(3, 4)),
                           RuntimeError, "box_iou: boxes1 and boxes2 must both be integer, or both "
                                         "floating point of one dtype, got int64 and float32"),
    "iou_bool": ("box_iou", lambda: (_z(3, 4), _z(3, 4, dtype=torch.bool)), RuntimeError,
                 "box_iou: boxes2 must be float16, bfloat16, float32 or float64, got bool"),
    "iou_float8": ("box_iou", lambda: (_z(3, 4, dtype=torch.float8_e4m3fn),
                                       _z(3, 4, dtype=torch.float8_e4m3fn)), RuntimeError,
                   "box_iou: boxes1 must be float16, bfloat16, float32 or float64, "
                   "got float8_e4m3fn"),
    "iou_mixed_dtype": ("box_iou", lambda: (_z(3, 4), _z(3, 4, dtype=torch.float64)),
                        RuntimeError, "box_iou: boxes1 and boxes2 must have the same dtype, "
                                      "got float32 and float64"),
    "iou_mixed_half": ("box_iou", lambda: (_z(3, 4, dtype=torch.float16),
                                           _z(3, 4, dtype=torch.bfloat16)), RuntimeError,
                       "box_iou: boxes1 and boxes2 must have the same dtype, "
                       "got float16 and bfloat16"),
    "iou_batch_mismatch": ("box_iou", lambda: (_z(2, 3, 4), _z(5, 3, 4)), RuntimeError,
                           "box_iou: boxes1 and boxes2 must have the same leading (batch) dims, "
                           "or one of them none, got boxes1 [2, 3, 4] and boxes2 [5, 3, 4]"),
    "iou_batch_no_broadcast": ("box_iou", lambda: (_z(2, 3, 4), _z(1, 2, 5, 4)), RuntimeError,
                               "box_iou: boxes1 and boxes2 must have the same leading (batch) "
                               "dims, or one of them none, got boxes1 [2, 3, 4] and boxes2 "
                               "[1, 2, 5, 4]"),
    "encode_rank_0": ("encode_boxes", lambda: (_z(), _z(4), V), RuntimeError,
                      "encode_boxes: gt must have shape [..., 4], got []"),
    "encode_last_dim": ("encode_boxes", lambda: (_z(3, 4), _z(3, 2), V), RuntimeError,
                        "encode_boxes: priors must have shape [..., 4], got [3, 2]"),
    "encode_int": ("encode_boxes", lambda: (_z(3, 4, dtype=torch.int32), _z(3, 4), V),
                   RuntimeError, "encode_boxes: gt must be float16, bfloat16, float32 or "
                                 "float64, got int32"),
    "encode_float8": ("encode_boxes", lambda: (_z(3, 4, dtype=torch.float8_e5m2),
                                               _z(3, 4, dtype=torch.float8_e5m2), V),
                      RuntimeError, "encode_boxes: gt must be float16, bfloat16, float32 or "
                                    "float64, got float8_e5m2"),
    "encode_mixed_dtype": ("encode_boxes", lambda: (_z(3, 4, dtype=torch.float64), _z(3, 4), V),
                           RuntimeError, "encode_boxes: gt and priors must have the same dtype, "
                                         "got float64 and float32"),
    "encode_no_broadcast": ("encode_boxes", lambda: (_z(2, 3, 4), _z(5, 4), V), RuntimeError,
                            "encode_boxes: the leading dims of gt [2, 3, 4] and priors [5, 4] "
                            "do not broadcast"),
    "decode_last_dim": ("decode_boxes", lambda: (_z(3, 5), _z(3, 4), V), RuntimeError,
                        "decode_boxes: offsets must have shape [..., 4], got [3, 5]"),
    "decode_int": ("decode_boxes", lambda: (_z(3, 4), _z(3, 4, dtype=torch.int64), V),
                   RuntimeError, "decode_boxes: priors must be float16, bfloat16, float32 or "
                                 "float64, got int64"),
    "decode_mixed_dtype": ("decode_boxes", lambda: (_z(3, 4, dtype=torch.bfloat16), _z(3, 4), V),
                           RuntimeError, "decode_boxes: offsets and priors must have the same "
                                         "dtype, got bfloat16 and float32"),
    "decode_no_broadcast": ("decode_boxes", lambda: (_z(3, 4), _z(2, 4), V), RuntimeError,
                            "decode_boxes: the leading dims of offsets [3, 4] and priors [2, 4] "
                            "do not broadcast"),
    "encode_variances_short": ("encode_boxes", lambda: (_z(3, 4), _z(3, 4), (0.1, 0.1, 0.2)),
                               ValueError, "encode_boxes: variances must be 4 positive finite "
                                           "numbers, got [0.1, 0.1, 0.2]"),
    "encode_variances_long": ("encode_boxes",
                              lambda: (_z(3, 4), _z(3, 4), (0.1, 0.1, 0.2, 0.2, 0.3)),
                              ValueError, "encode_boxes: variances must be 4 positive finite "
                                          "numbers, got [0.1, 0.1, 0.2, 0.2, 0.3]"),
    "encode_variances_empty": ("encode_boxes", lambda: (_z(3, 4), _z(3, 4), ()), ValueError,
                               "encode_boxes: variances must be 4 positive finite numbers, "
                               "got []"),
    "encode_variances_inf": ("encode_boxes", lambda: (_z(3, 4), _z(3, 4), (0.1, 0.1, 0.2, INF)),
                             ValueError, "encode_boxes: variances must be 4 positive finite "
                                         "numbers, got [0.1, 0.1, 0.2, inf]"),
    "decode_variances_zero": ("decode_boxes", lambda: (_z(3, 4), _z(3, 4), (0.1, 0, 0.2, 0.2)),
                              ValueError, "decode_boxes: variances must be 4 positive finite "
                                          "numbers, got [0.1, 0, 0.2, 0.2]"),
    "decode_variances_negative": ("decode_boxes",
                                  lambda: (_z(3, 4), _z(3, 4), (0.1, 0.1, -0.2, 0.2)),
                                  ValueError, "decode_boxes: variances must be 4 positive "
                                              "finite numbers, got [0.1, 0.1, -0.2, 0.2]"),
    "decode_variances_nan": ("decode_boxes", lambda: (_z(3, 4), _z(3, 4), (NAN, 0.1, 0.2, 0.2)),
                             ValueError, "decode_boxes: variances must be 4 positive finite "
                                         "numbers, got [nan, 0.1, 0.2, 0.2]"),
}


def _on(args, device):
    return [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises(device, case):
    name, make, exc, message = BAD_INPUTS[case]
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        OPS[name](*_on(make(), device))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_fake_kernel_raises_the_same_error(device, case):
    name, make, exc, _ = BAD_INPUTS[case]
    assert_fake_raises_the_same(lambda d: OPS[name](*_on(make(), d)), device, exc)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("name", OPS)
def test_mixed_devices_raise(device, name, swap):
    # On CPU the other device is "meta" (the dispatcher then runs the fake kernel, which must
    # refuse the mix); on CUDA it is the CPU (the CUDA kernel's check).
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    a, b = torch.zeros(3, 4, device=device), torch.zeros(3, 4, device=other)
    if swap:
        a, b = b, a
    names = {"box_iou": ("boxes1", "boxes2"), "encode_boxes": ("gt", "priors"),
             "decode_boxes": ("offsets", "priors")}[name]
    message = (f"{name}: {names[0]} and {names[1]} must be on the same device, "
               f"got {a.device} and {b.device}")
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        OPS[name](a, b)


# ---------------------------------------------------------------------------------------------
# Determinism

@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=dtype_id)
def test_deterministic(device, gen, dtype):
    boxes1 = random_boxes(gen, 3, 300).to(dtype).to(device)
    boxes2 = random_boxes(gen, 500).to(dtype).to(device)
    offsets = random_offsets(gen, 3, 500).to(dtype).to(device)
    for name, args in (("box_iou", (boxes1, boxes2)), ("encode_boxes", (boxes1[:, :1], boxes2)),
                       ("decode_boxes", (offsets, boxes2))):
        first, second = OPS[name](*args), OPS[name](*args)
        assert torch.equal(first, second), name
