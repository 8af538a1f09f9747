"""The emulated CUDA device of the tests: torch device "emu".

ssd_fast._C_emu (built with SSD_FAST_EMU=1, as `make test` and CI do) compiles the CUDA sources
of csrc/ops/cuda/ with the host compiler against the emulator of csrc/emu/, and registers their
kernels for torch's PrivateUse1 backend, renamed "emu" here. Tensors on "emu" live in host
memory; ssd_fast's ops run the CUDA kernels on them, every other op runs torch's CPU kernel.
SSD_FAST_EMU=asan selects ssd_fast._C_emu_asan, the AddressSanitizer build (python must then
run with libasan preloaded: see the Makefile's test-emu-asan).
"""
import importlib
import os
import types

import torch

import ssd_fast

MODULE = "ssd_fast._C_emu_asan" if os.environ.get("SSD_FAST_EMU") == "asan" else "ssd_fast._C_emu"


def _device_module():
    m = types.ModuleType("torch.emu")
    m.is_available = lambda: True
    m.device_count = lambda: 1
    m.current_device = lambda: 0
    m._is_in_bad_fork = lambda: False
    # random ops on emu draw from the CPU generator (the device's fallback runs them on the CPU)
    m.manual_seed_all = lambda seed: None
    m.get_rng_state = lambda device=None: torch.get_rng_state()
    m.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    m.synchronize = lambda device=None: None
    return m


def _load():
    try:
        module = importlib.import_module(MODULE)
    except ImportError as e:
        return None, (f"{MODULE} is not built ({e}); build it with "
                      f"SSD_FAST_EMU=1 pip install --no-build-isolation -e .")
    torch.utils.rename_privateuse1_backend("emu")
    torch._register_device_module("emu", _device_module())
    torch.utils.generate_methods_for_privateuse1_backend(for_storage=True)
    return module, None


emu, SKIP_REASON = _load()


def counters():
    """What the emulated device did so far (ssd_fast._C_emu.counters())."""
    return emu.counters()


def host_syncs():
    """What so far would have synchronised a GPU with the host: device-to-host copies, .item()
    and the ops whose output size or value the host reads (nonzero, boolean indexing...)."""
    c = emu.counters()
    return c["device_to_host_copies"] + c["item_calls"] + c["syncing_ops"]


def opcheck(op, args, kwargs=None, skip=()):
    """torch.library.opcheck without the tests named in `skip`, and on "emu" without its
    autograd-registration test (that test knows only CPU, CUDA and XPU; it checks the
    registration, the same for every device, and runs on the other backends)."""
    from torch.testing._internal.optests.generate_tests import ALL_TEST_UTILS

    skip = set(skip)
    tensors = [a for a in list(args) + list((kwargs or {}).values()) if isinstance(a, torch.Tensor)]
    if any(t.device.type == "emu" for t in tensors):
        skip.add("test_autograd_registration")
    return torch.library.opcheck(op, args, kwargs,
                                 test_utils=tuple(u for u in ALL_TEST_UTILS if u not in skip))
