"""box_iou: ssd_fast vs torchvision.ops.box_iou vs the reference, at SSD300 priors x GT
(8732x64), 5000x5000, and batched 32x8732x16; CPU and CUDA."""
import pytest

from conftest import case_params


@pytest.mark.parametrize("case,impl,device", case_params("box_iou"))
def test_box_iou(run_case, case, impl, device):
    run_case(case, impl, device)
