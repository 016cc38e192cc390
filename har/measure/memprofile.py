"""Heap profiling of a callable with memray: peak bytes, allocation counts, top sites, optional flame graph.

Steps of `profile(fn, repeat=K, warmup=W)`:
1. Take the process-wide profiler lock (memray allows one active `Tracker` per process; a second one,
   ours or pytest-memray's, raises `ProfilerBusyError` with a readable message instead of memray's).
2. Call `fn` W times untracked, so one-off work (lazy initialisation, caches, allocator arenas) is not
   counted as steady state.
3. Collect garbage, then call `fn` K times under a `memray.Tracker` (capture file in a fresh temporary
   directory) with the cyclic garbage collector paused. Why: a collection that happens to start while
   tracking runs the finalizers of objects left by EARLIER work, and their allocations were charged to
   `fn` (measured: unicorn's `release_handle` from the firmware measurement, ~1 allocation in 20 calls of
   the zero-allocation C session, in about one full run out of six). Cycles `fn` itself makes are still
   counted when it allocates them; only their collection is deferred to after tracking.
4. Read the capture: the heap's high watermark during tracking (`metadata.peak_memory`, process-wide), and
   every allocation record of the PROFILING thread (the one whose Python stack runs through `profile`):
   measuring is single-threaded (`hybrid.measuring.single_threaded`), so an artifact's work runs there,
   while other threads of the process — tqdm's monitor, a test runner's timer — allocate on their own
   schedule (measured: one 32-byte allocation in `threading.wait` during a one-call profile in the full
   test suite); their records are counted apart (`other_thread_allocations`). Limit: a runtime that
   allocates in worker threads of its own would be under-counted; ours are run with one thread.
   Records whose allocator is a deallocator (free, pymalloc free, munmap) are not
   counted; `metadata.total_allocations` is NOT used because it counts those too (measured: 200 mallocs
   + 200 frees -> 400). Per-call figures are totals / K. Realloc counts as one allocation of its new size.
5. Group allocations by their innermost Python frame (`file:line`) and keep the top sites by bytes.
6. Optionally render memray's own flame graph (`python -m memray flamegraph --no-web`), written
   atomically; the temporary directory with the capture is always removed.

What memray sees: calls to the system allocator (malloc, calloc, realloc, posix_memalign, mmap...)
from any library, Python or native. With the default `trace_python_allocators=False`, pymalloc's
small-object allocations (Python objects <= 512 bytes) are NOT traced one by one; only the arenas
pymalloc maps are. We keep that default for per-inference counts: it counts the buffer allocations an
embedded runtime would have to serve from a heap (numpy data, torch tensor storage, ORT buffers), not
the CPython interpreter's own bookkeeping (ints, tuples, bound methods), which no C executor has and
which would give every Python-driven artifact a floor of several "allocations" per call (measured: a
no-op function shows 1.04 pymalloc allocations per call when traced, 0 otherwise; `a * b + 1.0` on
4096 floats shows 2.0 per call untraced vs 7.04 traced). Pass `trace_python_allocators=True` to see
them. Also invisible: numpy's internal cache of small data blocks (< 1 KiB) reuses freed blocks without
calling malloc, and memory handed out by a caching allocator (e.g. ORT's arena) after it has grown.
Peak bytes are relative to the start of tracking: memory allocated before (loaded weights) is not in it.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import memray
from memray import AllocatorType, FileReader

from har.errors import HarError
from har.paths import atomic_write_bytes

_DEALLOCATORS = frozenset({int(AllocatorType.FREE), int(AllocatorType.PYMALLOC_FREE), int(AllocatorType.MUNMAP)})
_LOCK = threading.Lock()


class ProfilerBusyError(HarError, RuntimeError):
    """A memray Tracker is already active in this process (memray allows only one at a time)."""


@dataclass(frozen=True)
class AllocationSite:
    location: str  # "file:line" of the innermost Python frame, or "<native>" when there is none
    function: str
    n_allocations: int
    allocated_bytes: int


@dataclass(frozen=True)
class MemoryProfile:
    peak_bytes: int  # heap high watermark while tracking, relative to its start
    n_allocations: int  # allocation records (frees excluded) over all tracked calls
    allocated_bytes: int
    n_calls: int
    top_sites: tuple[AllocationSite, ...]
    trace_python_allocators: bool
    flamegraph_path: str | None = None
    other_thread_allocations: int = 0  # by other threads of the process while tracking: not counted above

    @property
    def allocations_per_call(self) -> float:
        return self.n_allocations / self.n_calls

    @property
    def allocated_bytes_per_call(self) -> float:
        return self.allocated_bytes / self.n_calls

    def to_dict(self) -> dict:
        d = asdict(self)
        d["allocations_per_call"] = self.allocations_per_call
        d["allocated_bytes_per_call"] = self.allocated_bytes_per_call
        return d


def _own_thread(rec) -> bool:
    """Whether a record's thread is the profiling one: its Python stack runs through `profile` here."""
    return any(fn == "profile" and file == __file__ for fn, file, _ in rec.stack_trace())


def _summarise(capture: Path, n_calls: int, top_n: int, trace_py: bool) -> MemoryProfile:
    per_stack: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    first_record: dict[tuple[int, int], Any] = {}
    first_of_thread: dict[int, Any] = {}
    with FileReader(capture) as reader:
        peak = int(reader.metadata.peak_memory)
        for rec in reader.get_allocation_records():
            if rec.allocator in _DEALLOCATORS:
                continue
            key = (rec.tid, rec.stack_id)
            per_stack[key][0] += 1
            per_stack[key][1] += rec.size
            first_record.setdefault(key, rec)
            first_of_thread.setdefault(rec.tid, rec)
        own = {tid for tid, rec in first_of_thread.items() if _own_thread(rec)}
        others = sum(count for (tid, _), (count, _) in per_stack.items() if tid not in own)
        n_alloc = sum(count for (tid, _), (count, _) in per_stack.items() if tid in own)
        n_bytes = sum(size for (tid, _), (_, size) in per_stack.items() if tid in own)
        # resolving a stack is slow, so do it once per distinct stack, then merge stacks by innermost frame
        per_site: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for key, (count, size) in per_stack.items():
            if key[0] not in own:
                continue
            frames = first_record[key].stack_trace(max_stacks=1)
            site = (f"{frames[0][1]}:{frames[0][2]}", frames[0][0]) if frames else ("<native>", "<native>")
            per_site[site][0] += count
            per_site[site][1] += size
    top = sorted(per_site.items(), key=lambda kv: (-kv[1][1], kv[0]))[:top_n]
    sites = tuple(AllocationSite(loc, fn, c, b) for (loc, fn), (c, b) in top)
    return MemoryProfile(peak, n_alloc, n_bytes, n_calls, sites, trace_py, other_thread_allocations=others)


def _flamegraph(capture: Path, out: Path) -> None:
    html = capture.with_suffix(".html")
    done = subprocess.run([sys.executable, "-m", "memray", "flamegraph", "--no-web", "-f", "-o", str(html),
                           str(capture)], capture_output=True, text=True)
    if done.returncode != 0 or not html.is_file():
        raise RuntimeError(f"memray flamegraph failed: {(done.stderr or done.stdout).strip()[-300:]}")
    atomic_write_bytes(out, html.read_bytes())


def profile(fn: Callable[[], Any], *, repeat: int = 1, warmup: int = 0, trace_python_allocators: bool = False,
            flamegraph_path: str | os.PathLike | None = None, top_n: int = 5) -> MemoryProfile:
    """Profile `repeat` calls of `fn` (after `warmup` untracked calls) with memray; see the module docstring."""
    if repeat < 1 or warmup < 0:
        raise ValueError(f"need repeat >= 1 and warmup >= 0 (got {repeat}, {warmup})")
    if not _LOCK.acquire(blocking=False):
        raise ProfilerBusyError("a memray profile is already running in this process (memray allows one "
                                "Tracker at a time)")
    try:
        for _ in range(warmup):
            fn()
        with tempfile.TemporaryDirectory(prefix="har-memray-") as tmp:
            capture = Path(tmp) / "capture.bin"
            gc.collect()
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                try:
                    tracker = memray.Tracker(capture, trace_python_allocators=trace_python_allocators)
                    tracker.__enter__()
                except RuntimeError as exc:
                    raise ProfilerBusyError(f"cannot start memray: {exc} (is pytest --memray or another "
                                            "Tracker active?)") from None
                try:
                    for _ in range(repeat):
                        fn()
                finally:
                    tracker.__exit__(None, None, None)
            finally:
                if gc_was_enabled:
                    gc.enable()
            result = _summarise(capture, repeat, top_n, trace_python_allocators)
            if flamegraph_path is not None:
                _flamegraph(capture, Path(flamegraph_path))
                result = replace(result, flamegraph_path=str(flamegraph_path))
        return result
    finally:
        _LOCK.release()
