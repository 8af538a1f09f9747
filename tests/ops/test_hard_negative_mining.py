"""hard_negative_mining (SPEC §2) on every device: against torchvision's sort-twice selection
(inputs without ties), against the reference (many ties, every dtype, matched_iou), the
ranking rules (NaN highest, -0.0 == 0.0, ties to the lower prior), registration and errors."""
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_fast import ops
from ssd_fast.bench import sort_twice_mining
from ssd_fast.ops import reference as ref

from _fake_parity import assert_fake_raises_the_same
from emu_device import opcheck
from _target_cases import DTYPES, INF, NAN, dtype_id, on, one_thread

RATIOS = [0.0, 1.0, 3.0, 2.5]


def run_mining(device, loss, labels, ratio=3.0, matched_iou=None, neg_overlap=0.5):
    mask = ops.hard_negative_mining(loss.to(device), labels.to(device), ratio,
                                    None if matched_iou is None else matched_iou.to(device),
                                    neg_overlap)
    assert mask.dtype == torch.bool and mask.shape == loss.shape
    assert mask.device.type == device.type
    return mask.cpu()


def _extreme(values, idx, worst):
    """(is_nan, value, index) of the worst (worst=True) or best of the losses at `idx`, in the
    order NaN first, then larger value, then lower index (-0.0 == 0.0)."""
    v = values[idx]
    nan = v.isnan()
    if worst and not nan.all():
        keep = ~nan
        v, idx = v[keep], idx[keep]
        pick = v == v.min()
        return (0, float(v.min()), int(idx[pick].max()))
    if worst:
        return (1, 0.0, int(idx.max()))
    if nan.any():
        return (1, 0.0, int(idx[nan].min()))
    return (0, float(v.max()), int(idx[v == v.max()].min()))


def _ranks_before(a, b):
    return a[0] > b[0] or (a[0] == b[0] and (a[1] > b[1] or (a[1] == b[1] and a[2] < b[2])))


def check_selection(mask, loss, labels, ratio, matched_iou=None, neg_overlap=0.5):
    """SPEC, independently of the reference: positives, and per image k eligible negatives,
    k = min(floor(num_pos * ratio), num_eligible), none of them ranking below an unselected
    eligible one, and among equal losses the lower prior indices."""
    values = loss.double()
    for b in range(loss.shape[0]):
        pos = labels[b] > 0
        eligible = labels[b] == 0
        if matched_iou is not None:
            eligible &= matched_iou[b] < neg_overlap
        assert torch.equal(mask[b] & pos, pos)
        chosen = mask[b] & ~pos
        assert not (chosen & ~eligible).any()
        num_pos, num_eligible = int(pos.sum()), int(eligible.sum())
        product = num_pos * ratio  # may be inf for a huge finite ratio
        k = num_eligible if product >= num_eligible else math.floor(product)
        assert int(chosen.sum()) == k, (b, int(chosen.sum()), k)
        rest = eligible & ~chosen
        if chosen.any() and rest.any():
            w = _extreme(values[b], chosen.nonzero().flatten(), worst=True)
            r = _extreme(values[b], rest.nonzero().flatten(), worst=False)
            assert _ranks_before(w, r), (b, w, r)


def check_mining(mask, loss, labels, ratio, matched_iou=None, neg_overlap=0.5):
    with one_thread():
        expected = ref.hard_negative_mining(loss, labels, ratio, matched_iou, neg_overlap)
    bad = (mask != expected).nonzero()[:5]
    assert torch.equal(mask, expected), (bad.tolist(), mask[tuple(bad.T)].tolist())
    check_selection(mask, loss, labels, ratio, matched_iou, neg_overlap)


def random_labels(gen, B, P, pos_prob=0.02, ignore_prob=0.05):
    u = torch.rand(B, P, generator=gen)
    labels = torch.where(u < pos_prob, torch.randint(1, 21, (B, P), generator=gen), 0)
    return torch.where((u >= pos_prob) & (u < pos_prob + ignore_prob), -1, labels)


def quantised_loss(gen, B, P, levels=6):
    """Losses in {0, 0.25, ..., }: exact in every dtype, so most of them tie."""
    return torch.randint(0, levels, (B, P), generator=gen).double() * 0.25


def quantised_iou(gen, B, P):
    """matched_iou in {0, 1/8, ..., 1} and 2.0 (forced): exactly 0.5 happens."""
    iou = torch.randint(0, 9, (B, P), generator=gen).double() / 8
    return torch.where(torch.rand(B, P, generator=gen) < 0.02, 2.0, iou)


# ---------------------------------------------------------------------------------------------
# Against torchvision

@pytest.mark.parametrize("ratio", [0, 1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_matches_torchvision_sort_twice(device, gen, dtype, ratio):
    B, P = 12, 8732
    # distinct losses (a permutation): no ties, where torchvision's unstable sort is defined
    loss = torch.stack([torch.randperm(P, generator=gen) for _ in range(B)]).to(dtype) / P * 5
    labels = random_labels(gen, B, P, pos_prob=0.01, ignore_prob=0.0)
    labels[0] = 0                                      # no positive: nothing selected
    labels[1] = torch.where(torch.rand(P, generator=gen) < 0.4, 3, 0)  # k > negatives
    mask = run_mining(device, loss, labels, float(ratio))
    with one_thread():
        expected = sort_twice_mining(loss, labels, ratio)
    assert torch.equal(mask, expected)
    assert not mask[0].any()
    if ratio >= 3:
        assert mask[1].all()
    check_selection(mask, loss, labels, ratio)


# ---------------------------------------------------------------------------------------------
# Against the reference

@pytest.mark.parametrize("with_iou", [False, True], ids=["no_iou", "matched_iou"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("ratio", RATIOS)
def test_ties_match_reference(device, gen, ratio, dtype, with_iou):
    B, P = 8, 1003  # not a multiple of any block or SIMD width
    loss = quantised_loss(gen, B, P).to(dtype)
    labels = random_labels(gen, B, P, pos_prob=0.03)
    labels[2] = torch.where(labels[2] > 0, 0, labels[2])  # no positive
    labels[5, :700] = torch.where(labels[5, :700] == 0, 1, labels[5, :700])  # k > eligible
    iou = quantised_iou(gen, B, P).to(dtype) if with_iou else None
    mask = run_mining(device, loss, labels, ratio, iou, 0.5)
    check_mining(mask, loss, labels, ratio, iou, 0.5)
    assert not mask[2].any()
    if ratio > 0:
        assert (mask & (labels == 0)).sum() > 0


@pytest.mark.parametrize("iou_dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("loss_dtype", DTYPES, ids=dtype_id)
def test_matched_iou_dtype_differs_from_loss(device, gen, loss_dtype, iou_dtype):
    B, P = 4, 300
    loss = quantised_loss(gen, B, P, levels=4).to(loss_dtype)
    labels = random_labels(gen, B, P, pos_prob=0.05)
    iou = quantised_iou(gen, B, P).to(iou_dtype)
    for overlap in (0.5, 0.3, 0.0, 1.0):
        mask = run_mining(device, loss, labels, 3.0, iou, overlap)
        check_mining(mask, loss, labels, 3.0, iou, overlap)


@pytest.mark.parametrize("ratio", RATIOS + [0.29])
def test_ssd300_batch_matches_reference(device, gen, ratio):
    """The bench's shape: 32 images x 8732 priors, float32 losses with ties, float16
    matched_iou (another dtype than the losses)."""
    B, P = 32, 8732
    loss = torch.where(torch.rand(B, P, generator=gen) < 0.5, quantised_loss(gen, B, P),
                       torch.rand(B, P, generator=gen, dtype=torch.float64) * 5).float()
    labels = random_labels(gen, B, P, pos_prob=0.01)
    labels[7] = labels[7].clamp(max=0)
    iou = quantised_iou(gen, B, P).half()
    for matched_iou in (None, iou):
        mask = run_mining(device, loss, labels, ratio, matched_iou, 0.5)
        check_mining(mask, loss, labels, ratio, matched_iou, 0.5)


def _layout_losses(gen, B, P, layout):
    """Losses laid out to stress the selection's lower bound from group maxima (the CPU kernel
    takes the k-th largest maximum of groups of consecutive rows of 16 losses)."""
    if layout == "random":
        return torch.rand(B, P, generator=gen, dtype=torch.float64) * 5
    if layout == "ascending":  # every top loss in the last groups
        return torch.linspace(0, 5, P, dtype=torch.float64).repeat(B, 1)
    if layout == "descending":
        return torch.linspace(5, 0, P, dtype=torch.float64).repeat(B, 1)
    if layout == "one_block":  # the top losses in one run of priors, the rest equal
        loss = torch.ones(B, P, dtype=torch.float64)
        loss[:, P // 3:P // 3 + 600] = torch.rand(B, 600, generator=gen, dtype=torch.float64) + 2
        return loss
    if layout == "two_levels":  # k falls inside a huge tie
        return (torch.rand(B, P, generator=gen) < 0.002).double() + 1
    raise ValueError(layout)


@pytest.mark.parametrize("layout", ["random", "ascending", "descending", "one_block", "two_levels"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("P", [1000, 8732, 24571])
def test_many_priors_few_positives_match_reference(device, gen, layout, dtype, P):
    """Few positives among many priors (k << P): the regime of SSD, where the CPU kernel
    bounds the k-th largest loss from group maxima before selecting."""
    B = 3
    loss = _layout_losses(gen, B, P, layout).to(dtype)
    labels = random_labels(gen, B, P, pos_prob=0.004)
    labels[0, :5] = 1  # at least a few positives in the first image
    for ratio in (3.0, 0.29, 50.0):
        mask = run_mining(device, loss, labels, ratio)
        check_mining(mask, loss, labels, ratio)


def one_digit_losses(gen, dtype, digit, B, P, levels=24):
    """Losses whose order-preserving keys agree on every 8-bit digit but `digit` (0: the lowest),
    which takes `levels` values: the radix select decides at that digit's pass, and the k-th
    largest ties with many others."""
    int_t, width = (torch.int32, 4) if dtype == torch.float32 else (torch.int64, 8)
    top = digit == width - 1
    base = 0 if top else (0x3F000000 if width == 4 else 0x3FE0000000000000)  # 0.5
    j = torch.randint(0, levels, (B, P), generator=gen, dtype=torch.int64) + (0x30 if top else 0)
    return (base + (j << (8 * digit))).to(int_t).view(dtype)


# Every digit pass of the CUDA radix select (4 for float32 keys, 8 for float64) is the deciding one.
DIGIT_CASES = [(torch.float32, d) for d in range(4)] + [(torch.float64, d) for d in range(8)]


@pytest.mark.parametrize("dtype, digit", DIGIT_CASES,
                         ids=[f"{dtype_id(t)}-digit{d}" for t, d in DIGIT_CASES])
def test_each_digit_of_the_radix_select_decides(device, gen, dtype, digit):
    loss = one_digit_losses(gen, dtype, digit, 2, 700)
    labels = random_labels(gen, 2, 700, pos_prob=0.05)
    check_mining(run_mining(device, loss, labels), loss, labels, 3.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_non_finite_and_signed_losses_match_reference(device, gen, dtype):
    B, P = 6, 700
    values = torch.tensor([NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-30, -1e-30,
                           65504.0, 3e38], dtype=torch.float64)
    loss = values[torch.randint(0, len(values), (B, P), generator=gen)].to(dtype)
    labels = random_labels(gen, B, P, pos_prob=0.05)
    for ratio in (1.0, 3.0, 2.5):
        mask = run_mining(device, loss, labels, ratio)
        check_mining(mask, loss, labels, ratio)


@pytest.mark.parametrize("label_dtype", [torch.int32, torch.int16, torch.int8, torch.uint8],
                         ids=dtype_id)
def test_integer_label_dtypes(device, gen, label_dtype):
    loss = quantised_loss(gen, 3, 400).float()
    labels = random_labels(gen, 3, 400, pos_prob=0.05)
    if label_dtype == torch.uint8:
        labels = labels.clamp(min=0)
    expected = run_mining(device, loss, labels, 3.0)
    assert torch.equal(run_mining(device, loss, labels.to(label_dtype), 3.0), expected)
    check_mining(expected, loss, labels, 3.0)


@pytest.mark.parametrize("B, P", [(0, 10), (3, 0), (0, 0)])
@pytest.mark.parametrize("with_iou", [False, True], ids=["no_iou", "matched_iou"])
def test_empty(device, B, P, with_iou):
    loss = torch.zeros(B, P)
    iou = torch.zeros(B, P, dtype=torch.float16) if with_iou else None
    mask = run_mining(device, loss, torch.zeros(B, P, dtype=torch.int64), 3.0, iou)
    assert mask.shape == (B, P)


def test_non_contiguous_inputs(device, gen):
    loss = quantised_loss(gen, 600, 5).float().to(device).t()        # [5, 600], strided
    labels = random_labels(gen, 600, 5, pos_prob=0.05).to(device).t()
    iou = quantised_iou(gen, 600, 5).to(device).t()
    assert not (loss.is_contiguous() or labels.is_contiguous() or iou.is_contiguous())
    out = ops.hard_negative_mining(loss, labels, 3.0, iou, 0.5)
    assert torch.equal(out, ops.hard_negative_mining(loss.contiguous(), labels.contiguous(), 3.0,
                                                     iou.contiguous(), 0.5))
    check_mining(out.cpu(), loss.cpu(), labels.cpu(), 3.0, iou.cpu(), 0.5)
    # a loss row broadcast over the batch (stride 0)
    row = loss[:1].expand(5, 600)
    check_mining(run_mining(device, row, labels, 1.0), row.cpu(), labels.cpu(), 1.0)


# ---------------------------------------------------------------------------------------------
# Hand-computed values

def _one(values, labels, dtype=torch.float32):
    return torch.tensor([values], dtype=dtype), torch.tensor([labels])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_known_values(device, dtype):
    loss, labels = _one([9.0, 1.0, 4.0, 2.0, 4.0, 8.0, 3.0, 0.5],
                        [1, 0, 0, -1, 0, 2, 0, 0], dtype)
    # 2 positives (0, 5), ignored 3, negatives 1, 2, 4, 6, 7 (losses 1, 4, 4, 3, 0.5)
    expected = {0.0: [0, 5], 1.0: [0, 2, 4, 5], 1.5: [0, 2, 4, 5, 6], 2.0: [0, 1, 2, 4, 5, 6],
                2.5: [0, 1, 2, 4, 5, 6, 7], 0.25: [0, 5], 100.0: [0, 1, 2, 4, 5, 6, 7]}
    for ratio, chosen in expected.items():
        mask = run_mining(device, loss, labels, ratio)
        assert mask[0].nonzero().flatten().tolist() == chosen, ratio


def test_ties_go_to_the_lower_prior_index(device):
    loss, labels = _one([1.0, 2.0, 2.0, 5.0, 2.0, 2.0, 2.0], [1, 0, 0, -1, 0, 0, 0])
    assert run_mining(device, loss, labels, 2.0)[0].tolist() == [True, True, True, False, False,
                                                                 False, False]
    # with the ignored prior's label made 0 it is the best negative
    labels[0, 3] = 0
    assert run_mining(device, loss, labels, 3.0)[0].tolist() == [True, True, True, True, False,
                                                                 False, False]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_nan_losses_rank_highest(device, dtype):
    loss, labels = _one([1.0, NAN, 3.0, INF, NAN, 2.0, -INF], [1, 0, 0, 0, 0, 0, 0], dtype)
    chosen = {1.0: [0, 1], 2.0: [0, 1, 4], 3.0: [0, 1, 3, 4], 4.0: [0, 1, 2, 3, 4],
              5.0: [0, 1, 2, 3, 4, 5], 6.0: [0, 1, 2, 3, 4, 5, 6]}
    for ratio, expected in chosen.items():
        mask = run_mining(device, loss, labels, ratio)
        assert mask[0].nonzero().flatten().tolist() == expected, ratio
        check_mining(mask, loss, labels, ratio)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_negative_zero_ties_with_zero(device, dtype):
    # -0.0 == 0.0: the lower index wins, whichever sign it has; a tiny positive loss beats both
    for values, expected in [([5.0, -0.0, 0.0, -0.0], [0, 1]), ([5.0, 0.0, -0.0, 0.0], [0, 1]),
                             ([5.0, -0.0, 0.0, 2e-3], [0, 3]), ([5.0, -1.0, -0.0, -2.0], [0, 2])]:
        loss, labels = _one(values, [1, 0, 0, 0], dtype)
        mask = run_mining(device, loss, labels, 1.0)
        assert mask[0].nonzero().flatten().tolist() == expected, values
        check_mining(mask, loss, labels, 1.0)


def test_float64_losses_rank_in_float64(device):
    # values that float32 cannot tell apart still rank by their float64 value
    one = 1.0
    loss, labels = _one([9.0, one, one + 2e-16, one + 4e-16, one - 1e-16], [1, 0, 0, 0, 0],
                        torch.float64)
    assert run_mining(device, loss, labels, 2.0)[0].tolist() == [True, False, True, True, False]
    check_mining(run_mining(device, loss, labels, 2.0), loss, labels, 2.0)


def test_no_positives_selects_nothing(device, gen):
    loss = torch.rand(4, 500, generator=gen) * 10
    labels = torch.where(torch.rand(4, 500, generator=gen) < 0.1, -1, 0)
    for ratio in (0.0, 3.0, 1e6):
        assert not run_mining(device, loss, labels, ratio).any()
        assert not run_mining(device, loss, labels, ratio, torch.zeros(4, 500), 0.5).any()


def test_k_larger_than_eligible_selects_every_eligible(device, gen):
    loss = torch.rand(3, 200, generator=gen)
    labels = torch.where(torch.rand(3, 200, generator=gen) < 0.3, 1, 0)
    labels[:, :10] = -1
    iou = torch.where(torch.rand(3, 200, generator=gen) < 0.5, 0.25, 0.75)
    for matched_iou in (None, iou):
        eligible = labels == 0
        if matched_iou is not None:
            eligible &= matched_iou < 0.5
        for ratio in (3.0, 1e6, 1e300):
            mask = run_mining(device, loss, labels, ratio, matched_iou, 0.5)
            assert torch.equal(mask, (labels > 0) | eligible)


def _overflowing_ratio_case(gen):
    loss = torch.rand(2, 50, generator=gen)
    labels = torch.tensor([[1, 2, 3] + [0] * 47, [0] * 50])
    expected = torch.zeros(2, 50, dtype=torch.bool)
    expected[0] = True  # 3 positives, every one of the 47 negatives; nothing in image 1
    return loss, labels, expected


def test_ratio_overflowing_to_infinity(device, gen):
    """num_pos * ratio may overflow a double (the ratio is finite, so valid): k is then every
    eligible negative."""
    loss, labels, expected = _overflowing_ratio_case(gen)
    assert torch.equal(run_mining(device, loss, labels, 1.7e308), expected)


def test_ratio_overflowing_to_infinity_matches_reference(device, gen):
    # The reference must accept every valid input too (math.floor(inf) would raise).
    loss, labels, expected = _overflowing_ratio_case(gen)
    check_mining(run_mining(device, loss, labels, 1.7e308), loss, labels, 1.7e308)


def test_floor_of_the_product(device):
    # k = floor(num_pos * ratio) in double: 100 * 0.29 = 28.999999999999996 -> 28, and
    # 10 * 0.7 = 7.000000000000001 -> 7.
    P = 300
    loss = torch.arange(P, dtype=torch.float32).flip(0).unsqueeze(0)
    for num_pos, ratio, k in [(100, 0.29, 28), (10, 0.7, 7), (3, 2.5, 7), (1, 0.999, 0),
                              (2, 0.5, 1)]:
        labels = torch.zeros(1, P, dtype=torch.int64)
        labels[0, P - num_pos:] = 1
        mask = run_mining(device, loss, labels, ratio)
        assert mask[0, :P - num_pos].nonzero().flatten().tolist() == list(range(k)), (num_pos,
                                                                                       ratio)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_matched_iou_eligibility(device, dtype):
    # eligible: label 0 and matched_iou < neg_overlap (strictly; NaN is not < anything)
    loss, labels = _one([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0], [1, 0, 0, 0, 0, 0, 0, 0])
    iou = torch.tensor([[2.0, 0.5, NAN, 0.25, 0.75, 0.0, 0.375, 1.0]], dtype=dtype)
    mask = run_mining(device, loss, labels, 7.0, iou, 0.5)
    assert mask[0].nonzero().flatten().tolist() == [0, 3, 5, 6]
    check_mining(mask, loss, labels, 7.0, iou, 0.5)
    mask = run_mining(device, loss, labels, 7.0, iou, 0.51)  # 0.5 becomes eligible
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 3, 5, 6]
    assert run_mining(device, loss, labels, 7.0, iou, -1.0)[0].tolist() == [True] + [False] * 7
    mask = run_mining(device, loss, labels, 1.0, iou, 1e30)  # float16: +inf
    assert mask[0].tolist() == [True, True] + [False] * 6


@pytest.mark.parametrize("dtype, overlap", [(torch.float16, 0.4), (torch.bfloat16, 0.7)],
                         ids=["float16", "bfloat16"])
def test_neg_overlap_compared_in_matched_iou_dtype(device, dtype, overlap):
    """neg_overlap is rounded to matched_iou's dtype, as `matched_iou < neg_overlap` does in
    PyTorch: float16(0.4) = 0.39990234375 < 0.4 (bfloat16(0.7) = 0.69921875 < 0.7), yet a
    matched_iou of exactly that value is not < neg_overlap."""
    at = torch.tensor(overlap, dtype=dtype).item()
    assert at < overlap
    loss, labels = _one([9.0, 8.0, 7.0, 6.0], [1, 0, 0, 0])
    iou = torch.tensor([[0.0, at, 0.0, 0.0]], dtype=dtype)
    mask = run_mining(device, loss, labels, 3.0, iou, overlap)
    assert mask[0].tolist() == [True, False, True, True]
    check_mining(mask, loss, labels, 3.0, iou, overlap)
    # in float32 the same value is eligible
    mask = run_mining(device, loss, labels, 3.0, iou.float(), overlap)
    assert mask[0].tolist() == [True, True, True, True]


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)

@st.composite
def _mining_inputs(draw):
    B = draw(st.integers(1, 3))
    P = draw(st.integers(0, 40))
    loss = draw(st.lists(st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, 3.0, NAN, INF, -INF, 1e-8]),
                         min_size=B * P, max_size=B * P))
    labels = draw(st.lists(st.sampled_from([-1, 0, 0, 0, 1, 2]), min_size=B * P, max_size=B * P))
    iou = draw(st.none() | st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 2.0, NAN]),
                                    min_size=B * P, max_size=B * P))
    return (torch.tensor(loss, dtype=torch.float64).reshape(B, P),
            torch.tensor(labels, dtype=torch.int64).reshape(B, P),
            None if iou is None else torch.tensor(iou, dtype=torch.float64).reshape(B, P))


@settings(max_examples=60, deadline=None)
@given(inputs=_mining_inputs(), dtype=st.sampled_from(DTYPES),
       iou_dtype=st.sampled_from(DTYPES),
       ratio=st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.0, 10.0]),
       overlap=st.sampled_from([0.0, 0.5, 0.6, 1.0]))
def test_property_equals_reference(device, inputs, dtype, iou_dtype, ratio, overlap):
    loss, labels, iou = inputs
    loss = loss.to(dtype)
    iou = None if iou is None else iou.to(iou_dtype)
    mask = run_mining(device, loss, labels, ratio, iou, overlap)
    check_mining(mask, loss, labels, ratio, iou, overlap)


# ---------------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile

def _sample(gen, B, P, dtype=torch.float32, iou_dtype=None, label_dtype=torch.int64):
    loss = quantised_loss(gen, B, P).to(dtype)
    labels = random_labels(gen, B, P, pos_prob=0.2).to(label_dtype)
    iou = None if iou_dtype is None else quantised_iou(gen, B, P).to(iou_dtype)
    return loss, labels, iou


def _args(sample, ratio, overlap):
    loss, labels, iou = sample
    return loss, labels, ratio, iou, overlap


OPCHECK_SAMPLES = {
    "plain": lambda g: _args(_sample(g, 3, 20), 3.0, 0.5),
    "matched_iou": lambda g: _args(_sample(g, 3, 20, iou_dtype=torch.float32), 3.0, 0.5),
    "float16_loss_float32_iou": lambda g: _args(_sample(g, 2, 33, torch.float16, torch.float32),
                                                2.5, 0.5),
    "float64_int32_labels": lambda g: _args(_sample(g, 2, 17, torch.float64, torch.float16,
                                                    torch.int32), 1.0, 0.4),
    "ratio_0": lambda g: _args(_sample(g, 2, 9), 0.0, 0.5),
    "no_image": lambda g: _args(_sample(g, 0, 9, iou_dtype=torch.float32), 3.0, 0.5),
    "no_prior": lambda g: _args(_sample(g, 4, 0), 3.0, 0.5),
}


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
def test_opcheck(device, gen, sample):
    opcheck(torch.ops.ssd_fast.hard_negative_mining.default,
                          on(OPCHECK_SAMPLES[sample](gen), device))


def _mine_both(loss, labels, iou):
    return (ops.hard_negative_mining(loss, labels),
            ops.hard_negative_mining(loss, labels, 2.5, iou, 0.5))


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(device, gen, dynamic):
    torch._dynamo.reset()
    compiled = torch.compile(_mine_both, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    sizes = [(2, 50), (3, 70)] if dynamic else [(2, 50)]
    for B, P in sizes:
        args = on(_sample(gen, B, P, iou_dtype=torch.float16), device)
        for got, expected in zip(compiled(*args), _mine_both(*args)):
            assert got.dtype == torch.bool and torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------
# Bad input: the C++ checks and the fake kernel raise the same error, naming the argument

def _f(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def _i(*shape, dtype=torch.int64):
    return torch.zeros(shape, dtype=dtype)


FLOATS = "must be float16, bfloat16, float32 or float64"
BAD_INPUTS = {
    "loss_int": ((_i(2, 5), _i(2, 5), 3.0, None, 0.5), RuntimeError,
                 f"conf_loss {FLOATS}, got int64"),
    "loss_bool": ((_i(2, 5, dtype=torch.bool), _i(2, 5), 3.0, None, 0.5), RuntimeError,
                  f"conf_loss {FLOATS}, got bool"),
    "loss_1d": ((_f(5), _i(5), 3.0, None, 0.5), RuntimeError,
                "conf_loss must have shape [B, P], got [5]"),
    "loss_3d": ((_f(2, 5, 1), _i(2, 5, 1), 3.0, None, 0.5), RuntimeError,
                "conf_loss must have shape [B, P], got [2, 5, 1]"),
    "labels_shape": ((_f(2, 5), _i(2, 4), 3.0, None, 0.5), RuntimeError,
                     "labels must have shape [B, P] = [2, 5], got [2, 4]"),
    "labels_transposed": ((_f(2, 5), _i(5, 2), 3.0, None, 0.5), RuntimeError,
                          "labels must have shape [B, P] = [2, 5], got [5, 2]"),
    "labels_1d": ((_f(2, 5), _i(10), 3.0, None, 0.5), RuntimeError,
                  "labels must have shape [B, P] = [2, 5], got [10]"),
    "labels_float": ((_f(2, 5), _f(2, 5), 3.0, None, 0.5), RuntimeError,
                     "labels must be an integer tensor, got float32"),
    "labels_half": ((_f(2, 5), _f(2, 5, dtype=torch.float16), 3.0, None, 0.5), RuntimeError,
                    "labels must be an integer tensor, got float16"),
    "labels_bool": ((_f(2, 5), _i(2, 5, dtype=torch.bool), 3.0, None, 0.5), RuntimeError,
                    "labels must be an integer tensor, got bool"),
    "matched_iou_int": ((_f(2, 5), _i(2, 5), 3.0, _i(2, 5), 0.5), RuntimeError,
                        f"matched_iou {FLOATS}, got int64"),
    "matched_iou_shape": ((_f(2, 5), _i(2, 5), 3.0, _f(2, 4), 0.5), RuntimeError,
                          "matched_iou must have shape [B, P] = [2, 5], got [2, 4]"),
    "matched_iou_1d": ((_f(2, 5), _i(2, 5), 3.0, _f(10), 0.5), RuntimeError,
                       "matched_iou must have shape [B, P] = [2, 5], got [10]"),
    "matched_iou_broadcastable": ((_f(2, 5), _i(2, 5), 3.0, _f(1, 5), 0.5), RuntimeError,
                                  "matched_iou must have shape [B, P] = [2, 5], got [1, 5]"),
    "ratio_negative": ((_f(2, 5), _i(2, 5), -1.0, None, 0.5), ValueError,
                       "neg_pos_ratio must be a finite number >= 0, got -1"),
    "ratio_tiny_negative": ((_f(2, 5), _i(2, 5), -1e-9, None, 0.5), ValueError,
                            "neg_pos_ratio must be a finite number >= 0, got -1e-09"),
    "ratio_nan": ((_f(2, 5), _i(2, 5), NAN, None, 0.5), ValueError,
                  "neg_pos_ratio must be a finite number >= 0, got nan"),
    "ratio_inf": ((_f(2, 5), _i(2, 5), INF, None, 0.5), ValueError,
                  "neg_pos_ratio must be a finite number >= 0, got inf"),
    "ratio_empty": ((_f(0, 0), _i(0, 0), -3.0, None, 0.5), ValueError,
                    "neg_pos_ratio must be a finite number >= 0, got -3"),
    "overlap_nan": ((_f(2, 5), _i(2, 5), 3.0, _f(2, 5), NAN), ValueError,
                    "neg_overlap must be finite, got nan"),
    "overlap_inf": ((_f(2, 5), _i(2, 5), 3.0, None, INF), ValueError,
                    "neg_overlap must be finite, got inf"),
    "overlap_minus_inf": ((_f(2, 5), _i(2, 5), 3.0, _f(2, 5), -INF), ValueError,
                          "neg_overlap must be finite, got -inf"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises(device, case):
    args, exc, message = BAD_INPUTS[case]
    with pytest.raises(exc, match=f"^{re.escape('hard_negative_mining: ' + message)}$"):
        ops.hard_negative_mining(*on(args, device))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_fake_kernel_raises_the_same_error(device, case):
    args, exc, _ = BAD_INPUTS[case]
    assert_fake_raises_the_same(lambda d: ops.hard_negative_mining(*on(args, d)), device, exc)


@pytest.mark.parametrize("where", ["labels", "matched_iou", "conf_loss"])
def test_mixed_devices_raise(device, where):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    args = {"conf_loss": torch.zeros(2, 5, device=device),
            "labels": torch.zeros(2, 5, dtype=torch.int64, device=device),
            "matched_iou": torch.zeros(2, 5, device=device)}
    args[where] = args[where].to(other)
    second = "matched_iou" if where == "matched_iou" else "labels"
    message = (f"hard_negative_mining: conf_loss and {second} must be on the same device, "
               f"got {args['conf_loss'].device} and {args[second].device}")
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        ops.hard_negative_mining(args["conf_loss"], args["labels"], 3.0, args["matched_iou"], 0.5)


# ---------------------------------------------------------------------------------------------
# Determinism

@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=dtype_id)
def test_deterministic(device, gen, dtype):
    B, P = 16, 8732
    loss = quantised_loss(gen, B, P, levels=3).to(dtype).to(device)  # ties everywhere
    labels = random_labels(gen, B, P).to(device)
    iou = quantised_iou(gen, B, P).float().to(device)
    first = ops.hard_negative_mining(loss, labels, 3.0, iou, 0.5)
    for _ in range(3):
        assert torch.equal(first, ops.hard_negative_mining(loss, labels, 3.0, iou, 0.5))
    if device.type == "cpu":
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = ops.hard_negative_mining(loss, labels, 3.0, iou, 0.5)
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(first, one)
