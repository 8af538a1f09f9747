"""pytest-benchmark setup: CPU threads (SSD_FAST_BENCH_THREADS, default 2, as the acceptance
numbers are stated), devices, the parameters of ssd_fast.bench's op cases, and a helper that
times one implementation of a case. pytest-benchmark reads ssd_fast.bench.timer.clock, which
synchronises CUDA (pytest.ini)."""
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
    """(case, impl, device) triples of one op's cases in ssd_fast.bench, for parametrize: each
    implementation a case has, on each device the case runs on."""
    return [pytest.param(c, impl, dev.values[0], marks=dev.marks, id=f"{c.size}-{impl}-{dev.values[0]}")
            for c in bench.all_cases() if c.op == op for impl in bench.IMPLS if impl in c.impls
            for dev in DEVICES if dev.values[0] in c.devices]


@pytest.fixture
def run_case(benchmark):
    def run(case, impl, device):
        inputs = case.make(device)
        bench.check_case(case, inputs)  # outputs agree before anything is timed
        fn = case.impls[impl]
        benchmark.group = f"{case.name} {device}"
        benchmark.extra_info.update(op=case.op, size=case.size, device=device, impl=impl,
                                    threads=torch.get_num_threads())

        fn(*inputs)  # warm-up
        benchmark(fn, *inputs)
    return run
