"""Measuring conditions for every number the hybrid run reports: single-threaded, through `har.measure.measure`.

`single_threaded()` sets torch's intra-op threads to 1 and limits every BLAS/OpenMP pool to 1 thread
(threadpoolctl) for the duration, then restores both: the target device is single-core, ONNX Runtime
peers run with one intra-op thread, and OpenBLAS's threaded path mallocs per call (which would show up as
heap allocations of the numpy executors). `measure_variant` measures one fold's artifact on that fold's
test windows: fold 0 with the full `MeasureConfig` (bytes, heap, allocations, latency, accuracy and a memray
flame graph; after one untracked warm-up prediction, see the comment there), other folds with
`MeasureConfig.static_only()` (bytes, MACs, accuracy: no timing).
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from har.measure.footprint import Footprint, MeasureConfig, measure

TIMED_FOLD = 0


@contextlib.contextmanager
def single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def measure_config(quick: bool) -> MeasureConfig:
    return MeasureConfig.quick() if quick else MeasureConfig()


def measure_variant(artifact, x_test: np.ndarray, y_test: np.ndarray, fold: int, quick: bool,
                    flamegraph: Path | None = None, notes: str = "", device=None) -> Footprint:
    if fold == TIMED_FOLD:
        cfg = measure_config(quick)
        if flamegraph is not None:
            cfg = replace(cfg, flamegraph_path=str(flamegraph))
    else:
        cfg = MeasureConfig.static_only()
    with single_threaded():
        if cfg.profile_heap:
            # one untracked call first: process-wide one-off set-up (OpenBLAS's per-thread work buffer, 32 MiB
            # here; torch's lazy init) otherwise lands in the heap peak of whichever variant happens to run
            # first in the process (measured: pca's peak 7.7 KiB or 32 MiB depending on what ran before)
            artifact.predict(np.ascontiguousarray(x_test[:1]))
        return measure(artifact, x_test, y_test, cfg, notes=notes, device=device)
