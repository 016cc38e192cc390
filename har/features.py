"""Window statistics for the classical peer (RandomForest), on any channel set the CNN can see.

Steps of `window_stats(windows, channels)`:
1. Channels: the windows' own channels (N, C, T); for `raw` device axes the magnitude |a| is appended
   (the orientation-robust sets already contain it).
2. Per channel: mean, std, min, max, mean absolute first difference, the dominant FFT bin index and its
   share of spectral energy, and the 10/25/50/75/90th percentiles (12 values).
3. The three pairwise Pearson correlations of the first three channels (x, y, z for `raw`; vertical,
   horizontal, magnitude for the robust sets).
Feature counts: raw 4 x 12 + 3 = 51, robust 3 x 12 + 3 = 39, robust_tilt 6 x 12 + 3 = 75 (the tilt
channels are constant over a window, so only their mean/min/max/percentiles carry information; the
forest ignores the rest). All vectorised over windows. Limits: the statistics are hand-picked, not
tuned; the forest's 300 trees and `min_samples_leaf=2` are fixed, not selected.
"""
from __future__ import annotations

import numpy as np

PER_CHANNEL = 12


def n_features(n_channels: int, channels: str) -> int:
    return (n_channels + (channels == "raw")) * PER_CHANNEL + 3


def window_stats(windows: np.ndarray, channels: str = "raw") -> np.ndarray:
    """(N, C, T) windows in channel set `channels` -> (N, F) float32 features."""
    ch = windows.astype(np.float64)
    if channels == "raw":
        ch = np.concatenate([ch, np.linalg.norm(ch, axis=1, keepdims=True)], axis=1)
    pct = np.percentile(ch, [10, 25, 50, 75, 90], axis=2).transpose(1, 2, 0)  # (N, C, 5)
    spec = np.abs(np.fft.rfft(ch - ch.mean(axis=2, keepdims=True), axis=2))[:, :, 1:] ** 2
    energy = spec.sum(axis=2) + 1e-12
    feats = [ch.mean(2), ch.std(2), ch.min(2), ch.max(2), np.abs(np.diff(ch, axis=2)).mean(2),
             spec.argmax(2).astype(np.float64), spec.max(2) / energy, pct.reshape(len(ch), -1)]
    c = ch[:, :3] - ch[:, :3].mean(axis=2, keepdims=True)
    sd = np.sqrt((c ** 2).sum(axis=2)) + 1e-12
    for i, j in ((0, 1), (0, 2), (1, 2)):
        feats.append(((c[:, i] * c[:, j]).sum(axis=1) / (sd[:, i] * sd[:, j]))[:, None])
    return np.concatenate(feats, axis=1).astype(np.float32)
