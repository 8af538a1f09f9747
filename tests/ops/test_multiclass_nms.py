"""multiclass_nms and ssd_postprocess (SPEC §2) on every device, against the per-image,
per-class loop of ssd_fast.ops.reference and against torchvision's SSD.postprocess_detections.
"""
import math
import re

import pytest
import torch
import torchvision

from ssd_fast import ops
from ssd_fast.ops import reference as ref

from _fake_parity import assert_fake_raises_the_same
from emu_device import emu, opcheck

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
NAN, INF = math.nan, math.inf


def random_boxes(gen, *shape, scale=1.0):
    """Boxes in [0, scale] with sides in [0.02, 0.4] * scale: plenty of overlaps."""
    c = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * scale
    wh = (torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * 0.38 + 0.02) * scale
    return torch.cat([c - wh / 2, c + wh / 2], -1)


def random_scores(gen, b, p, c, ties=False):
    """Softmax-like scores; with ties, quantised to 1/64 so that many are equal."""
    s = torch.softmax(torch.randn(b, p, c, generator=gen, dtype=torch.float64) * 2, -1)
    return torch.round(s * 64) / 64 if ties else s


def check_detections(out, expected, device, dtype):
    names = ("det_boxes", "det_scores", "det_labels", "num_detections")
    for name, got, exp in zip(names, out, expected):
        assert got.device.type == device.type, name
        assert got.dtype == exp.dtype, name
        assert got.shape == exp.shape, name
        torch.testing.assert_close(got.cpu(), exp, rtol=0, atol=0, equal_nan=True, msg=name)
    assert out[0].dtype == dtype and out[1].dtype == dtype


def run(device, boxes, scores, *args):
    return ops.multiclass_nms(boxes.to(device), scores.to(device), *args)


# ---------------------------------------------------------------------------------------------
# multiclass_nms against the reference

@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_multiclass_nms_matches_reference(device, gen, dtype, ties):
    boxes = random_boxes(gen, 3, 300).to(dtype)
    scores = random_scores(gen, 3, 300, 6, ties).to(dtype)
    boxes[1, 10:30] = boxes[1, 40:60]  # identical boxes, some with identical scores
    scores[1, 10:20] = scores[1, 40:50]
    out = run(device, boxes, scores)
    check_detections(out, ref.multiclass_nms(boxes, scores), device, dtype)
    assert (out[3] > 0).all()


@pytest.mark.parametrize("topk, max_det", [(400, 200), (-1, 1000), (1, 3), (5, 7), (10, 1),
                                           (1000, 0)])
@pytest.mark.parametrize("background", [0, -1, 4])
def test_multiclass_nms_params(device, gen, background, topk, max_det):
    boxes = random_boxes(gen, 2, 200).float()
    scores = random_scores(gen, 2, 200, 5, ties=True).float()
    args = (0.05, 0.45, topk, max_det, background)
    out = run(device, boxes, scores, *args)
    check_detections(out, ref.multiclass_nms(boxes, scores, *args), device, torch.float32)
    labels = out[2].cpu()
    assert not (labels == background).any() or background == -1
    if max_det >= 200 and background == -1:  # class 0 takes part
        assert (labels == 0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multiclass_nms_scratch_in_global_memory(device, gen, dtype):
    """Past what a block keeps in shared memory (40 KiB), the CUDA kernels use global scratch:
    topk_per_class = -1 with 3000 priors (4096 candidate slots, 28 or 48 bytes each) and
    max_detections = 6000 (8192 merge slots of 8 or 16 bytes)."""
    boxes = random_boxes(gen, 2, 3000).to(dtype)
    scores = random_scores(gen, 2, 3000, 3, ties=True).to(dtype)
    args = (0.0, 0.45, -1, 6000, 0)
    out = run(device, boxes, scores, *args)
    check_detections(out, ref.multiclass_nms(boxes, scores, *args), device, dtype)
    assert (out[3] > 200).all()


# The segment kernels' limits, every candidate kept (disjoint boxes, distinct scores): the 64-box
# NMS tiles, and the scratch of a segment (topk_per_class candidates: 28 bytes each in float32,
# 48 in float64, rounded up to a power of two) and of the merge (max_detections keys of 8 or 16
# bytes, likewise) in 40 KiB of shared memory, one more in global memory.
SEGMENT_LIMITS = [(torch.float32, 64, 4096), (torch.float32, 65, 4096), (torch.float32, 1024, 4096),
                  (torch.float32, 1025, 4097), (torch.float64, 512, 2048), (torch.float64, 513, 2049)]


def disjoint_boxes(b, p):
    """p unit squares a gap of one apart, per image: every IoU is 0."""
    side = math.isqrt(p - 1) + 1
    i = torch.arange(p, dtype=torch.float64)
    x, y = (i % side) * 2, torch.div(i, side, rounding_mode="floor") * 2
    return torch.stack([x, y, x + 1, y + 1], dim=1).expand(b, p, 4).contiguous()


@pytest.mark.parametrize("dtype, topk, max_det", SEGMENT_LIMITS,
                         ids=[f"{str(d)[6:]}-topk{t}-max{m}" for d, t, m in SEGMENT_LIMITS])
def test_multiclass_nms_keeps_every_disjoint_box_at_each_size_limit(device, gen, dtype, topk, max_det):
    b, p, c = 1, 1100, 5
    boxes = disjoint_boxes(b, p).to(dtype)
    scores = (torch.randperm(b * p * c, generator=gen).double().view(b, p, c) + 1) / (b * p * c + 1)
    args = (0.0, 0.5, topk, max_det, 0)
    out = run(device, boxes, scores.to(dtype), *args)
    expected = ref.multiclass_nms(boxes, scores.to(dtype), *args)
    check_detections(out, expected, device, dtype)
    assert out[3].item() == min(max_det, (c - 1) * min(topk, p))


def device_memory_peak(device, fn):
    """The most device memory fn() has live at once, beyond what was live before."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    emu.reset_peak_bytes()
    before = emu.counters()["live_bytes"]
    fn()
    return emu.counters()["peak_bytes"] - before


def test_multiclass_nms_scratch_memory_is_bounded(device, gen):
    """topk_per_class = -1 at SSD512 sizes (24564 priors) needs 917 KiB of scratch per (image,
    class) pair on CUDA: at most 128 MiB of it is live, whatever B and C (it was all B * S pairs'
    at once: 2.3 GB for a COCO batch of 32), and each pair keeps at most max_detections
    detections for the merge. Here 16 images x 20 classes (294 MB of scratch unbounded); scores
    mostly under the threshold, so that the emulated run stays short."""
    if device.type == "cpu":
        pytest.skip("the CUDA kernels' scratch")
    B, P, C = 16, 24564, 21
    boxes = random_boxes(gen, B, P).float()
    scores = torch.rand(B, P, C, generator=gen) * 0.01
    scores[:, ::997] = torch.rand(B, (P + 996) // 997, C, generator=gen)
    args = (0.01, 0.45, -1, 200, 0)
    b, s = boxes.to(device), scores.to(device)
    out = []
    peak = device_memory_peak(device, lambda: out.append(ops.multiclass_nms(b, s, *args)))
    keys = B * (C - 1) * P * 4
    assert peak <= keys + (128 << 20) + (8 << 20), peak  # + kept keys, counts and outputs
    check_detections(out[0], ref.multiclass_nms(boxes, scores, *args), device, torch.float32)


@pytest.mark.parametrize("score_threshold", [-INF, 0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("iou_threshold", [0.0, 0.45, 1.0])
def test_multiclass_nms_thresholds(device, gen, score_threshold, iou_threshold):
    boxes = random_boxes(gen, 2, 150).float()
    scores = random_scores(gen, 2, 150, 4, ties=True).float()
    scores[0, :20] = 0.0  # equal to a threshold: not a candidate (score > threshold)
    args = (score_threshold, iou_threshold, 100, 300, 0)
    out = run(device, boxes, scores, *args)
    check_detections(out, ref.multiclass_nms(boxes, scores, *args), device, torch.float32)
    if iou_threshold == 1.0:  # no suppression: the top 100 candidates of every class
        cand = (scores[..., 1:] > score_threshold).sum(1).clamp(max=100).sum(-1)
        assert torch.equal(out[3].cpu(), cand.clamp(max=300))


def test_multiclass_nms_per_class_boxes(device, gen):
    boxes = random_boxes(gen, 2, 200, 5).float()
    scores = random_scores(gen, 2, 200, 5).float()
    out = run(device, boxes, scores)
    check_detections(out, ref.multiclass_nms(boxes, scores), device, torch.float32)
    # shared boxes are the per-class layout with every class equal
    shared = boxes[:, :, 0]
    same = run(device, shared, scores)
    check_detections(same, tuple(t.cpu() for t in run(device, shared[:, :, None].expand(2, 200, 5, 4), scores)),
                     device, torch.float32)


def test_multiclass_nms_known_values(device):
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [2.0, 2.0, 3.0, 3.0]]])
    scores = torch.tensor([[[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]])
    b, s, l, n = (t.cpu() for t in run(device, boxes, scores, 0.15, 0.5, 10, 4, 0))
    # class 1: prior 0 (0.8) suppresses prior 1 (IoU 0.9); prior 2 (0.2) kept. class 2: prior 2
    # (0.3), prior 1 (0.2). Merged: 0.8 c1 p0, 0.3 c2 p2, 0.2 c1 p2, 0.2 c2 p1 (equal scores:
    # lower class first)
    assert n.tolist() == [4]
    assert l.tolist() == [[1, 2, 1, 2]]
    assert torch.allclose(s, torch.tensor([[0.8, 0.3, 0.2, 0.2]]))
    assert torch.equal(b[0], boxes[0, [0, 2, 2, 1]])


def test_multiclass_nms_padding(device, gen):
    boxes = random_boxes(gen, 3, 50).float()
    scores = random_scores(gen, 3, 50, 3).float()
    scores[1] = 0.0  # no candidate in image 1
    b, s, l, n = (t.cpu() for t in run(device, boxes, scores, 0.01, 0.45, 400, 100, 0))
    assert n[1] == 0 and n[0] > 0
    for i in range(3):
        k = int(n[i])
        assert (b[i, k:] == 0).all() and (s[i, k:] == 0).all() and (l[i, k:] == -1).all()
        assert (l[i, :k] >= 1).all()
        assert (s[i, :k][1:] <= s[i, :k][:-1]).all()


def test_multiclass_nms_nan(device, gen):
    """NaN scores are never candidates; NaN boxes never suppress (IoU 0)."""
    boxes = random_boxes(gen, 2, 100).float()
    scores = random_scores(gen, 2, 100, 4).float()
    scores[0, :30] = NAN
    boxes[1, :10, 0] = NAN
    out = run(device, boxes, scores)
    check_detections(out, ref.multiclass_nms(boxes, scores), device, torch.float32)
    assert not out[1].isnan().any()


@pytest.mark.parametrize("shape, background", [((0, 10, 3), 0), ((2, 0, 3), 0), ((2, 10, 0), -1),
                                               ((2, 10, 0), 0), ((2, 10, 1), 0), ((0, 0, 0), -1)])
def test_multiclass_nms_empty(device, shape, background):
    b, p, c = shape
    out = ops.multiclass_nms(torch.zeros(b, p, 4, device=device), torch.zeros(b, p, c, device=device),
                             background_class=background, max_detections=5)
    assert [tuple(t.shape) for t in out] == [(b, 5, 4), (b, 5), (b, 5), (b,)]
    assert (out[3] == 0).all() and (out[2] == -1).all() and (out[0] == 0).all()


@pytest.mark.parametrize("batch", [1, 2])
def test_multiclass_nms_many_priors(device, gen, batch):
    """SSD300 sizes: 8732 priors, 21 classes, the defaults."""
    boxes = random_boxes(gen, batch, 8732).float()
    scores = random_scores(gen, batch, 8732, 21).float()
    out = run(device, boxes, scores)
    check_detections(out, ref.multiclass_nms(boxes, scores), device, torch.float32)


# ---------------------------------------------------------------------------------------------
# ssd_postprocess

def head_outputs(gen, b, p, c, dtype=torch.float32):
    loc = torch.randn(b, p, 4, generator=gen, dtype=torch.float64) * 0.5
    logits = torch.randn(b, p, c, generator=gen, dtype=torch.float64) * 2
    priors = random_boxes(gen, p)
    return loc.to(dtype), logits.to(dtype), priors.to(dtype)


def close_detections(out, expected, dtype):
    """Equal up to rounding: boxes are decoded with expf vs torch.exp, probabilities come from
    our softmax (exp_det) vs torch.softmax, both within a few ulps."""
    eps = torch.finfo(dtype).eps
    b, s, l, n = (t.cpu() for t in out)
    eb, es, el, en = expected
    assert torch.equal(n, en) and torch.equal(l, el)
    torch.testing.assert_close(b.double(), eb.double(), rtol=0, atol=8 * eps)
    torch.testing.assert_close(s.double(), es.double(), rtol=4 * eps, atol=0)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ssd_postprocess_matches_reference(device, gen, dtype, clip):
    loc, logits, priors = head_outputs(gen, 2, 500, 6, dtype)
    out = ops.ssd_postprocess(loc.to(device), logits.to(device), priors.to(device), clip=clip)
    close_detections(out, ref.ssd_postprocess(loc, logits, priors, clip=clip), dtype)
    if clip:
        assert ((out[0] >= 0) & (out[0] <= 1)).all()


def test_ssd_postprocess_is_decode_softmax_multiclass(device, gen):
    """Bit for bit: the boxes are decode_boxes' (clamped), the probabilities softmax's up to
    our exp, which we undo by feeding ssd_postprocess's own scores to multiclass_nms."""
    loc, logits, priors = head_outputs(gen, 2, 400, 5)
    variances = (0.2, 0.1, 0.3, 0.25)
    out = ops.ssd_postprocess(loc.to(device), logits.to(device), priors.to(device), variances,
                              clip=True, score_threshold=-INF, topk_per_class=-1,
                              max_detections=400 * 4, iou_threshold=1.0)
    boxes = ops.decode_boxes(loc.to(device), priors.to(device), variances).clamp(0, 1)
    b, s, l, n = out
    assert (n == 1600).all()  # every (prior, class > 0) is a detection
    probs = torch.zeros(2, 400, 5, device=device)
    for i in range(2):
        match = (b[i][:, None, :] == boxes[i][None]).all(-1)  # [1600, 400]
        assert (match.sum(1) == 1).all()  # each detection's box is exactly one decoded prior
        probs[i, match.float().argmax(1), l[i]] = s[i]
    check_softmax(probs[..., 1:].cpu(), logits, slice(1, None))
    again = ops.multiclass_nms(boxes, probs, -INF, 1.0, -1, 1600, 0)
    for x, y in zip(out, again):
        assert torch.equal(x, y)


def check_softmax(probs, logits, classes):
    """Our probabilities are as accurate as torch.softmax's in float32 (against float64): at
    most twice its largest relative error, plus an ulp."""
    exact = torch.softmax(logits.double(), -1)[..., classes]
    finite = exact.isfinite() & (exact > 0)
    torch_err = ((torch.softmax(logits.float(), -1)[..., classes] - exact).abs() / exact)[finite]
    our_err = ((probs.double() - exact).abs() / exact)[finite]
    assert our_err.max() <= 2 * torch_err.max() + torch.finfo(torch.float32).eps, \
        (our_err.max().item(), torch_err.max().item())
    assert torch.equal(probs[~finite].isnan(), exact[~finite].isnan())


@pytest.fixture(scope="module")
def tv_ssd():
    return torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None).eval()


@pytest.mark.parametrize("batch, classes", [(2, 21), (1, 81)])
def test_ssd_postprocess_matches_torchvision(device, gen, tv_ssd, batch, classes):
    """torchvision's SSD.postprocess_detections (clip, score 0.01, IoU 0.45, top 400, 200
    detections) on the same head outputs, anchors in pixels of a 300x300 image; ours works on
    normalised priors and its boxes are scaled back. torchvision's BoxCoder divides by the
    weights (10, 10, 5, 5) = 1 / variances and clamps dw, dh at log(1000 / 16): the offsets
    here stay far below it."""
    size = 300.0
    loc, logits, priors = head_outputs(gen, batch, 8732, classes)
    anchors = priors * size
    with torch.no_grad():
        tv = tv_ssd.postprocess_detections({"bbox_regression": loc, "cls_logits": logits},
                                           [anchors] * batch, [(300, 300)] * batch)
    b, s, l, n = (t.cpu() for t in ops.ssd_postprocess(loc.to(device), logits.to(device),
                                                      priors.to(device), clip=True))
    for i, det in enumerate(tv):
        k = len(det["scores"])
        assert n[i] == k == 200
        assert torch.equal(l[i, :k], det["labels"])
        torch.testing.assert_close(s[i, :k], det["scores"], rtol=2e-6, atol=0)
        torch.testing.assert_close(b[i, :k] * size, det["boxes"], rtol=0, atol=2e-4)


def test_ssd_postprocess_softmax_values(device):
    """Our softmax against torch's on extreme logits: as accurate; a NaN or +inf logit
    makes the prior's probabilities NaN (never a candidate); -inf logits give probability 0."""
    logits = torch.tensor([[[0.0, 0.0, 0.0], [100.0, -100.0, 0.0], [-90.0, 0.0, 20.0],
                            [NAN, 1.0, 2.0], [INF, 0.0, 1.0], [-INF, 0.0, 0.0],
                            [1e-30, -1e-30, 0.0], [88.0, 88.0, -88.0]]])
    priors = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(8, 4) + torch.arange(8.0)[:, None] * 2
    loc = torch.zeros(1, 8, 4)
    b, s, l, n = (t.cpu() for t in ops.ssd_postprocess(
        loc.to(device), logits.to(device), priors.to(device), score_threshold=-INF,
        iou_threshold=1.0, background_class=-1, max_detections=24))
    got = torch.full((8, 3), NAN)
    prior = (b[0, :, 0] / 2).round().long()
    got[prior[: n[0]], l[0, : n[0]]] = s[0, : n[0]]
    finite = torch.softmax(logits[0].double(), -1).isfinite()
    assert torch.equal(finite, got.isfinite())
    assert int(n[0]) == int(finite.sum())
    check_softmax(got[None], logits, slice(None))


# ---------------------------------------------------------------------------------------------
# Both ops: batch consistency, determinism, CUDA graphs, registration

def test_batch_is_per_image(device, gen):
    boxes = random_boxes(gen, 4, 300).float()
    scores = random_scores(gen, 4, 300, 5, ties=True).float()
    out = run(device, boxes, scores)
    for i in range(4):
        one = run(device, boxes[i:i + 1], scores[i:i + 1])
        for x, y in zip(out, one):
            assert torch.equal(x[i:i + 1], y)


def test_deterministic(device, gen):
    loc, logits, priors = (t.to(device) for t in head_outputs(gen, 3, 2000, 11))
    first = ops.ssd_postprocess(loc, logits, priors)
    second = ops.ssd_postprocess(loc, logits, priors)
    for x, y in zip(first, second):
        assert torch.equal(x, y)


@pytest.mark.cuda
def test_cuda_graph_capture(device, gen):
    if device.type != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    loc, logits, priors = (t.to(device) for t in head_outputs(gen, 2, 8732, 21))
    boxes = random_boxes(gen, 2, 8732).float().to(device)
    scores = random_scores(gen, 2, 8732, 21).float().to(device)
    expected = (ops.ssd_postprocess(loc, logits, priors), ops.multiclass_nms(boxes, scores))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph
        ops.ssd_postprocess(loc, logits, priors)
        ops.multiclass_nms(boxes, scores)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = (ops.ssd_postprocess(loc, logits, priors), ops.multiclass_nms(boxes, scores))
    graph.replay()
    torch.cuda.synchronize()
    for got, exp in zip(captured, expected):
        for x, y in zip(got, exp):
            assert torch.equal(x, y)


OPCHECK_SAMPLES = {
    "multiclass": lambda g: ("multiclass_nms", (random_boxes(g, 2, 30), random_scores(g, 2, 30, 4),
                                                0.05, 0.45, 10, 8, 0)),
    "multiclass_per_class": lambda g: ("multiclass_nms", (random_boxes(g, 2, 30, 4),
                                                          random_scores(g, 2, 30, 4),
                                                          0.05, 0.45, -1, 20, -1)),
    "multiclass_empty": lambda g: ("multiclass_nms", (random_boxes(g, 0, 30), random_scores(g, 0, 30, 4),
                                                      0.05, 0.45, 10, 8, 0)),
    "postprocess": lambda g: ("ssd_postprocess", head_outputs(g, 2, 30, 4, torch.float64)
                              + ([0.1, 0.1, 0.2, 0.2], True, 0.05, 0.45, 10, 8, 0)),
}


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_opcheck(device, gen, sample, dtype):
    name, args = OPCHECK_SAMPLES[sample](gen)
    args = [a.to(dtype).to(device) if isinstance(a, torch.Tensor) else a for a in args]
    opcheck(getattr(torch.ops.ssd_fast, name).default, args)


def _detect(loc, logits, priors):
    boxes, scores, labels, num = ops.ssd_postprocess(loc, logits, priors, clip=True)
    again = ops.multiclass_nms(ops.decode_boxes(loc, priors), torch.softmax(logits, -1),
                               max_detections=50)
    return boxes * 2, scores, labels, num, again[3]


@pytest.mark.parametrize("backend, dynamic", [("aot_eager", False), ("aot_eager", True),
                                              ("inductor", False)])
def test_torch_compile_fullgraph(device, gen, backend, dynamic):
    if backend == "inductor" and device.type == "emu":
        pytest.skip("inductor generates code for CPUs and GPUs only; aot_eager traces the same graph on emu")
    torch._dynamo.reset()
    compiled = torch.compile(_detect, backend=backend, fullgraph=True, dynamic=dynamic)
    for p in ((100, 130) if dynamic else (100,)):
        args = [t.float().to(device) for t in head_outputs(gen, 2, p, 5)]
        for got, expected in zip(compiled(*args), _detect(*args)):
            assert got.shape == expected.shape
            assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------
# Bad input: the C++ checks and the fake kernels raise the same error

def _z(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


V = [0.1, 0.1, 0.2, 0.2]
MC = (0.01, 0.45, 400, 200, 0)
BAD_INPUTS = {
    "mc_boxes_rank": ("multiclass_nms", lambda: (_z(5, 4), _z(1, 5, 3)) + MC, RuntimeError,
                      "multiclass_nms: boxes must have shape [B, P, 4] or [B, P, C, 4], got [5, 4]"),
    "mc_boxes_rank5": ("multiclass_nms", lambda: (_z(1, 1, 5, 3, 4), _z(1, 5, 3)) + MC, RuntimeError,
                       "multiclass_nms: boxes must have shape [B, P, 4] or [B, P, C, 4], "
                       "got [1, 1, 5, 3, 4]"),
    "mc_boxes_last": ("multiclass_nms", lambda: (_z(1, 5, 2), _z(1, 5, 3)) + MC, RuntimeError,
                      "multiclass_nms: boxes must have shape [B, P, 4] or [B, P, C, 4], got [1, 5, 2]"),
    "mc_boxes_int": ("multiclass_nms", lambda: (_z(1, 5, 4, dtype=torch.int32), _z(1, 5, 3)) + MC,
                     RuntimeError, "multiclass_nms: boxes must be float16, bfloat16, float32 or "
                                   "float64, got int32"),
    "mc_scores_dtype": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3, dtype=torch.float64)) + MC,
                        RuntimeError, "multiclass_nms: boxes and scores must have the same dtype, "
                                      "got float32 and float64"),
    "mc_scores_rank": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(5, 3)) + MC, RuntimeError,
                       "multiclass_nms: scores must have shape [B, P, C], got [5, 3]"),
    "mc_mismatch": ("multiclass_nms", lambda: (_z(2, 5, 4), _z(2, 6, 3)) + MC, RuntimeError,
                    "multiclass_nms: boxes [2, 5, 4] and scores [2, 6, 3] must agree on B and P"),
    "mc_mismatch_c": ("multiclass_nms", lambda: (_z(2, 5, 4, 4), _z(2, 5, 3)) + MC, RuntimeError,
                      "multiclass_nms: boxes [2, 5, 4, 4] and scores [2, 5, 3] must agree on B and "
                      "P and C"),
    "mc_score_nan": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3), NAN, 0.45, 400, 200, 0),
                     ValueError, "multiclass_nms: score_threshold must be a number, got nan"),
    "mc_iou": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3), 0.01, 1.01, 400, 200, 0),
               ValueError, "multiclass_nms: iou_threshold must be in [0, 1], got 1.01"),
    "mc_topk": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3), 0.01, 0.45, 0, 200, 0),
                ValueError, "multiclass_nms: topk_per_class must be positive or -1 (no limit), got 0"),
    "mc_topk_neg": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3), 0.01, 0.45, -2, 200, 0),
                    ValueError, "multiclass_nms: topk_per_class must be positive or -1 (no limit), "
                                "got -2"),
    "mc_max_det": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3), 0.01, 0.45, 400, -1, 0),
                   ValueError, "multiclass_nms: max_detections must be >= 0, got -1"),
    "mc_background": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3), 0.01, 0.45, 400, 200, 3),
                      ValueError, "multiclass_nms: background_class must be -1 (none) or in [0, C) "
                                  "with C = 3, got 3"),
    "mc_background_neg": ("multiclass_nms", lambda: (_z(1, 5, 4), _z(1, 5, 3), 0.01, 0.45, 400, 200, -2),
                          ValueError, "multiclass_nms: background_class must be -1 (none) or in "
                                      "[0, C) with C = 3, got -2"),
    "pp_loc_rank": ("ssd_postprocess", lambda: (_z(5, 4), _z(1, 5, 3), _z(5, 4), V, False) + MC,
                    RuntimeError, "ssd_postprocess: loc must have shape [B, P, 4], got [5, 4]"),
    "pp_loc_last": ("ssd_postprocess", lambda: (_z(1, 5, 3), _z(1, 5, 3), _z(5, 4), V, False) + MC,
                    RuntimeError, "ssd_postprocess: loc must have shape [B, P, 4], got [1, 5, 3]"),
    "pp_logits_dtype": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(1, 5, 3, dtype=torch.float16),
                                                    _z(5, 4), V, False) + MC, RuntimeError,
                        "ssd_postprocess: loc and conf_logits must have the same dtype, got "
                        "float32 and float16"),
    "pp_logits_rank": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(5, 3), _z(5, 4), V, False) + MC,
                       RuntimeError, "ssd_postprocess: conf_logits must have shape [B, P, C], got [5, 3]"),
    "pp_priors_rank": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(1, 5, 3), _z(1, 5, 4), V, False) + MC,
                       RuntimeError, "ssd_postprocess: priors must have shape [P, 4], got [1, 5, 4]"),
    "pp_priors_int": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(1, 5, 3), _z(5, 4, dtype=torch.int64),
                                                  V, False) + MC, RuntimeError,
                      "ssd_postprocess: priors must be float16, bfloat16, float32 or float64, got int64"),
    "pp_mismatch": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(1, 5, 3), _z(6, 4), V, False) + MC,
                    RuntimeError, "ssd_postprocess: loc [1, 5, 4], conf_logits [1, 5, 3] and priors "
                                  "[6, 4] must agree on B and P"),
    "pp_variances": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(1, 5, 3), _z(5, 4), [0.1, 0.1, 0.2],
                                                 False) + MC, ValueError,
                     "ssd_postprocess: variances must be 4 positive finite numbers, got [0.1, 0.1, 0.2]"),
    "pp_background": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(1, 5, 3), _z(5, 4), V, False, 0.01,
                                                  0.45, 400, 200, 7), ValueError,
                      "ssd_postprocess: background_class must be -1 (none) or in [0, C) with C = 3, "
                      "got 7"),
    "pp_iou": ("ssd_postprocess", lambda: (_z(1, 5, 4), _z(1, 5, 3), _z(5, 4), V, False, 0.01, -0.5,
                                           400, 200, 0), ValueError,
               "ssd_postprocess: iou_threshold must be in [0, 1], got -0.5"),
}


def _call(name, args):
    return getattr(torch.ops.ssd_fast, name)(*args)


def _on(args, device):
    return [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises(device, case):
    name, make, exc, message = BAD_INPUTS[case]
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        _call(name, _on(make(), device))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_fake_kernel_raises_the_same_error(device, case):
    name, make, exc, _ = BAD_INPUTS[case]
    assert_fake_raises_the_same(lambda d: _call(name, _on(make(), d)), device, exc)


def test_wrappers_use_the_spec_defaults(device, gen):
    loc, logits, priors = (t.float().to(device) for t in head_outputs(gen, 1, 300, 4))
    boxes, scores = random_boxes(gen, 1, 300).float().to(device), torch.softmax(logits, -1)
    for x, y in zip(ops.multiclass_nms(boxes, scores),
                    torch.ops.ssd_fast.multiclass_nms(boxes, scores, 0.01, 0.45, 400, 200, 0)):
        assert torch.equal(x, y)
    for x, y in zip(ops.ssd_postprocess(loc, logits, priors),
                    torch.ops.ssd_fast.ssd_postprocess(loc, logits, priors, [0.1, 0.1, 0.2, 0.2],
                                                       False, 0.01, 0.45, 400, 200, 0)):
        assert torch.equal(x, y)
