"""Window statistics for the classical peer (RandomForest): per channel of x, y, z and |a|.

Per channel: mean, std, min, max, 10/25/50/75/90th percentiles, mean absolute first difference,
and the dominant FFT bin index and its share of spectral energy; plus the three pairwise
correlations of x, y, z. All vectorised over windows. Limits: hand-picked, not tuned; no orientation
handling beyond what the RF learns from the raw axes.
"""
from __future__ import annotations

import numpy as np


def window_stats(xyz_windows: np.ndarray) -> np.ndarray:
    """(N, 3, T) raw-axis windows -> (N, F) float32 features."""
    mag = np.linalg.norm(xyz_windows, axis=1, keepdims=True)
    ch = np.concatenate([xyz_windows, mag], axis=1).astype(np.float64)  # (N, 4, T)
    pct = np.percentile(ch, [10, 25, 50, 75, 90], axis=2).transpose(1, 2, 0)  # (N, 4, 5)
    spec = np.abs(np.fft.rfft(ch - ch.mean(axis=2, keepdims=True), axis=2))[:, :, 1:] ** 2
    energy = spec.sum(axis=2) + 1e-12
    feats = [ch.mean(2), ch.std(2), ch.min(2), ch.max(2), np.abs(np.diff(ch, axis=2)).mean(2),
             spec.argmax(2).astype(np.float64), spec.max(2) / energy, pct.reshape(len(ch), -1)]
    c = xyz_windows - xyz_windows.mean(axis=2, keepdims=True)
    sd = np.sqrt((c ** 2).sum(axis=2)) + 1e-12
    for i, j in ((0, 1), (0, 2), (1, 2)):
        feats.append(((c[:, i] * c[:, j]).sum(axis=1) / (sd[:, i] * sd[:, j]))[:, None])
    return np.concatenate(feats, axis=1).astype(np.float32)
