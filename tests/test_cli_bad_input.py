"""The CLI's bad-input table: each row a user's mistake and the one line it must print (exit
status 2, no traceback, nothing written), outputs that are inputs and destinations that are
read-only or full among them; then the detect outputs that must never overwrite a user's file,
a disk that fills up during the work (one line, exit status 1, the old file whole), the thread
count, and a bug that keeps its traceback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_fast.cli import main

from destinations import Destination

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def destinations(tmp_path_factory):
    """The folder of ``files``, with ``ro`` and ``full`` in it: a file system to be made
    read-only and one to be made full (by ``sealed``)."""
    d = tmp_path_factory.mktemp("cli_bad")
    with Destination(d / "ro", "read-only") as ro, Destination(d / "full", "full") as full:
        yield d, ro, full


@pytest.fixture(scope="module")
def files(destinations):
    """A trained checkpoint and an assortment of wrong files, built once; ``ro`` and ``full``
    each hold an image and a JSON file."""
    d, ro, full = destinations
    main(["train", "--data", "synthetic:n=16,size=64", "--image-size", "64", "--iterations", "2",
          "--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet", "--out", str(d / "run")])
    (d / "folder").mkdir()
    (d / "empty.pt").write_bytes(b"")
    (d / "text.pt").write_text("hello, I am not a checkpoint\n")
    torch.save(torch.nn.Linear(2, 2).state_dict(), d / "state_dict.pt")
    torch.save(torch.nn.Linear(2, 2), d / "module.pt")  # a pickled object: never unpickled
    data = (d / "run" / "model.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    ckpt = torch.load(d / "run" / "model.pt", weights_only=True)
    torch.save(dict(ckpt, version=99), d / "future.pt")
    torch.save(dict(ckpt, config={"arch": "yolo"}), d / "bad_config.pt")
    torch.save(dict(ckpt, state_dict={"x": torch.zeros(1)}), d / "bad_weights.pt")
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(d / "img.png")
    png = (d / "img.png").read_bytes()
    (d / "cut.png").write_bytes(png[: len(png) - 30])
    (d / "notimage.png").write_text("not an image")
    Image.fromarray(np.zeros((20, 30), np.float32)).save(d / "float.tiff")
    (d / "list.json").write_text("[1, 2]")
    (d / "one_class.json").write_text(json.dumps({"images": [], "annotations": [],
                                                  "categories": [{"id": 1, "name": "x"}]}))
    (d / "two_classes.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "img.png", "width": 50, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20]}],
        "categories": [{"id": 1, "name": "x"}]}))
    (d / "plain.txt").write_text("a file where a folder belongs")
    (d / "two_images.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": "img.png", "width": 50, "height": 40} for i in (1, 2)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20]} for i in (1, 2)],
        "categories": [{"id": 1, "name": "x"}]}))
    for name in ("model_link.json", "ckpt_link.png", "ckpt_link.onnx"):
        (d / name).symlink_to(d / "run" / "model.pt")
    os.link(d / "run" / "model.pt", d / "model_hard.json")
    for dest in (ro, full):
        (dest / "img.png").write_bytes(png)
        (dest / "m.json").write_text("{}\n")
    return d


@pytest.fixture
def sealed(files, destinations):
    """The ``ro`` and ``full`` destinations read-only and full for the test (the injected kind
    only while it runs: it patches this process's os functions)."""
    for dest in destinations[1:]:
        dest.seal()
    yield
    for dest in destinations[1:]:
        dest.unseal()


CKPT = "{d}/run/model.pt"
TRAINING_CKPT = "{d}/run/checkpoint.pt"
DATA = "synthetic:n=4,size=64"
TRAIN = ["train", "--data", "synthetic:n=16,size=64", "--batch-size", "4", "--iterations", "1",
         "--workers", "0", "--quiet", "--out", "{d}/new_run"]
EVAL = ["eval", "--checkpoint", CKPT]
DETECT = ["detect", "--checkpoint", CKPT]

EXPORT = ["export", "--checkpoint", CKPT, "--out"]
RO, FULL = "cannot be written: read-only file system", "cannot be written: no space left on the device"

#: (row id, argv ({d}: the files fixture's folder), the message after "ssd-fast COMMAND: ")
ROWS = [
    # checkpoints: missing, a folder, empty, not ours, damaged
    ("checkpoint-missing", ["eval", "--checkpoint", "{d}/missing.pt", "--data", DATA],
     r"--checkpoint '.*/missing.pt' does not exist"),
    ("checkpoint-folder", ["eval", "--checkpoint", "{d}/folder", "--data", DATA],
     r"--checkpoint '.*/folder' is a directory, not a checkpoint file"),
    ("checkpoint-empty", ["eval", "--checkpoint", "{d}/empty.pt", "--data", DATA],
     r"--checkpoint '.*/empty.pt': not an ssd_fast checkpoint: the file is empty"),
    ("checkpoint-text", ["eval", "--checkpoint", "{d}/text.pt", "--data", DATA],
     r"--checkpoint '.*/text.pt': not an ssd_fast checkpoint \(or a damaged one\): torch.load failed"),
    ("checkpoint-state-dict", ["eval", "--checkpoint", "{d}/state_dict.pt", "--data", DATA],
     r"--checkpoint '.*/state_dict.pt': not an ssd_fast checkpoint: no format='ssd_fast.checkpoint' "
     r"\(a bare state dict\?"),
    ("checkpoint-pickled-module", ["eval", "--checkpoint", "{d}/module.pt", "--data", DATA],
     r"--checkpoint '.*/module.pt': not an ssd_fast checkpoint \(or a damaged one\): torch.load failed "
     r"\(UnpicklingError: "),
    ("checkpoint-truncated", ["eval", "--checkpoint", "{d}/truncated.pt", "--data", DATA],
     r"--checkpoint '.*/truncated.pt': not an ssd_fast checkpoint \(or a damaged one\)"),
    ("checkpoint-future-version", ["eval", "--checkpoint", "{d}/future.pt", "--data", DATA],
     r"--checkpoint '.*/future.pt': checkpoint version 99, this ssd_fast reads version 1"),
    ("checkpoint-bad-config", ["eval", "--checkpoint", "{d}/bad_config.pt", "--data", DATA],
     r"--checkpoint '.*/bad_config.pt': a damaged ssd_fast checkpoint: its model cannot be rebuilt \(KeyError"),
    ("checkpoint-bad-weights", ["eval", "--checkpoint", "{d}/bad_weights.pt", "--data", DATA],
     r"--checkpoint '.*/bad_weights.pt': a damaged ssd_fast checkpoint: its model cannot be rebuilt "
     r"\(RuntimeError: Error\(s\) in loading state_dict"),
    ("detect-checkpoint-text", DETECT[:2] + ["{d}/text.pt", "{d}/img.png"],
     r"--checkpoint '.*/text.pt': not an ssd_fast checkpoint"),
    # dataset specs
    ("data-n-negative", EVAL + ["--data", "synthetic:n=-1"],
     r"--data: synthetic: n must be an integer in \[1, 2147483647\], got -1"),
    ("data-n-zero", EVAL + ["--data", "synthetic:n=0"], r"--data: synthetic: n must be an integer in \[1, "),
    ("data-n-float", EVAL + ["--data", "synthetic:n=1e20"],
     r"--data: dataset spec 'synthetic:n=1e20': n must be an integer, got '1e20'"),
    ("data-n-huge", EVAL + ["--data", "synthetic:n=100000000000000000000"],
     r"--data: synthetic: n must be an integer in \[1, 2147483647\], got 100000000000000000000"),
    ("data-seed-negative", EVAL + ["--data", "synthetic:seed=-5,n=4,size=64"],
     r"--data: synthetic: seed must be an integer in \[0, \d+\], got -5"),
    ("data-size-small", EVAL + ["--data", "synthetic:n=4,size=8"],
     r"--data: synthetic: size must be an integer in \[32, 8192\], got 8"),
    ("data-split", EVAL + ["--data", "synthetic:split=val"],
     r"--data: synthetic: split must be one of \['test', 'train'\], got 'val'"),
    ("data-unknown-kind", EVAL + ["--data", "imagenet:/x"], r"--data: dataset spec 'imagenet:/x': unknown kind"),
    ("data-unknown-option", EVAL + ["--data", "synthetic:colour=red"],
     r"--data: dataset spec 'synthetic:colour=red': unknown option 'colour' for synthetic"),
    ("data-empty", EVAL + ["--data", ""], r"--data: dataset spec: expected a string like"),
    ("data-voc-missing", EVAL + ["--data", "voc:{d}/no_voc"], r"--data: voc: '.*/no_voc/VOC2007' does not exist"),
    ("data-coco-missing-json", EVAL + ["--data", "coco:{d},{d}/none.json"],
     r"--data: coco: annotation file '.*/none.json' does not exist"),
    ("data-coco-images-not-a-folder", EVAL + ["--data", "coco:{d}/plain.txt,{d}/one_class.json"],
     r"--data: coco: images folder '.*/plain.txt' does not exist"),
    ("data-coco-a-list", EVAL + ["--data", "coco:{d},{d}/list.json"],
     r"--data: coco: annotation file '.*/list.json' is not COCO"),
    ("data-no-images", EVAL + ["--data", "coco:{d},{d}/one_class.json"], r"--data 'coco:.*' has no images"),
    ("data-classes-mismatch", EVAL + ["--data", "coco:{d},{d}/two_classes.json"],
     r"--checkpoint '.*/model.pt' has num_classes=6, --data 'coco:.*' has 2 \(background included\)"),
    # eval's other flags
    ("eval-batch-size-0", EVAL + ["--data", DATA, "--batch-size", "0"], r"--batch-size must be > 0, got 0"),
    ("eval-json-folder", EVAL + ["--data", DATA, "--json", "{d}/folder"],
     r"--json '.*/folder' is a directory; give a file name"),
    ("eval-json-under-a-file", EVAL + ["--data", DATA, "--json", "{d}/plain.txt/m.json"],
     r"--json '.*/plain.txt/m.json': '.*/plain.txt' is a file, not a folder"),
    ("eval-device-unknown", EVAL + ["--data", DATA, "--device", "gpu0"],
     r"--device 'gpu0' is not a device \(cpu, cuda or cuda:N\)"),
    ("eval-device-other", EVAL + ["--data", DATA, "--device", "mps"], r"--device 'mps': ssd-fast runs on cpu or cuda"),
    pytest.param("eval-device-cuda", EVAL + ["--data", DATA, "--device", "cuda"],
                 r"--device cuda: no CUDA device is available",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    ("eval-threads-negative", EVAL + ["--data", DATA, "--threads", "-2"],
     r"--threads must be >= 0 \(0: automatic\), got -2"),
    # detect
    ("detect-image-missing", DETECT + ["{d}/nope.png"], r"image '.*/nope.png' does not exist"),
    ("detect-image-folder", DETECT + ["{d}/folder"], r"image '.*/folder' is not a file"),
    ("detect-not-an-image", DETECT + ["{d}/notimage.png"],
     r"image '.*/notimage.png' cannot be read as an image \(UnidentifiedImageError"),
    ("detect-cut-short-image", DETECT + ["{d}/cut.png", "--out", "{d}/new_cut.png"],
     r"image '.*/cut.png': the image data is corrupt or cut short"),
    ("detect-float-image", DETECT + ["{d}/float.tiff", "--out", "{d}/new.png"],
     r"image '.*/float.tiff': a floating-point image \(mode F\) has no fixed range"),
    ("detect-score-nan", DETECT + ["{d}/img.png", "--score", "nan"], r"--score must be a number in \[0, 1\], got nan"),
    ("detect-score-above-1", DETECT + ["{d}/img.png", "--score", "1.5"], r"--score must be a number in \[0, 1\], got 1.5"),
    ("detect-score-negative", DETECT + ["{d}/img.png", "--score", "-0.1"], r"--score must be .* got -0.1"),
    ("detect-out-extension", DETECT + ["{d}/img.png", "--out", "{d}/new.xyz"],
     r"--out '.*/new.xyz': cannot write a .xyz picture; give a .png or .jpg name, or a folder ending with /"),
    ("detect-out-no-extension", DETECT + ["{d}/img.png", "--out", "{d}/new_picture"],
     r"--out '.*/new_picture': cannot write a extensionless picture"),
    ("detect-out-is-the-input", DETECT + ["{d}/img.png", "--out", "{d}/img.png"],
     r"the picture of '.*/img.png' would overwrite the input image '.*/img.png'"),
    ("detect-out-is-the-input-spelled-otherwise", DETECT + ["{d}/img.png", "--out", "{d}/folder/../img.png"],
     r"the picture of '.*/img.png' would overwrite the input image"),
    ("detect-out-a-file-for-several", DETECT + ["{d}/img.png", "{d}/cut.png", "--out", "{d}/plain.txt"],
     r"--out '.*/plain.txt' is a file; 2 images need a folder"),
    ("detect-out-under-a-file", DETECT + ["{d}/img.png", "--out", "{d}/plain.txt/x.png"],
     r"--out '.*/plain.txt/x.png': '.*/plain.txt' is a file, not a folder"),
    ("detect-same-image-twice", DETECT + ["{d}/img.png", "{d}/img.png", "--out", "{d}/new_folder/"],
     r"the pictures of '.*/img.png' and '.*/img.png' would both be written to '.*/new_folder/img_detections.png'"),
    ("detect-device-unknown", DETECT + ["{d}/img.png", "--out", "{d}/new.png", "--device", "tpu"],
     r"--device 'tpu' is not a device"),
    # argparse's own errors, as one line too
    ("argparse-not-an-int", TRAIN + ["--iterations", "ten"],
     r"argument --iterations: invalid int value: 'ten' \(see ssd-fast train --help\)"),
    ("argparse-bad-choice", TRAIN + ["--optimizer", "adam"], r"argument --optimizer: invalid choice: 'adam'"),
    ("argparse-missing-required", ["eval", "--data", DATA], r"the following arguments are required: --checkpoint"),
    ("argparse-unknown-flag", EVAL + ["--data", DATA, "--colour", "red"], r"unrecognized arguments: --colour red"),
    # bench
    ("bench-unknown-op", ["bench", "--device", "cpu", "--ops", "box_iou,roi_align"],
     r"--ops: unknown op\(s\) roi_align; known: batched_nms, box_iou, "),
    ("bench-min-seconds-nan", ["bench", "--device", "cpu", "--min-seconds", "nan"],
     r"--min-seconds must be a finite number > 0, got nan"),
    ("bench-min-seconds-0", ["bench", "--device", "cpu", "--min-seconds", "0"],
     r"--min-seconds must be a finite number > 0, got 0.0"),
    ("bench-threads-negative", ["bench", "--device", "cpu", "--threads", "-1"], r"--threads must be >= 0"),
    pytest.param("bench-device-cuda", ["bench", "--device", "cuda"], r"--device cuda: no CUDA device is available",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    # train
    ("train-resume-missing", TRAIN + ["--resume", "{d}/missing.pt"], r"--resume '.*/missing.pt' does not exist"),
    ("train-resume-folder", TRAIN + ["--resume", "{d}/folder"], r"--resume '.*/folder' is a directory"),
    ("train-resume-empty", TRAIN + ["--resume", "{d}/empty.pt"], r"--resume '.*/empty.pt': not an ssd_fast checkpoint"),
    ("train-resume-text", TRAIN + ["--resume", "{d}/text.pt"], r"--resume '.*/text.pt': not an ssd_fast checkpoint"),
    ("train-resume-weights-only", TRAIN + ["--resume", CKPT],
     r"--resume '.*/model.pt' is a weights-only checkpoint \(no iteration, .*\); resume from a training "
     r"checkpoint \(checkpoint.pt\)"),
    ("train-resume-other-classes", ["train", "--data", "coco:{d},{d}/two_classes.json", "--out", "{d}/new_run",
                                    "--batch-size", "1", "--resume", TRAINING_CKPT],
     r"--resume '.*/checkpoint.pt' has num_classes=6, --data 'coco:.*' has 2 \(background included\)"),
    ("train-no-images", ["train", "--data", "coco:{d},{d}/one_class.json", "--out", "{d}/new_run"],
     r"--data 'coco:.*' has no images"),
    ("train-unknown-arch", TRAIN + ["--arch", "yolo"], r"--arch 'yolo': unknown model; known: .*ssd_tiny"),
    ("train-image-size-too-small", TRAIN + ["--image-size", "8"], r"--image-size 8: .*image_size"),
    ("train-milestones-words", TRAIN + ["--milestones", "a,b"],
     r"--milestones must be comma-separated iterations, got 'a,b'"),
    ("train-milestones-beyond", TRAIN + ["--milestones", "5"],
     r"--milestones must be increasing iterations in 1..--iterations=1, got '5'"),
    ("train-milestones-decreasing", ["train", "--data", DATA, "--iterations", "10", "--out", "{d}/new_run",
                                     "--milestones", "8,4"],
     r"--milestones must be increasing iterations in 1..--iterations=10, got '8,4'"),
    ("train-out-a-file", TRAIN[:-1] + ["{d}/plain.txt"], r"--out '.*/plain.txt' is a file; give a folder"),
    ("train-batch-larger-than-data", ["train", "--data", "synthetic:n=16,size=64", "--batch-size", "17",
                                      "--out", "{d}/new_run"],
     r"--batch-size 17 is larger than the dataset \(16 images, --data synthetic:n=16,size=64\)"),
    ("train-data-bad", ["train", "--data", "synthetic:n=-3", "--out", "{d}/new_run"],
     r"--data: synthetic: n must be an integer in"),
    ("train-eval-data-bad", TRAIN + ["--eval-data", "voc:{d}/no_voc"], r"--eval-data: voc: '.*' does not exist"),
    ("train-device-unknown", TRAIN + ["--device", "cuda:x"], r"--device 'cuda:x' is not a device"),
    ("train-threads-negative", TRAIN + ["--threads", "-1"], r"--threads must be >= 0"),
    # demo
    ("demo-iterations-negative", ["demo", "--out", "{d}/new_run", "--iterations", "-1"],
     r"--iterations must be >= 0 \(0: the default\), got -1"),
    ("demo-train-n-negative", ["demo", "--out", "{d}/new_run", "--train-n", "-3"], r"--train-n must be >= 0"),
    ("demo-train-n-below-the-batch", ["demo", "--out", "{d}/new_run", "--train-n", "5"],
     r"--train-n must be at least the batch size 32, got 5"),
    ("demo-test-n-negative", ["demo", "--out", "{d}/new_run", "--test-n", "-1"], r"--test-n must be >= 0"),
    ("demo-seed-negative", ["demo", "--out", "{d}/new_run", "--seed", "-1"], r"--seed must be >= 0, got -1"),
    ("demo-out-a-file", ["demo", "--out", "{d}/plain.txt"], r"--out '.*/plain.txt' is a file; give a folder"),
    # outputs that are inputs: the same file, through a symbolic or a hard link too
    ("eval-json-is-the-checkpoint", EVAL + ["--data", DATA, "--json", CKPT],
     r"--json '.*/run/model.pt' is the checkpoint itself \('.*/run/model.pt'\); give another file name"),
    ("eval-json-a-link-to-the-checkpoint", EVAL + ["--data", DATA, "--json", "{d}/model_link.json"],
     r"--json '.*/model_link.json' is the checkpoint itself \('.*/run/model.pt'\)"),
    ("eval-json-a-hard-link-to-the-checkpoint", EVAL + ["--data", DATA, "--json", "{d}/model_hard.json"],
     r"--json '.*/model_hard.json' is the checkpoint itself \('.*/run/model.pt'\)"),
    ("eval-json-is-the-annotation-file", EVAL + ["--data", "coco:{d},{d}/two_classes.json", "--json",
                                                 "{d}/two_classes.json"],
     r"--json '.*/two_classes.json' is --data's file itself \('.*/two_classes.json'\); give another file name"),
    ("eval-json-into-the-images-folder", EVAL + ["--data", "coco:{d},{d}/two_classes.json", "--json", "{d}/m.json"],
     r"--json '.*/m.json' lies inside --data's folder \('.*'\)"),
    ("detect-out-a-link-to-the-checkpoint", DETECT + ["{d}/img.png", "--out", "{d}/ckpt_link.png"],
     r"--out '.*/ckpt_link.png' is the checkpoint itself \('.*/run/model.pt'\)"),
    ("export-out-a-link-to-the-checkpoint", EXPORT + ["{d}/ckpt_link.onnx"],
     r"--out '.*/ckpt_link.onnx' is the checkpoint itself \('.*/run/model.pt'\)"),
    ("train-out-into-the-images-folder", ["train", "--data", "coco:{d},{d}/two_images.json", "--image-size", "64",
                                          "--batch-size", "2", "--out", "{d}/new_run"],
     r"--out '.*/new_run' lies inside --data's folder \('.*'\); give another folder"),
    # read-only and full destinations, refused before the work
    ("eval-json-read-only", EVAL + ["--data", DATA, "--json", "{d}/ro/m.json"], rf"--json '.*/ro/m.json' {RO}"),
    ("eval-json-read-only-new-folder", EVAL + ["--data", DATA, "--json", "{d}/ro/new/m.json"],
     rf"--json '.*/ro/new/m.json' {RO}"),
    ("eval-json-full", EVAL + ["--data", DATA, "--json", "{d}/full/m.json"], rf"--json '.*/full/m.json' {FULL}"),
    ("detect-out-read-only", DETECT + ["{d}/img.png", "--out", "{d}/ro/p.png"], rf"--out '.*/ro/p.png' {RO}"),
    ("detect-out-folder-read-only", DETECT + ["{d}/img.png", "--out", "{d}/ro/pictures/"],
     rf"--out '.*/ro/pictures/' {RO}"),
    ("detect-next-to-an-image-on-a-read-only-fs", DETECT + ["{d}/ro/img.png"],
     rf"picture '.*/ro/img_detections.png' {RO}"),
    ("detect-out-full", DETECT + ["{d}/img.png", "--out", "{d}/full/p.png"], rf"--out '.*/full/p.png' {FULL}"),
    ("detect-next-to-an-image-on-a-full-fs", DETECT + ["{d}/full/img.png"],
     rf"picture '.*/full/img_detections.png' {FULL}"),
    ("export-out-read-only", EXPORT + ["{d}/ro/m.onnx"], rf"--out '.*/ro/m.onnx' {RO}"),
    ("export-out-full", EXPORT + ["{d}/full/m.onnx"], rf"--out '.*/full/m.onnx' {FULL}"),
    ("train-out-read-only", TRAIN[:-1] + ["{d}/ro/run"], rf"--out '.*/ro/run' {RO}"),
    ("train-out-full", TRAIN[:-1] + ["{d}/full/run"], rf"--out '.*/full/run' {FULL}"),
    ("demo-out-read-only", ["demo", "--out", "{d}/ro/demo"], rf"--out '.*/ro/demo' {RO}"),
    ("demo-out-full", ["demo", "--out", "{d}/full/demo"], rf"--out '.*/full/demo' {FULL}"),
    # a model that cannot train at the batch size
    ("train-batch-size-1", TRAIN + ["--batch-size", "1", "--image-size", "64"],
     r"--batch-size 1: BatchNorm layer 'backbone.stages.4.0.1' of ssd_tiny sees a 1x1 map, one value per "
     r"channel at batch 1, which it cannot normalize in training; use a batch size of 2 or more"),
]


def _snapshot(d):
    return {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns
            for r, _, fs in os.walk(d) for f in fs}


@pytest.mark.parametrize("argv, message", [
    pytest.param(*r.values[1:], id=r.values[0], marks=r.marks) if hasattr(r, "marks") else pytest.param(*r[1:], id=r[0])
    for r in ROWS])
def test_a_users_mistake_is_one_line(files, sealed, capsys, argv, message):
    """One line ``ssd-fast COMMAND: ...`` naming the argument, exit status 2, nothing written."""
    import re
    before = _snapshot(files)
    with pytest.raises(SystemExit) as e:
        main([a.format(d=files) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert re.fullmatch(rf"ssd-fast {argv[0]}: (?:{message}).*\n", err, re.S), err
    assert _snapshot(files) == before  # nothing written, nothing touched


def test_the_console_prints_one_line_and_exits_2(files):
    done = subprocess.run([sys.executable, "-m", "ssd_fast.cli", "eval", "--checkpoint", str(files / "text.pt"),
                           "--data", DATA], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"ssd-fast eval: --checkpoint {str(files / 'text.pt')!r}: not an ssd_fast checkpoint")


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    """Only a user's mistakes become one line: an error inside the work itself is raised."""
    import ssd_fast.engine

    def broken(*args, **kwargs):
        raise ValueError("a bug in evaluate")
    monkeypatch.setattr(ssd_fast.engine, "evaluate", broken)
    with pytest.raises(ValueError, match="a bug in evaluate"):
        main(EVAL[:2] + [str(files / "run" / "model.pt"), "--data", DATA])


# -- detect never overwrites or loses a user's file ------------------------------------------------

def _detect(files, *argv):
    main(["detect", "--checkpoint", str(files / "run" / "model.pt"), *map(str, argv)])


def _refused(files, capsys, folder, argv, message):
    before = _snapshot(folder)
    with pytest.raises(SystemExit) as e:
        _detect(files, *argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert _snapshot(folder) == before


def test_detect_refuses_an_output_that_is_an_input_through_a_link(files, tmp_path, capsys):
    img = tmp_path / "pic.png"
    img.write_bytes((files / "img.png").read_bytes())
    (tmp_path / "soft.png").symlink_to(img)
    os.link(img, tmp_path / "hard.png")
    for out in ("soft.png", "hard.png"):
        _refused(files, capsys, tmp_path, [img, "--out", tmp_path / out], "would overwrite the input image")
    # the link as the input and the image as the output
    _refused(files, capsys, tmp_path, [tmp_path / "hard.png", "--out", img], "would overwrite the input image")


def test_detect_refuses_outputs_that_collide(files, tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "p.png").write_bytes((files / "img.png").read_bytes())
    _refused(files, capsys, tmp_path, [tmp_path / "a" / "p.png", tmp_path / "b" / "p.png", "--out", tmp_path / "o"],
             "would both be written to")
    assert not (tmp_path / "o").exists()


def test_detect_refuses_an_output_named_as_a_later_input(files, tmp_path, capsys):
    (tmp_path / "pic.png").write_bytes((files / "img.png").read_bytes())
    (tmp_path / "pic_detections.png").write_bytes((files / "img.png").read_bytes())
    _refused(files, capsys, tmp_path, [tmp_path / "pic.png", tmp_path / "pic_detections.png"],
             f"would overwrite the input image {str(tmp_path / 'pic_detections.png')!r}")


@pytest.mark.parametrize("how", ["existing folder", "trailing slash", "several images"])
def test_detect_out_as_a_folder(files, tmp_path, how, capsys):
    out = tmp_path / "out"
    images = [files / "img.png"]
    if how == "existing folder":
        out.mkdir()
        arg = str(out)
    elif how == "trailing slash":
        arg = str(out) + "/"
    else:
        (tmp_path / "second.png").write_bytes((files / "img.png").read_bytes())
        images.append(tmp_path / "second.png")
        arg = str(out)
    _detect(files, *images, "--out", arg)
    assert sorted(os.listdir(out)) == sorted(f"{p.stem}_detections.png" for p in images)
    assert Image.open(out / "img_detections.png").size == (50, 40)


def test_detect_writes_next_to_the_image_and_keeps_the_mode(files, tmp_path):
    img = tmp_path / "pic.png"
    img.write_bytes((files / "img.png").read_bytes())
    old = os.umask(0o022)
    try:
        _detect(files, img)
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ["pic.png", "pic_detections.png"]  # no temporary left
    assert os.stat(tmp_path / "pic_detections.png").st_mode & 0o777 == 0o644
    assert img.read_bytes() == (files / "img.png").read_bytes()


# -- a disk that fills up during the work: one line, exit status 1, the old file whole ----------

def _refused_midway(capsys, dest, argv, path, before):
    """``argv`` fails on ``dest`` with one line naming ``path``, exit status 1; ``path`` holds
    ``before`` (None: it does not exist) and no temporary is left."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    dest.unseal()
    err = capsys.readouterr().err
    assert e.value.code == 1, err
    assert err == f"ssd-fast {argv[0]}: no space left on the device writing {str(path)!r}\n"
    if before is None:
        assert not os.path.exists(path)
    else:
        assert open(path, "rb").read() == before
    assert not [f for _, _, fs in os.walk(dest.folder) for f in fs if f.endswith(".tmp")]


def test_eval_when_the_disk_fills_up_during_the_evaluation(files, tmp_path, capsys, monkeypatch):
    import ssd_fast.engine
    with Destination(tmp_path / "dest", "full") as dest:
        evaluate = ssd_fast.engine.evaluate

        def evaluate_then_fill(*args, **kwargs):
            metrics = evaluate(*args, **kwargs)
            dest.seal()
            return metrics
        monkeypatch.setattr(ssd_fast.engine, "evaluate", evaluate_then_fill)
        _refused_midway(capsys, dest, EVAL[:2] + [files / "run" / "model.pt", "--data", DATA,
                                                 "--json", dest / "m.json"], dest / "m.json", None)


def test_detect_a_picture_larger_than_the_room_left(files, tmp_path, capsys):
    image = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8)).save(image)
    with Destination(tmp_path / "dest", "full", room=8192) as dest:
        (dest / "p.png").write_bytes(b"the old picture")
        dest.seal()
        _refused_midway(capsys, dest, DETECT[:2] + [files / "run" / "model.pt", image, "--out", dest / "p.png"],
                        dest / "p.png", b"the old picture")


def test_export_larger_than_the_room_left(files, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    with Destination(tmp_path / "dest", "full", room=1 << 20) as dest:
        dest.seal()
        _refused_midway(capsys, dest, ["export", "--checkpoint", files / "run" / "model.pt", "--out", dest / "m.onnx"],
                        dest / "m.onnx", None)


def test_train_resume_on_a_disk_without_room_for_the_checkpoint(files, tmp_path, capsys):
    """torch.save's '[enforce fail at inline_container.cc:672] unexpected pos' before."""
    with Destination(tmp_path / "dest", "full", room=1 << 20, size="32m") as dest:
        run = dest / "run"
        run.mkdir()
        checkpoint = (files / "run" / "checkpoint.pt").read_bytes()
        (run / "checkpoint.pt").write_bytes(checkpoint)
        dest.seal()
        _refused_midway(capsys, dest, TRAIN[:-1] + [run, "--iterations", "3", "--image-size", "64",
                                                   "--resume", run / "checkpoint.pt"],
                        run / "checkpoint.pt", checkpoint)
        assert not (run / "model.pt").exists()


# -- images of any mode: the same detections as their 8-bit RGB copy -------------------------------

def _scene():
    from ssd_fast.data.synthetic import render
    return render(0, "test", 3, 64)[0]


def _variants(tmp_path):
    """(file, its 8-bit RGB copy) for 16-bit grayscale, grayscale, RGBA, palette, 48-bit RGB."""
    import struct
    import zlib
    rgb = _scene()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    out = []
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # mode I;16
    out.append(("grey16.png", np.repeat(grey[..., None], 3, 2)))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out.append(("grey.png", np.repeat(grey[..., None], 3, 2)))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(tmp_path / "rgba.png")
    out.append(("rgba.png", rgb))
    pal = Image.fromarray(rgb).quantize(64)
    pal.save(tmp_path / "palette.png")
    out.append(("palette.png", np.asarray(pal.convert("RGB"))))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palette_transparent.png", transparency=0)
    out.append(("palette_transparent.png", np.asarray(pal.convert("RGB"))))
    h, w, _ = rgb.shape  # 48-bit RGB (PIL writes no 16-bit colour PNG): the bytes by hand
    raw = b"".join(b"\0" + (rgb[y].astype(">u2") * 257).tobytes() for y in range(h))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    (tmp_path / "rgb48.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                                         + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    out.append(("rgb48.png", rgb))
    return out


def test_images_of_every_mode_read_as_their_rgb_copy(tmp_path):
    from ssd_fast.data.images import read_image
    for name, expected in _variants(tmp_path):
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == expected.shape, name
        assert np.array_equal(got, expected), name


def test_detect_on_a_16_bit_image_equals_the_8_bit_one(files, tmp_path, capsys):
    """The clipped read made every pixel above 1/256 white: other detections."""
    _variants(tmp_path)
    _detect(files, tmp_path / "grey16.png", tmp_path / "grey.png", "--out", tmp_path / "out", "--score", "0.01")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(":")[1].split("->")[0] == lines[1].split(":")[1].split("->")[0]
    a = np.asarray(Image.open(tmp_path / "out" / "grey16_detections.png"))
    b = np.asarray(Image.open(tmp_path / "out" / "grey_detections.png"))
    assert np.array_equal(a, b)


# -- threads ---------------------------------------------------------------------------------------

@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_threads_follow_affinity_omp_num_threads_and_the_flag(monkeypatch, keep_threads):
    from ssd_fast import cli
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5, 7}, raising=False)
    assert cli.cpu_threads("x") == 3  # the CPUs this process may use, not the machine's 64
    assert cli.cpu_threads("x", workers=2) == 1
    assert cli.cpu_threads("x", workers=8) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cli.cpu_threads("x", workers=2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "5,2")  # OpenMP's nested form: the outer level
    assert cli.cpu_threads("x") == 5
    assert cli.cpu_threads("x", threads=4) == 4


def test_threads_end_to_end(files, monkeypatch, keep_threads, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    main(EVAL[:2] + [str(files / "run" / "model.pt"), "--data", DATA])
    assert torch.get_num_threads() == 1
    main(EVAL[:2] + [str(files / "run" / "model.pt"), "--data", DATA, "--threads", "2"])
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    with pytest.raises(SystemExit) as e:
        main(EVAL[:2] + [str(files / "run" / "model.pt"), "--data", DATA])
    assert e.value.code == 2
    assert capsys.readouterr().err == "ssd-fast eval: OMP_NUM_THREADS must be a positive integer, got 'abc'\n"
