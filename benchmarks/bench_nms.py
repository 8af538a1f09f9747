"""The NMS family: ssd_fast vs torchvision (and the reference where it is quick enough).

- nms: 1k, 5k, 8732, 20k, 100k boxes, random (few suppressed) and clustered (most suppressed),
  IoU 0.5 (100k random: CUDA only, torchvision's CPU loop takes seconds there);
- batched_nms: 8732, 50k, 200k boxes around 100 objects, in 80 classes;
- ssd_postprocess vs torchvision's SSD.postprocess_detections (clip, score 0.01, IoU 0.45,
  top 400, 200 detections): 8732 priors, random head outputs, B in {1, 8, 32} x C in {21, 81}
  (on the CPU only 1 and 8 x 21: torchvision takes ~0.3 s per image and 21 classes there).
"""
import pytest

from conftest import case_params


@pytest.mark.parametrize("case,impl,device", case_params("nms"))
def test_nms(run_case, case, impl, device):
    run_case(case, impl, device)


@pytest.mark.parametrize("case,impl,device", case_params("batched_nms"))
def test_batched_nms(run_case, case, impl, device):
    run_case(case, impl, device)


@pytest.mark.parametrize("case,impl,device", case_params("ssd_postprocess"))
def test_ssd_postprocess(run_case, case, impl, device):
    run_case(case, impl, device)
