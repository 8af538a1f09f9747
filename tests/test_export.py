"""ONNX export (ssd_fast.export, ssd-fast export): the exported detector, run in onnxruntime,
gives SSD.detect's detections; the graph holds standard operators only and runs at any batch."""
import json
import os

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ssd_fast import ops  # noqa: E402
from ssd_fast.bench.inference import spread_heads as _spread  # noqa: E402  (heads scaled: scores spread)
from ssd_fast.checkpoint import save_checkpoint  # noqa: E402
from ssd_fast.cli import main  # noqa: E402
from ssd_fast.data import build_dataset  # noqa: E402
from ssd_fast.engine import TrainConfig, Trainer  # noqa: E402
from ssd_fast.export import OPSETS, ExportableDetector, metadata, to_onnx  # noqa: E402
from ssd_fast.models import ssd300_vgg16, ssd_tiny, ssdlite  # noqa: E402

SCORE_TOL, BOX_TOL = 1e-5, 1e-3  # scores, pixels


def _images(model, n=4, seed=1):
    H, W = model.image_size if not isinstance(model, int) else (model, model)
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def assert_same_detections(got, expected):
    """onnxruntime's detections equal SSD.detect's: same num_detections, scores within 1e-5 in
    the same (descending) order, and rank for rank the same label and a box within 1e-3 px,
    except among detections whose scores are equal to within the tolerance: their order is
    then the runtime's float rounding's, so those are compared as sets (label, box)."""
    boxes, scores, labels, num = (np.asarray(t) for t in got)
    e_boxes, e_scores, e_labels, e_num = (t.numpy() for t in expected)
    assert boxes.shape == e_boxes.shape and scores.shape == e_scores.shape
    assert labels.dtype == np.int64 and num.dtype == np.int64
    np.testing.assert_array_equal(num, e_num)
    for b in range(len(num)):
        n = int(num[b])
        np.testing.assert_allclose(scores[b], e_scores[b], rtol=0, atol=SCORE_TOL)
        np.testing.assert_array_equal(labels[b, n:], -1)
        np.testing.assert_array_equal(boxes[b, n:], 0)
        np.testing.assert_array_equal(scores[b, n:], 0)
        unmatched = []
        for i in range(n):
            if labels[b, i] == e_labels[b, i] and np.abs(boxes[b, i] - e_boxes[b, i]).max() <= BOX_TOL:
                continue
            unmatched.append(i)
        for i in unmatched:  # a near-tie: the same detection elsewhere among its equals
            near = [j for j in range(n) if abs(e_scores[b, j] - scores[b, i]) <= 2 * SCORE_TOL]
            assert any(labels[b, i] == e_labels[b, j] and np.abs(boxes[b, i] - e_boxes[b, j]).max() <= BOX_TOL
                       for j in near), f"image {b} rank {i}: {labels[b, i]} {scores[b, i]} {boxes[b, i]} " \
                                       f"is not among SSD.detect's detections of that score"


MODELS = {
    "ssd_tiny": lambda: ssd_tiny(num_classes=6, image_size=96, width_mult=0.5),
    "ssdlite": lambda: ssdlite(num_classes=6, image_size=128, width_mult=0.5),
    "ssd300_vgg16": lambda: ssd300_vgg16(num_classes=21),
}


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = MODELS[request.param]()
    model = _spread(model, _images(model, 2, seed=5))
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    to_onnx(model, path)
    return model, path


@pytest.mark.parametrize("batch", [1, 4])
def test_onnxruntime_equals_detect(exported, batch):
    model, path = exported
    images = _images(model, batch)
    with torch.no_grad():
        expected = model.detect(images)
    got = _run(path, images)
    assert_same_detections(got, expected)
    assert 0 < got[3].min()  # the comparison is not of empty outputs


@pytest.mark.parametrize("iou", [0.45, 0.3, 0.6])
def test_every_nms_decision_shows(tmp_path, iou):
    """max_detections above every candidate of every class: every box the NMS keeps is in the
    output, so a single decision taken otherwise than by multiclass_nms fails the comparison
    (with K = 200 most suppressed boxes would not have made the cut anyway)."""
    torch.manual_seed(0)
    model = _spread(ssd_tiny(num_classes=6, image_size=96, width_mult=0.5), _images(96, 2, seed=5))
    kw = dict(iou_threshold=iou, topk_per_class=100, max_detections=500)
    to_onnx(model, tmp_path / "m.onnx", **kw)
    images = _images(model, 2)
    with torch.no_grad():
        expected = model.detect(images, **kw)
        assert (model.detect(images, **kw, score_threshold=0)[3] < 500).all()  # NMS did suppress
    assert_same_detections(_run(tmp_path / "m.onnx", images), expected)


@pytest.mark.parametrize("kw", [dict(clip=True), dict(topk_per_class=-1, max_detections=50),
                                dict(background_class=-1, score_threshold=0.1)], ids=str)
def test_other_settings(tmp_path, kw):
    torch.manual_seed(0)
    model = _spread(ssd_tiny(num_classes=4, image_size=64, width_mult=0.25), _images(64, 2, seed=5), offset_std=1.0)
    to_onnx(model, tmp_path / "m.onnx", **kw)
    images = _images(model, 2)
    with torch.no_grad():
        expected = model.detect(images, **kw)
    if kw.get("clip"):  # the clip matters: some unclipped box leaves the image
        boxes = model.detect(images)[0]
        assert ((boxes < 0) | (boxes > 64)).any()
    assert_same_detections(_run(tmp_path / "m.onnx", images), expected)


def test_the_graph_is_standard_and_self_contained(exported):
    model, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {op.domain for op in proto.opset_import} <= {"", "ai.onnx"}
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"} and not proto.functions
    ops_used = {n.op_type for n in proto.graph.node}
    assert {"NonMaxSuppression", "TopK", "Softmax", "Exp"} <= ops_used
    assert [i.name for i in proto.graph.input] == ["images"]  # priors and weights are constants
    assert [o.name for o in proto.graph.output] == ["det_boxes", "det_scores", "det_labels", "num_detections"]
    meta = metadata(path)
    H, W = model.image_size
    assert meta["image_size"] == f"{H},{W}" and meta["num_classes"] == str(model.num_classes)
    assert meta["mean"] == "123.675,116.28,103.53" and meta["std"] == "58.395,57.12,57.375"
    assert meta["iou_threshold"] == "0.45" and meta["max_detections"] == "200"
    assert len(json.loads(meta["classes"])) == model.num_classes


def test_a_trained_model_and_thresholds(tmp_path):
    """A model trained a few iterations (real, peaked scores), exported with its own settings
    and with others: fewer detections than max_detections, so the padding is compared too."""
    torch.manual_seed(0)
    model = ssd_tiny(num_classes=6, image_size=64, width_mult=0.25)
    cfg = TrainConfig(iterations=30, batch_size=8, lr=4e-3, optimizer="adamw", warmup_iters=5, workers=0,
                      progress=False, log_every=10)
    Trainer(model, build_dataset("synthetic:n=32,size=64"), cfg).train()
    model.eval()
    data = build_dataset("synthetic:seed=3,n=4,size=64,split=test")
    from ssd_fast.data import TestTransform
    images = torch.stack([TestTransform(64)(*data[i])[0] for i in range(4)])
    with torch.no_grad():  # a threshold leaving at most 50 detections an image: padding to compare
        scores = model.detect(images, max_detections=1000)[1]
    threshold = float(scores[:, 50].max())  # then off every score by more than float rounding
    while (scores - threshold).abs().min() < 1e-5:
        threshold += 1e-5
    for kw in ({}, dict(score_threshold=0.2, iou_threshold=0.3, topk_per_class=10, max_detections=7),
               dict(score_threshold=threshold, max_detections=1000)):
        path = tmp_path / "m.onnx"
        to_onnx(model, path, **kw)
        with torch.no_grad():
            expected = model.detect(images, **kw)
        got = _run(path, images)
        assert_same_detections(got, expected)
        K = kw.get("max_detections", 200)
        assert got[0].shape == (4, K, 4)
        if K == 1000:
            assert 0 < got[3].sum() and got[3].max() <= 50
        else:
            assert 0 < got[3].min()
        for batch in (1, 3):
            assert_same_detections(_run(path, images[:batch]), [t[:batch] for t in expected])


def test_dynamic_and_fixed_batch(tmp_path):
    torch.manual_seed(0)
    model = _spread(ssd_tiny(num_classes=4, image_size=64, width_mult=0.25), _images(64, 2))
    images = _images(model, 5)
    with torch.no_grad():
        expected = model.detect(images)
    to_onnx(model, tmp_path / "dynamic.onnx")  # traced at batch 2
    for batch in (1, 2, 5):
        assert_same_detections(_run(tmp_path / "dynamic.onnx", images[:batch]), [t[:batch] for t in expected])
    to_onnx(model, tmp_path / "fixed.onnx", batch=3)
    assert_same_detections(_run(tmp_path / "fixed.onnx", images[:3]), [t[:3] for t in expected])
    with pytest.raises(Exception, match="images"):
        _run(tmp_path / "fixed.onnx", images[:2])


def test_the_twin_equals_detect_in_pytorch():
    """The exportable module itself (what the exporter traces) equals SSD.detect in PyTorch."""
    torch.manual_seed(0)
    model = _spread(ssd_tiny(num_classes=6, image_size=96, width_mult=0.5), _images(96, 2))
    images = _images(model, 3)
    for kw in ({}, dict(score_threshold=0.3, topk_per_class=5, max_detections=300), dict(background_class=-1)):
        settings = {**model.postprocess_defaults, **kw}
        with torch.no_grad():
            assert_same_detections(ExportableDetector(model, **settings)(images), model.detect(images, **kw))


@pytest.mark.parametrize("opset", [OPSETS.start, OPSETS.stop - 1])
def test_opsets(tmp_path, opset):
    torch.manual_seed(0)
    model = _spread(ssd_tiny(num_classes=4, image_size=64, width_mult=0.25), _images(64, 2))
    to_onnx(model, tmp_path / "m.onnx", opset=opset)
    assert {o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import if o.domain in ("", "ai.onnx")} \
        == {opset}
    images = _images(model, 2)
    with torch.no_grad():
        assert_same_detections(_run(tmp_path / "m.onnx", images), model.detect(images))


# --- the CLI and bad input ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = _spread(ssd_tiny(num_classes=4, image_size=64, width_mult=0.25), _images(64, 2))
    save_checkpoint(d / "model.pt", model)
    (d / "plain.txt").write_text("not a checkpoint\n")
    torch.save(model.state_dict(), d / "weights.pt")
    return d, model


def test_cli_export_equals_detect(checkpoint, capsys):
    d, model = checkpoint
    out = d / "sub" / "m.onnx"
    main(["export", "--checkpoint", str(d / "model.pt"), "--out", str(out), "--score", "0.2", "--max-det", "20"])
    assert "ONNX opset 18" in capsys.readouterr().out
    images = _images(model, 2)
    with torch.no_grad():
        expected = model.detect(images, score_threshold=0.2, max_detections=20)
    assert_same_detections(_run(out, images), expected)
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o666 & ~_umask())
    assert not [f for f in os.listdir(out.parent) if f.endswith(".tmp")]


def _umask():
    from ssd_fast.outputs import umask
    return umask()


BAD = [
    (["--checkpoint", "{d}/plain.txt"], r"--checkpoint '.*/plain.txt': not an ssd_fast checkpoint"),
    (["--checkpoint", "{d}/weights.pt"], r"--checkpoint '.*/weights.pt': not an ssd_fast checkpoint: no format="),
    (["--checkpoint", "{d}/none.pt"], r"--checkpoint '.*/none.pt' does not exist"),
    (["--checkpoint", "{d}"], r"--checkpoint '.*' is a directory, not a checkpoint file"),
    (["--out", "{d}/plain.txt/m.onnx"], r"--out '.*/plain.txt/m.onnx': '.*/plain.txt' is a file, not a folder"),
    (["--out", "{d}"], r"--out '.*' is a directory; give a file name"),
    (["--out", "{d}/m.png"], r"--out '.*/m.png': give a file name ending in .onnx"),
    (["--opset", "17"], r"--opset 17 is not supported: use 18..23"),
    (["--opset", "99"], r"--opset 99 is not supported: use 18..23"),
    (["--batch", "0"], r"--batch must be 'dynamic' or an integer >= 1, got '0'"),
    (["--batch", "two"], r"--batch must be 'dynamic' or an integer >= 1, got 'two'"),
    (["--score", "nan"], r"--score must be a number in \[0, 1\], got nan"),
    (["--iou", "1.5"], r"--iou must be a number in \[0, 1\], got 1.5"),
    (["--topk", "0"], r"--topk must be >= 1 \(or -1: every prior\), got 0"),
    (["--max-det", "0"], r"--max-det must be >= 1, got 0"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(e) for e, _ in BAD])
def test_cli_bad_input_is_one_line(checkpoint, capsys, extra, message):
    import re
    d, _ = checkpoint
    args = {"--checkpoint": str(d / "model.pt"), "--out": str(d / "out" / "m.onnx")}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value.format(d=d)
    before = sorted(os.listdir(d))
    with pytest.raises(SystemExit) as e:
        main(["export", *[x for kv in args.items() for x in kv]])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"^ssd-fast export: " + message, err), err
    assert sorted(os.listdir(d)) == before  # nothing written


def test_out_is_never_the_checkpoint(checkpoint, capsys, tmp_path):
    d, _ = checkpoint
    link = tmp_path / "model.onnx"
    os.symlink(d / "model.pt", link)
    size = os.path.getsize(d / "model.pt")
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(d / "model.pt"), "--out", str(link)])
    assert "is the checkpoint itself" in capsys.readouterr().err
    assert os.path.getsize(d / "model.pt") == size


def test_api_bad_input(tmp_path):
    model = ssd_tiny(num_classes=4, image_size=64, width_mult=0.25)
    for kw, message in ((dict(opset=17), "opset 17 is not supported"), (dict(batch=0), "batch must be"),
                        (dict(max_detections=2.5), "max_detections must be an integer"),
                        (dict(score_threshold=float("nan")), "score_threshold must be a number in"),
                        (dict(background_class=4), "background_class must be -1 or a class")):
        with pytest.raises(ValueError, match=message):
            to_onnx(model, tmp_path / "m.onnx", **kw)
    with pytest.raises(TypeError, match="model must be an ssd_fast SSD, got Linear"):
        to_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="the folder of .* does not exist"):
        to_onnx(model, tmp_path / "no" / "m.onnx")
    assert os.listdir(tmp_path) == []


def _onnx_nms(boxes, scores, iou, score_threshold):
    """onnxruntime's NonMaxSuppression (one batch, one class), as the exported tail calls it."""
    from onnx import TensorProto, helper
    node = helper.make_node("NonMaxSuppression", ["b", "s", "m", "i", "t"], ["o"])
    graph = helper.make_graph([node], "nms", [
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, None, 4]),
        helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1, None]),
        helper.make_tensor_value_info("m", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("i", TensorProto.FLOAT, [1]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("o", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out, = session.run(None, {"b": np.array(boxes, np.float32)[None], "s": np.array(scores, np.float32)[None, None],
                              "m": np.array([len(scores)]), "i": np.array([iou], np.float32),
                              "t": np.array([score_threshold], np.float32)})
    return out[:, 2].tolist()


@pytest.mark.parametrize("boxes, scores, iou, score_threshold, expected", [
    ([[0, 0, 2, 1], [0, 0, 1, 1]], [0.9, 0.8], 0.5, 0.0, [0, 1]),        # IoU == threshold: kept
    ([[0, 0, 2, 1], [0, 0, 1, 1]], [0.9, 0.8], 0.49, 0.0, [0]),           # above it: suppressed
    ([[0, 0, 1, 1], [5, 5, 6, 6]], [0.9, 0.5], 0.5, 0.5, [0]),            # score == threshold: dropped
    ([[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11], [20, 20, 21, 21]], [0.5, 0.7, 0.5, 0.7], 0.5, 0.0,
     [1, 3, 0, 2]),                                                        # equal scores: lower index first
    ([[0, 0, 1, 1], [0, 0, 1, 1]], [0.5, 0.5], 0.5, 0.0, [0]),            # equal score and box: the first
    ([[3, 3, 3, 3], [3, 3, 3, 3], [0, 0, 1, 1]], [0.9, 0.8, 0.7], 0.5, 0.0, [0, 1, 2]),  # zero area: no IoU
], ids=["iou-equal", "iou-above", "score-equal", "ties", "duplicates", "zero-area"])
def test_onnxruntime_nms_semantics_are_ssd_fasts(boxes, scores, iou, score_threshold, expected):
    """What the export relies on (module docstring of ssd_fast.export), measured: onnxruntime's
    NonMaxSuppression keeps what ssd_fast's does, in the same order, on the edge cases."""
    assert _onnx_nms(boxes, scores, iou, score_threshold) == expected
    b, s = torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores)
    keep = ops.nms(b[s > score_threshold], s[s > score_threshold], iou)
    assert torch.nonzero(s > score_threshold).squeeze(1)[keep].tolist() == expected


def test_bench_inference_bad_batches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--inference", "--batches", "0,x"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == ("ssd-fast bench: --batches must be comma-separated integers >= 1, "
                                               "got '0,x'")


def test_output_into_a_reader_that_stops_early_ends_quietly(checkpoint, tmp_path):
    """ssd-fast detect --list | head -1: no BrokenPipeError traceback, exit status 141."""
    import subprocess
    import sys
    from PIL import Image
    d, _ = checkpoint
    images = [str(tmp_path / f"p{i}.png") for i in range(16)]  # 16 x 200 lines: more than a pipe holds
    for path in images:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    proc = subprocess.Popen([sys.executable, "-c", "from ssd_fast.cli import console; console()", "detect",
                             "--checkpoint", str(d / "model.pt"), *images, "--out", str(tmp_path / "out") + "/",
                             "--score", "0", "--list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout.readline().startswith(b"")
    proc.stdout.close()  # the reader is gone; 200 lines are still to be written
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141 and b"Traceback" not in err, err.decode()
