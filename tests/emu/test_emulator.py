"""The emulated CUDA device's checks, each on a kernel of csrc/emu/broken_kernels.cu that breaks
the rule on purpose: the check must fire and name the kernel; with that check switched off the
same kernel must go through (so these tests fail if the check stops working). Also: the device
itself (allocation poison, host-synchronisation counters, launch counters)."""
import contextlib
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from emu_device import SKIP_REASON, counters, emu, host_syncs

pytestmark = [pytest.mark.emu, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]

TRACKED = emu is not None and emu.BUILD == "tracked"
tracked_only = pytest.mark.skipif(not TRACKED, reason="the race, schedule and redzone checks live "
                                  "in the tracked build (the ASan build has AddressSanitizer)")


def broken(name):
    return torch.ops.ssd_emu_test.broken(torch.empty(0, device="emu"), name)


@contextlib.contextmanager
def check_off(name):
    before = emu.checks()
    emu.set_checks(before & ~emu.CHECKS[name])
    try:
        yield
    finally:
        emu.set_checks(before)


# (case, check, message): the emulator's message for each broken kernel, kernel named.
CASES = [
    ("above_bounds", "launch", r"CUDA error: too many resources requested for launch \(emulated "
     r"launch of bounded_kernel: block \(128,1,1\) has 128 threads, more than its "
     r"__launch_bounds__\(64\)\)"),
    ("block_1025", "launch", r"CUDA error: invalid configuration argument \(emulated launch of "
     r"bounded_kernel: block \(1025,1,1\): at most 1024 threads"),
    ("block_z_65", "launch", r"invalid configuration argument .*block \(1,1,65\)"),
    ("grid_y_65536", "launch", r"invalid configuration argument .*bounded_kernel: grid \(1,65536,1\)"),
    ("grid_zero", "launch", r"invalid configuration argument .*bounded_kernel: grid \(0,1,1\).* has a "
     r"zero dimension"),
    ("dynamic_without_attribute", "launch", r"CUDA error: invalid argument \(emulated launch of "
     r"big_dynamic_kernel: 65536 bytes of dynamic shared memory, more than the 49152 allowed \(raise "
     r"the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize first\)\)"),
    ("big_static", "launch", r"kernel big_static_kernel: its static shared memory exceeds 48 KiB "
     r"\(buf: 50176 bytes, 50176 in all\)"),
    ("static_plus_dynamic", "launch", r"kernel static_plus_dynamic_kernel: its static \(16384 bytes\) "
     r"and dynamic \(40960 bytes\) shared memory exceed the block's 49152 \(48 KiB: raise the "
     r"kernel's cudaFuncAttributeMaxDynamicSharedMemorySize\)"),
    ("barrier_exit", "barrier", r"kernel barrier_exit_kernel: barrier divergence: thread \(0,0,0\) of "
     r"block \(0,0,0\) waits at __syncthreads \(broken_kernels.cu:\d+\) but thread \(\d+,0,0\) of "
     r"block \(0,0,0\) has exited \(32 of 64 threads have\)"),
    ("barrier_sites", "barrier", r"kernel barrier_sites_kernel: barrier divergence: .* waits at "
     r"__syncthreads \(broken_kernels.cu:(\d+)\) but .* waits at __syncthreads "
     r"\(broken_kernels.cu:(?!\1)\d+\)"),
    ("partial_warp", "warp", r"kernel partial_warp_kernel: thread \(32,0,0\) of block \(0,0,0\) calls "
     r"__shfl_down_sync \(broken_kernels.cu:\d+\) with mask 0xffffffff in a partial warp of 16 "
     r"threads: lanes 16-31 do not exist"),
    ("warp_exit", "warp", r"kernel warp_exit_kernel: (warp divergence: )?thread \(\d+,0,0\) of block "
     r"\(0,0,0\) (waits at|calls) __shfl_down_sync .*mask 0xffffffff.* but lane \d+ (of its warp )?has "
     r"exited"),
    ("race", "race", r"kernel race_kernel: shared-memory race \((read after write|write after read)\): "
     r"thread \(\d+,0,0\) of block \(0,0,0\) (reads|writes) __shared__ slot, byte \d+, which thread "
     r"\(\d+,0,0\) of block \(0,0,0\) (wrote|read) since the last barrier"),
    ("atomic_race", "race", r"kernel atomic_race_kernel: shared-memory race \(.*\): .*__shared__ "
     r"count, byte 0"),
    ("atomic_after_plain", "race", r"kernel atomic_after_plain_kernel: shared-memory race \(atomic "
     r"after a plain access\): thread \(\d+,0,0\) of block \(0,0,0\) atomically updates __shared__ "
     r"count, byte 0, which thread \(0,0,0\) of block \(0,0,0\) wrote since the last barrier"),
    ("last_block_wins", "global_race", r"kernel last_block_wins_kernel: global-memory race \(write "
     r"after write\): thread \(0,0,0\) of block \(1,0,0\) writes 0x[0-9a-f]+ \(byte 0 of a 8192-byte "
     r"device allocation\), which thread \(0,0,0\) of block \(0,0,0\) wrote in the same launch "
     r"\(blocks are not ordered\)"),
    # plain read-modify-writes of one global word whose result does not depend on the order (OR):
    # the two schedules agree, the writers' log does not
    ("global_or_lanes", "global_race", r"kernel global_or_kernel: global-memory race \(write after "
     r"write\): thread \(1,0,0\) of block \(0,0,0\) writes 0x[0-9a-f]+ \(byte 0 of a 8192-byte device "
     r"allocation\), which thread \(0,0,0\) of block \(0,0,0\) wrote in the same launch with no "
     r"barrier between them"),
    ("global_or_warps", "global_race", r"kernel global_or_kernel: global-memory race \(write after "
     r"write\): thread \(32,0,0\) of block \(0,0,0\) writes .* which thread \(0,0,0\) of block "
     r"\(0,0,0\) wrote in the same launch with no barrier between them"),
    ("global_or_blocks", "global_race", r"kernel global_or_kernel: global-memory race \(write after "
     r"write\): thread \(0,0,0\) of block \(1,0,0\) writes .* which thread \(0,0,0\) of block "
     r"\(0,0,0\) wrote in the same launch \(blocks are not ordered\)"),
    ("global_atomic_after_plain", "global_race", r"kernel global_atomic_after_plain_kernel: "
     r"global-memory race \(an atomic and a plain write\): thread \(\d+,0,0\) of block \(1,0,0\) "
     r"atomically updates .*, which thread \(0,0,0\) of block \(0,0,0\) wrote in the same launch "
     r"\(blocks are not ordered\)"),
    ("global_overrun", "global_bounds", r"kernel global_overrun_kernel: out-of-bounds global-memory "
     r"access: thread \(64,0,0\) of block \(0,0,0\) writes 4 bytes at 0x[0-9a-f]+ \(outside every "
     r"device allocation: 0 bytes past the end of a 256-byte device allocation"),
    ("global_underrun", "global_bounds", r"kernel global_underrun_kernel: out-of-bounds global-memory "
     r"access: thread \(0,0,0\) of block \(0,0,0\) reads 4 bytes at 0x[0-9a-f]+ \(outside every "
     r"device allocation: .*4 bytes before a 256-byte device allocation\)"),
    ("uninitialised", "poison", r"kernel uninitialised_kernel: its two schedules .* wrote different "
     r"bytes .*\(a race, or a read of uninitialised shared memory\)"),
    ("shared_overrun", "bounds", r"kernel shared_overrun_kernel: out-of-bounds shared-memory access: "
     r"thread \(63,0,0\) of block \(0,0,0\) writes 1 byte at byte 63 of the 63 bytes of dynamic "
     r"shared memory"),
    ("shared_underrun", "bounds", r"kernel shared_underrun_kernel: out-of-bounds shared-memory access: "
     r"thread \(0,0,0\) of block \(0,0,0\) writes 4 bytes before the block's shared memory"),
]
TRACKED_CHECKS = {"race", "schedules", "poison", "bounds", "global_race", "global_bounds"}


@pytest.mark.parametrize("case, check, message", CASES, ids=[c[0] for c in CASES])
def test_check_fires_and_names_the_kernel(case, check, message):
    if check in TRACKED_CHECKS and not TRACKED:
        pytest.skip("the tracked build's check (the ASan build has AddressSanitizer)")
    with pytest.raises(RuntimeError) as info:
        broken(case)
    assert re.search(message, str(info.value)), str(info.value)


# Switched off, the check lets its broken kernel through (with the other checks that would also
# see the fault: a race changes what the two schedules write). The launch limits that would break
# the emulator itself, and the shared-memory size limits, are not switched off.
OFF = [("above_bounds", ("launch",)), ("barrier_exit", ("barrier",)),
       ("barrier_sites", ("barrier",)), ("partial_warp", ("warp",)), ("warp_exit", ("warp",)),
       ("race", ("race", "schedules")), ("atomic_race", ("race", "schedules")),
       ("atomic_after_plain", ("race", "schedules")),
       ("last_block_wins", ("schedules", "global_race")),
       ("shared_overrun", ("bounds",)), ("shared_underrun", ("bounds",)),
       ("global_or_lanes", ("global_race",)), ("global_or_warps", ("global_race",)),
       ("global_or_blocks", ("global_race",)),
       ("global_atomic_after_plain", ("global_race", "schedules")),
       ("global_overrun", ("global_bounds",)), ("global_underrun", ("global_bounds",))]


@pytest.mark.parametrize("case, checks", OFF, ids=[c[0] for c in OFF])
def test_without_the_check_the_fault_goes_through(case, checks):
    if TRACKED_CHECKS.intersection(checks) and not TRACKED:
        pytest.skip("the tracked build's check")
    with contextlib.ExitStack() as stack:
        for check in checks:
            stack.enter_context(check_off(check))
        broken(case)


@tracked_only
def test_the_schedules_see_a_race_whose_outcome_depends_on_the_order():
    """Without the writers' log, the last block's write wins under one schedule and the first
    block's under the other."""
    with check_off("global_race"):
        with pytest.raises(RuntimeError, match=r"kernel last_block_wins_kernel: its two schedules "
                           r"\(threads and blocks in ascending, then in reversed order\) wrote "
                           r"different bytes at 0x[0-9a-f]+ \(byte 0 of a 8192-byte device "
                           r"allocation\): 0x7 then 0x0"):
            broken("last_block_wins")


@tracked_only
def test_global_writes_that_are_ordered_or_atomic_are_no_race():
    """Atomics from every thread of two blocks, and two threads of one block separated by a
    __syncthreads, write the same word without a race; the results are the GPU's."""
    assert broken("global_atomic_or").cpu()[0].item() == 2 ** 31 - 1  # bits 0-30 from 65 values
    assert broken("global_barrier_ordered").cpu()[:2].tolist() == [2, 0]


@tracked_only
def test_without_the_checks_a_global_fault_changes_the_output():
    """What the global checks stop would otherwise land: the OR of the two blocks is complete on
    the emulator (fibers never interleave a read-modify-write), the overrun writes past the
    output, the underrun copies whatever precedes the input."""
    with check_off("global_race"):
        assert broken("global_or_blocks").cpu()[0].item() == 0b101
    with check_off("global_bounds"):
        assert broken("global_overrun").cpu().tolist() == [1] * 64
        assert broken("global_underrun").cpu()[1:].tolist() == list(range(1, 64))


@tracked_only
def test_uninitialised_shared_memory_is_poisoned():
    """The first schedule fills shared memory with 0xFF bytes (a NaN float), the second with
    0x7FF7A5A5 (a NaN too): the uninitialised sum reads NaN either way, and the two NaNs differ.
    Without poison (zero-filled, as code that wrongly relies on it expects) it goes through."""
    with check_off("schedules"):
        out = broken("uninitialised").cpu()
    assert out.view(torch.int32).item() == -1 and torch.isnan(out).all()
    with check_off("poison"):
        assert broken("uninitialised").cpu().tolist() == [1.0]


def test_dynamic_shared_memory_attribute():
    """Above 48 KiB only after cudaFuncSetAttribute raised the kernel's limit, never above
    227 KiB (H100/H200)."""
    assert broken("dynamic_with_attribute").cpu()[:32].tolist() == [1] * 32
    with pytest.raises(RuntimeError, match=r"CUDA error: invalid argument \(emulated "
                       r"cudaFuncSetAttribute\(big_dynamic_kernel, "
                       r"cudaFuncAttributeMaxDynamicSharedMemorySize, 233472\): 227 KiB at most"):
        broken("dynamic_above_optin")


def test_device_memory_is_poisoned():
    """New device memory holds 0xFF bytes (NaN floats, -1 integers), never zeros."""
    x = torch.empty(5, device="emu")
    assert torch.isnan(x.cpu()).all()
    assert torch.empty(3, dtype=torch.int64, device="emu").cpu().tolist() == [-1, -1, -1]


def test_host_synchronisations_are_counted():
    x = torch.arange(4.0, device="emu")
    before = host_syncs()
    y = (x * 2).sum()  # device-side work: no synchronisation
    assert host_syncs() == before
    assert y.item() == 12.0
    assert host_syncs() == before + 1
    x.cpu()
    assert host_syncs() == before + 2


def test_torch_ops_on_the_device_keep_their_aliasing():
    """torch's ops on "emu" run its CPU kernels on the same memory: views of any dtype write
    through, and overlapping arguments are seen as such (the CPU's error, not garbage)."""
    x = torch.arange(6.0, device="emu")
    x.view(torch.int32)[0] = 0x3F800000  # the bits of 1.0f
    assert x.cpu().tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    x[::2].mul_(10)
    assert x.cpu().tolist() == [10.0, 1.0, 20.0, 3.0, 40.0, 5.0]
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        x[1:].add_(x[:-1])
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        torch.add(x[1:], 1, out=x[:-1])
    # out= arguments resized by the op, with and without more memory
    empty = torch.zeros(0, 4, device="emu")
    out = torch.empty(0, device="emu")
    torch.abs(empty, out=out)
    assert out.shape == (0, 4) and torch.allclose(empty, empty.clone())
    torch.add(x, 1, out=out)
    assert out.cpu().tolist() == [11.0, 2.0, 21.0, 4.0, 41.0, 6.0]


def test_ops_that_read_the_device_count_as_host_synchronisations():
    """nonzero, boolean indexing and their kind read the device on a GPU."""
    x = torch.tensor([0.0, 1.0, 0.0, 2.0], device="emu")
    before = host_syncs()
    x + 1
    x[torch.tensor([0, 2], device="emu")]  # integer indices: no synchronisation
    assert host_syncs() == before
    torch.nonzero(x)
    assert host_syncs() == before + 1
    x[x > 0]
    assert host_syncs() == before + 2


def test_every_launch_runs_two_schedules():
    c = counters()
    torch.ops.ssd_fast.box_iou(torch.rand(5, 4).to("emu"), torch.rand(7, 4).to("emu"))
    d = counters()
    assert d["launches"] == c["launches"] + 1
    assert d["schedule_runs"] == c["schedule_runs"] + (2 if TRACKED else 1)


@pytest.mark.skipif(emu is None or emu.BUILD != "asan", reason="the ASan build's bounds check")
def test_asan_catches_a_shared_memory_overrun():
    """In the ASan build every block's dynamic shared memory is a heap block of exactly its size:
    the overrun is AddressSanitizer's report (which ends the process, hence the subprocess)."""
    code = ("import torch, emu_device; "
            "torch.ops.ssd_emu_test.broken(torch.empty(0, device='emu'), 'shared_overrun')")
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": tests})
    assert r.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in r.stderr, r.stderr[-2000:]
    assert "shared_overrun_kernel" in r.stderr


def test_fiber_switch_cost():
    """Fibers, not threads, run a block's threads (csrc/emu/runtime.cpp says why, with the
    measurements). Not a timing assertion: it checks that the counters see the switches and
    prints their cost on this machine (pytest -s)."""
    loss = torch.rand(2, 3000)
    labels = (torch.rand(2, 3000) < 0.02).long()
    c = counters()
    t = time.perf_counter()
    torch.ops.ssd_fast.hard_negative_mining(loss.to("emu"), labels.to("emu"), 3.0, None, 0.5)
    elapsed = time.perf_counter() - t
    switches = counters()["fiber_switches"] - c["fiber_switches"]
    assert switches > 2 * 512
    print(f"{switches} fiber switches in {elapsed:.3f} s")
