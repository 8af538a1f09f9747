"""encode_boxes / decode_boxes: ssd_fast vs the reference on 32 images x 8732 priors."""
import pytest

from conftest import case_params


@pytest.mark.parametrize("case,impl,device", case_params("encode_boxes") + case_params("decode_boxes"))
def test_box_coder(run_case, case, impl, device):
    run_case(case, impl, device)
