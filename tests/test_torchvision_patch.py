"""ssd_fast.patch_torchvision(): torchvision's detectors give the same detections on ssd_fast's
nms / batched_nms / box_iou as on torchvision's, whatever ssd_fast does not take runs
torchvision's own function, and the unpatch puts back the very functions torchvision had."""
import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2  # noqa: F401  (a module that binds box_iou of its own)
from torchvision import tv_tensors

import ssd_fast
import torchvision_detectors as detectors
from emu_device import SKIP_REASON as EMU_SKIP
from ssd_fast import torchvision_patch as tp

CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not (torch.cuda.is_available() and ssd_fast.has_cuda_kernels()), reason="no CUDA device or kernels")])
TV = {"nms": tp._tv_nms, "batched_nms": tp._tv_batched_nms, "box_iou": tp._tv_box_iou}
PATCHED = {"nms": tp.nms, "batched_nms": tp.batched_nms, "box_iou": tp.box_iou}
OURS = set(PATCHED.values())


@pytest.fixture(autouse=True)
def unpatched():
    """Every test starts and ends with torchvision as it is."""
    ssd_fast.unpatch_torchvision()
    yield
    ssd_fast.unpatch_torchvision()


@pytest.fixture
def ssd_fast_calls(monkeypatch):
    """[(op, number of boxes, number kept)] of the calls that reach ssd_fast's ops."""
    calls = []
    for name in PATCHED:
        original = getattr(ssd_fast.ops, name)

        def counted(*args, _name=name, _original=original):
            out = _original(*args)
            calls.append((_name, len(args[0]), len(out)))
            return out
        monkeypatch.setattr(ssd_fast.ops, name, counted)
    return calls


def torchvision_bindings():
    """{(module, attribute): value} of every loaded torchvision module attribute that is one of
    torchvision's or ssd_fast's nms / batched_nms / box_iou."""
    ours_or_theirs = {id(f) for f in (*TV.values(), *PATCHED.values())}
    return {(name, attr): value for name, module in list(sys.modules.items())
            if name == "torchvision" or name.startswith("torchvision.")
            for attr, value in list(vars(module).items()) if id(value) in ours_or_theirs}


def random_boxes(gen, n, scale=100.0):
    xy = torch.rand(n, 2, generator=gen) * scale
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * scale / 4], 1)


# ---------------------------------------------------------------------------------------------
# The detectors

SIZES = [(176, 224), (208, 160)]


@pytest.fixture(scope="module")
def images():
    return detectors.images(SIZES)


def build(name, images):
    small = {} if name.startswith("ssd") else {"min_size": 192, "max_size": 224}  # the SSDs' sizes are fixed
    return detectors.build(name, images, **small)


@pytest.mark.parametrize("name", detectors.NAMES)
def test_detections_are_torchvision_s(name, images, ssd_fast_calls):
    """Labels, scores and boxes equal with and without the patch (equal scores as sets). The
    patch must be what runs the NMS (every image's NMS, Faster R-CNN's RPN's too), and the NMS
    must suppress boxes."""
    model = build(name, images)
    with torch.no_grad():
        expected = model(images)
        assert not ssd_fast_calls
        with ssd_fast.torchvision_ops():
            got = model(images)
    nms_calls = [(n, k) for op, n, k in ssd_fast_calls if op == "batched_nms"]
    assert len(nms_calls) == len(images) * (2 if name.startswith("fasterrcnn") else 1)
    assert any(k < n for n, k in nms_calls)
    assert all(len(d["scores"]) >= 100 for d in expected)
    detectors.same_detections(got, expected)


def test_training_losses_are_torchvision_s(images, ssd_fast_calls):
    """The training matcher's box_iou: SSDlite's losses are the same with the patch."""
    model = build("ssdlite320_mobilenet_v3_large", images).train()
    for m in model.modules():  # batch statistics of single pixels are not the point here
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    gen = torch.Generator().manual_seed(2)
    targets = [{"boxes": random_boxes(gen, 5, 100.0), "labels": torch.randint(1, 91, (5,), generator=gen)}
               for _ in images]
    with torch.no_grad():
        expected = model(images, targets)
        with ssd_fast.torchvision_ops():
            got = model(images, targets)
    assert [op for op, *_ in ssd_fast_calls] == ["box_iou"] * len(images)
    assert got == expected


# ---------------------------------------------------------------------------------------------
# Equal scores

@pytest.mark.parametrize("n", [600, 3000])  # torchvision's class offsets; its per-class loop (> 1000 boxes)
def test_batched_nms_ties_are_the_same_sets(n, ssd_fast_calls):
    """Exact duplicates with equal scores and 4 score values: the same kept boxes, the same
    scores in the same order, the lowest index of each duplicate kept; ssd_fast orders equal
    scores by index."""
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(gen, n // 3).repeat(3, 1)
    scores = (torch.randint(0, 4, (n // 3,), generator=gen).float() / 4).repeat(3)
    idxs = torch.randint(0, 5, (n // 3,), generator=gen).repeat(3)
    expected = tp._tv_batched_nms(boxes, scores, idxs, 0.5)
    with ssd_fast.torchvision_ops():
        got = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    assert ssd_fast_calls == [("batched_nms", len(boxes), len(got))]
    assert torch.equal(scores[got], scores[expected])
    assert set(got.tolist()) == set(expected.tolist())
    assert got.max() < n // 3  # of each duplicate, the first
    assert got.tolist() == sorted(got.tolist(), key=lambda i: (-scores[i].item(), i))
    kept_per_score = torch.unique(scores[got], return_counts=True)[1]
    assert len(kept_per_score) == 4 and (kept_per_score > 1).all()  # the ties are real
    moved = int((got != expected).sum())
    print(f"\nbatched_nms of {n} boxes, {len(got)} kept: torchvision's order differs from "
          f"ssd_fast's (by index) at {moved} positions")


def test_batched_nms_near_the_threshold_is_torchvision_s_nms_of_each_class(ssd_fast_calls):
    """Pairs of 1-2 px boxes in class 79 whose IoU is within 1e-3 of the threshold, a class-0
    box at 1000: the patched batched_nms keeps what torchvision's nms of the class alone keeps;
    torchvision's batched_nms (<= 1000 boxes: class offsets of 79 * 1001, rounded coordinates)
    decides some of them the other way."""
    gen = torch.Generator().manual_seed(8)
    scores, idxs = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([79, 79, 0])
    offsets_differ = 0
    for _ in range(200):
        x, w, jitter = (torch.rand(3, generator=gen) * torch.tensor([900.0, 1.0, 2e-3])).tolist()
        w, d = 1 + w, (1 + w) / 3 * (1 + jitter - 1e-3)  # IoU (w - d) / (w + d), about 1/2
        boxes = torch.tensor([[x, 5, x + w, 6], [x + d, 5, x + d + w, 6], [990, 990, 1000, 1000]])
        with ssd_fast.torchvision_ops():
            got = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
        alone = tp._tv_nms(boxes[:2], scores[:2], 0.5).tolist()
        assert got.tolist() == alone + [2]
        offsets_differ += not torch.equal(got, tp._tv_batched_nms(boxes, scores, idxs, 0.5))
    assert len(ssd_fast_calls) == 200
    print(f"\ntorchvision's batched_nms decided {offsets_differ} of 200 near-threshold pairs otherwise")


# ---------------------------------------------------------------------------------------------
# What ssd_fast takes, and what runs torchvision's own function

def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001  (the exception is the outcome compared)
        return e


def assert_same_outcome(got, expected):
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected)
    elif expected.device.type == "meta":
        assert got.device == expected.device and got.dtype == expected.dtype
    else:
        assert type(got) is type(expected)
        torch.testing.assert_close(got.cpu(), expected.cpu(), rtol=0, atol=0, equal_nan=True)


def _nms_args(dtype=torch.float32, n=200, device="cpu"):
    gen = torch.Generator().manual_seed(4)
    return (random_boxes(gen, n).to(device, dtype), torch.rand(n, generator=gen).to(device, dtype))


def _quantized(t):
    with warnings.catch_warnings():  # quantized tensors are deprecated; torchvision still takes them
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_tensor(t, 0.5, 0, torch.quint8)


def _nms_cases():
    b, s = _nms_args()
    idxs = torch.randint(0, 4, (len(b),), generator=torch.Generator().manual_seed(5))
    bounding_boxes = tv_tensors.BoundingBoxes(b, format="XYXY", canvas_size=(200, 200))
    return {
        "quantized": ("nms", _quantized(b), _quantized(s), 0.5),
        "meta": ("nms", b.to("meta"), s.to("meta"), 0.5),
        "threshold above 1": ("nms", b, s, 1.5),
        "threshold below 0": ("nms", b, s, -0.5),
        "threshold NaN": ("nms", b, s, math.nan),
        "threshold a tensor": ("nms", b, s, torch.tensor(0.5)),
        "threshold a bool": ("nms", b, s, True),
        "scores float64": ("nms", b, s.double(), 0.5),
        "boxes [N, 5]": ("nms", torch.cat([b, s[:, None]], 1), s, 0.5),
        "scores [N, 1]": ("nms", b, s[:, None], 0.5),
        "integer boxes": ("nms", b.long(), s, 0.5),
        "BoundingBoxes": ("nms", bounding_boxes, s, 0.5),
        "boxes a list": ("nms", b.tolist(), s, 0.5),
        "batched, float idxs": ("batched_nms", b, s, idxs.float(), 0.5),
        "batched, bool idxs": ("batched_nms", b, s, idxs > 1, 0.5),
        "batched, idxs [N, 1]": ("batched_nms", b, s, idxs[:, None], 0.5),
        "batched, threshold above 1": ("batched_nms", b, s, idxs, 2.0),
        "batched, quantized": ("batched_nms", _quantized(b), _quantized(s), idxs, 0.5),
        "batched, meta": ("batched_nms", b.to("meta"), s.to("meta"), idxs.to("meta"), 0.5),
        "iou float16": ("box_iou", b.half(), b[:7].half()),
        "iou bfloat16": ("box_iou", b.bfloat16(), b[:7].bfloat16()),
        "iou int64": ("box_iou", b.long(), b[:7].long()),
        "iou int32": ("box_iou", b.int(), b[:7].int()),
        "iou float32 and float64": ("box_iou", b, b[:7].double()),
        "iou broadcast [1, N] [3, M]": ("box_iou", b[None], b[:7].expand(3, 7, 4)),
        "iou cxcywh": ("box_iou", b, b[:7], "cxcywh"),
        "iou xywh": ("box_iou", b, b[:7], "xywh"),
        "iou cxcywhr": ("box_iou", torch.cat([b, s[:, None] * 90], 1), b[:7], "cxcywhr"),
        "iou format unknown": ("box_iou", b, b[:7], "xyzw"),
        "iou format not a str": ("box_iou", b, b[:7], None),
        "iou [N, 5]": ("box_iou", torch.cat([b, s[:, None]], 1), b[:7]),
        "iou [N]": ("box_iou", b[0], b[:7]),
        "iou BoundingBoxes": ("box_iou", bounding_boxes, b),
        "iou meta": ("box_iou", b.to("meta"), b[:7].to("meta")),
    }


FALL_THROUGH = _nms_cases()


@pytest.mark.parametrize("case", FALL_THROUGH)
def test_what_ssd_fast_does_not_take_runs_torchvision_s(case, ssd_fast_calls):
    """The same result, or the same exception, as torchvision's own function, and ssd_fast's op
    is not called (torchvision's batched_nms calls nms, the patched one)."""
    op, *args = FALL_THROUGH[case]
    expected = outcome(TV[op], *args)
    with ssd_fast.torchvision_ops():
        got = outcome(getattr(torchvision.ops, op), *args)
    assert op not in [c[0] for c in ssd_fast_calls]
    assert_same_outcome(got, expected)


@pytest.mark.skipif(EMU_SKIP is not None, reason=EMU_SKIP or "")
def test_a_device_without_its_kernels_runs_torchvision_s(ssd_fast_calls):
    """Tensors on the emulated device (ssd_fast's kernels are there, but the patch takes only
    CPU and CUDA) run torchvision's function, as without the patch."""
    b, s = _nms_args(device="emu")
    expected = outcome(tp._tv_nms, b, s, 0.5)
    with ssd_fast.torchvision_ops():
        got = outcome(torchvision.ops.nms, b, s, 0.5)
    assert not ssd_fast_calls
    assert_same_outcome(got, expected)


def _taken_cases():
    b, s = _nms_args(n=400)
    b[1::7] = b[::7][: len(b[1::7])]  # duplicates, which suppress each other
    idxs = torch.randint(-3, 4, (len(b),), generator=torch.Generator().manual_seed(6))
    strided = torch.cat([b, s[:, None]], 1)[:, :4]
    return {
        "nms float32": ("nms", b, s, 0.5),
        "nms float64": ("nms", b.double(), s.double(), 0.3),
        "nms threshold 0 (int)": ("nms", b, s, 0),
        "nms threshold 1 (int)": ("nms", b, s, 1),
        "nms threshold numpy": ("nms", b, s, np.float32(0.5)),
        "nms strided boxes": ("nms", strided, s, 0.5),
        "nms no boxes": ("nms", b[:0], s[:0], 0.5),
        "nms boxes requiring grad": ("nms", b.clone().requires_grad_(), s, 0.5),
        "batched int64 idxs": ("batched_nms", b, s, idxs, 0.5),
        "batched int32 idxs": ("batched_nms", b.double(), s.double(), idxs.int(), 0.5),
        "batched uint8 idxs": ("batched_nms", b, s, (idxs + 3).to(torch.uint8), 0.5),
        "batched no boxes": ("batched_nms", b[:0], s[:0], idxs[:0], 0.5),
        "iou float32": ("box_iou", b, b[:50]),
        "iou float64": ("box_iou", b.double(), b[:50].double()),
        "iou batched": ("box_iou", b.view(4, 100, 4), b[:40].view(4, 10, 4)),
        "iou batched and not": ("box_iou", b.view(4, 100, 4), b[:10]),
        "iou xyxy named": ("box_iou", b, b[:50], "xyxy"),
    }


TAKEN = _taken_cases()


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("case", TAKEN)
def test_what_ssd_fast_takes_gives_torchvision_s_result(case, device, ssd_fast_calls):
    op, *args = TAKEN[case]
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    expected = TV[op](*args)
    with ssd_fast.torchvision_ops():
        got = getattr(torchvision.ops, op)(*args)
    assert [c[0] for c in ssd_fast_calls] == [op]
    assert_same_outcome(got, expected)


@pytest.mark.parametrize("op", ["nms", "batched_nms"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_boxes_on_the_cpu_are_computed_where_torchvision_refuses(op, dtype, ssd_fast_calls):
    """torchvision's CPU NMS has no half kernel; ssd_fast's computes the IoU in float32: the
    result is torchvision's on the same numbers in float32."""
    b, s = (t.to(dtype) for t in _nms_args())
    idxs = torch.arange(len(b)) % 3
    args = (b, s, idxs, 0.5) if op == "batched_nms" else (b, s, 0.5)
    with pytest.raises(RuntimeError, match="not implemented for"):
        TV[op](*args)
    with ssd_fast.torchvision_ops():
        got = getattr(torchvision.ops, op)(*args)
    assert torch.equal(got, TV[op](*(a.float() if a.is_floating_point() else a for a in args[:-1]), 0.5))
    assert len(ssd_fast_calls) == 1


# ---------------------------------------------------------------------------------------------
# Patch, unpatch, context manager

def test_the_patch_reaches_every_binding_and_the_unpatch_restores_them():
    """Every torchvision attribute that is torchvision's function becomes ssd_fast's, the known
    ones included, and the unpatch gives back the very same function objects."""
    before = torchvision_bindings()
    known = {("torchvision.ops", "nms"), ("torchvision.ops", "batched_nms"), ("torchvision.ops", "box_iou"),
             ("torchvision.ops.boxes", "nms"), ("torchvision.ops.boxes", "batched_nms"),
             ("torchvision.ops.boxes", "box_iou"), ("torchvision.transforms.v2._geometry", "box_iou")}
    assert known <= set(before)
    assert all(value in TV.values() for value in before.values())
    ssd_fast.patch_torchvision()
    patched = torchvision_bindings()
    assert set(patched) == set(before)
    for key, value in before.items():
        assert patched[key] is PATCHED[value.__name__]
    ssd_fast.unpatch_torchvision()
    after = torchvision_bindings()
    assert set(after) == set(before)
    assert all(after[key] is before[key] for key in before)


def test_the_patch_is_idempotent():
    before = torchvision_bindings()
    ssd_fast.patch_torchvision()
    once = torchvision_bindings()
    ssd_fast.patch_torchvision()
    assert torchvision_bindings() == once
    ssd_fast.unpatch_torchvision()
    assert torchvision_bindings() == before


def test_unpatch_without_a_patch_changes_nothing():
    namespaces = {name: dict(vars(m)) for name, m in list(sys.modules.items())
                  if name.startswith("torchvision")}
    ssd_fast.unpatch_torchvision()
    ssd_fast.unpatch_torchvision()
    for name, namespace in namespaces.items():
        now = vars(sys.modules[name])
        assert now.keys() == namespace.keys()
        assert all(now[k] is v for k, v in namespace.items())
    assert all(value in TV.values() for value in torchvision_bindings().values())


def test_a_module_imported_while_patched_is_restored(monkeypatch):
    """`from torchvision.ops import nms` in a torchvision module imported under the patch binds
    the patched function; the unpatch restores it too."""
    ssd_fast.patch_torchvision()
    late = types.ModuleType("torchvision._imported_late")
    late.nms, late.iou = torchvision.ops.nms, torchvision.ops.box_iou
    monkeypatch.setitem(sys.modules, late.__name__, late)
    ssd_fast.unpatch_torchvision()
    assert late.nms is TV["nms"] and late.iou is TV["box_iou"]


def test_functions_captured_while_patched_are_torchvision_s_after(images, ssd_fast_calls):
    """A patched function held elsewhere (RegionProposalNetwork.box_similarity of a model built
    under the patch) runs torchvision's once unpatched."""
    with ssd_fast.torchvision_ops():
        nms, box_iou = torchvision.ops.nms, torchvision.ops.box_iou
        rpn = torchvision.models.detection.rpn.RegionProposalNetwork(
            None, None, 0.7, 0.3, 256, 0.5, {"testing": 10}, {"testing": 10}, 0.7)
    assert nms in OURS and rpn.box_similarity is PATCHED["box_iou"]
    b, s = _nms_args()
    assert torch.equal(nms(b, s, 0.5), TV["nms"](b, s, 0.5))
    assert torch.equal(rpn.box_similarity(b, b[:9]), TV["box_iou"](b, b[:9]))
    assert torch.equal(box_iou(b, b[:9]), TV["box_iou"](b, b[:9]))
    assert not ssd_fast_calls


def test_the_context_manager_nests_and_unpatches_on_an_exception():
    with ssd_fast.torchvision_ops():
        assert torchvision.ops.nms is tp.nms
        with ssd_fast.torchvision_ops():
            assert torchvision.ops.nms is tp.nms
        assert torchvision.ops.nms is tp.nms  # the outer block's patch stays
    assert torchvision.ops.nms is TV["nms"]
    ssd_fast.patch_torchvision()
    with ssd_fast.torchvision_ops():
        pass
    assert torchvision.ops.nms is tp.nms  # a patch made outside is left in place
    ssd_fast.unpatch_torchvision()
    with pytest.raises(KeyError):
        with ssd_fast.torchvision_ops():
            raise KeyError
    assert torchvision.ops.nms is TV["nms"]


def test_blocks_in_two_threads_overlap():
    # A enters, B enters, A leaves (B's block still sees the patch), B leaves (unpatched)
    import threading
    steps = {name: threading.Event() for name in ("a_in", "b_in", "a_out")}
    seen = {}

    def a():
        with ssd_fast.torchvision_ops():
            steps["a_in"].set()
            steps["b_in"].wait(10)
        steps["a_out"].set()

    def b():
        steps["a_in"].wait(10)
        with ssd_fast.torchvision_ops():
            steps["b_in"].set()
            steps["a_out"].wait(10)
            seen["after a left"] = torchvision.ops.nms
        seen["after b left"] = torchvision.ops.nms

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(e.is_set() for e in steps.values())
    assert seen == {"after a left": tp.nms, "after b left": TV["nms"]}


def test_blocks_around_an_explicit_patch():
    # a patch made inside a block outlives it; an unpatch inside a block ends the patch at once
    with ssd_fast.torchvision_ops():
        ssd_fast.patch_torchvision()
    assert torchvision.ops.nms is tp.nms
    with ssd_fast.torchvision_ops():
        with ssd_fast.torchvision_ops():
            ssd_fast.unpatch_torchvision()
            assert torchvision.ops.nms is TV["nms"]
        assert torchvision.ops.nms is TV["nms"]
    assert torchvision.ops.nms is TV["nms"]


def test_importing_ssd_fast_does_not_import_torchvision():
    import subprocess
    code = "import sys, ssd_fast; assert 'torchvision' not in sys.modules; ssd_fast.patch_torchvision"
    subprocess.run([sys.executable, "-c", code + "; assert 'torchvision' in sys.modules"], check=True)


# ---------------------------------------------------------------------------------------------
# TorchScript, tracing, export, torch.compile

def _calls_all(boxes, scores, idxs):
    return (torchvision.ops.nms(boxes, scores, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5),
            torchvision.ops.box_iou(boxes, boxes))


def _inputs():
    b, s = _nms_args()
    return b, s, torch.arange(len(b)) % 5


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torch_jit_script_compiles_torchvision_s(ssd_fast_calls):
    args = _inputs()
    with ssd_fast.torchvision_ops():
        scripted = torch.jit.script(_calls_all)
        got = scripted(*args)
    assert "ssd_fast" not in str(scripted.inlined_graph)
    assert "torchvision::nms" in str(scripted.inlined_graph)
    assert not ssd_fast_calls
    for g, e in zip(got, _calls_all(*args)):
        assert torch.equal(g, e)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # torchvision's own batched_nms
def test_torch_jit_trace_records_torchvision_s(ssd_fast_calls):
    args = _inputs()
    with ssd_fast.torchvision_ops():
        traced = torch.jit.trace(_calls_all, args, check_trace=False)
    assert "ssd_fast" not in str(traced.inlined_graph)
    assert not ssd_fast_calls
    for g, e in zip(traced(*args), _calls_all(*args)):
        assert torch.equal(g, e)


@pytest.mark.filterwarnings("ignore:`create_unbacked_symint` is deprecated:FutureWarning")  # torchvision's
def test_torch_export_keeps_torchvision_s():
    class Nms(torch.nn.Module):
        def forward(self, boxes, scores, idxs):
            return torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    with ssd_fast.torchvision_ops():
        program = torch.export.export(Nms(), _inputs())
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert "torchvision.nms.default" in targets
    assert not any("ssd_fast" in t for t in targets)


def test_torch_compile_calls_ssd_fast():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    args = _inputs()
    torch._dynamo.reset()
    with ssd_fast.torchvision_ops():
        got = torch.compile(_calls_all, backend=backend, fullgraph=True)(*args)
    torch._dynamo.reset()
    targets = {str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"}
    assert {"ssd_fast.nms", "ssd_fast.batched_nms", "ssd_fast.box_iou"} <= targets
    for g, e in zip(got, _calls_all(*args)):
        assert torch.equal(g, e)
