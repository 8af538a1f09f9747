"""nms and batched_nms (SPEC §2) on every device, against torchvision and the references.

torchvision's CPU kernels are the oracle: they compute the IoU with the same operations in
the same order (so the same bits) and compare it with the double threshold, as ours do.
torchvision's CPU nms has no float16/bfloat16 kernel: half inputs are compared with
torchvision on their exact float32 values (our half kernels compute in float32).
"""
import math
import re

import pytest
import torch
import torchvision

from ssd_fast import ops
from ssd_fast.ops import reference as ref

from _fake_parity import assert_fake_raises_the_same
from emu_device import opcheck

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
THRESHOLDS = [0.0, 0.5, 1.0]
NAN = math.nan


# ---------------------------------------------------------------------------------------------
# Inputs, built on the CPU from the seeded `gen`. Coordinates are multiples of 1/4 in [0, 64]
# (dyadic: exact in every dtype, and after torchvision's batched_nms coordinate offsets), so
# every implementation sees the very same boxes.

def grid(x):
    return torch.round(x * 4) / 4


def random_boxes(gen, n, scale=64.0, max_side=0.5):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * scale * max_side + 0.25
    return grid(torch.cat([xy, xy + wh], dim=1))


def clustered_boxes(gen, n, clusters=20):
    """Many heavy overlaps: boxes jittered around a few objects, as a detector outputs."""
    centre = torch.rand(clusters, 2, generator=gen, dtype=torch.float64) * 48 + 8
    size = torch.rand(clusters, 2, generator=gen, dtype=torch.float64) * 12 + 4
    which = torch.randint(0, clusters, (n,), generator=gen)
    c = centre[which] + torch.randn(n, 2, generator=gen, dtype=torch.float64)
    s = size[which] * (1 + 0.15 * torch.randn(n, 2, generator=gen, dtype=torch.float64)).abs()
    return grid(torch.cat([c - s / 2, c + s / 2], dim=1)).clamp(0, 64)


# Pairs (a, b) whose IoU is exactly 0.5, 1 or 0, as torchvision computes it too.
_PAIRS = [
    ([0, 0, 2, 1], [0, 0, 1, 1]),    # nested: 1 / 2
    ([0, 0, 3, 1], [1, 0, 4, 1]),    # shifted: 2 / 4
    ([0, 0, 2, 2], [0, 0, 2, 2]),    # identical: 1
    ([0, 0, 1, 1], [1, 0, 2, 1]),    # touching: 0
    ([0, 0, 4, 4], [0, 0, 4, 2]),    # nested: 8 / 16
    ([0, 0, 2, 2], [1, 1, 3, 3]),    # 1 / 7: below 0.5, above 0
]


def threshold_pairs(gen, n_pairs):
    """Copies of _PAIRS at random grid offsets and power-of-two scales, far apart."""
    boxes = []
    for i in range(n_pairs):
        a, b = _PAIRS[int(torch.randint(len(_PAIRS), (1,), generator=gen))]
        scale = 2.0 ** int(torch.randint(-2, 3, (1,), generator=gen))
        off = torch.tensor([(i % 16) * 16.0, (i // 16) * 16.0] * 2, dtype=torch.float64)
        boxes += [torch.tensor(a, dtype=torch.float64) * scale + off,
                  torch.tensor(b, dtype=torch.float64) * scale + off]
    return torch.stack(boxes) if boxes else torch.zeros(0, 4, dtype=torch.float64)


DEGENERATE = torch.tensor([
    [5.0, 5.0, 5.0, 15.0],    # zero width
    [5.0, 5.0, 15.0, 5.0],    # zero height
    [5.0, 5.0, 5.0, 5.0],     # a point
    [5.0, 5.0, 5.0, 5.0],     # the same point: torchvision's IoU is NaN
    [15.0, 5.0, 5.0, 15.0],   # x2 < x1: zero area (torchvision: negative area)
    [15.0, 15.0, 5.0, 5.0],   # both inverted
    [0.0, 0.0, 20.0, 20.0],
    [0.0, 0.0, 20.0, 20.0],
    [1.0, 1.0, 21.0, 21.0],
], dtype=torch.float64)


def random_scores(gen, n, ties=False):
    if ties:  # few distinct values: many equal scores, ranked by index
        return torch.randint(0, 4, (n,), generator=gen).double() / 4
    return torch.rand(n, generator=gen, dtype=torch.float64)


def make_case(gen, kind, n):
    ties = kind.endswith("ties")
    base = kind.removesuffix("_ties")
    if base == "random":
        boxes = random_boxes(gen, n)
    elif base == "clustered":
        boxes = clustered_boxes(gen, n)
    elif base == "pairs":
        boxes = threshold_pairs(gen, n // 2)
    elif base == "degenerate":
        boxes = torch.cat([DEGENERATE, random_boxes(gen, max(0, n - len(DEGENERATE)), scale=20)])
    else:
        raise ValueError(kind)
    return boxes, random_scores(gen, len(boxes), ties)


KINDS = ["random", "clustered", "pairs", "degenerate", "random_ties", "clustered_ties",
         "pairs_ties"]


def tv_nms(boxes, scores, thr):
    """torchvision on the CPU, on the float32 values of half inputs."""
    if boxes.dtype in (torch.float16, torch.bfloat16):
        boxes, scores = boxes.float(), scores.float()
    return torchvision.ops.nms(boxes.cpu(), scores.cpu(), thr)


def tv_batched_nms(boxes, scores, idxs, thr):
    if boxes.dtype in (torch.float16, torch.bfloat16):
        boxes, scores = boxes.float(), scores.float()
    return torchvision.ops.batched_nms(boxes.cpu(), scores.cpu(), idxs.cpu(), thr)


def check_keep(out, expected, device):
    assert out.dtype == torch.int64 and out.device.type == device.type and out.dim() == 1
    assert torch.equal(out.cpu(), expected), (out[:20].tolist(), expected[:20].tolist())


# ---------------------------------------------------------------------------------------------
# nms

@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_matches_torchvision(device, gen, dtype, kind, thr):
    boxes, scores = (t.to(dtype) for t in make_case(gen, kind, 300))
    out = ops.nms(boxes.to(device), scores.to(device), thr)
    expected = tv_nms(boxes, scores, thr)
    check_keep(out, expected, device)
    if thr == 1.0:  # nothing is suppressed: the whole rank order
        assert len(out) == len(boxes)
    check_keep(out, ref.nms(boxes, scores, thr), device)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 64, 65, 1000, 5000])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_nms_sizes(device, gen, kind, n):
    boxes, scores = (t.float() for t in make_case(gen, kind, n))
    out = ops.nms(boxes.to(device), scores.to(device), 0.5)
    check_keep(out, tv_nms(boxes, scores, 0.5), device)


@pytest.mark.parametrize("n", [20000, 100_000])
def test_nms_large(device, gen, n):
    """Past one CUDA chunk (16384 boxes); on the CPU against torchvision (clustered, so that
    torchvision's O(N * kept) loop stays fast). Emulated, 20000 boxes take ~10 s (two chunks,
    the second one tested against the first one's kept boxes): 100000 go the same way."""
    if device.type == "emu" and n > 20000:
        pytest.skip("emulated: the 20000-box case reaches the same paths")
    boxes, scores = (t.float() for t in make_case(gen, "clustered", n))
    out = ops.nms(boxes.to(device), scores.to(device), 0.5)
    check_keep(out, tv_nms(boxes, scores, 0.5), device)


# Every box kept: an off-by-one at a size limit of the CUDA kernels (the 64-box mask words and
# column blocks, the 16384-position chunks) loses or repeats a box that a suppressing input might
# have dropped anyway. Disjoint boxes, distinct scores: the output is the whole rank order.
CHUNK = 16384  # nms_batched_nms.cu's kChunk
WORD_SIZES = [63, 64, 65, 127, 128, 129]
CHUNK_SIZES = [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 1]


def disjoint_boxes(n):
    """n unit squares on a grid with a gap of one between neighbours: every IoU is 0."""
    side = math.isqrt(max(n - 1, 0)) + 1
    i = torch.arange(n, dtype=torch.float32)
    x, y = (i % side) * 2, torch.div(i, side, rounding_mode="floor") * 2
    return torch.stack([x, y, x + 1, y + 1], dim=1)


def rank_order(scores):
    return torch.sort(scores, descending=True, stable=True).indices


@pytest.mark.parametrize("n", WORD_SIZES + CHUNK_SIZES)
def test_nms_keeps_every_disjoint_box_at_each_size_limit(device, gen, n):
    """Emulated, each full chunk of 16384 boxes takes ~10 s (16384^2 / 2 IoUs, each launch
    twice): the four chunk sizes ~50 s."""
    boxes, scores = disjoint_boxes(n), torch.randperm(n, generator=gen).float()
    check_keep(ops.nms(boxes.to(device), scores.to(device), 0.5), rank_order(scores), device)


@pytest.mark.parametrize("n", WORD_SIZES + CHUNK_SIZES)
def test_batched_nms_keeps_every_disjoint_box_at_each_size_limit(device, gen, n):
    """Three classes, so that class segments cross every chunk border (each later chunk tested
    against the kept boxes of the segments begun before it)."""
    boxes, scores = disjoint_boxes(n), torch.randperm(n, generator=gen).float()
    idxs = torch.randint(0, 3, (n,), generator=gen)
    out = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5)
    check_keep(out, rank_order(scores), device)


def test_nms_threshold_is_exact(device):
    """IoU > threshold exactly, the float IoU against the double threshold (torchvision's CPU
    kernel does the same): IoU 0.5 is suppressed by any threshold below 0.5, even by less
    than a float32 ulp, and not by 0.5."""
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    for thr, kept in [(0.5, [0, 1]), (0.5 - 1e-12, [0]), (math.nextafter(0.5, 0), [0]),
                      (0.5 + 1e-12, [0, 1])]:
        out = ops.nms(boxes.to(device), scores.to(device), thr).cpu()
        assert out.tolist() == kept, thr
        assert torchvision.ops.nms(boxes, scores, thr).tolist() == kept


def test_nms_known_values(device):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],
                          [1.0, 1.0, 11.0, 11.0],     # IoU 81/119 with box 0
                          [20.0, 20.0, 30.0, 30.0],   # far from all
                          [0.0, 0.0, 10.0, 5.0],      # IoU 0.5 with box 0
                          [20.0, 20.0, 30.0, 30.0]],  # same as box 2, same score
                         device=device)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.7, 0.5], device=device)
    # rank: 1, 0, 3, 2, 4. Box 0: IoU 0.68 with box 1; box 3: 36/114 with box 1, 0.5 with box 0
    assert ops.nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert ops.nms(boxes, scores, 0.67).tolist() == [1, 3, 2]
    assert ops.nms(boxes, scores, 0.7).tolist() == [1, 0, 3, 2]
    assert ops.nms(boxes, scores, 0.0).tolist() == [1, 2]


def test_nms_degenerate_where_torchvision_iou_is_nan(device):
    """SPEC's IoU is 0 where the union is <= 0; torchvision's is NaN there (identical points)
    or uses a negative area (x2 < x1). Neither suppresses anything, so the kept boxes agree."""
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0],   # identical points
                          [15.0, 0.0, 5.0, 10.0], [5.0, 0.0, 15.0, 10.0]])  # inverted, normal
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    tv_iou = torchvision.ops.box_iou(boxes, boxes)
    assert tv_iou[0, 1].isnan() and tv_iou[2, 3].isnan()  # unions 0 and -100 + 100 - 0
    assert (ops.box_iou(boxes, boxes)[[0, 2], [1, 3]] == 0).all()
    for thr in THRESHOLDS:
        out = ops.nms(boxes.to(device), scores.to(device), thr).cpu()
        assert out.tolist() == [0, 1, 2, 3] == torchvision.ops.nms(boxes, scores, thr).tolist()


def test_nms_nan_and_infinite(device, gen):
    """NaN scores rank first (torch.sort, so torchvision); boxes with a NaN coordinate
    neither suppress nor get suppressed (IoU 0; torchvision: NaN, the same decisions)."""
    boxes, scores = (t.float() for t in make_case(gen, "clustered", 200))
    scores[[3, 50, 120]] = NAN
    boxes[7, 0] = NAN
    boxes[8, 3] = NAN
    boxes[9] = NAN
    boxes[10] = boxes[11]  # a NaN-free duplicate pair next to them
    scores[[7, 8]] = 2.0  # NaN boxes with the best scores
    out = ops.nms(boxes.to(device), scores.to(device), 0.5)
    assert out[:3].tolist() == [3, 50, 120]
    assert {7, 8, 9} <= set(out.tolist())
    check_keep(out, tv_nms(boxes, scores, 0.5), device)
    check_keep(out, ref.nms(boxes, scores, 0.5), device)
    # infinite scores rank as numbers; -0.0 ties with +0.0 (lower index first)
    scores = torch.tensor([0.0, -0.0, math.inf, -math.inf, 0.0, -0.0])
    far = torch.arange(6.0).repeat_interleave(4).view(6, 4) * 10 + torch.tensor([0, 0, 1, 1.0])
    out = ops.nms(far.to(device), scores.to(device), 0.5).cpu()
    assert out.tolist() == [2, 0, 1, 4, 5, 3] == tv_nms(far, scores, 0.5).tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_nms_non_contiguous(device, gen, dtype):
    boxes, scores = (t.to(dtype) for t in make_case(gen, "clustered", 200))
    strided = torch.full((200, 8), NAN, dtype=dtype)
    strided[:, ::2] = boxes
    s2 = torch.stack([scores, scores], 1)[:, 1]
    out = ops.nms(strided[:, ::2].to(device), s2.to(device), 0.5)
    check_keep(out, tv_nms(boxes, scores, 0.5), device)


# ---------------------------------------------------------------------------------------------
# batched_nms

def random_idxs(gen, n, classes=5, dtype=torch.int64):
    return torch.randint(0, classes, (n,), generator=gen).to(dtype)


@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_matches_torchvision(device, gen, dtype, kind, thr):
    # 300 boxes: torchvision takes its coordinate-offset path; on the grid the offsets are
    # exact, so its IoU is the per-class IoU and the output must be the same.
    boxes, scores = (t.to(dtype) for t in make_case(gen, kind, 300))
    idxs = random_idxs(gen, len(boxes))
    out = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), thr)
    check_keep(out, tv_batched_nms(boxes, scores, idxs, thr), device)
    check_keep(out, ref.batched_nms(boxes, scores, idxs, thr), device)


@pytest.mark.parametrize("classes", [1, 3, 80, 5000])
@pytest.mark.parametrize("kind", ["random", "clustered", "clustered_ties"])
def test_batched_nms_many_boxes(device, gen, kind, classes):
    """5000 boxes: torchvision loops over the classes and sorts at the end, unstably: equal
    scores may come in any order there. The kept set and the score sequence must match it;
    the order of equal scores (lower index first) is checked against the reference."""
    boxes, scores = (t.float() for t in make_case(gen, kind, 5000))
    idxs = random_idxs(gen, len(boxes), classes)
    kept = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5)
    out = kept.cpu()
    expected = tv_batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(out.sort().values, expected.sort().values)
    assert torch.equal(scores[out], scores[expected])
    if classes <= 80:
        check_keep(kept, ref.batched_nms(boxes, scores, idxs, 0.5), device)
    else:  # the reference's per-class Python loop would be slow; ties: lower index first
        assert bool(((scores[out][1:] < scores[out][:-1]) |
                     ((scores[out][1:] == scores[out][:-1]) & (out[1:] > out[:-1]))).all())


@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_batched_nms_idx_values(device, gen, idx_dtype):
    """Any integer dtype and any values (negative, huge): only equality matters."""
    boxes, scores = (t.float() for t in make_case(gen, "clustered", 400))
    small = random_idxs(gen, 400, 4)
    big = {torch.int64: torch.tensor([-2**63, -1, 7, 2**62]), torch.int32: torch.tensor([-2**31, -1, 7, 2**30]),
           torch.int16: torch.tensor([-2**15, -1, 7, 2**14]), torch.uint8: torch.tensor([0, 1, 7, 255])}[idx_dtype]
    idxs = big[small].to(idx_dtype)
    out = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5)
    check_keep(out, ops.batched_nms(boxes, scores, small, 0.5), device)
    check_keep(out, ref.batched_nms(boxes, scores, small, 0.5), device)


def test_batched_nms_one_class_is_nms(device, gen):
    boxes, scores = (t.float().to(device) for t in make_case(gen, "clustered", 3000))
    idxs = torch.full((3000,), 7, device=device)
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), ops.nms(boxes, scores, 0.5))


def test_batched_nms_one_million_boxes(device, gen):
    """Memory linear in N: 10^6 boxes in 1000 classes (no N^2 mask, no per-class loop);
    every class's kept boxes equal nms on that class alone, in score order. Emulated: 20000
    boxes (two chunks, classes across the chunk border), 1000 classes all the same."""
    n = 20_000 if device.type == "emu" else 1_000_000
    boxes = clustered_boxes(gen, n, clusters=n // 200).float()
    scores = torch.rand(n, generator=gen)
    idxs = torch.randint(0, 1000, (n,), generator=gen)
    out = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5).cpu()
    s = scores[out]
    assert bool(((s[1:] < s[:-1]) | ((s[1:] == s[:-1]) & (out[1:] > out[:-1]))).all())
    kept_class = idxs[out]
    for c in [0, 1, 500, 999]:
        members = torch.nonzero(idxs == c).flatten()
        expected = members[torchvision.ops.nms(boxes[members], scores[members], 0.5)]
        assert torch.equal(out[kept_class == c], expected)


# ---------------------------------------------------------------------------------------------
# Both ops: empty inputs, determinism, registration

@pytest.mark.parametrize("dtype", DTYPES)
def test_empty(device, dtype):
    boxes, scores = torch.zeros(0, 4, dtype=dtype, device=device), torch.zeros(0, dtype=dtype, device=device)
    for out in (ops.nms(boxes, scores, 0.5),
                ops.batched_nms(boxes, scores, torch.zeros(0, dtype=torch.int64, device=device), 0.5)):
        assert out.shape == (0,) and out.dtype == torch.int64 and out.device.type == device.type


def test_deterministic(device, gen):
    n = 3000 if device.type == "emu" else 20000  # emulated: each launch runs twice and compares
    boxes, scores = (t.float().to(device) for t in make_case(gen, "clustered_ties", n))
    idxs = random_idxs(gen, n, 10).to(device)
    assert torch.equal(ops.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5))
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5),
                       ops.batched_nms(boxes, scores, idxs, 0.5))


OPCHECK_SAMPLES = {
    "nms": lambda g: ("nms", make_case(g, "clustered", 50) + (0.5,)),
    "nms_empty": lambda g: ("nms", make_case(g, "random", 0) + (0.5,)),
    "batched": lambda g: ("batched_nms", make_case(g, "clustered", 50) + (random_idxs(g, 50), 0.5)),
}


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_opcheck(device, gen, sample, dtype):
    name, args = OPCHECK_SAMPLES[sample](gen)
    args = [a.to(device).to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point()
            else a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    # The output size depends on the data: the static AOT test cannot trace it (on the CPU it
    # passed only because fake tensors run small CPU inputs through the real kernel); the
    # dynamic one does, with an unbacked size.
    opcheck(getattr(torch.ops.ssd_fast, name).default, args, skip=("test_aot_dispatch_static",))


def _nms_then_gather(boxes, scores, idxs):
    keep = ops.nms(boxes, scores, 0.5)
    keep2 = ops.batched_nms(boxes, scores, idxs, 0.5)
    return boxes[keep], scores[keep2]


@pytest.mark.parametrize("backend", ["aot_eager"])  # inductor: covered by test_multiclass_nms
def test_torch_compile_fullgraph(device, gen, backend):
    """The output size is data dependent: an unbacked dynamic size in the graph."""
    torch._dynamo.reset()
    compiled = torch.compile(_nms_then_gather, backend=backend, fullgraph=True)
    for n in (50, 80):
        boxes, scores = (t.float().to(device) for t in make_case(gen, "clustered", n))
        idxs = random_idxs(gen, n).to(device)
        for got, expected in zip(compiled(boxes, scores, idxs), _nms_then_gather(boxes, scores, idxs)):
            assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------
# Bad input: the C++ checks and the fake kernels raise the same error

def _z(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def _i(*shape, dtype=torch.int64):
    return torch.zeros(shape, dtype=dtype)


BAD_INPUTS = {
    "rank_1": ("nms", lambda: (_z(4), _z(1), 0.5), RuntimeError,
               "nms: boxes must have shape [N, 4], got [4]"),
    "rank_3": ("nms", lambda: (_z(2, 3, 4), _z(2), 0.5), RuntimeError,
               "nms: boxes must have shape [N, 4], got [2, 3, 4]"),
    "last_dim": ("nms", lambda: (_z(3, 5), _z(3), 0.5), RuntimeError,
                 "nms: boxes must have shape [N, 4], got [3, 5]"),
    "int_boxes": ("nms", lambda: (_i(3, 4), _z(3), 0.5), RuntimeError,
                  "nms: boxes must be float16, bfloat16, float32 or float64, got int64"),
    "scores_dtype": ("nms", lambda: (_z(3, 4), _z(3, dtype=torch.float64), 0.5), RuntimeError,
                     "nms: boxes and scores must have the same dtype, got float32 and float64"),
    "scores_len": ("nms", lambda: (_z(3, 4), _z(4), 0.5), RuntimeError,
                   "nms: scores must have shape [N] = [3] (N from boxes), got [4]"),
    "scores_rank": ("nms", lambda: (_z(3, 4), _z(3, 1), 0.5), RuntimeError,
                    "nms: scores must have shape [N] = [3] (N from boxes), got [3, 1]"),
    "thr_high": ("nms", lambda: (_z(3, 4), _z(3), 1.5), ValueError,
                 "nms: iou_threshold must be in [0, 1], got 1.5"),
    "thr_negative": ("nms", lambda: (_z(3, 4), _z(3), -0.1), ValueError,
                     "nms: iou_threshold must be in [0, 1], got -0.1"),
    "thr_nan": ("nms", lambda: (_z(3, 4), _z(3), NAN), ValueError,
                "nms: iou_threshold must be in [0, 1], got nan"),
    "batched_rank": ("batched_nms", lambda: (_z(3, 4, 1), _z(3), _i(3), 0.5), RuntimeError,
                     "batched_nms: boxes must have shape [N, 4], got [3, 4, 1]"),
    "batched_idxs_float": ("batched_nms", lambda: (_z(3, 4), _z(3), _z(3), 0.5), RuntimeError,
                           "batched_nms: idxs must be an integer tensor, got float32"),
    "batched_idxs_bool": ("batched_nms", lambda: (_z(3, 4), _z(3), _i(3, dtype=torch.bool), 0.5),
                          RuntimeError, "batched_nms: idxs must be an integer tensor, got bool"),
    "batched_idxs_len": ("batched_nms", lambda: (_z(3, 4), _z(3), _i(2), 0.5), RuntimeError,
                         "batched_nms: idxs must have shape [N] = [3] (N from boxes), got [2]"),
    "batched_thr": ("batched_nms", lambda: (_z(3, 4), _z(3), _i(3), 2.0), ValueError,
                    "batched_nms: iou_threshold must be in [0, 1], got 2"),
    "batched_scores_half": ("batched_nms", lambda: (_z(3, 4), _z(3, dtype=torch.float16), _i(3), 0.5),
                            RuntimeError, "batched_nms: boxes and scores must have the same dtype, "
                                          "got float32 and float16"),
}

OPS = {"nms": ops.nms, "batched_nms": ops.batched_nms}


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


@pytest.mark.parametrize("which", ["scores", "idxs"])
def test_mixed_devices_raise(device, which):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    boxes, scores, idxs = _z(3, 4).to(device), _z(3).to(device), _i(3).to(device)
    if which == "scores":
        scores = scores.to(other)
        message = f"batched_nms: boxes and scores must be on the same device, got {device_str(device)} and {other}"
    else:
        idxs = idxs.to(other)
        message = f"batched_nms: boxes and idxs must be on the same device, got {device_str(device)} and {other}"
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        ops.batched_nms(boxes, scores, idxs, 0.5)


def device_str(device):
    return str(torch.zeros(0, device=device).device)
