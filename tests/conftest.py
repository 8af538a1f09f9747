"""Shared fixtures of the ssd_fast test suite.

``device`` runs a test once per backend: ``"cpu"`` always, ``"cuda"`` (marked ``cuda``) only
where a GPU is present and the kernels were compiled with CUDA, and ``"emu"`` (marked ``emu``),
the CUDA kernels executed on the CPU by the emulated device of csrc/emu/ (tests/emu_device.py),
wherever ssd_fast._C_emu is built; otherwise that case is skipped with the reason. ``gen`` is a
seeded CPU generator: build inputs on the CPU with it, then move them to ``device``, so that
every backend sees the very same numbers.
"""
import pytest
import torch

import ssd_fast
from emu_device import SKIP_REASON as _EMU_SKIP

SEED = 0


def cuda_skip_reason():
    """Why the CUDA cases cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not ssd_fast.has_cuda_kernels():
        return "ssd_fast's kernels were built without CUDA (rebuild with FORCE_CUDA=1)"
    return None


_CUDA_SKIP = cuda_skip_reason()

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(_CUDA_SKIP is not None,
                                                   reason=_CUDA_SKIP or "")]),
    pytest.param("emu", marks=[pytest.mark.emu,
                               pytest.mark.skipif(_EMU_SKIP is not None, reason=_EMU_SKIP or "")]),
]


# Session scope: hypothesis tests may use it (no per-example fixture reset is needed).
@pytest.fixture(params=DEVICES, scope="session")
def device(request):
    return torch.device(request.param)


@pytest.fixture
def gen():
    """A CPU torch.Generator seeded with SEED, fresh for every test."""
    return torch.Generator().manual_seed(SEED)
