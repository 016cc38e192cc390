"""Calibration: observe each quantized activation tensor of the folded float model on training windows.

Steps of `activation_qparams`:
1. Draw a seeded random subset of `calib_windows` training windows (never validation or test users).
2. Normalise them with the training Normalizer and run the BN-folded float ops (`graph.run_float`),
   tapping the input, every conv/linear output (after its fused ReLU) and every global-pool output.
   Max-pool outputs are not tapped: they share their input's quantization.
3. Per tapped tensor, the range is [min, max] ("minmax") or the [100 - p, p] percentiles of all its values
   ("percentile", p = `QuantConfig.percentile`), then widened to include 0.
4. Per tensor, asymmetric int8 (scale, zero_point) = `fixedpoint.affine_qparams(lo, hi)`.
Limits: ranges are per tensor (not per channel) and observed once on the float model, not layer by layer
on the partially quantized one.
"""
from __future__ import annotations

import numpy as np
import torch

from model_opts.quant.config import QuantConfig
from model_opts.quant.fixedpoint import affine_qparams
from model_opts.quant.graph import FloatOp, run_float


def calibration_subset(n_windows: int, cfg: QuantConfig) -> np.ndarray:
    """Sorted indices (into the training windows) of the seeded calibration subset."""
    if n_windows <= cfg.calib_windows:
        return np.arange(n_windows)
    return np.sort(np.random.default_rng(cfg.seed).choice(n_windows, cfg.calib_windows, replace=False))


def observe(ops: list[FloatOp], x_norm: np.ndarray, batch: int = 512) -> list[np.ndarray]:
    """Every tapped tensor of the float model over `x_norm` (N, C, T), flattened to float32 vectors."""
    chunks: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, len(x_norm), batch):
            taps: list[torch.Tensor] = []
            run_float(ops, torch.from_numpy(np.ascontiguousarray(x_norm[start:start + batch])), taps)
            if not chunks:
                chunks = [[] for _ in taps]
            for store, t in zip(chunks, taps):
                store.append(t.numpy().ravel())
    return [np.concatenate(c) for c in chunks]


def tensor_range(values: np.ndarray, cfg: QuantConfig) -> tuple[float, float]:
    if cfg.calibration == "minmax" or cfg.percentile >= 100.0:
        return float(values.min()), float(values.max())
    lo, hi = np.percentile(values, [100.0 - cfg.percentile, cfg.percentile])
    return float(lo), float(hi)


def activation_qparams(ops: list[FloatOp], x_norm_train: np.ndarray, cfg: QuantConfig
                       ) -> list[tuple[float, int]]:
    """(scale, zero_point) of every tapped tensor, in `run_float` tap order."""
    x = x_norm_train[calibration_subset(len(x_norm_train), cfg)]
    return [affine_qparams(*tensor_range(v, cfg)) for v in observe(ops, x)]
