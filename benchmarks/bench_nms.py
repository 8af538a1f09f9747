"""The NMS family: ssd_fast vs torchvision (and the reference where it is quick enough).

- nms: 1k, 5k, 8732, 20k, 100k boxes, random (few suppressed) and clustered (most suppressed),
  IoU 0.5 (100k random: CUDA only, torchvision's CPU loop takes seconds there);
- batched_nms: 8732, 50k, 200k boxes around 100 objects, in 80 classes;
- ssd_postprocess vs torchvision's SSD.postprocess_detections (clip, score 0.01, IoU 0.45,
  top 400, 200 detections): 8732 priors, random head outputs, B in {1, 8, 32} x C in {21, 81}
  (on the CPU only 1 and 8 x 21: torchvision takes ~0.3 s per image and 21 classes there).
"""
import pytest
import torch

from conftest import DEVICES
from ssd_fast import bench


def params(op):
    """(case, impl, device) triples of one op, the devices each case runs on."""
    out = []
    for case in bench.all_cases():
        if case.op != op:
            continue
        for impl in bench.IMPLS:
            if impl not in case.impls:
                continue
            for dev in DEVICES:
                if dev.values[0] in case.devices:
                    out.append(pytest.param(case, impl, dev.values[0], marks=dev.marks,
                                            id=f"{case.size}-{impl}-{dev.values[0]}"))
    return out


@pytest.mark.parametrize("case,impl,device", params("nms"))
def test_nms(run_case, case, impl, device):
    run_case(case, impl, device)


@pytest.mark.parametrize("case,impl,device", params("batched_nms"))
def test_batched_nms(run_case, case, impl, device):
    run_case(case, impl, device)


@pytest.mark.parametrize("case,impl,device", params("ssd_postprocess"))
def test_ssd_postprocess(run_case, case, impl, device):
    run_case(case, impl, device)
