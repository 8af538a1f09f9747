"""pytest-benchmark setup: CPU threads (SSD_FAST_BENCH_THREADS, default 2, as the acceptance
numbers are stated), devices, and a helper that times one implementation of a case."""
import os

import pytest
import torch

from ssd_fast import bench

torch.set_num_threads(int(os.environ.get("SSD_FAST_BENCH_THREADS", "2")))

DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                         reason="no CUDA device"))]


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device")


def case_params(op):
    """(case, impl) pairs of one op, for parametrize."""
    return [pytest.param(c, impl, id=f"{c.size}-{impl}")
            for c in bench.all_cases() if c.op == op for impl in bench.IMPLS if impl in c.impls]


@pytest.fixture
def run_case(benchmark):
    def run(case, impl, device):
        inputs = case.make(device)
        bench.check_case(case, inputs)  # outputs agree before anything is timed
        fn = case.impls[impl]
        benchmark.group = f"{case.name} {device}"
        benchmark.extra_info.update(op=case.op, size=case.size, device=device, impl=impl,
                                    threads=torch.get_num_threads())

        def call():
            out = fn(*inputs)
            bench.synchronize(device)
            return out

        call()
        benchmark(call)
    return run
