"""`Footprint` and `measure`: the one code path every reported size, heap, speed and accuracy figure takes.

`measure(artifact, x, y, config)` works on anything implementing `InferenceArtifact`. Steps:
1. Storage: `weight_bytes` = sum of `nbytes` of `artifact.weight_arrays()` (every array a device stores:
   weights, biases, BN statistics, input-normaliser statistics, int8 scales and zero points, shape
   constants); `param_count` = total number of elements of those same arrays (so it includes buffers
   and quantisation parameters, not only trainable parameters, and matches what `weight_bytes` counts).
2. Compute: `macs` = `artifact.macs_per_window()` (batch 1).
3. Activations from `artifact.tensor_lifetimes()` (see `har.measure.activations`): the naive sum and the
   most bytes live at once. `arena_bytes` = `artifact.arena_bytes()` (None when the artifact has no
   memory plan); `model_bytes` = weight_bytes + arena_bytes, or + activation_bytes_peak without one.
4. Heap (memray, `config.profile_heap`): `peak_heap_bytes` = heap high watermark of a streaming
   session of `n_stream_windows` batch-1 predictions started right after loading (memory allocated
   before, e.g. the loaded weights, is not in it); `allocations_per_inference` and
   `allocated_bytes_per_inference` = allocation records (frees excluded) of `n_alloc_inferences`
   batch-1 predictions after `warmup` untracked ones, divided by their number. Counts follow
   `config.trace_python_allocators` (default off: system-allocator calls only; see
   `har.measure.memprofile`).
5. Speed (`config.timing`): batch-1 latency over `n_latency_repeats` timed calls after `warmup`
   (p50, p95, IQR, std in ms); throughput = batch of `throughput_batch` windows / median batch time.
   Whatever threads the artifact was built with are used; the CLI builds every artifact single-threaded.
6. Accuracy (`config.evaluate` and labels given): `har.evaluate.score` on the given windows.
7. Device (`device`, a `DeviceFigures` measured by `firmware.measure` on the artifact's exported firmware):
   `flash_bytes` and `ram_bytes` of the library in the linked Cortex-M ELF (RAM including the painted
   stack), `instructions_per_inference` counted in emulation; the target is named in the notes. Flash
   and RAM stay two numbers; `model_bytes` (weights + arena, or + activation peak) is the host-side estimate
   every variant has, which counts neither code nor stack.
Skipped parts are None, never estimated. Limits: windows are cycled when fewer than a batch or a stream
are given; heap and timing figures vary run to run (timing reports its spread), byte fields from 1-3 do not.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from har.errors import BadDataError, BadOptionError
from har.evaluate import score
from har.measure.activations import activation_naive_bytes, activation_peak_bytes
from har.measure.artifact import InferenceArtifact
from har.measure.memprofile import profile
from har.measure.timing import LatencyStats, time_calls


@dataclass(frozen=True)
class MeasureConfig:
    evaluate: bool = True
    timing: bool = True
    profile_heap: bool = True
    warmup: int = 10
    n_latency_repeats: int = 200
    n_throughput_repeats: int = 5
    throughput_batch: int = 256
    n_stream_windows: int = 200
    n_alloc_inferences: int = 50
    trace_python_allocators: bool = False
    flamegraph_path: str | None = None
    eval_batch: int = 1024

    def __post_init__(self) -> None:
        counts = {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}
        bad = {k: v for k, v in counts.items() if v < (0 if k == "warmup" else 1)}
        if bad:
            raise BadOptionError(f"MeasureConfig counts must be >= 1 (warmup >= 0); got {bad}")

    @classmethod
    def quick(cls, **overrides: Any) -> "MeasureConfig":
        """Every field measured, with few repetitions: for smoke runs and tests."""
        base = dict(warmup=3, n_latency_repeats=30, n_throughput_repeats=2, n_stream_windows=40,
                    n_alloc_inferences=20)
        return cls(**{**base, **overrides})

    @classmethod
    def static_only(cls, **overrides: Any) -> "MeasureConfig":
        """Only the byte, MAC and accuracy fields (no memray, no timing)."""
        return cls(**{"timing": False, "profile_heap": False, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DeviceFigures:
    """What the artifact's firmware costs on one target, read from its ELF and an emulator."""

    target: str
    flash_bytes: int
    ram_bytes: int  # static RAM + stack
    instructions_per_inference: float


@dataclass(frozen=True)
class Footprint:
    """What one artifact costs and scores; units are in the field names; None = not measured (see `measure`).
    `allocations_per_inference` and `allocated_bytes_per_inference` are means over the profiled calls."""

    name: str
    param_count: int
    weight_bytes: int
    macs: int
    activation_bytes_naive: int
    activation_bytes_peak: int
    arena_bytes: int | None
    model_bytes: int
    peak_heap_bytes: int | None
    allocations_per_inference: float | None
    allocated_bytes_per_inference: float | None
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    latency_ms_iqr: float | None
    latency_ms_std: float | None
    throughput_windows_per_s: float | None
    accuracy: float | None
    macro_f1: float | None
    n_eval_windows: int | None
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    instructions_per_inference: float | None = None
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "Footprint":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Footprint))
BYTE_FIELDS: tuple[str, ...] = ("param_count", "weight_bytes", "macs", "activation_bytes_naive",
                                "activation_bytes_peak", "arena_bytes", "model_bytes", "flash_bytes", "ram_bytes")


def _check_inputs(artifact: Any, x: np.ndarray, y: np.ndarray | None) -> None:
    if not isinstance(artifact, InferenceArtifact):
        raise BadOptionError(f"{type(artifact).__name__} does not implement har.measure.InferenceArtifact")
    if not (isinstance(x, np.ndarray) and x.ndim == 3 and x.dtype == np.float32 and len(x) > 0):
        raise BadDataError("measure needs at least one float32 (N, C, T) window")
    if y is not None and len(y) != len(x):
        raise BadDataError(f"{len(x)} windows but {len(y)} labels")


def _evaluate(artifact: InferenceArtifact, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, float]:
    scores = np.concatenate([artifact.predict(x[i:i + batch]) for i in range(0, len(x), batch)])
    if scores.ndim != 2 or len(scores) != len(x):
        raise BadDataError(f"{artifact.name}: predict returned shape {scores.shape} for {len(x)} windows")
    s = score(np.asarray(y), scores.argmax(axis=1), max(scores.shape[1], int(np.max(y)) + 1))
    return s.accuracy, s.macro_f1


def measure(artifact: InferenceArtifact, x: np.ndarray, y: np.ndarray | None = None,
            config: MeasureConfig = MeasureConfig(), notes: str = "", device: DeviceFigures | None = None) -> Footprint:
    """Fill a `Footprint` for `artifact` on windows `x` (un-normalised (N, C, T) float32), labels `y`."""
    _check_inputs(artifact, x, y)
    arrays = [np.asarray(a) for a in artifact.weight_arrays().values()]
    weight_bytes = int(sum(a.nbytes for a in arrays))
    lives = artifact.tensor_lifetimes()
    peak = activation_peak_bytes(lives)
    arena = artifact.arena_bytes()
    auto_notes = [] if arena is not None else ["no arena plan: model bytes = weights + activation peak"]
    out: dict[str, Any] = dict(
        name=artifact.name, param_count=int(sum(a.size for a in arrays)), weight_bytes=weight_bytes,
        macs=int(artifact.macs_per_window()), activation_bytes_naive=activation_naive_bytes(lives),
        activation_bytes_peak=peak, arena_bytes=None if arena is None else int(arena),
        model_bytes=weight_bytes + (int(arena) if arena is not None else peak))
    out.update(dict.fromkeys(FIELDS[FIELDS.index("peak_heap_bytes"):FIELDS.index("notes")]))
    if device is not None:
        out.update(flash_bytes=int(device.flash_bytes), ram_bytes=int(device.ram_bytes),
                   instructions_per_inference=float(device.instructions_per_inference))
        auto_notes.append(f"flash/RAM/instructions: {device.target} firmware (ELF + emulator)")

    singles = [np.ascontiguousarray(x[i % len(x)][None]) for i in range(max(config.n_stream_windows, 1))]
    position = [0]

    def one_window() -> None:
        # an index, not itertools.cycle: cycle copies items into its own storage on the first pass,
        # which memray would count as the artifact's allocations
        i = position[0]
        position[0] = i + 1 if i + 1 < len(singles) else 0
        artifact.predict(singles[i])

    if config.profile_heap:
        def stream() -> None:
            for w in singles:
                artifact.predict(w)
        session = profile(stream, repeat=1, trace_python_allocators=config.trace_python_allocators,
                          flamegraph_path=config.flamegraph_path)
        steady = profile(one_window, repeat=config.n_alloc_inferences, warmup=config.warmup,
                         trace_python_allocators=config.trace_python_allocators)
        out.update(peak_heap_bytes=session.peak_bytes, allocations_per_inference=steady.allocations_per_call,
                   allocated_bytes_per_inference=steady.allocated_bytes_per_call)
        if config.trace_python_allocators:
            auto_notes.append("allocation counts include pymalloc objects")
    if config.timing:
        lat = LatencyStats.from_seconds(time_calls(one_window, config.n_latency_repeats, config.warmup))
        batch = np.ascontiguousarray(x[np.arange(config.throughput_batch) % len(x)])
        batch_s = time_calls(lambda: artifact.predict(batch), config.n_throughput_repeats, warmup=1)
        out.update(latency_ms_p50=lat.p50_ms, latency_ms_p95=lat.p95_ms, latency_ms_iqr=lat.iqr_ms,
                   latency_ms_std=lat.std_ms,
                   throughput_windows_per_s=config.throughput_batch / float(np.median(batch_s)))
    if config.evaluate and y is not None:
        out["accuracy"], out["macro_f1"] = _evaluate(artifact, x, y, config.eval_batch)
        out["n_eval_windows"] = int(len(x))
    out["notes"] = "; ".join([n for n in [notes, *auto_notes] if n])
    return Footprint(**out)
