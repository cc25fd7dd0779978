"""Shared pieces of the benchmarks: every figure is a ratio against a baseline of the same run."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

__all__ = ["Figure", "peak_rss_mib", "timeit"]


@dataclass
class Figure:
    """One benchmark figure: a measured value, the baseline it is compared with, and their ratio.

    ``ratio`` is ``value / baseline`` unless the benchmark says otherwise in ``note``; ``goal`` is
    the target stated in the issue (for example ``">= 0.95"``), empty when there is none.
    """

    stage: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    ratio: float | None = None
    goal: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline

    def as_dict(self) -> dict:
        return asdict(self)


def timeit(fn: Callable[[], object], *, repeat: int = 3, min_time: float = 0.0) -> float:
    """Best wall time in seconds of ``repeat`` calls of ``fn`` (each at least ``min_time``)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = 0
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        best = min(best, dt / n)
    return best


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_threads() -> int:
    """Number of threads benchmarks use: ``HUBCAT_BENCH_THREADS`` or all cores."""
    return int(os.environ.get("HUBCAT_BENCH_THREADS", os.cpu_count() or 1))
