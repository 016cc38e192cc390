"""Wall-clock timing of repeated calls, reported as a distribution (never one number without its spread).

Steps of `time_calls`: call `fn` `warmup` times untimed, then `repeats` times, timing each call alone
with `time.perf_counter_ns`; the garbage collector is paused while timing (as `timeit` does) so a
collection triggered by earlier garbage does not land in one sample. `LatencyStats` summarises the
samples in milliseconds: median (p50), p95, interquartile range and standard deviation.

This is the timing `measure` uses to fill a `Footprint` outside pytest; `tests/benchmarks` times the
same calls with pytest-benchmark. Limits: a shared machine adds noise that only the spread shows;
timings are of the calling thread's wall clock, so they include any worker threads a runtime uses.
"""
from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p95_ms: float
    iqr_ms: float
    std_ms: float
    n: int

    @classmethod
    def from_seconds(cls, samples_s: np.ndarray) -> "LatencyStats":
        ms = np.asarray(samples_s, dtype=np.float64) * 1e3
        q25, q50, q75, q95 = np.percentile(ms, [25, 50, 75, 95])
        return cls(float(q50), float(q95), float(q75 - q25), float(ms.std()), int(ms.size))

    def to_dict(self) -> dict:
        return asdict(self)


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> np.ndarray:
    """Seconds taken by each of `repeats` calls of `fn` (after `warmup` untimed calls)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats, dtype=np.float64)
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            t0 = time.perf_counter_ns()
            fn()
            samples[i] = (time.perf_counter_ns() - t0) * 1e-9
    finally:
        if gc_was_on:
            gc.enable()
    return samples
