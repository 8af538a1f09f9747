"""Training targets: ssd_targets (B=32, the 8732 SSD300 priors, G in {4, 20, 100}) vs the
torchvision per-image path (box_iou + SSDMatcher + BoxCoder.encode) vs the reference, and
hard_negative_mining (32 x 8732) vs torchvision's sort-twice selection vs the reference, and
multibox_loss (8 x 8732 x 21, the targets given) vs the reference composition."""
import pytest

from conftest import case_params


@pytest.mark.parametrize("case,impl,device", case_params("ssd_targets"))
def test_ssd_targets(run_case, case, impl, device):
    run_case(case, impl, device)


@pytest.mark.parametrize("case,impl,device", case_params("hard_negative_mining"))
def test_hard_negative_mining(run_case, case, impl, device):
    run_case(case, impl, device)


@pytest.mark.parametrize("case,impl,device", case_params("multibox_loss"))
def test_multibox_loss(run_case, case, impl, device):
    run_case(case, impl, device)
