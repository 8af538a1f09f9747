"""Each ``ssd-fast`` subcommand on tiny settings; bad input names what is wrong."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import ssd_fast
from ssd_fast.cli import main

needs_postprocess = pytest.mark.skipif(
    not hasattr(ssd_fast.ops, "ssd_postprocess"),
    reason="ssd_fast.ops.ssd_postprocess (branch nms) is not merged yet; SSD.detect needs it")


def _train(out):
    main(["train", "--data", "synthetic:n=16,size=64", "--image-size", "64", "--iterations", "2",
          "--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet", "--out", str(out)])
    return out / "model.pt"


def test_train_writes_checkpoints_and_resumes(tmp_path):
    ckpt = _train(tmp_path)
    assert ckpt.exists()
    main(["train", "--data", "synthetic:n=16,size=64", "--iterations", "3", "--batch-size", "4",
          "--workers", "0", "--device", "cpu", "--quiet", "--out", str(tmp_path),
          "--resume", str(tmp_path / "checkpoint.pt")])
    with pytest.raises(SystemExit):  # argparse names the bad choice
        main(["train", "--data", "synthetic:n=16,size=64", "--optimizer", "adam", "--out", str(tmp_path)])
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["iteration"] for r in log][-1] == 3



def test_resume_reads_the_checkpoint_once(tmp_path, monkeypatch):
    """The CLI checked it and the Trainer read and checked it again: two torch.load calls."""
    _train(tmp_path)
    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    main(["train", "--data", "synthetic:n=16,size=64", "--iterations", "3", "--batch-size", "4",
          "--workers", "0", "--device", "cpu", "--quiet", "--out", str(tmp_path),
          "--resume", str(tmp_path / "checkpoint.pt")])
    assert loads == [str(tmp_path / "checkpoint.pt")]


def test_train_flags_default_to_train_config():
    """One source of defaults: `ssd-fast train` without flags trains with TrainConfig()."""
    from ssd_fast.cli import _train_config, build_parser
    from ssd_fast.engine import TrainConfig

    cfg = _train_config(build_parser().parse_args(["train", "--data", "synthetic"]))
    assert cfg == TrainConfig()
    assert (cfg.lr, cfg.checkpoint_every, cfg.iterations, cfg.milestones) == (0.02, 500, 1000, (666, 833))

def test_train_cosine_bfloat16(tmp_path):
    main(["train", "--data", "synthetic:n=16,size=64", "--image-size", "64", "--iterations", "4",
          "--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet", "--out", str(tmp_path),
          "--warmup", "0", "--schedule", "cosine", "--amp", "on", "--lr", "0.01"])
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    cfg = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["train_config"]
    assert cfg["amp"] is True and cfg["schedule"] == "cosine" and log[-1]["skipped_steps"] == 0
    assert log[-1]["lr"] == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * 3 / 4)))  # the lr of step 4 of 4


@needs_postprocess
def test_demo_eval_detect(tmp_path):
    out = tmp_path / "demo"
    m = main(["demo", "--out", str(out), "--iterations", "3", "--train-n", "64", "--test-n", "8", "--quiet"])
    for name in ("model.pt", "metrics.json", "detections.png"):
        assert (out / name).exists()
    assert 0 <= m["voc07_map50"] <= 1
    res = main(["eval", "--checkpoint", str(out / "model.pt"), "--data", "synthetic:seed=1,n=8,size=128,split=test",
                "--json", str(tmp_path / "m.json"), "--coco", "--device", "cpu"])
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["voc07_map50"] == pytest.approx(res["voc07_map50"]) and "coco_ap" in saved
    img = tmp_path / "in.png"
    Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(img)
    main(["detect", "--checkpoint", str(out / "model.pt"), str(img), "--out", str(tmp_path / "det.png")])
    assert Image.open(tmp_path / "det.png").size == (70, 50)


def test_bench_still_there():
    with pytest.raises(SystemExit):
        main(["bench", "--help"])


def test_console_script_exits_with_status_0(tmp_path):
    """`ssd-fast eval` returns its metrics from main(); the console entry must not turn them into
    exit status 1 (sys.exit(dict) prints the dict and exits 1)."""
    ckpt = _train(tmp_path)
    code = ("import sys; from ssd_fast.cli import console; "
            f"sys.argv = ['ssd-fast', 'eval', '--checkpoint', {str(ckpt)!r}, '--data', 'synthetic:n=4,size=64']; "
            "sys.exit(console())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "nan", "--lr must be a finite number > 0, got nan"),
    ("--lr", "inf", "--lr must be a finite number > 0, got inf"),
    ("--lr", "0", "--lr must be a finite number > 0, got 0.0"),
    ("--lr", "-0.1", "--lr must be a finite number > 0, got -0.1"),
    ("--warmup", "-1", "--warmup must be >= 0, got -1"),
    ("--checkpoint-every", "0", "--checkpoint-every must be > 0, got 0"),
    ("--iterations", "0", "--iterations must be > 0, got 0"),
    ("--iterations", "-5", "--iterations must be > 0, got -5"),
    ("--batch-size", "0", "--batch-size must be > 0, got 0"),
    ("--workers", "-1", "--workers must be >= 0, got -1"),
    ("--image-size", "0", "--image-size must be > 0, got 0"),
])
def test_train_refuses_values_that_can_only_ruin_a_run(tmp_path, capsys, flag, value, message):
    """Refused before anything is built or written, naming the flag: one line, exit status 2."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "synthetic:n=16,size=64", "--device", "cpu", "--quiet",
              "--out", str(tmp_path / "out"), flag, value])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"ssd-fast train: {message}\n"
    assert not (tmp_path / "out").exists()


def test_train_opens_eval_data_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "synthetic:n=16,size=64", "--device", "cpu", "--quiet",
              "--out", str(tmp_path / "out"), "--eval-data", "nope:x"])
    assert e.value.code == 2 and "--eval-data: dataset spec 'nope:x': unknown kind 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--arch", "ssdlite", "--arch ssdlite differs from the checkpoint's ssd_tiny"),
    ("--image-size", "96", "--image-size 96 differs from the checkpoint's 64"),
])
def test_resume_with_another_architecture_is_an_error(tmp_path, capsys, flag, value, message):
    _train(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "synthetic:n=16,size=64", "--iterations", "3", "--batch-size", "4",
              "--workers", "0", "--device", "cpu", "--quiet", "--out", str(tmp_path),
              "--resume", str(tmp_path / "checkpoint.pt"), flag, value])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith(f"ssd-fast train: {message} (--resume ")


def test_a_run_stopped_by_non_finite_steps_writes_no_model(tmp_path, capsys, monkeypatch):
    from ssd_fast.engine import NonFiniteTraining, Trainer

    def diverge(self, resume=None, stop_at=None):
        raise NonFiniteTraining("training stopped at iteration 7: its last 50 steps were all skipped")
    monkeypatch.setattr(Trainer, "train", diverge)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "synthetic:n=16,size=64", "--batch-size", "4", "--device", "cpu", "--quiet",
              "--out", str(tmp_path)])
    assert e.value.code == 1
    assert capsys.readouterr().err == ("ssd-fast train: training stopped at iteration 7: its last 50 "
                                       "steps were all skipped\n")
    assert not (tmp_path / "model.pt").exists()


def test_a_second_training_into_one_out_folder_is_refused(tmp_path, capsys):
    """Both ran, interleaving log.jsonl, the last writer's checkpoint winning. The first one,
    killed, leaves nothing that stops the next."""
    out = tmp_path / "run"
    argv = ["train", "--data", "synthetic:n=16,size=64", "--image-size", "64", "--batch-size", "4",
            "--workers", "0", "--device", "cpu", "--quiet", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), OMP_NUM_THREADS="1")
    log = open(tmp_path / "first.err", "w")
    first = subprocess.Popen([sys.executable, "-m", "ssd_fast.cli", *argv, "--iterations", "100000"], env=env,
                             stdout=subprocess.DEVNULL, stderr=log)
    try:
        lock = out / ".ssd_fast.lock"
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):  # the first holds --out
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.err").read_text()
            time.sleep(0.2)
        with pytest.raises(SystemExit) as e:
            main(argv + ["--iterations", "2"])
        assert e.value.code == 2
        assert capsys.readouterr().err == (f"ssd-fast train: --out {str(out)!r} is being written by another run "
                                           f"(pid {first.pid}); wait for it to end or give another folder\n")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        log.close()
    main(argv + ["--iterations", "2"])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 2
