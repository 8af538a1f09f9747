"""Training: the loss goes down, kill-and-resume equals an uninterrupted run, non-finite steps
are skipped, torchrun trains with 2 CPU processes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ssd_fast.data import build_dataset
from ssd_fast.engine import TrainConfig, Trainer, lr_factor
from ssd_fast.models import ssdlite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model():
    torch.manual_seed(0)
    return ssdlite(num_classes=6, image_size=64, width_mult=0.25)


def _cfg(**kw):
    base = dict(iterations=6, batch_size=4, lr=0.01, warmup_iters=2, milestones=(4,), workers=0,
                log_every=1, progress=False, expand_p=0.5)
    return TrainConfig(**{**base, **kw})


def test_config_errors():
    with pytest.raises(ValueError, match=r"optimizer must be one of \('sgd', 'adamw'\), got 'adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=r"schedule must be one of \('multistep', 'cosine'\), got 'linear'"):
        TrainConfig(schedule="linear")


def test_lr_schedule():
    cfg = TrainConfig(warmup_iters=10, warmup_factor=0.5, milestones=(20, 30))
    assert [lr_factor(i, cfg) for i in (0, 5, 10, 19, 20, 30)] == pytest.approx([0.5, 0.75, 1, 1, 0.1, 0.01])
    cos = TrainConfig(iterations=110, warmup_iters=10, warmup_factor=0.5, schedule="cosine", milestones=(20,))
    # after the warmup, half a cosine from 1 to 0 over the remaining 100 iterations
    assert [lr_factor(i, cos) for i in (0, 5, 10, 35, 60, 85, 110, 200)] == pytest.approx(
        [0.5, 0.75, 1, 0.5 + 0.5 ** 1.5, 0.5, 0.5 - 0.5 ** 1.5, 0, 0])


def test_bfloat16_autocast_on_cpu(tmp_path):
    """amp on CPU trains in bfloat16 autocast, without a loss scaler, and no step is skipped
    (oneDNN's bfloat16 conv weight gradient on 1x1 inputs is sidestepped by the backbone)."""
    from ssd_fast.models import ssd_tiny

    data = build_dataset("synthetic:n=8,size=64")
    torch.manual_seed(0)
    model = ssd_tiny(num_classes=6, image_size=64, width_mult=0.25)
    t = Trainer(model, data, _cfg(iterations=8, batch_size=8, amp=True, optimizer="adamw", lr=2e-3),
                out_dir=str(tmp_path))
    assert t.amp_dtype == torch.bfloat16 and not t.scaler.is_enabled()
    t.train()
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert log[-1]["skipped_steps"] == 0 and all(torch.isfinite(p).all() for p in model.parameters())


def test_a_few_iterations_reduce_the_loss(tmp_path):
    data = build_dataset("synthetic:n=8,size=64")
    cfg = _cfg(iterations=30, batch_size=8, lr=0.02, milestones=(), expand_p=0, crop=False, photometric=False)
    Trainer(_model(), data, cfg, out_dir=str(tmp_path)).train()
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert len(log) == 30 and log[-1]["skipped_steps"] == 0
    first, last = sum(r["loss"] for r in log[:3]), sum(r["loss"] for r in log[-3:])
    assert last < 0.7 * first


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_is_exact(tmp_path, optimizer):
    data = build_dataset("synthetic:n=16,size=64")
    full = _model()
    Trainer(full, data, _cfg(optimizer=optimizer), out_dir=str(tmp_path / "full")).train()
    Trainer(_model(), data, _cfg(optimizer=optimizer), out_dir=str(tmp_path / "cut")).train(stop_at=3)
    resumed = _model()
    t = Trainer(resumed, data, _cfg(optimizer=optimizer), out_dir=str(tmp_path / "cut"))
    t.train(resume=str(tmp_path / "cut" / "checkpoint.pt"))
    assert t.iteration == 6
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_non_finite_steps_are_skipped(tmp_path):
    data = build_dataset("synthetic:n=8,size=64")
    model = _model()
    trainer = Trainer(model, data, _cfg(iterations=2), out_dir=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.conf_head[0][1].bias.fill_(float("nan"))
    nan_bias = model.conf_head[0][1].bias.clone()
    trainer.train()
    assert trainer.skipped_steps == 2 and trainer.iteration == 2
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k and k != "conf_head.0.1.bias":
            assert torch.equal(v, before[k]), k
    assert torch.isnan(nan_bias).all()


def test_resume_needs_a_training_checkpoint(tmp_path):
    from ssd_fast.models import save_checkpoint

    save_checkpoint(tmp_path / "w.pt", _model())
    with pytest.raises(ValueError, match="weights-only checkpoint"):
        Trainer(_model(), build_dataset("synthetic:n=8,size=64"), _cfg()).load(str(tmp_path / "w.pt"))


def test_torchrun_two_cpu_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "ssd_fast.cli", "train", "--data", "synthetic:n=32,size=64", "--image-size", "64",
           "--iterations", "3", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet",
           "--out", str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "model.pt").exists() and (tmp_path / "checkpoint.pt").exists()
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert log[-1]["iteration"] == 3
