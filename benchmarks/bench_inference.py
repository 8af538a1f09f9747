"""End-to-end CPU inference (ssd_fast.bench.inference): SSD.detect in PyTorch eager vs the
same detector exported to ONNX in onnxruntime vs torchvision's ssd300_vgg16 /
ssdlite320_mobilenet_v3_large in eval mode, batch 1 and 8, each total split into network and
tail. Outputs are checked before timing (the ONNX network equals the model's, the ONNX detector
finds SSD.detect's detection counts). Rounds are few: one SSD300 batch of 8 takes seconds."""
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ssd_fast.bench import inference  # noqa: E402

SMOKE = "smoke run (--benchmark-disable): ssdlite320 at batch 1 checks the machinery; tests/test_export.py the parity"


def _smoke(config):
    return config.getoption("benchmark_disable")


@pytest.fixture(scope="module", params=list(inference.PAIRS))
def prepared(request, tmp_path_factory):
    if _smoke(request.config) and request.param != "ssdlite320":
        pytest.skip(SMOKE)
    return inference.Prepared(request.param, str(tmp_path_factory.mktemp("onnx")), torch.get_num_threads())


@pytest.mark.parametrize("call", inference.CALLS)
@pytest.mark.parametrize("batch", [1, 8])
def test_inference(request, prepared, batch, call):
    if _smoke(request.config) and batch != 1:
        pytest.skip(SMOKE)
    benchmark = request.getfixturevalue("benchmark")  # after the skip: an unused one warns
    fn = prepared.calls(batch)[call]
    benchmark.group = f"inference {prepared.name} batch {batch}"
    benchmark.extra_info.update(op="inference", model=prepared.name, torchvision_model=prepared.tv_name,
                                size=prepared.size, batch=batch, impl=call, threads=torch.get_num_threads())
    with torch.no_grad():
        benchmark.pedantic(fn, rounds=5 if batch == 1 else 3, warmup_rounds=1)
