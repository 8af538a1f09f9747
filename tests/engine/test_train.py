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
    with pytest.raises(ValueError, match="max_skipped_in_a_row must be >= 1, got 0"):
        TrainConfig(max_skipped_in_a_row=0)



def test_config_checks_are_those_of_the_cli():
    """The CLI refuses these flags with the same checks (tests/test_cli.py), naming the flag."""
    from ssd_fast.engine import ConfigError

    for kw, message in [(dict(lr=float("inf")), "lr must be a finite number > 0, got inf"),
                        (dict(iterations=0), "iterations must be > 0, got 0"),
                        (dict(checkpoint_every=0), "checkpoint_every must be > 0, got 0"),
                        (dict(warmup_iters=-1), "warmup_iters must be >= 0, got -1"),
                        (dict(workers=-1), "workers must be >= 0, got -1")]:
        with pytest.raises(ConfigError, match=f"^{message}$"):
            TrainConfig(**kw)
    assert TrainConfig(iterations=30).milestones == (20, 25)  # the CLI's default: 2/3 and 5/6

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


def test_a_run_killed_while_writing_leaves_nothing_behind(tmp_path):
    """A SIGKILL in the middle of a checkpoint write leaves a temporary file (the checkpoint
    itself is intact): the next run removes it, and the resume is still exact."""
    data = build_dataset("synthetic:n=16,size=64")
    full = _model()
    Trainer(full, data, _cfg(), out_dir=str(tmp_path / "full")).train()
    cut = tmp_path / "cut"
    Trainer(_model(), data, _cfg(checkpoint_every=3), out_dir=str(cut)).train(stop_at=4)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a writer that is gone
    stale = [cut / f".{name}.{dead.pid}.k1ll.tmp" for name in ("checkpoint.pt", "model.pt")]
    for f in stale:
        f.write_bytes(b"half a checkpoint")
    resumed = _model()
    t = Trainer(resumed, data, _cfg(checkpoint_every=3), out_dir=str(cut))
    t.train(resume=str(cut / "checkpoint.pt"), stop_at=5)
    assert not any(f.exists() for f in stale) and t.iteration == 5
    t.train()
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k



def test_checkpoints_every_n_and_once_at_the_end(tmp_path, monkeypatch):
    """The periodic checkpoint of the last iteration is the final one: written once, not twice."""
    import ssd_fast.engine.train as train

    written, save = [], train.save_training_checkpoint
    monkeypatch.setattr(train, "save_training_checkpoint", lambda *a: written.append(a[5]) or save(*a))
    Trainer(_model(), build_dataset("synthetic:n=8,size=64"), _cfg(iterations=5, checkpoint_every=2),
            out_dir=str(tmp_path)).train()
    assert written == [2, 4, 5]
    t = Trainer(_model(), build_dataset("synthetic:n=8,size=64"), _cfg(iterations=4, checkpoint_every=2),
                out_dir=str(tmp_path / "even"))
    t.train()
    assert written == [2, 4, 5, 2, 4] and t.record["iteration"] == 4

def test_non_finite_steps_are_skipped(tmp_path):
    data = build_dataset("synthetic:n=8,size=64")
    model = _model()
    trainer = Trainer(model, data, _cfg(iterations=2), out_dir=None)
    with torch.no_grad():
        model.conf_head[0][1].bias.fill_(float("nan"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert trainer.skipped_steps == 2 and trainer.iteration == 2
    for k, v in model.state_dict().items():  # BatchNorm's running statistics included
        assert torch.equal(v, before[k]) or (torch.isnan(v).all() and torch.isnan(before[k]).all()), k


def _batch(data, trainer, n=4):
    from ssd_fast.data import collate
    return collate([trainer.data[i] for i in range(n)])


@pytest.mark.parametrize("cause", ["nan_image", "inf_loss", "nan_gradient"])
def test_a_skipped_step_leaves_everything_as_it_was(cause):
    """Model parameters, buffers (BatchNorm's running statistics: the forward in train mode
    updates them before the loss is seen) and optimizer state, bit for bit."""
    data = build_dataset("synthetic:n=8,size=64")
    model = _model()
    trainer = Trainer(model, data, _cfg(optimizer="adamw"), out_dir=None)
    images, target = _batch(data, trainer)
    assert trainer.step(images, target) is not None  # a good step: optimizer state exists
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    opt_state = {i: {k: v.clone() for k, v in s.items()} for i, s in opt["state"].items()}
    images = images.float() / 255
    hook = None
    if cause == "nan_image":
        images[0, :, 5:9, 5:9] = float("nan")
    elif cause == "inf_loss":
        criterion = trainer.criterion
        trainer.criterion = lambda *a: tuple(x * float("inf") for x in criterion(*a))
    else:
        hook = model.conf_head[0][1].weight.register_hook(lambda g: g * float("nan"))
    assert trainer.step(images, target) is None and trainer.skipped_steps == 1
    if hook is not None:
        hook.remove()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    after = trainer.optimizer.state_dict()["state"]
    for i, s in opt_state.items():
        for k, v in s.items():
            assert torch.equal(after[i][k], v), (i, k)
    assert all(p.grad is None for p in model.parameters())


def test_a_run_whose_steps_stay_non_finite_stops(tmp_path):
    """max_skipped_in_a_row skipped steps in a row stop training with a clear error: no final
    model, the checkpoint last written intact (iteration 2, before the weights went NaN)."""
    from ssd_fast.engine import NonFiniteTraining
    from ssd_fast.checkpoint import load_checkpoint

    data = build_dataset("synthetic:n=8,size=64")
    model = _model()
    cfg = _cfg(iterations=20, checkpoint_every=2, max_skipped_in_a_row=3)
    trainer = Trainer(model, data, cfg, out_dir=str(tmp_path))
    trainer.train(stop_at=2)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.conf_head[0][1].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteTraining, match=r"training stopped at iteration 5: its last 3 steps "
                       r"were all skipped \(non-finite loss or gradients; lower the learning rate\?\)"):
        trainer.train()
    saved = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert saved["iteration"] == 2
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in good.items())
    assert not (tmp_path / "model.pt").exists()


def test_resume_needs_a_training_checkpoint(tmp_path):
    from ssd_fast.checkpoint import save_checkpoint

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


def test_a_second_run_into_a_folder_is_refused_while_the_first_lives(tmp_path):
    """Two runs into one folder interleaved log.jsonl, the last checkpoint winning; a killed run
    leaves no lock behind."""
    from ssd_fast.outputs import OutputError

    from destinations import hold, kill

    data = build_dataset("synthetic:n=8,size=64")
    out = tmp_path / "run"
    child = hold(out)
    try:
        trainer = Trainer(_model(), data, _cfg(iterations=2), out_dir=str(out))
        with pytest.raises(OutputError, match=rf"^{str(out)!r} is being written by another run \(pid {child.pid}\)"):
            trainer.train()
        assert sorted(os.listdir(out)) == [".ssd_fast.lock"]
    finally:
        kill(child)
    trainer.train()
    assert trainer.iteration == 2 and (out / "checkpoint.pt").exists()


def test_batch_size_1_is_refused_where_a_batchnorm_sees_a_1x1_map(tmp_path):
    """It died in BatchNorm's 'Expected more than 1 value per channel' after an empty log.jsonl."""
    data = build_dataset("synthetic:n=8,size=64")
    with pytest.raises(ValueError, match=r"^batch_size 1: BatchNorm layer '[\w.]+' of ssdlite sees a 1x1 map, one "
                                         r"value per channel at batch 1, which it cannot normalize in training; "
                                         r"use a batch size of 2 or more$"):
        Trainer(_model(), data, _cfg(batch_size=1), out_dir=str(tmp_path / "run")).train()
    assert not (tmp_path / "run").exists()


def test_batch_size_1_trains_where_every_batchnorm_sees_a_map(tmp_path):
    from ssd_fast.engine.train import batch_size_problem
    from ssd_fast.models import ssd300_vgg16, ssd_tiny

    assert batch_size_problem(ssd300_vgg16(num_classes=3), 1) is None  # no BatchNorm
    torch.manual_seed(0)
    model = ssd_tiny(num_classes=6, image_size=288, width_mult=0.25)  # its last map is 2x2
    Trainer(model, build_dataset("synthetic:n=4,size=64"), _cfg(iterations=2, batch_size=1),
            out_dir=str(tmp_path)).train()
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
