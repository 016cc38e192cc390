"""memray helpers: allocation behaviours told apart, peak, sites, one Tracker at a time, temp files cleaned."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from har.errors import HarError
from har.measure.memprofile import ProfilerBusyError, profile

A = np.linspace(0, 1, 4096, dtype=np.float32)
B = np.linspace(1, 2, 4096, dtype=np.float32)


def allocating_step() -> np.ndarray:
    return A * B + 1.0  # two fresh 16 KiB buffers per call


TMP = np.empty_like(A)
OUT = np.empty_like(A)


def preallocated_step() -> np.ndarray:
    np.multiply(A, B, out=TMP)
    np.add(TMP, 1.0, out=OUT)
    return OUT


def test_per_call_allocations_are_told_apart_from_a_preallocated_loop():
    fresh = profile(allocating_step, repeat=50, warmup=5)
    reused = profile(preallocated_step, repeat=50, warmup=5)
    assert fresh.allocations_per_call >= 2.0
    assert fresh.allocated_bytes_per_call >= 2 * A.nbytes
    assert reused.allocations_per_call < 0.1
    assert reused.allocated_bytes_per_call < 100


def test_tracing_python_allocators_adds_interpreter_objects():
    plain = profile(allocating_step, repeat=20, warmup=2)
    traced = profile(allocating_step, repeat=20, warmup=2, trace_python_allocators=True)
    assert traced.trace_python_allocators and not plain.trace_python_allocators
    assert traced.allocations_per_call > plain.allocations_per_call


def test_peak_and_top_site_of_a_known_buffer():
    held = []

    def hold_8mb() -> None:
        held.append(np.empty(1_000_000))  # 8 MB kept alive until the end (np.empty is C: no numpy frame)

    prof = profile(hold_8mb, repeat=3)
    assert prof.peak_bytes >= 3 * 8_000_000
    assert prof.n_calls == 3 and prof.n_allocations >= 3
    top = prof.top_sites[0]
    assert top.location.startswith(__file__) and top.function == "hold_8mb"
    assert top.allocated_bytes >= 3 * 8_000_000
    assert len(prof.top_sites) <= 5
    assert prof.to_dict()["allocations_per_call"] == prof.n_allocations / 3


def test_one_tracker_at_a_time_and_the_lock_is_released():
    def nested() -> None:
        profile(lambda: None)

    with pytest.raises(ProfilerBusyError, match="one Tracker at a time"):
        profile(nested)
    assert issubclass(ProfilerBusyError, HarError)
    assert profile(preallocated_step, repeat=2).n_calls == 2  # usable again


def test_capture_files_are_removed_even_when_the_function_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    profile(allocating_step, repeat=2)

    def boom() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        profile(boom)
    assert list(tmp_path.iterdir()) == []
    assert profile(allocating_step).n_calls == 1


def test_flamegraph_html_is_written(tmp_path):
    out = tmp_path / "fg" / "flame.html"
    prof = profile(allocating_step, repeat=5, flamegraph_path=out)
    assert prof.flamegraph_path == str(out)
    text = Path(out).read_text(errors="replace")
    assert "<html" in text.lower() and len(text) > 10_000


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        profile(allocating_step, repeat=0)


class _AllocatesWhenCollected:
    """Cyclic garbage whose finalizer allocates, like a native handle released by `__del__`."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        np.ones(8192)  # 64 KiB from the system allocator


def test_finalizers_of_earlier_garbage_are_not_charged_to_the_profiled_function():
    import gc
    enabled = gc.isenabled()
    for _ in range(3):
        _AllocatesWhenCollected()  # unreachable cycles, waiting for a collection
    # a collection inside the profiled function would run their finalizers; the profile collects first
    result = profile(gc.collect, repeat=1)
    assert result.n_allocations == 0 and result.allocated_bytes == 0
    assert gc.isenabled() == enabled  # the collector is paused while tracking only


def test_cycles_made_by_the_profiled_function_are_still_counted():
    def make_cycle():
        _AllocatesWhenCollected()
        return np.ones(8192)
    result = profile(make_cycle, repeat=5)
    assert result.allocations_per_call >= 1.0


def test_other_threads_allocations_are_counted_apart():
    import threading
    import time
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            np.ones(4096)  # 32 KiB from the system allocator, again and again
            time.sleep(0.001)
    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    try:
        result = profile(lambda: time.sleep(0.05), repeat=2)
    finally:
        stop.set()
        worker.join()
    assert result.n_allocations == 0 and result.other_thread_allocations > 0
    assert profile(allocating_step, repeat=5).allocations_per_call >= 2.0  # the caller's own still count
