"""Checkpoints: a file alone rebuilds the model; saving is atomic; clear errors."""
import os

import pytest
import torch

from ssd_fast.checkpoint import load_checkpoint, load_model, save_checkpoint
from ssd_fast.models import PRESETS, PriorSpec, build_model, model_from_config, ssd512_vgg16, ssdlite

from destinations import Destination

CLASSES = ["background", "circle", "square", "triangle"]


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = ssdlite(num_classes=4, image_size=96, width_mult=0.5, classes=CLASSES)
    with torch.no_grad():  # something a fresh model would not have
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        m.backbone.stages[0][0][1].running_mean.add_(0.5)
    m.postprocess_defaults["score_threshold"] = 0.3
    return m.eval()


def test_round_trip(tmp_path, model):
    path = tmp_path / "model.pt"
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    save_checkpoint(path, model, epoch=7, optimizer=opt.state_dict())
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.classes == CLASSES and loaded.arch == "ssdlite"
    assert loaded.arch_kwargs == {"image_size": 96, "width_mult": 0.5}
    assert loaded.postprocess_defaults["score_threshold"] == 0.3
    assert torch.equal(loaded.priors, model.priors)
    x = torch.randn(2, 3, 96, 96)
    for a, b in zip(loaded(x), model(x)):
        assert torch.equal(a, b)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 7 and "state" in ckpt["optimizer"]
    assert torch.load(path, weights_only=True)["format"] == "ssd_fast.checkpoint"  # plain data only


def test_custom_priors_are_stored(tmp_path):
    spec = PriorSpec(64, [8, 4, 2, 1, 1, 1], None, [10, 20, 30, 40, 50, 60], [], [[2]] * 6, clip=True,
                     variances=(0.1, 0.1, 0.3, 0.3))
    model = ssdlite(num_classes=3, image_size=64, priors=spec)
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.prior_spec == spec and loaded.variances == (0.1, 0.1, 0.3, 0.3)
    assert loaded.priors.shape == (spec.num_priors, 4)


def test_vgg_config_rebuilds():
    config = ssd512_vgg16(num_classes=81, priors="coco").config
    rebuilt = model_from_config(config)
    assert rebuilt.config == config and rebuilt.prior_spec == PRESETS["coco", 512]
    assert rebuilt.priors.shape == (24564, 4) and rebuilt.num_classes == 81


def test_save_is_atomic(tmp_path, model):
    """A failing save leaves the previous file whole and no temporary file behind."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, epoch=1)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, model, epoch=2, callback=lambda: None)  # lambdas do not pickle
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]
    save_checkpoint(path, model, epoch=3)
    assert load_checkpoint(path)["epoch"] == 3
    assert os.listdir(tmp_path) == ["model.pt"]


def test_errors(tmp_path, model):
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="not an ssd_fast checkpoint: no format=.*a bare state dict"):
        load_model(path)
    with pytest.raises(ValueError, match=r"extra keys \['state_dict'\] are reserved"):
        save_checkpoint(tmp_path / "x.pt", model, state_dict={})
    with pytest.raises(TypeError, match="model must be an ssd_fast.models.SSD, got Linear"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"arch: unknown model 'yolo'; known: \['ssd300_vgg16', "):
        build_model("yolo")
    ckpt = load_checkpoint(_saved(tmp_path, model))
    ckpt["version"] = 99
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="checkpoint version 99, this ssd_fast reads version 1"):
        load_model(tmp_path / "future.pt")


def _saved(tmp_path, model):
    path = tmp_path / "ok.pt"
    save_checkpoint(path, model)
    return path


def test_checkpoint_mode_is_that_of_any_output(tmp_path, model):
    """0666 less the umask, as open() gives every other output (mkstemp alone gives 0600)."""
    old = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "model.pt", model)
        (tmp_path / "other.txt").write_text("x")
    finally:
        os.umask(old)
    mode = os.stat(tmp_path / "model.pt").st_mode & 0o777
    assert mode == 0o640 == os.stat(tmp_path / "other.txt").st_mode & 0o777


def _killed_writer(path):
    """A child that starts writing ``path``'s temporary file and is SIGKILLed in the middle."""
    import signal
    import subprocess
    import sys
    import time
    code = ("import os, sys, tempfile, time\n"
            "p = sys.argv[1]\n"
            "fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(p)}.{os.getpid()}.', suffix='.tmp',"
            " dir=os.path.dirname(p))\n"
            "os.write(fd, b'half a checkpoint')\n"
            "print(tmp, flush=True)\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    tmp = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert os.path.exists(tmp)
    return tmp


def test_temporary_of_a_killed_write_is_removed(tmp_path, model):
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, epoch=1)
    before = path.read_bytes()
    stale = _killed_writer(path)
    assert path.read_bytes() == before  # the kill did not touch the checkpoint
    live = tmp_path / f".model.pt.{os.getppid()}.abcd.tmp"  # a writer that is still running
    live.write_bytes(b"in progress")
    other = tmp_path / ".other.pt.999999999.abcd.tmp"  # another file's temporary: not ours
    other.write_bytes(b"x")
    save_checkpoint(path, model, epoch=2)
    assert not os.path.exists(stale)
    assert live.exists() and other.exists()
    assert load_checkpoint(path)["epoch"] == 2


def test_a_save_the_disk_has_no_room_for_keeps_the_old_checkpoint(tmp_path, model):
    """torch.save said '[enforce fail at inline_container.cc:672] unexpected pos ...'."""
    from ssd_fast.outputs import OutputError

    with Destination(tmp_path / "dest", "full", room=64 * 1024) as dest:
        path = dest / "model.pt"
        save_checkpoint(path, model, epoch=1)
        before = path.read_bytes()
        dest.seal()
        with pytest.raises(OutputError, match=rf"^no space left on the device writing {str(path)!r}$"):
            save_checkpoint(path, model, epoch=2)
        dest.unseal()
        assert path.read_bytes() == before and dest.listing() == ["model.pt"]
