"""The build rebuilds on a change of any file it compiles or includes."""
import ast
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(*args, **env):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**os.environ, **env}).stdout


def _csrc_files():
    """The files under csrc/ that git has or would add: tracked, and untracked but not ignored."""
    if shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("needs a git checkout")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "csrc"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {p for p in out.splitlines() if os.path.exists(os.path.join(ROOT, p))}


def test_makefile_sources_are_the_files_under_csrc():
    sources = set(_make("-s", "sources").split())
    assert sources - {"setup.py", "pyproject.toml"} == _csrc_files()


def test_a_change_to_any_file_under_csrc_rebuilds(tmp_path):
    """With a build stamp newer than every source, nothing is to be done; a change to any file
    under csrc/ (make's -W: as if it had just been modified) reruns the build."""
    venv = tmp_path / "venv"
    venv.mkdir()
    for stamp in (".deps", ".built-cuda-emu1"):
        (venv / stamp).touch()
    target = f"{venv}/.built-cuda-emu1"
    args = ("-n", f"VENV={venv}", "FORCE_CUDA=", "SSD_FAST_EMU=1")
    assert "pip install" not in _make(*args, target)
    stale = [p for p in sorted(_csrc_files()) if "pip install" not in _make(*args, "-W", p, target)]
    assert not stale, f"a change to these does not rebuild: {stale}"


def _local_includes(path, seen):
    for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', open(os.path.join(ROOT, path)).read(), re.M):
        for base in ("csrc", os.path.dirname(path)):
            candidate = os.path.normpath(os.path.join(base, name))
            if os.path.exists(os.path.join(ROOT, candidate)) and candidate not in seen:
                seen.add(candidate)
                _local_includes(candidate, seen)
                break
    return seen


def test_emu_runtime_stamp_covers_its_includes():
    """csrc/emu/build.py compiles csrc/emu/runtime.cpp itself and rebuilds it when one of
    RUNTIME_SOURCES is newer: that list is the file and every project header it includes."""
    tree = ast.parse(open(os.path.join(ROOT, "csrc", "emu", "build.py")).read())
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "RUNTIME_SOURCES" for t in node.targets))
    runtime = "csrc/emu/runtime.cpp"
    assert set(listed) == {runtime} | _local_includes(runtime, set())
