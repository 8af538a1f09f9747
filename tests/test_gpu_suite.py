"""scripts/gpu_suite.sh, as far as a machine without a GPU can check it: its arguments, the
files each step writes when the GPU part is skipped, and the sanitizer step's subset
(scripts/gpu_sanitizer_cases.py), which must launch every CUDA kernel: run on the emulated
device, which counts the launches of each kernel."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emu_device import SKIP_REASON, emu

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "scripts" / "gpu_suite.sh"


def suite(*args):
    """The script as a GPU machine's call runs it: its own defaults (CI exports MAX_JOBS and
    TORCH_CUDA_ARCH_LIST for its build)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAX_JOBS", "TORCH_CUDA_ARCH_LIST", "FORCE_CUDA")}
    return subprocess.run(["bash", str(SUITE), *args], capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHON": sys.executable})


@pytest.mark.parametrize("args", [(), ("1",), ("3", "out"), ("one", "out"), ("1", "out", "x")])
def test_bad_arguments(tmp_path, args):
    r = suite(*[str(tmp_path / a) if a == "out" else a for a in args])
    assert r.returncode == 2
    assert "usage: scripts/gpu_suite.sh 1|2 OUT_DIR" in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the steps run for real")
@pytest.mark.parametrize("step, files", [("1", ["build.log", "tests.log", "tests.xml"]),
                                         ("2", ["sanitizer.log", "bench.log", "bench.json", "bench.md"])])
def test_without_a_gpu_each_step_writes_its_files(tmp_path, step, files):
    out = tmp_path / "out"
    r = suite(step, str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(files + ["summary.txt"])
    summary = (out / "summary.txt").read_text()
    assert re.match(rf"step {step}: \d{{4}}-\d\d-\d\d \d\d:\d\d UTC, TORCH_CUDA_ARCH_LIST=9.0 "
                    r"MAX_JOBS=16\n", summary), summary
    assert f"step {step} skipped: no CUDA device" in summary
    for f in files:
        assert "no CUDA device" in (out / f).read_text()


@pytest.mark.emu
@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_sanitizer_cases_launch_every_kernel():
    """Every kernel of csrc/ops/cuda/ (as its __launch_bounds__ name it) is launched by the cases
    compute-sanitizer runs in step 2, and their results equal the CPU's."""
    kernels = set()
    for cu in (ROOT / "csrc" / "ops" / "cuda").glob("*.cu"):
        kernels |= {m.group(1) for m in re.finditer(r"__launch_bounds__\s*\([^()]+\)\s*(\w+)\s*\(",
                                                     cu.read_text())}
    assert len(kernels) >= 20
    before = emu.kernels()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_sanitizer_cases
        gpu_sanitizer_cases.run("emu")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    after = emu.kernels()
    missed = sorted(k for k in kernels if after.get(k, 0) == before.get(k, 0))
    assert not missed, f"not launched by scripts/gpu_sanitizer_cases.py: {missed}"


def _device_calls():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import device_calls
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return device_calls


def test_device_calls_finds_every_cuda_only_call():
    """The CUDA branches of device.cuh as scripts/device_calls.py reads them: each call with the
    dev:: function that holds it (a parse that lost one would list it under no test)."""
    calls = _device_calls().device_calls()
    assert calls == {
        "cub::DeviceRadixSort::SortPairs": {"radix_sort_pairs"},
        "cub::DeviceSelect::Flagged": {"select_flagged"},
        "cudaMemsetAsync": {"memset_async"},
        "cudaFuncSetAttribute": {"set_max_dynamic_smem", "allow_dynamic_smem"},
        "cudaDeviceGetAttribute": {"max_dynamic_smem"},
        "kernel<<<...>>>": {"launch"},
        "C10_CUDA_KERNEL_LAUNCH_CHECK": {"launch"},
        "at::cuda::getCurrentCUDAStream": {"current_stream"},
        "c10::cuda::CUDAGuard": {"DeviceGuard"},
    }, calls
    text = SUITE.read_text()
    assert "scripts/device_calls.py cuda >>\"$OUT/summary.txt\"" in text


@pytest.mark.emu
@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_every_device_call_is_reached_by_a_sanitizer_case():
    """Each CUDA-only call of device.cuh is reached by a case of scripts/gpu_sanitizer_cases.py
    (what step 2 lists in its summary); cub's select by batched_nms only, the attribute by the
    matching ops."""
    rows = {call: (users, cases) for call, _, users, cases in _device_calls().table("emu")}
    missed = sorted(call for call, (_, cases) in rows.items() if not cases)
    assert not missed, f"reached by no sanitizer case: {missed}"
    assert rows["cub::DeviceSelect::Flagged"][1] == ["batched_nms"]
    assert rows["cudaMemsetAsync"][1] == ["batched_nms", "nms"]
    assert set(rows["cudaFuncSetAttribute"][1]) == {
        "match_priors argmax", "match_priors bipartite", "ssd_targets 1600 GTs",
        "ssd_targets argmax", "ssd_targets bipartite"}


def test_a_call_no_case_reaches_is_listed_as_none(monkeypatch):
    """Without the batched_nms case, cub's select is reached by nothing: the table says so and
    the script's exit status is 1."""
    dc = _device_calls()
    cases = {"nms": {"score_keys_kernel", "chunk_mask_kernel", "gather_kept_kernel"},
             "box_iou": {"box_iou_kernel"}}
    monkeypatch.setattr(dc, "kernels_per_case", lambda device: cases)
    rows = {call: cases for call, _, _, cases in dc.table("emu")}
    assert rows["cub::DeviceSelect::Flagged"] == []
    assert rows["cub::DeviceRadixSort::SortPairs"] == ["nms"]
    monkeypatch.setattr(sys, "argv", ["device_calls.py", "emu"])
    assert dc.main() == 1
