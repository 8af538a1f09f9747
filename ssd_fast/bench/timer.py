"""The one timer of the benchmarks.

``ssd-fast bench`` (the op cases and the inference cases alike) times a call with
:func:`median_seconds`, a :class:`torch.utils.benchmark.Timer` reading :data:`clock`. The
pytest-benchmark files of benchmarks/ read the same :data:`clock` (``--benchmark-timer`` in
benchmarks/pytest.ini). The clock waits for the queued CUDA work before it reads the time, so no
timed callable synchronises by itself.
"""
import logging
import statistics
import time
from typing import Callable

import torch


def _timer_class():
    """torch.utils.benchmark.Timer, imported when first timing. Its import brings in
    torch.utils.cpp_extension, which logs a warning on a CUDA build of torch without a CUDA
    runtime (CI's machines): a message about building extensions, nothing to do with timing, and
    a second line under ``ssd-fast bench``'s one-line errors."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


def _cuda_clock() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


#: Seconds, read once the queued CUDA work is done where there is a CUDA device (the default
#: clock of torch.utils.benchmark does the same, asking for an accelerator at every read).
clock: Callable[[], float] = _cuda_clock if torch.cuda.is_available() else time.perf_counter


def median_seconds(fn: Callable, *args, min_seconds: float = 0.3, min_runs: int = 5) -> float:
    """Median seconds of one ``fn(*args)`` call, at the current CPU thread count.

    ``Timer.blocked_autorange`` warms up, sizes a block of calls so that reading the clock is
    negligible against it, then times blocks for ``min_seconds``; calls slower than
    ``min_seconds / min_runs`` are timed again until there are ``min_runs`` blocks. The median is
    over the blocks' seconds per call.
    """
    timer = _timer_class()("fn(*args)", timer=clock, globals={"fn": fn, "args": args},
                  num_threads=torch.get_num_threads())
    times = list(timer.blocked_autorange(min_run_time=min_seconds).times)
    while len(times) < min_runs:
        more = timer.blocked_autorange(min_run_time=(min_runs - len(times)) * statistics.median(times))
        times += more.times
    return statistics.median(times)
