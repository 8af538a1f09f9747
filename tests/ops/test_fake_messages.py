"""Every bad-input row of the ops' tables raises the same error, type and text, eagerly and under
FakeTensorMode (what torch.compile traces with), and on the emulated CUDA device wherever the row
names no device. The checks have one home, csrc/ops/*_checks.h: the kernels run them, and the
fake kernels reach them through the ops' meta functions (csrc/ops/meta.cpp)."""
import re

import pytest
import test_box_ops
import test_hard_negative_mining
import test_match_priors
import test_multibox_loss
import test_multiclass_nms
import test_nms
import test_ssd_targets
import test_wrapper_inputs
import torch
from emu_device import SKIP_REASON as EMU_SKIP
from torch._subclasses.fake_tensor import FakeTensorMode

from ssd_fast import ops

CPU = torch.device("cpu")
requires_emu = [pytest.mark.emu, pytest.mark.skipif(EMU_SKIP is not None, reason=EMU_SKIP or "")]


def _on(args, device):
    return [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]


def _wrapper_call(op, arg, value):
    def call(device):
        kwargs = test_wrapper_inputs.on(
            test_wrapper_inputs.valid_arguments(op, torch.Generator().manual_seed(0)), device)
        kwargs[arg] = value.to(device) if isinstance(value, torch.Tensor) else value
        return getattr(ops, op)(**kwargs)
    return call


def _made(run, name, make):
    return lambda device: run(name, _on(make(), device))


def _given(run, args):
    return lambda device: run(*_on(args, device))


def _op(table_ops):
    return lambda name, args: table_ops[name](*args)


# A number printed so that it reads back as itself: a threshold just above 1 never shows as 1.
NUMBERS = {
    "nms-iou_threshold-above_1": ("nms", "iou_threshold", 1.0000001, ValueError,
                                  "nms: iou_threshold must be in [0, 1], got 1.0000001"),
    "batched_nms-iou_threshold-next_after_1": (
        "batched_nms", "iou_threshold", 1.0000000000000002, ValueError,
        "batched_nms: iou_threshold must be in [0, 1], got 1.0000000000000002"),
    "multiclass_nms-iou_threshold-above_1": (
        "multiclass_nms", "iou_threshold", 1.0000001, ValueError,
        "multiclass_nms: iou_threshold must be in [0, 1], got 1.0000001"),
    "ssd_postprocess-iou_threshold-below_0": (
        "ssd_postprocess", "iou_threshold", -1.0000001e-7, ValueError,
        "ssd_postprocess: iou_threshold must be in [0, 1], got -1.0000001e-07"),
}


def _rows():
    """id -> (call(device) on that row's bad input, exception type)."""
    for case, (op, arg, value, exc, _) in test_wrapper_inputs.BAD_ARGUMENTS.items():
        yield f"wrapper-{case}", (_wrapper_call(op, arg, value), exc)
    for case, (op, arg, value, exc, _) in NUMBERS.items():
        yield f"number-{case}", (_wrapper_call(op, arg, value), exc)
    for module, run in ((test_box_ops, _op(test_box_ops.OPS)), (test_nms, _op(test_nms.OPS)),
                        (test_multiclass_nms, test_multiclass_nms._call)):
        for case, (name, make, exc, _) in module.BAD_INPUTS.items():
            yield f"{module.__name__}-{case}", (_made(run, name, make), exc)
    for module, run in ((test_match_priors, ops.match_priors), (test_ssd_targets, ops.ssd_targets),
                        (test_hard_negative_mining, ops.hard_negative_mining),
                        (test_multibox_loss, ops.multibox_loss)):
        for case, (args, exc, _) in module.BAD_INPUTS.items():
            yield f"{module.__name__}-{case}", (_given(run, args), exc)
    for case, (args, _) in test_multibox_loss.BAD_BACKWARD_INPUTS.items():
        yield f"multibox_loss_backward-{case}", (
            _given(torch.ops.ssd_fast.multibox_loss_backward, args), RuntimeError)


ROWS = dict(_rows())


def _raised(call, device, exc, fake=False):
    """(type, text) of what call(device) raises, eagerly or on fake tensors."""
    with pytest.raises(exc) as info:
        if fake:
            with FakeTensorMode(allow_non_fake_inputs=True):
                call(device)
        else:
            call(device)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", NUMBERS)
def test_numbers_read_back_as_themselves(case):
    _, _, _, exc, message = NUMBERS[case]
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        ROWS[f"number-{case}"][0](CPU)


@pytest.mark.parametrize("row", ROWS)
def test_fake_tensors_raise_as_eager(row):
    call, exc = ROWS[row]
    assert _raised(call, CPU, exc, fake=True) == _raised(call, CPU, exc)


_DEVICE_NAME = re.compile(r"\b(cpu|cuda|emu|meta)\b")


@pytest.mark.parametrize("row", [pytest.param(r, marks=requires_emu) for r in ROWS])
def test_emu_raises_as_cpu(row):
    call, exc = ROWS[row]
    expected = _raised(call, CPU, exc)
    assert not _DEVICE_NAME.search(expected[1]), expected
    emu = torch.device("emu")
    assert _raised(call, emu, exc) == expected
    assert _raised(call, emu, exc, fake=True) == expected


# Every tensor argument of every op left on the CPU while the others are on "emu": the eager
# message is the kernel's own check, which the fake tensors (real devices, not "meta") must meet.
MIXED = [(op, arg) for op, kinds in test_wrapper_inputs.ARGUMENTS.items()
         for arg, kind in kinds.items() if kind in ("tensor", "optional_tensor")]


@pytest.mark.parametrize("op, arg", [pytest.param(*m, marks=requires_emu) for m in MIXED])
def test_mixed_devices_raise_as_eager_under_fake_tensors(op, arg):
    def call(device):
        kwargs = test_wrapper_inputs.on(
            test_wrapper_inputs.valid_arguments(op, torch.Generator().manual_seed(0)), device)
        kwargs[arg] = kwargs[arg].cpu()
        return getattr(ops, op)(**kwargs)
    emu = torch.device("emu")
    eager = _raised(call, emu, RuntimeError)
    assert "must be on the same device" in eager[1]
    assert _raised(call, emu, RuntimeError, fake=True) == eager
