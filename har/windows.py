"""Sliding windows over a `Recording`, channel representations and train-only normalisation.

Steps of `make_windows`:
1. Cut the sample stream into segments wherever the user or the activity changes, or consecutive
   timestamps step backwards, repeat, or jump by more than `max_gap_s`.
2. Inside each segment, place windows of `length` samples every `step` samples (vectorised: starts are
   computed per segment with `np.repeat` + a running offset, then gathered with one fancy index).
   A window therefore never spans two users, two activities or a gap.
3. Turn each window (T, 3) into channels (C, T) as `channels` asks:
   - `raw`: the device axes x, y, z.
   - `robust`: orientation-free vertical (projection on the window's mean acceleration, i.e. gravity),
     horizontal (norm of the rest) and magnitude. Phone orientation differs by user, but these do not;
     they also throw away the tilt that separates sitting from standing.
   - `robust_tilt`: robust + |g_x|, |g_y|, |g_z| of the unit gravity vector, constant over the window.
     The absolute value removes the "phone upside down / facing in or out" flips while keeping the
     tilt of the thigh.
Known limits: gravity is estimated by the window mean, which is biased during sustained linear
acceleration; windows shorter than `length` at a segment's end are dropped, not padded.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from har.datasets.base import Recording
from har.errors import BadOptionError

CHANNEL_SETS = {"raw": 3, "robust": 3, "robust_tilt": 6}


@dataclass(frozen=True)
class WindowConfig:
    length: int = 80
    step: int = 40
    max_gap_s: float = 1.0
    channels: str = "robust_tilt"

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_SETS:
            raise BadOptionError(f"unknown channel set {self.channels!r}; choose one of {sorted(CHANNEL_SETS)}")
        if self.length < 2 or self.step < 1:
            raise BadOptionError(f"window length must be >= 2 and step >= 1 (got {self.length}, {self.step})")

    @property
    def n_channels(self) -> int:
        return CHANNEL_SETS[self.channels]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Windows:
    """`x` float32 (N, C, T); `y` int64 class index; `user` per window; `start` index of the window's first
    sample in the recording given to `make_windows` (before any activity filtering)."""

    x: np.ndarray
    y: np.ndarray
    user: np.ndarray
    start: np.ndarray
    classes: tuple[str, ...]
    config: WindowConfig

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> "Windows":
        return Windows(self.x[idx], self.y[idx], self.user[idx], self.start[idx], self.classes, self.config)


def segment_starts(rec: Recording, max_gap_s: float) -> np.ndarray:
    """Indices where a new contiguous segment begins (always includes 0)."""
    if rec.n_samples == 0:
        return np.zeros(0, dtype=np.int64)
    dt = np.diff(rec.timestamp_ns)
    brk = (np.diff(rec.user) != 0) | (np.diff(rec.label) != 0) | (dt <= 0) | (dt > max_gap_s * 1e9)
    return np.concatenate([[0], np.flatnonzero(brk) + 1]).astype(np.int64)


def window_starts(seg_starts: np.ndarray, n_samples: int, length: int, step: int) -> np.ndarray:
    """Start index of every full window inside every segment, vectorised."""
    seg_ends = np.append(seg_starts[1:], n_samples)
    counts = np.maximum(0, (seg_ends - seg_starts - length) // step + 1)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.repeat(seg_starts, counts)
    # offset of each window within its segment: 0, 1, 2, ... restarting at each segment
    running = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return first + running * step


def to_channels(win_xyz: np.ndarray, channels: str) -> np.ndarray:
    """(N, T, 3) device-axis windows -> (N, C, T) float32 in the requested channel set."""
    if channels == "raw":
        return np.ascontiguousarray(win_xyz.transpose(0, 2, 1), dtype=np.float32)
    g = win_xyz.mean(axis=1, keepdims=True)  # (N, 1, 3) gravity estimate
    g_unit = g / np.maximum(np.linalg.norm(g, axis=2, keepdims=True), 1e-6)
    vertical = (win_xyz * g_unit).sum(axis=2)
    magnitude = np.linalg.norm(win_xyz, axis=2)
    horizontal = np.sqrt(np.maximum(magnitude ** 2 - vertical ** 2, 0.0))
    parts = [vertical, horizontal, magnitude]
    if channels == "robust_tilt":
        tilt = np.abs(g_unit[:, 0, :])  # (N, 3)
        parts += [np.repeat(tilt[:, i:i + 1], win_xyz.shape[1], axis=1) for i in range(3)]
    return np.stack(parts, axis=1).astype(np.float32)


def make_windows(rec: Recording, cfg: WindowConfig, keep_labels: np.ndarray | None = None) -> Windows:
    """Windows of `rec` (optionally only samples whose label is in `keep_labels`, relabelled 0..K-1)."""
    classes = rec.activities
    origin = np.arange(rec.n_samples)
    if keep_labels is not None:
        keep_labels = np.asarray(keep_labels)
        mask = np.isin(rec.label, keep_labels)
        rec, origin = rec.select(mask), origin[mask]
        remap = np.full(max(len(rec.activities), int(keep_labels.max()) + 1), -1, dtype=np.int64)
        remap[keep_labels] = np.arange(len(keep_labels))
        classes = tuple(rec.activities[i] for i in keep_labels)
    else:
        remap = np.arange(len(classes), dtype=np.int64)
    starts = window_starts(segment_starts(rec, cfg.max_gap_s), rec.n_samples, cfg.length, cfg.step)
    gather = starts[:, None] + np.arange(cfg.length)[None, :]
    x = to_channels(rec.xyz[gather], cfg.channels)
    return Windows(x=x, y=remap[rec.label[starts].astype(np.int64)], user=rec.user[starts].astype(np.int32),
                   start=origin[starts], classes=classes, config=cfg)


@dataclass(frozen=True)
class Normalizer:
    """Per-channel standardisation whose statistics come from training windows only."""

    mean: np.ndarray  # float32 (C,)
    std: np.ndarray  # float32 (C,)

    @classmethod
    def fit(cls, x: np.ndarray) -> "Normalizer":
        mean = x.mean(axis=(0, 2), dtype=np.float64)
        std = x.std(axis=(0, 2), dtype=np.float64)
        return cls(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean[None, :, None]) / self.std[None, :, None]).astype(np.float32)
