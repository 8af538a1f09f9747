"""match_priors (SPEC §2) on every device: against the pure-PyTorch reference (exact indices and
IoUs), against torchvision's SSDMatcher (argmax mode), hand-computed examples of the tie rules,
properties of the greedy bipartite matching, registration (opcheck, torch.compile) and errors."""
import re

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import SSDMatcher

from ssd_fast import ops
from ssd_fast.ops import reference as ref

from _fake_parity import assert_fake_raises_the_same
from emu_device import opcheck
from _target_cases import (DTYPES, MATCH_BAD_INPUTS, MATCH_CASES, MODES, THRESHOLDS, dtype_id,
                           dyadic_boxes, iou_matrix, on, one_thread, random_gt,
                           ssd300_voc_priors)

MATCH_EPS = 1e-6


def run_match(device, gt_boxes, gt_labels, priors, thr=0.5, mode="bipartite"):
    idx, iou = ops.match_priors(gt_boxes.to(device), gt_labels.to(device), priors.to(device),
                                thr, mode)
    assert idx.device.type == device.type and iou.device.type == device.type
    return idx.cpu(), iou.cpu()


def check_match(out, gt_boxes, gt_labels, priors, thr, mode):
    """The op's output equals the reference's exactly: indices and IoUs (bit for bit: the IoU
    arithmetic is reference.box_iou's, half types in float32 rounded once)."""
    idx, iou = out
    B, P = gt_labels.shape[0], priors.shape[0]
    with one_thread():
        e_idx, e_iou = ref.match_priors(gt_boxes.cpu(), gt_labels.cpu(), priors.cpu(), thr, mode)
    assert idx.shape == (B, P) and idx.dtype == torch.int64
    assert iou.shape == (B, P) and iou.dtype == gt_boxes.dtype
    bad = (idx != e_idx).nonzero()
    assert torch.equal(idx, e_idx), (f"{len(bad)} priors differ, first (image, prior): "
                                     f"{bad[:5].tolist()}, got {idx[tuple(bad[:5].T)].tolist()}, "
                                     f"expected {e_idx[tuple(bad[:5].T)].tolist()}")
    bad = (iou != e_iou).nonzero()
    assert torch.equal(iou, e_iou), (bad[:5].tolist(), iou[tuple(bad[:5].T)].tolist(),
                                     e_iou[tuple(bad[:5].T)].tolist())
    return idx, iou


# ---------------------------------------------------------------------------------------------
# Against the reference

@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_ssd300_priors_match_reference(device, gen, mode, dtype, thr):
    priors = ssd300_voc_priors().to(dtype)
    gt, labels = random_gt(gen, 3, 9)
    gt = gt.to(dtype)
    idx, _ = check_match(run_match(device, gt, labels, priors, thr, mode), gt, labels, priors,
                         thr, mode)
    assert (idx >= 0).sum() >= 3 * 3  # matches happen
    if thr == 0.0:  # every prior takes its best GT, even at IoU 0 (images with a valid GT)
        has_gt = (labels >= 0).any(1)
        assert (idx[has_gt] >= 0).all() and (idx[~has_gt] == -1).all()


@pytest.mark.parametrize("mode", MODES)
def test_ssd300_full_batch_matches_reference(device, gen, mode):
    """B = 32 images, G = 100 rows with padding, the 8732 SSD300 priors. The reference's
    bipartite loop is O(G^2 P) per image: there, one image has 100 valid GTs, the others few."""
    priors = ssd300_voc_priors().float()
    if mode == "bipartite":
        num_valid = torch.randint(0, 8, (32,), generator=gen)
        num_valid[5] = 100
    else:
        num_valid = torch.randint(0, 101, (32,), generator=gen)
    num_valid[0] = 0  # an image without GT
    gt, labels = random_gt(gen, 32, 100, num_valid=num_valid)
    # scatter the padding: permute the rows of every image
    perm = torch.argsort(torch.rand(32, 100, generator=gen), dim=1)
    gt, labels = gt.gather(1, perm.unsqueeze(-1).expand(-1, -1, 4)).float(), labels.gather(1, perm)
    idx, iou = check_match(run_match(device, gt, labels, priors, 0.5, mode), gt, labels, priors,
                           0.5, mode)
    assert (idx[0] == -1).all() and (iou[0] == 0).all()
    has_gt = (labels >= 0).any(1)
    assert (idx[has_gt] >= 0).any(1).all() and (idx[~has_gt] == -1).all()


@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", MATCH_CASES)
def test_adversarial_cases_match_reference(device, gen, case, mode, dtype, thr):
    gt, labels, priors = MATCH_CASES[case](gen)
    gt, priors = gt.to(dtype), priors.to(dtype)
    check_match(run_match(device, gt, labels, priors, thr, mode), gt, labels, priors, thr, mode)


@pytest.mark.parametrize("label_dtype", [torch.int32, torch.int16, torch.int8, torch.uint8],
                         ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_integer_label_dtypes(device, gen, mode, label_dtype):
    gt, labels, priors = MATCH_CASES["dyadic_grid"](gen)
    if label_dtype == torch.uint8:  # no padding: labels >= 0
        labels = labels.clamp(min=0)
    expected = run_match(device, gt.float(), labels, priors.float(), 0.5, mode)
    out = run_match(device, gt.float(), labels.to(label_dtype), priors.float(), 0.5, mode)
    assert out[0].dtype == torch.int64
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


@pytest.mark.parametrize("B, G, P", [(0, 3, 5), (2, 0, 5), (2, 3, 0), (0, 0, 0), (0, 3, 0),
                                     (3, 0, 0), (1, 1, 0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_empty(device, gen, mode, dtype, B, G, P):
    gt = dyadic_boxes(gen, B * G).view(B, G, 4).to(dtype)
    labels = torch.ones(B, G, dtype=torch.int64)
    priors = dyadic_boxes(gen, P).to(dtype)
    idx, iou = run_match(device, gt, labels, priors, 0.5, mode)
    assert idx.shape == (B, P) and idx.dtype == torch.int64
    assert iou.shape == (B, P) and iou.dtype == dtype
    assert (idx == -1).all() and (iou == 0).all()  # G == 0: nothing matched, IoU 0
    check_match((idx, iou), gt, labels, priors, 0.5, mode)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_many_gts(device, gen, mode, dtype):
    """G = 5000 GTs (many duplicates) on 40 priors. The CUDA kernel keeps an image's GTs in
    shared memory: where they do not fit it must refuse with its documented error, not crash.
    Emulated, G = 7000, past the limit of both dtypes (matching 5000 GTs there takes minutes;
    the runs up to the limit are test_ssd_targets.py's test_gt_limit)."""
    G = 7000 if device.type == "emu" else 5000
    gt = dyadic_boxes(gen, 2 * G).view(2, G, 4).to(dtype)
    labels = torch.randint(-1, 3, (2, G), generator=gen)
    priors = dyadic_boxes(gen, 40).to(dtype)
    try:
        out = run_match(device, gt, labels, priors, 0.5, mode)
    except RuntimeError as e:
        if device.type not in ("cuda", "emu"):
            raise
        assert re.fullmatch(r"match_priors: on CUDA at most \d+ GT boxes per image fit for this "
                            rf"dtype, got G = {G}", str(e)), str(e)
        return
    check_match(out, gt, labels, priors, 0.5, mode)  # bipartite: at most P greedy steps


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_inputs(device, gen, mode):
    gt, labels, priors = MATCH_CASES["dyadic_grid"](gen)
    gt, priors = gt.float().to(device), priors.float().to(device)
    labels = labels.to(device)
    strided = (gt.transpose(0, 1).contiguous().transpose(0, 1),  # [B, G, 4], G-major
               labels.t().contiguous().t(),
               priors.t().contiguous().t())
    assert not any(t.is_contiguous() for t in strided)
    out = ops.match_priors(*strided, 0.5, mode)
    expected = ops.match_priors(gt, labels, priors, 0.5, mode)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    # expanded priors (stride 0) and a sliced batch
    wide = torch.cat([gt, gt], dim=2)[:, :, :4]
    assert not wide.is_contiguous()
    assert torch.equal(ops.match_priors(wide, labels, priors, 0.5, mode)[0], expected[0])
    one = priors[:1].expand(5, 4)
    check_match([t.cpu() for t in ops.match_priors(gt, labels, one, 0.5, mode)], gt, labels, one,
                0.5, mode)


# ---------------------------------------------------------------------------------------------
# Hand-computed examples (independent of the reference)

# p0 and p3 are the same box. g0 = p0 (IoU 1 with p0 and p3, 1/3 with p1); g1 has IoU 3/5 with
# p0, p1 and p3. p2 overlaps nothing.
_PRIORS = [[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [4.0, 0.0, 6.0, 2.0], [0.0, 0.0, 2.0, 2.0]]
_GTS = [[0.0, 0.0, 2.0, 2.0], [0.5, 0.0, 2.5, 2.0]]
_P06 = torch.tensor(0.6, dtype=torch.float32).item()  # 3 / 5 rounded to float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("mode, expected_idx, expected_iou", [
    # bipartite: (p0, g0) at IoU 1 (ties with (p3, g0): lowest prior); g1's best free priors
    # are p1 and p3 at 3/5: lowest prior p1. Then p3 takes its best GT g0 (IoU 1 >= 0.5).
    ("bipartite", [0, 1, -1, 0], [1.0, 0.6, 0.0, 1.0]),
    # argmax: p0 -> g0, p1 -> g1, p3 -> g0 by threshold; then g0 is forced onto p0 (its first
    # best prior), and g1, later, onto p0 too (its first best prior): g1 wins p0, IoU 2.
    ("argmax", [1, 1, -1, 0], [2.0, 0.6, 0.0, 1.0]),
])
def test_known_example(device, mode, expected_idx, expected_iou, dtype):
    gt = torch.tensor([_GTS], dtype=dtype)
    priors = torch.tensor(_PRIORS, dtype=dtype)
    idx, iou = run_match(device, gt, torch.tensor([[3, 7]]), priors, 0.5, mode)
    assert idx.tolist() == [expected_idx]
    six = 0.6 if dtype == torch.float64 else _P06
    assert iou.tolist() == [[six if v == 0.6 else v for v in expected_iou]]


def test_threshold_is_inclusive(device):
    # IoU exactly 1/2 (a box covering half of the prior) is matched at threshold 0.5.
    priors = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0], [4.0, 4.0, 5.0, 5.0]])
    gt = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    labels = torch.tensor([[1]])
    for mode in MODES:
        idx, iou = run_match(device, gt, labels, priors, 0.5, mode)
        assert idx.tolist() == [[0, 0, -1]], mode
        assert iou[0, 1] == 0.5
    # at threshold 1 only IoU exactly 1 passes (bipartite: p0 is the bipartite match anyway)
    idx, _ = run_match(device, gt, labels, priors, 1.0, "bipartite")
    assert idx.tolist() == [[0, -1, -1]]


def test_greedy_bipartite_can_leave_an_overlapping_gt_unmatched(device):
    """SPEC step 1 is greedy (Caffe's MatchBBox): the globally best pair first. A overlaps only
    p0 (IoU 1/9); B overlaps p0 (5/11) and p1 (1/15). B takes p0 first, and A, though it
    overlaps a prior, gets none (a maximum matching would give A p0 and B p1)."""
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]], dtype=torch.float64)
    gt = torch.tensor([[[8.0, 0.0, 18.0, 10.0], [0.0, 0.0, 22.0, 10.0]]], dtype=torch.float64)
    idx, iou = run_match(device, gt, torch.tensor([[1, 2]]), priors, 0.5, "bipartite")
    assert idx.tolist() == [[1, -1]]
    assert iou.tolist() == [[100 / 220, 20 / 300]]


@pytest.mark.parametrize("mode", MODES)
def test_tiny_overlap_is_no_bipartite_pair(device, mode):
    # IoU 1e-8 (<= 1e-6): no bipartite pair, so unmatched; argmax forces it anyway.
    priors = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]], dtype=torch.float64)
    gt = torch.tensor([[[0.5, 0.5, 0.5001, 0.5001], [2.0, 2.0, 3.0, 3.0]]], dtype=torch.float64)
    thr = 0.0 if mode == "argmax" else 0.5
    idx, iou = run_match(device, gt, torch.tensor([[1, 2]]), priors, thr, mode)
    if mode == "bipartite":
        assert idx.tolist() == [[-1, 1]]
        assert 0 < iou[0, 0] < MATCH_EPS
    else:
        assert idx.tolist() == [[0, 1]] and iou.tolist() == [[2.0, 2.0]]


def test_argmax_forces_gt_overlapping_nothing(device):
    # A GT that overlaps no prior is still forced onto its best prior: the first one (IoU 0).
    priors = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]])
    gt = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]]])
    idx, iou = run_match(device, gt, torch.tensor([[1, 2]]), priors, 0.5, "argmax")
    assert idx.tolist() == [[1, -1]] and iou.tolist() == [[2.0, 0.0]]
    idx, iou = run_match(device, gt, torch.tensor([[1, 2]]), priors, 0.5, "bipartite")
    assert idx.tolist() == [[0, -1]] and iou.tolist() == [[1.0, 0.0]]


def test_bipartite_tie_lowest_prior_then_lowest_gt(device):
    # Two mirrored GTs tie (IoU 3/5) on the prior C: the lower GT index takes it, and the other
    # one its second choice (IoU 2/5, a prior only it overlaps). Threshold 1: no step 2.
    C = [0.25, 0.25, 0.75, 0.75]
    left, right = [0.125, 0.25, 0.625, 0.75], [0.375, 0.25, 0.875, 0.75]
    only_left, only_right = [0.0, 0.25, 0.375, 0.75], [0.625, 0.25, 1.0, 0.75]
    priors = torch.tensor([[5.0, 5.0, 6.0, 6.0], C, only_left, only_right])
    for gts, expected in [([left, right], [-1, 0, -1, 1]), ([right, left], [-1, 0, 1, -1])]:
        idx, iou = run_match(device, torch.tensor([gts]), torch.tensor([[1, 1]]), priors, 1.0,
                             "bipartite")
        assert idx.tolist() == [expected], gts
        assert iou[0, 1:].tolist() == [_P06, 0.4000000059604645, 0.4000000059604645]
    # identical priors: the lower prior index; the copy then takes its best GT by threshold
    dup = torch.tensor([[5.0, 5.0, 6.0, 6.0], C, C, only_left])
    idx, _ = run_match(device, torch.tensor([[left]]), torch.tensor([[2]]), dup, 1.0, "bipartite")
    assert idx.tolist() == [[-1, 0, -1, -1]]
    idx, _ = run_match(device, torch.tensor([[left]]), torch.tensor([[2]]), dup, 0.5, "bipartite")
    assert idx.tolist() == [[-1, 0, 0, -1]]
    # argmax: a GT's best prior among identical ones is the lower index
    idx, iou = run_match(device, torch.tensor([[left]]), torch.tensor([[2]]), dup, 1.0, "argmax")
    assert idx.tolist() == [[-1, 0, -1, -1]] and iou[0, 1] == 2.0


def test_padding_rows_are_ignored(device, gen):
    # Padding rows (any negative label) hold boxes identical to the priors: never matched, and
    # they do not count in matched_iou; the indices of valid rows are their original rows.
    priors = dyadic_boxes(gen, 20).float()
    valid = dyadic_boxes(gen, 3).float()
    gt = torch.stack([priors[0], valid[0], priors[1], valid[1], priors[2], valid[2]]).unsqueeze(0)
    labels = torch.tensor([[-1, 4, -2, 5, -100, 6]])
    for mode in MODES:
        idx, iou = run_match(device, gt, labels, priors, 0.5, mode)
        alone = run_match(device, valid.unsqueeze(0), torch.tensor([[4, 5, 6]]), priors, 0.5,
                          mode)
        remap = torch.tensor([1, 3, 5])
        assert torch.equal(idx, torch.where(alone[0] >= 0, remap[alone[0].clamp(min=0)], -1))
        assert torch.equal(iou, alone[1])


def test_batch_equals_images_one_by_one(device, gen):
    gt, labels = random_gt(gen, 6, 7)
    gt, priors = gt.float(), dyadic_boxes(gen, 200, cells=16, max_cells=8).float()
    for mode in MODES:
        idx, iou = run_match(device, gt, labels, priors, 0.5, mode)
        for b in range(6):
            one = run_match(device, gt[b:b + 1], labels[b:b + 1], priors, 0.5, mode)
            assert torch.equal(idx[b:b + 1], one[0]) and torch.equal(iou[b:b + 1], one[1])


# ---------------------------------------------------------------------------------------------
# argmax mode against torchvision's SSDMatcher

def _untied_batch(gen, B, G, priors):
    """Random GTs, with GTs made padding where torchvision's result would depend on ties: two
    GTs sharing a best prior (torchvision's index assignment then has no defined winner), a
    GT whose best prior is not unique, or a prior with two best GTs at IoU >= 0.5."""
    gt, labels = random_gt(gen, B, G, pad_prob=0.2)
    for b in range(B):
        taken = set()
        for g in range(G):
            if labels[b, g] < 0:
                continue
            iou = iou_matrix(gt[b, g:g + 1], priors)[0]
            best = iou.max()
            if best <= 0 or (iou == best).sum() != 1 or int(iou.argmax()) in taken:
                labels[b, g] = -1
                continue
            taken.add(int(iou.argmax()))
        valid = labels[b] >= 0
        if valid.sum() >= 2:
            iou = iou_matrix(gt[b, valid], priors)
            top2 = iou.topk(2, dim=0).values
            assert not ((top2[0] == top2[1]) & (top2[0] >= 0.5)).any()
    return gt, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_argmax_matches_torchvision_ssd_matcher(device, gen, dtype):
    priors = ssd300_voc_priors().to(dtype)
    gt, labels = _untied_batch(gen, 6, 12, priors)
    gt = gt.to(dtype)
    idx, _ = run_match(device, gt, labels, priors, 0.5, "argmax")
    matcher = SSDMatcher(0.5)
    for b in range(6):
        valid = (labels[b] >= 0).nonzero().flatten()
        if len(valid) == 0:
            assert (idx[b] == -1).all()
            continue
        with one_thread():
            matches = matcher(torchvision.ops.box_iou(gt[b, valid], priors))  # -1: background
        expected = torch.where(matches >= 0, valid[matches.clamp(min=0)], -1)
        assert torch.equal(idx[b], expected), b
    assert (idx >= 0).sum() > 20


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)

_cell = st.integers(0, 7)
_extent = st.integers(0, 4)
# boxes with corners on a 1/8 grid (many exact ties), sometimes zero-sized
_grid_box = st.tuples(_cell, _cell, _extent, _extent).map(
    lambda b: (b[0] / 8, b[1] / 8, (b[0] + b[2]) / 8, (b[1] + b[3]) / 8))


@st.composite
def _match_inputs(draw):
    B = draw(st.integers(1, 3))
    G = draw(st.integers(0, 7))
    P = draw(st.integers(1, 12))
    gt = draw(st.lists(_grid_box, min_size=B * G, max_size=B * G))
    labels = draw(st.lists(st.integers(-1, 3), min_size=B * G, max_size=B * G))
    priors = draw(st.lists(_grid_box, min_size=P, max_size=P))
    return (torch.tensor(gt, dtype=torch.float64).reshape(B, G, 4),
            torch.tensor(labels, dtype=torch.int64).reshape(B, G),
            torch.tensor(priors, dtype=torch.float64).reshape(P, 4))


@settings(max_examples=40, deadline=None)
@given(inputs=_match_inputs(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(MODES),
       thr=st.sampled_from([0.0, 0.25, 0.5, 0.6, 1.0]))
def test_property_equals_reference(device, inputs, dtype, mode, thr):
    gt, labels, priors = inputs
    gt, priors = gt.to(dtype), priors.to(dtype)
    check_match(run_match(device, gt, labels, priors, thr, mode), gt, labels, priors, thr, mode)


@settings(max_examples=40, deadline=None)
@given(inputs=_match_inputs(), thr=st.sampled_from([0.0, 0.5, 1.0]))
def test_property_bipartite_matching_is_maximal(device, inputs, thr):
    """Greedy bipartite matching is maximal: a valid GT that overlaps some prior (IoU > 1e-6)
    and owns no prior has every one of its overlapping priors matched to another GT. Hence
    (the SPEC's "every GT that overlaps anything gets its own distinct prior") every such GT
    is matched whenever each of them overlaps at least as many priors as there are such GTs.
    Matched priors hold the IoU with their GT; others the best IoU."""
    gt, labels, priors = (t.float() if t.is_floating_point() else t for t in inputs)
    idx, iou = run_match(device, gt, labels, priors, thr, "bipartite")
    for b in range(gt.shape[0]):
        valid = (labels[b] >= 0).nonzero().flatten().tolist()
        if not valid:
            assert (idx[b] == -1).all() and (iou[b] == 0).all()
            continue
        ious = iou_matrix(gt[b, valid], priors)  # [g, P]
        matched = set(idx[b].tolist()) - {-1}
        assert matched <= set(valid)
        overlapping = [k for k in range(len(valid)) if ious[k].max() > MATCH_EPS]
        for k in overlapping:
            if valid[k] in matched:
                continue
            neighbours = (ious[k] > MATCH_EPS).nonzero().flatten()
            assert ((idx[b, neighbours] >= 0) & (idx[b, neighbours] != valid[k])).all(), (b, k)
        if all(int((ious[k] > MATCH_EPS).sum()) >= len(overlapping) for k in overlapping):
            assert {valid[k] for k in overlapping} <= matched
        for p in range(priors.shape[0]):
            g = int(idx[b, p])
            expected = ious[valid.index(g), p] if g >= 0 else ious[:, p].max()
            assert iou[b, p] == expected


@settings(max_examples=30, deadline=None)
@given(inputs=_match_inputs(), thr=st.sampled_from([0.0, 0.5, 1.0]))
def test_property_argmax_every_gt_owns_its_best_prior(device, inputs, thr):
    """argmax: each valid GT's best prior (lowest index of max IoU) is matched to that GT, or
    to a later GT with the same best prior; forced priors have IoU 2; every other prior is
    matched to its best GT iff that IoU >= threshold."""
    gt, labels, priors = (t.float() if t.is_floating_point() else t for t in inputs)
    idx, iou = run_match(device, gt, labels, priors, thr, "argmax")
    for b in range(gt.shape[0]):
        valid = (labels[b] >= 0).nonzero().flatten().tolist()
        if not valid:
            assert (idx[b] == -1).all()
            continue
        ious = iou_matrix(gt[b, valid], priors)
        best_prior = ious.argmax(dim=1).tolist()
        forced = {}
        for k, p in enumerate(best_prior):
            forced[p] = valid[k]  # a later GT overwrites
        for p in range(priors.shape[0]):
            if p in forced:
                assert int(idx[b, p]) == forced[p] and iou[b, p] == 2.0
            else:
                best, g = ious[:, p].max(dim=0)
                assert int(idx[b, p]) == (valid[int(g)] if best >= thr else -1)
                assert iou[b, p] == best


# ---------------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile

def _small(gen, B, G, P, label_dtype=torch.int64):
    gt, labels = random_gt(gen, B, G)
    priors = dyadic_boxes(gen, P, cells=4, max_cells=2)
    return gt.float(), labels.to(label_dtype), priors.float()


OPCHECK_SAMPLES = {
    "bipartite": lambda g: (*_small(g, 2, 4, 9), 0.5, "bipartite"),
    "argmax": lambda g: (*_small(g, 2, 4, 9), 0.5, "argmax"),
    "int32_labels": lambda g: (*_small(g, 3, 2, 6, torch.int32), 0.0, "argmax"),
    "threshold_1": lambda g: (*_small(g, 1, 5, 4), 1.0, "bipartite"),
    "no_gt": lambda g: (*_small(g, 2, 0, 5), 0.5, "bipartite"),
    "no_image": lambda g: (*_small(g, 0, 3, 5), 0.5, "argmax"),
    "no_prior": lambda g: (*_small(g, 2, 3, 0), 0.5, "bipartite"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
def test_opcheck(device, gen, sample, dtype):
    args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in OPCHECK_SAMPLES[sample](gen)]
    opcheck(torch.ops.ssd_fast.match_priors.default, on(args, device))


def _both_modes(gt, labels, priors):
    a = ops.match_priors(gt, labels, priors, 0.5, "bipartite")
    b = ops.match_priors(gt, labels, priors, 0.0, mode="argmax")
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

BAD_INPUTS = MATCH_BAD_INPUTS


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises(device, case):
    args, exc, message = BAD_INPUTS[case]
    with pytest.raises(exc, match=f"^{re.escape('match_priors: ' + message)}$"):
        ops.match_priors(*on(args, device))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_fake_kernel_raises_the_same_error(device, case):
    args, exc, _ = BAD_INPUTS[case]
    assert_fake_raises_the_same(lambda d: ops.match_priors(*on(args, d)), device, exc)


@pytest.mark.parametrize("where", ["priors", "gt_labels", "gt_boxes"])
def test_mixed_devices_raise(device, where):
    # On CPU the other device is "meta" (the fake kernel must refuse the mix); on CUDA the CPU.
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    args = {"gt_boxes": torch.zeros(2, 3, 4, device=device),
            "gt_labels": torch.ones(2, 3, dtype=torch.int64, device=device),
            "priors": torch.zeros(5, 4, device=device)}
    args[where] = args[where].to(other)
    first, second = ("gt_boxes", "priors") if where != "gt_labels" else ("gt_boxes", "gt_labels")
    message = (f"match_priors: {first} and {second} must be on the same device, "
               f"got {args[first].device} and {args[second].device}")
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        ops.match_priors(args["gt_boxes"], args["gt_labels"], args["priors"])


# ---------------------------------------------------------------------------------------------
# Determinism

@pytest.mark.parametrize("mode", MODES)
def test_deterministic(device, gen, mode):
    priors = ssd300_voc_priors().float().to(device)
    gt, labels = random_gt(gen, 8, 6)
    gt, labels = gt.float().to(device), labels.to(device)
    first = ops.match_priors(gt, labels, priors, 0.5, mode)
    for _ in range(2):
        again = ops.match_priors(gt, labels, priors, 0.5, mode)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    if device.type == "cpu":  # and whatever the number of threads
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = ops.match_priors(gt, labels, priors, 0.5, mode)
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(first[0], one[0]) and torch.equal(first[1], one[1])
