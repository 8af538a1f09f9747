"""ssd_fast.outputs: outputs written whole or not at all, refused before the work when they
cannot be written or are inputs, one line when the disk is full, one run per folder."""
import errno
import os

import pytest

from ssd_fast.outputs import LOCK_NAME, LineLog, OutputError, check_output, run_lock, write_atomically

from destinations import Destination, can_mount, hold, kill

HOWS = [pytest.param("mounted", marks=pytest.mark.skipif(not can_mount(), reason="cannot mount a tmpfs here")),
        "injected"]


@pytest.fixture(params=HOWS)
def how(request):
    return request.param


def _listing(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("kind, message", [("full", "no space left on the device"),
                                           ("read-only", "read-only file system")])
def test_a_refused_write_keeps_the_file_and_leaves_no_temporary(tmp_path, how, kind, message):
    with Destination(tmp_path / "dest", kind, room=8192, how=how) as dest:
        path = dest / "out.bin"
        write_atomically(path, lambda f: f.write(b"the old file"))
        before = dest.listing()
        dest.seal()
        with pytest.raises(OutputError) as e:
            write_atomically(path, lambda f: f.write(bytes(64 * 1024)))
        dest.unseal()
        assert str(e.value) == f"{message} writing {str(path)!r}"
        assert e.value.errno == {"full": errno.ENOSPC, "read-only": errno.EROFS}[kind]
        assert open(path, "rb").read() == b"the old file"
        assert dest.listing() == before


def test_torch_save_on_a_full_disk_names_the_file(tmp_path, how):
    """torch.save reports its writer's ENOSPC as '[enforce fail at inline_container.cc] unexpected
    pos': the writer's own error is what is said."""
    import torch

    with Destination(tmp_path / "dest", "full", room=16384, how=how) as dest:
        path = dest / "model.pt"
        dest.seal()
        with pytest.raises(OutputError, match=rf"^no space left on the device writing {str(path)!r}$"):
            write_atomically(path, lambda f: torch.save({"w": torch.zeros(400_000)}, f))
        dest.unseal()
        assert dest.listing() == []


def test_a_picture_on_a_full_disk_names_the_file(tmp_path, how):
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8))
    with Destination(tmp_path / "dest", "full", room=16384, how=how) as dest:
        dest.seal()
        with pytest.raises(OutputError, match="^no space left on the device writing "):
            write_atomically(dest / "p.png", lambda f: picture.save(f, format="PNG"))


def test_other_errors_of_the_writer_pass_unchanged(tmp_path):
    def broken(f):
        raise KeyError("a bug")
    with pytest.raises(KeyError, match="a bug"):
        write_atomically(tmp_path / "x", broken)
    assert _listing(tmp_path) == []


def test_a_log_line_the_disk_has_no_room_for_is_cut_off_again(tmp_path, how):
    with Destination(tmp_path / "dest", "full", room=8192, how=how) as dest:
        path = dest / "log.jsonl"
        with LineLog(path) as log:
            log.write("first\n")
            dest.seal()
            with pytest.raises(OutputError, match=rf"^no space left on the device writing {str(path)!r}$"):
                for _ in range(100):
                    log.write("x" * 1000 + "\n")
        dest.unseal()
        lines = open(path).read().splitlines(keepends=True)
        assert lines[0] == "first\n" and all(line == "x" * 1000 + "\n" for line in lines[1:])


@pytest.mark.parametrize("kind, message", [("full", "no space left on the device"),
                                           ("read-only", "read-only file system")])
def test_check_output_tries_the_destination(tmp_path, how, kind, message):
    with Destination(tmp_path / "dest", kind, how=how) as dest:
        dest.seal()
        for path, folder in ((dest / "m.json", False), (dest / "new" / "deeper" / "m.json", False),
                             (dest / "run", True)):
            with pytest.raises(OutputError) as e:
                check_output(path, folder=folder)
            assert str(e.value) == f"{str(path)!r} cannot be written: {message}"
        dest.unseal()
        assert dest.listing() == []


def test_check_output_refuses_an_input_through_links(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    (tmp_path / "soft.json").symlink_to(ckpt)
    os.link(ckpt, tmp_path / "hard.json")
    (tmp_path / "images").mkdir()
    inputs = [("the checkpoint", str(ckpt)), ("the images folder", str(tmp_path / "images"))]
    for name in ("model.pt", "soft.json", "hard.json", "sub/../model.pt"):
        with pytest.raises(OutputError, match=r"is the checkpoint itself \('.*/model.pt'\); give another file name"):
            check_output(tmp_path / name, inputs)
    inside = r"'.*/images/m.json' lies inside the images folder \('.*/images'\); give another file name"
    with pytest.raises(OutputError, match=inside):
        check_output(tmp_path / "images" / "m.json", inputs)
    check_output(tmp_path / "new.json", inputs)
    assert _listing(tmp_path) == ["hard.json", "images", "model.pt", "soft.json"]


def test_check_output_refuses_folders_and_files(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(OutputError, match=r"'.*' is a directory; give a file name"):
        check_output(tmp_path)
    with pytest.raises(OutputError, match=r"'.*/plain.txt/m.json': '.*/plain.txt' is a file, not a folder"):
        check_output(tmp_path / "plain.txt" / "m.json")
    with pytest.raises(OutputError, match=r"'.*/plain.txt' is a file; give a folder"):
        check_output(tmp_path / "plain.txt", folder=True)


def test_a_folder_is_written_by_one_run_at_a_time(tmp_path):
    run = tmp_path / "run"
    child = hold(run)
    try:
        busy = (rf"^{str(run)!r} is being written by another run \(pid {child.pid}\); "
                rf"wait for it to end or give another folder$")
        with pytest.raises(OutputError, match=busy), run_lock(run):
            pass
    finally:
        kill(child)
    with run_lock(run), run_lock(run):  # a killed holder leaves nothing stuck; held again: the same lock
        pass
    assert _listing(run) == [LOCK_NAME]
