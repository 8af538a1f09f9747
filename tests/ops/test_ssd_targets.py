"""ssd_targets (SPEC §2): match_priors + encode_boxes + labels, fused. Against the reference
(labels and matched_iou exact, loc_targets within the dtype's rounding), against the unfused
ops, against torchvision's SSD target encoding (argmax mode), registration and errors."""
import math
import re

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder, SSDMatcher

from ssd_fast import ops
from ssd_fast.ops import reference as ref

from _fake_parity import assert_fake_raises_the_same
from emu_device import opcheck
from _target_cases import (DTYPES, EPS, INF, MATCH_BAD_INPUTS, MATCH_CASES, MODES, NAN,
                           dtype_id, dyadic_boxes, iou_matrix, on, one_thread, random_gt,
                           ssd300_voc_priors)

V = ops.DEFAULT_VARIANCES
OTHER_VARIANCES = (0.2, 0.3, 0.5, 0.4)


def run_targets(device, gt_boxes, gt_labels, priors, thr=0.5, variances=V, mode="bipartite"):
    out = ops.ssd_targets(gt_boxes.to(device), gt_labels.to(device), priors.to(device), thr,
                          variances, mode)
    assert all(t.device.type == device.type for t in out)
    return [t.cpu() for t in out]


def check_loc(loc, expected):
    """Same NaN / inf positions, exact zeros where the reference has a zero row (background),
    finite values within two ulps of the dtype, measured on the magnitude of their column."""
    dtype = expected.dtype
    o, e = loc.double(), expected.double()
    assert torch.equal(o.isnan(), e.isnan())
    assert torch.equal(o.isinf(), e.isinf()) and torch.equal(o[e.isinf()], e[e.isinf()])
    background = (e == 0).all(-1)
    assert (o[background] == 0).all()
    finite = e.isfinite()
    if finite.any():
        column = e.where(finite, 0).abs().reshape(-1, 4).amax(0)
        tol = 2 * EPS[dtype] * (e.abs() + column)
        bad = ((o - e).abs() > tol) & finite
        assert not bad.any(), (bad.nonzero()[:5].tolist(), o[bad][:5].tolist(), e[bad][:5].tolist())


def check_targets(out, gt_boxes, gt_labels, priors, thr, mode, variances=V):
    loc, labels, iou = out
    B, P = gt_labels.shape[0], priors.shape[0]
    with one_thread():
        e_loc, e_labels, e_iou = ref.ssd_targets(gt_boxes.cpu(), gt_labels.cpu(), priors.cpu(),
                                                 thr, variances, mode)
    assert loc.shape == (B, P, 4) and loc.dtype == gt_boxes.dtype
    assert labels.shape == (B, P) and labels.dtype == torch.int64
    assert iou.shape == (B, P) and iou.dtype == gt_boxes.dtype
    bad = (labels != e_labels).nonzero()[:5]
    assert torch.equal(labels, e_labels), (bad.tolist(), labels[tuple(bad.T)].tolist(),
                                           e_labels[tuple(bad.T)].tolist())
    assert torch.equal(iou, e_iou)
    check_loc(loc, e_loc)
    return loc, labels, iou


def check_fused_equals_unfused(device, out, gt_boxes, gt_labels, priors, thr, mode, variances=V):
    """The fused op gives exactly what match_priors, a gather and encode_boxes give (the
    kernels share their arithmetic)."""
    loc, labels, iou = out
    gt_boxes, gt_labels, priors = gt_boxes.to(device), gt_labels.to(device), priors.to(device)
    idx, m_iou = ops.match_priors(gt_boxes, gt_labels, priors, thr, mode)
    assert torch.equal(iou, m_iou.cpu())
    safe = idx.clamp(min=0)
    matched = gt_boxes.gather(1, safe.unsqueeze(-1).expand(*safe.shape, 4))
    enc = ops.encode_boxes(matched, priors, variances)
    expected_loc = torch.where((idx >= 0).unsqueeze(-1), enc, torch.zeros_like(enc)).cpu()
    assert torch.equal(loc.isnan(), expected_loc.isnan())
    assert torch.equal(torch.nan_to_num(loc), torch.nan_to_num(expected_loc))
    expected_labels = torch.where(idx >= 0, gt_labels.long().gather(1, safe), 0).cpu()
    assert torch.equal(labels, expected_labels)


# ---------------------------------------------------------------------------------------------
# Against the reference and the unfused ops

@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_ssd300_priors_match_reference(device, gen, mode, dtype):
    priors = ssd300_voc_priors().to(dtype)
    gt, labels = random_gt(gen, 4, 10)
    gt = gt.to(dtype)
    out = run_targets(device, gt, labels, priors, 0.5, V, mode)
    loc, lab, _ = check_targets(out, gt, labels, priors, 0.5, mode)
    check_fused_equals_unfused(device, out, gt, labels, priors, 0.5, mode)
    assert (lab > 0).sum() >= 8 and (loc != 0).any(-1).sum() >= 8


@pytest.mark.parametrize("mode", MODES)
def test_ssd300_full_batch_matches_reference(device, gen, mode):
    """B = 32, G = 100 with padding rows scattered, the 8732 SSD300 priors (bipartite: few GTs
    per image but one full image, the reference being O(G^2 P) there)."""
    priors = ssd300_voc_priors().float()
    if mode == "bipartite":
        num_valid = torch.randint(0, 6, (32,), generator=gen)
        num_valid[31] = 100
    else:
        num_valid = torch.randint(0, 101, (32,), generator=gen)
    gt, labels = random_gt(gen, 32, 100, num_valid=num_valid)
    perm = torch.argsort(torch.rand(32, 100, generator=gen), dim=1)
    gt, labels = gt.gather(1, perm.unsqueeze(-1).expand(-1, -1, 4)).float(), labels.gather(1, perm)
    out = run_targets(device, gt, labels, priors, 0.5, V, mode)
    check_targets(out, gt, labels, priors, 0.5, mode)


# One threshold per case (test_match_priors.py runs every case at every threshold).
CASE_THRESHOLDS = {"duplicate_gts": 0.5, "tied_gts": 1.0, "identical_priors": 0.0,
                   "whole_image_gt": 1.0, "tiny_gts": 0.0, "all_padding": 0.5,
                   "more_gts_than_priors": 0.5, "dyadic_grid": 0.5, "degenerate": 0.0,
                   "non_finite": 0.0, "nested": 0.5, "single": 0.0}
assert set(CASE_THRESHOLDS) == set(MATCH_CASES)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", MATCH_CASES)
def test_adversarial_cases_match_reference(device, gen, case, mode, dtype):
    thr = CASE_THRESHOLDS[case]
    gt, labels, priors = MATCH_CASES[case](gen)
    gt, priors = gt.to(dtype), priors.to(dtype)
    out = run_targets(device, gt, labels, priors, thr, OTHER_VARIANCES, mode)
    check_targets(out, gt, labels, priors, thr, mode, OTHER_VARIANCES)
    check_fused_equals_unfused(device, out, gt, labels, priors, thr, mode, OTHER_VARIANCES)


@pytest.mark.parametrize("variances", [V, OTHER_VARIANCES, (1.0, 1.0, 1.0, 1.0),
                                       (1e-3, 5.0, 0.25, 3.0)],
                         ids=["default", "other", "ones", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_variances(device, gen, dtype, variances):
    priors = dyadic_boxes(gen, 300, cells=16, max_cells=8).to(dtype)
    gt, labels = random_gt(gen, 3, 6)
    gt = gt.to(dtype)
    out = run_targets(device, gt, labels, priors, 0.5, variances, "bipartite")
    check_targets(out, gt, labels, priors, 0.5, "bipartite", variances)
    # the variances divide the offsets: loc * v is the same for every choice of variances
    plain = run_targets(device, gt, labels, priors, 0.5, (1.0, 1.0, 1.0, 1.0), "bipartite")[0]
    torch.testing.assert_close(out[0] * torch.tensor(variances, dtype=dtype), plain,
                               rtol=8 * EPS[dtype], atol=8 * EPS[dtype])


@pytest.mark.parametrize("label_dtype", [torch.int32, torch.int16, torch.int8, torch.uint8],
                         ids=dtype_id)
def test_integer_label_dtypes(device, gen, label_dtype):
    gt, labels, priors = MATCH_CASES["dyadic_grid"](gen)
    labels = labels.clamp(min=0) if label_dtype == torch.uint8 else labels
    labels = torch.where(labels > 0, labels + 100, labels)  # values > 100 fit in every type
    expected = run_targets(device, gt.float(), labels, priors.float())
    out = run_targets(device, gt.float(), labels.to(label_dtype), priors.float())
    assert out[1].dtype == torch.int64
    for got, exp in zip(out, expected):
        assert torch.equal(got, exp)
    assert (out[1] > 100).any()


@pytest.mark.parametrize("B, G, P", [(0, 3, 5), (2, 0, 5), (2, 3, 0), (0, 0, 0), (3, 0, 0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_empty(device, gen, mode, dtype, B, G, P):
    gt = dyadic_boxes(gen, B * G).view(B, G, 4).to(dtype)
    labels = torch.ones(B, G, dtype=torch.int32)
    priors = dyadic_boxes(gen, P).to(dtype)
    loc, lab, iou = run_targets(device, gt, labels, priors, 0.5, V, mode)
    assert loc.shape == (B, P, 4) and loc.dtype == dtype
    assert lab.shape == (B, P) and lab.dtype == torch.int64
    assert iou.shape == (B, P) and iou.dtype == dtype
    assert (loc == 0).all() and (lab == 0).all() and (iou == 0).all()


def test_non_contiguous_inputs(device, gen):
    gt, labels, priors = MATCH_CASES["dyadic_grid"](gen)
    gt, labels, priors = gt.float().to(device), labels.to(device), priors.float().to(device)
    strided = (gt.transpose(0, 1).contiguous().transpose(0, 1), labels.t().contiguous().t(),
               priors.t().contiguous().t())
    assert not any(t.is_contiguous() for t in strided)
    for mode in MODES:
        out = ops.ssd_targets(*strided, 0.5, V, mode)
        expected = ops.ssd_targets(gt, labels, priors, 0.5, V, mode)
        for got, exp in zip(out, expected):
            assert torch.equal(got, exp)


# ---------------------------------------------------------------------------------------------
# Hand-computed values

def test_known_values(device):
    # prior (0, 0, 2, 4): centre (1, 2), size (2, 4). GT g0 (1, 2, 5, 6): centre (3, 4), size
    # (4, 4): IoU 2/22 with the prior; it is the only GT, so bipartite gives it the prior.
    # g1 (label 0) overlaps the second prior only.
    priors = torch.tensor([[0.0, 0.0, 2.0, 4.0], [10.0, 10.0, 12.0, 12.0],
                           [20.0, 20.0, 21.0, 21.0]], dtype=torch.float64)
    gt = torch.tensor([[[1.0, 2.0, 5.0, 6.0], [10.0, 10.0, 12.0, 13.0], [0.0, 0.0, 9.0, 9.0]]],
                      dtype=torch.float64)
    labels = torch.tensor([[7, 0, -1]])
    loc, lab, iou = run_targets(device, gt, labels, priors, 0.5, OTHER_VARIANCES, "bipartite")
    v = OTHER_VARIANCES
    expected = torch.tensor([[[2.0 / (v[0] * 2.0), 2.0 / (v[1] * 4.0), math.log(2.0) / v[2], 0.0],
                              [0.0, 0.5 / (v[1] * 2.0), 0.0, math.log(1.5) / v[3]],
                              [0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(loc, expected, rtol=1e-12, atol=1e-12)
    # a valid GT of label 0 claims its prior (loc encoded), which is background for the labels
    assert lab.tolist() == [[7, 0, 0]]
    assert iou.tolist() == [[2.0 / 22.0, 4.0 / 6.0, 0.0]]


def test_labels_follow_the_matched_gt(device, gen):
    gt, labels = random_gt(gen, 5, 8, num_classes=1000)
    labels = torch.where(labels > 0, labels + 2**40, labels)  # int64 labels are kept whole
    gt, priors = gt.float(), dyadic_boxes(gen, 400, cells=16, max_cells=8).float()
    for mode in MODES:
        idx, _ = ops.match_priors(gt.to(device), labels.to(device), priors.to(device), 0.5, mode)
        _, lab, _ = run_targets(device, gt, labels, priors, 0.5, V, mode)
        idx = idx.cpu()
        assert torch.equal(lab, torch.where(idx >= 0, labels.gather(1, idx.clamp(min=0)), 0))
        assert (lab[idx < 0] == 0).all() and (lab >= 0).all() and (lab > 2**40).any()


# ---------------------------------------------------------------------------------------------
# argmax mode against torchvision's SSD target encoding

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_argmax_matches_torchvision(device, gen, dtype):
    """torchvision's SSD: SSDMatcher(0.5) on box_iou, then
    BoxCoder(weights=(10, 10, 5, 5)).encode_single(matched GT boxes, anchors). Inputs without
    ties (two GTs with the same best prior are made padding)."""
    priors = ssd300_voc_priors().to(dtype)
    gt, labels = random_gt(gen, 5, 10, pad_prob=0.2)
    for b in range(5):  # drop GTs whose best prior an earlier GT already has
        seen = set()
        for g in range(10):
            if labels[b, g] >= 0:
                best = int(iou_matrix(gt[b, g:g + 1], priors)[0].argmax())
                if best in seen:
                    labels[b, g] = -1
                seen.add(best)
    gt = gt.to(dtype)
    loc, lab, _ = run_targets(device, gt, labels, priors, 0.5, V, "argmax")
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    matcher = SSDMatcher(0.5)
    positives = 0
    for b in range(5):
        valid = (labels[b] >= 0).nonzero().flatten()
        if len(valid) == 0:
            continue
        with one_thread():
            matches = matcher(torchvision.ops.box_iou(gt[b, valid], priors))
            target = coder.encode_single(gt[b, valid][matches.clamp(min=0)], priors)
        fg = matches >= 0
        expected_lab = torch.where(fg, labels[b, valid][matches.clamp(min=0)], 0)
        assert torch.equal(lab[b], expected_lab)
        scale = target[fg].abs().amax(0)
        torch.testing.assert_close(loc[b][fg], target[fg], rtol=4 * EPS[dtype],
                                   atol=(8 * EPS[dtype] * scale).max().item())
        assert (loc[b][~fg] == 0).all()
        positives += int(fg.sum())
    assert positives > 20


# ---------------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile

def _small(gen, B, G, P, label_dtype=torch.int64):
    gt, labels = random_gt(gen, B, G)
    priors = dyadic_boxes(gen, P, cells=4, max_cells=2)
    return gt.float(), labels.to(label_dtype), priors.float()


OPCHECK_SAMPLES = {
    "bipartite": lambda g: (*_small(g, 2, 4, 9), 0.5, list(V), "bipartite"),
    "argmax": lambda g: (*_small(g, 2, 4, 9), 0.5, list(OTHER_VARIANCES), "argmax"),
    "int32_labels": lambda g: (*_small(g, 3, 2, 6, torch.int32), 0.0, list(V), "argmax"),
    "no_gt": lambda g: (*_small(g, 2, 0, 5), 0.5, list(V), "bipartite"),
    "no_image": lambda g: (*_small(g, 0, 3, 5), 0.5, list(V), "argmax"),
    "no_prior": lambda g: (*_small(g, 2, 3, 0), 0.5, list(V), "bipartite"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
def test_opcheck(device, gen, sample, dtype):
    args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in OPCHECK_SAMPLES[sample](gen)]
    opcheck(torch.ops.ssd_fast.ssd_targets.default, on(args, device))


def _both_modes(gt, labels, priors):
    a = ops.ssd_targets(gt, labels, priors)
    b = ops.ssd_targets(gt, labels, priors, 0.4, OTHER_VARIANCES, mode="argmax")
    return (*a, *b)


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(device, gen, dynamic):
    torch._dynamo.reset()
    compiled = torch.compile(_both_modes, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    sizes = [(2, 5, 30), (3, 7, 40)] if dynamic else [(2, 5, 30)]
    for B, G, P in sizes:
        args = on(_small(gen, B, G, P), device)
        for got, expected in zip(compiled(*args), _both_modes(*args)):
            assert got.shape == expected.shape and got.dtype == expected.dtype
            assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------
# Bad input: the C++ checks and the fake kernel raise the same error, naming the argument

def _with_variances(args, variances=V):
    gt, labels, priors, thr, mode = args
    return (gt, labels, priors, thr, variances, mode)


_OK = (torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.int64), torch.zeros(5, 4), 0.5,
       "bipartite")
_VARIANCES = "variances must be 4 positive finite numbers, got "
BAD_INPUTS = {name: (_with_variances(args), exc, message)
              for name, (args, exc, message) in MATCH_BAD_INPUTS.items()}
BAD_INPUTS.update({
    "variances_short": (_with_variances(_OK, (0.1, 0.1, 0.2)), ValueError,
                        _VARIANCES + "[0.1, 0.1, 0.2]"),
    "variances_long": (_with_variances(_OK, (0.1, 0.1, 0.2, 0.2, 0.2)), ValueError,
                       _VARIANCES + "[0.1, 0.1, 0.2, 0.2, 0.2]"),
    "variances_empty": (_with_variances(_OK, ()), ValueError, _VARIANCES + "[]"),
    "variances_zero": (_with_variances(_OK, (0.1, 0.0, 0.2, 0.2)), ValueError,
                       _VARIANCES + "[0.1, 0, 0.2, 0.2]"),
    "variances_negative": (_with_variances(_OK, (0.1, 0.1, -0.2, 0.2)), ValueError,
                           _VARIANCES + "[0.1, 0.1, -0.2, 0.2]"),
    "variances_nan": (_with_variances(_OK, (0.1, 0.1, 0.2, NAN)), ValueError,
                      _VARIANCES + "[0.1, 0.1, 0.2, nan]"),
    "variances_inf": (_with_variances(_OK, (INF, 0.1, 0.2, 0.2)), ValueError,
                      _VARIANCES + "[inf, 0.1, 0.2, 0.2]"),
    "variances_empty_batch": (((torch.zeros(0, 0, 4), torch.ones(0, 0, dtype=torch.int64),
                                torch.zeros(0, 4), 0.5, (0.1, 0.1, 0.2), "argmax")), ValueError,
                              _VARIANCES + "[0.1, 0.1, 0.2]"),
})


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises(device, case):
    args, exc, message = BAD_INPUTS[case]
    with pytest.raises(exc, match=f"^{re.escape('ssd_targets: ' + message)}$"):
        ops.ssd_targets(*on(args, device))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_fake_kernel_raises_the_same_error(device, case):
    args, exc, _ = BAD_INPUTS[case]
    assert_fake_raises_the_same(lambda d: ops.ssd_targets(*on(args, d)), device, exc)


@pytest.mark.parametrize("where", ["priors", "gt_labels", "gt_boxes"])
def test_mixed_devices_raise(device, where):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    args = {"gt_boxes": torch.zeros(2, 3, 4, device=device),
            "gt_labels": torch.ones(2, 3, dtype=torch.int64, device=device),
            "priors": torch.zeros(5, 4, device=device)}
    args[where] = args[where].to(other)
    first, second = ("gt_boxes", "priors") if where != "gt_labels" else ("gt_boxes", "gt_labels")
    message = (f"ssd_targets: {first} and {second} must be on the same device, "
               f"got {args[first].device} and {args[second].device}")
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        ops.ssd_targets(args["gt_boxes"], args["gt_labels"], args["priors"])


# ---------------------------------------------------------------------------------------------
# Determinism

@pytest.mark.parametrize("mode", MODES)
def test_deterministic(device, gen, mode):
    priors = ssd300_voc_priors().float().to(device)
    gt, labels = random_gt(gen, 8, 6)
    gt, labels = gt.float().to(device), labels.to(device)
    first = ops.ssd_targets(gt, labels, priors, 0.5, V, mode)
    for _ in range(2):
        again = ops.ssd_targets(gt, labels, priors, 0.5, V, mode)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    if device.type == "cpu":
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = ops.ssd_targets(gt, labels, priors, 0.5, V, mode)
        finally:
            torch.set_num_threads(threads)
        assert all(torch.equal(a, b) for a, b in zip(first, one))


# ---------------------------------------------------------------------------------------------
# The CUDA kernel's shared-memory GT limit

def smem_limit_gts(device, dtype):
    """The documented limit: the shared memory a block may opt in to (227 KiB on an H100/H200,
    and on the emulated device) less 4 KiB for the kernel's static shared memory and a 128-byte
    slack, over the bytes per GT (6 values of the compute type, two int32, one byte)."""
    if device.type == "cuda":
        optin = torch.cuda.get_device_properties(device).shared_memory_per_block_optin
    else:
        optin = 227 * 1024
    return (optin - 4096 - 128) // (6 * (8 if dtype == torch.float64 else 4) + 9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_gt_limit(device, gen, dtype):
    """On CUDA an image's GTs live in shared memory: one GT more than fits is refused with the
    real limit in the message (6915 GTs in float32, 4003 in float64 on an H100/H200), and G at
    the limit runs and matches the CPU."""
    if device.type == "cpu":
        pytest.skip("the CPU kernel keeps its GTs in ordinary memory: no such limit")
    limit = smem_limit_gts(device, dtype)
    priors = dyadic_boxes(gen, 8).to(dtype)
    for G in (limit + 1, limit):
        gt = dyadic_boxes(gen, G).view(1, G, 4).to(dtype)
        labels = torch.randint(1, 3, (1, G), generator=gen)
        if G > limit:
            with pytest.raises(RuntimeError, match=re.escape(
                    f"ssd_targets: on CUDA at most {limit} GT boxes per image fit for this dtype, "
                    f"got G = {G}")):
                run_targets(device, gt, labels, priors, mode="argmax")
        else:
            got = run_targets(device, gt, labels, priors, mode="argmax")
            expected = ops.ssd_targets(gt, labels, priors, 0.5, V, "argmax")
            assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_concurrent_host_threads(device, gen):
    """Host threads calling ssd_targets at once with GTs of different sizes (past the default
    48 KiB of dynamic shared memory): the kernel's shared-memory attribute is set once, not per
    call, so no thread lowers it under another's launch. (The emulated device lets another host
    thread run between setting the attribute and the launch.)"""
    import threading

    priors = dyadic_boxes(gen, 8).double().to(device)
    cases = []
    for G in (900, 1000):  # 51 and 57 KiB of float64 GTs
        gt = dyadic_boxes(gen, G).view(1, G, 4).double()
        labels = torch.randint(1, 3, (1, G), generator=gen)
        cases.append((gt.to(device), labels.to(device),
                      ops.ssd_targets(gt, labels, priors.cpu(), 0.5, V, "argmax")))
    errors = []

    def work(gt, labels, expected):
        try:
            for _ in range(3):
                got = ops.ssd_targets(gt, labels, priors, 0.5, V, "argmax")
                assert all(torch.equal(a.cpu(), b) for a, b in zip(got, expected))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=case) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
