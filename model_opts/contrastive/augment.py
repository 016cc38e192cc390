"""Sensor augmentations for contrastive views, applied to RAW device-axis windows before channels.

Why raw: our default channels (`robust_tilt`: vertical, horizontal, magnitude, |gx|, |gy|, |gz|) are
computed from the device axes, and a 3-D rotation only has a physical meaning there (the phone sitting
differently in the pocket). `make_view` therefore takes (N, 3, T) raw windows, augments them on the
device axes, and only then converts to channels with `har.windows.to_channels` and normalises.
A consequence worth knowing: vertical, horizontal and magnitude are exactly invariant to a rotation of
the whole window (the gravity estimate rotates with the signal), so rotation only moves the three tilt
channels. A full random SO(3) rotation would make the encoder blind to tilt, which is what separates
sitting from standing; `rotation_max_deg` (default 30) keeps rotations small enough that a thigh-level
vs upright phone (about 90 degrees apart) stays distinguishable.

Augmentations (each on (N, T, 3) float32, seeded through a `np.random.Generator`; 0 disables one):
- jitter: additive Gaussian noise, `jitter_ms2` standard deviation in m/s^2;
- scaling: one factor per window and axis, drawn from N(1, `scale_sigma`);
- rotation: a random axis (uniform on the sphere) and an angle uniform in +-`rotation_max_deg`,
  applied with Rodrigues' formula;
- time warp: a smooth random speed curve (piecewise-linear through `time_warp_knots` + 2 knots drawn
  from N(1, `time_warp_sigma`), clipped positive), integrated to a monotone time map spanning the
  window, then linear resampling;
- permutation: the window is cut into `permute_segments` equal segments, shuffled per window
  (off by default: it breaks gait periodicity at the cuts).
Limits: time warp and permutation keep the window length; samples beyond the last are never
invented (the time map ends at the last sample).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from har.errors import BadDataError
from har.windows import Normalizer, to_channels


@dataclass(frozen=True)
class AugmentConfig:
    jitter_ms2: float = 0.3
    scale_sigma: float = 0.1
    rotation_max_deg: float = 30.0
    time_warp_sigma: float = 0.2
    time_warp_knots: int = 4
    permute_segments: int = 0


def jitter(x: np.ndarray, sigma_ms2: float, rng: np.random.Generator) -> np.ndarray:
    return (x + rng.normal(0.0, sigma_ms2, size=x.shape)).astype(np.float32)


def scale(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    factors = rng.normal(1.0, sigma, size=(x.shape[0], 1, x.shape[2]))
    return (x * factors).astype(np.float32)


def random_rotations(n: int, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, 3) rotation matrices: uniform random axis, angle uniform in [-max_deg, max_deg]."""
    axis = rng.normal(size=(n, 3))
    axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-12)
    theta = np.deg2rad(rng.uniform(-max_deg, max_deg, size=n))
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k -= k.transpose(0, 2, 1)
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)


def rotate(x: np.ndarray, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    rot = random_rotations(x.shape[0], max_deg, rng)
    return np.einsum("ntj,nij->nti", x, rot).astype(np.float32)


def time_warp(x: np.ndarray, sigma: float, knots: int, rng: np.random.Generator) -> np.ndarray:
    n, t, _ = x.shape
    knot_pos = np.linspace(0, t - 1, knots + 2)
    speed_knots = np.clip(rng.normal(1.0, sigma, size=(n, knots + 2)), 0.1, None)
    grid = np.arange(t)
    speed = np.stack([np.interp(grid, knot_pos, s) for s in speed_knots])  # (n, t)
    pos = np.cumsum(speed, axis=1) - speed[:, :1]
    pos *= (t - 1) / pos[:, -1:]  # monotone map onto [0, t-1]
    lo = np.clip(np.floor(pos).astype(np.int64), 0, t - 2)
    frac = (pos - lo)[:, :, None]
    rows = np.arange(n)[:, None]
    return (x[rows, lo] * (1 - frac) + x[rows, lo + 1] * frac).astype(np.float32)


def permute(x: np.ndarray, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    n, t, _ = x.shape
    seg = t // n_segments
    order = np.argsort(rng.random((n, n_segments)), axis=1)  # one permutation per window
    idx = (order[:, :, None] * seg + np.arange(seg)[None, None, :]).reshape(n, -1)
    out = x.copy()
    out[:, :seg * n_segments] = x[np.arange(n)[:, None], idx]
    return out


def augment_raw(x: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(N, T, 3) raw windows -> augmented (N, T, 3) float32."""
    if x.ndim != 3 or x.shape[2] != 3:
        raise BadDataError(f"augmentations need raw (N, T, 3) windows, got shape {x.shape}")
    x = np.asarray(x, dtype=np.float32)
    if cfg.time_warp_sigma > 0:
        x = time_warp(x, cfg.time_warp_sigma, cfg.time_warp_knots, rng)
    if cfg.permute_segments > 1:
        x = permute(x, cfg.permute_segments, rng)
    if cfg.rotation_max_deg > 0:
        x = rotate(x, cfg.rotation_max_deg, rng)
    if cfg.scale_sigma > 0:
        x = scale(x, cfg.scale_sigma, rng)
    if cfg.jitter_ms2 > 0:
        x = jitter(x, cfg.jitter_ms2, rng)
    return x


def make_view(raw_nct: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, channels: str,
              normalizer: Normalizer) -> np.ndarray:
    """(N, 3, T) raw windows -> one augmented, normalised view (N, C, T) float32 in `channels`."""
    xyz = np.ascontiguousarray(np.asarray(raw_nct, dtype=np.float32).transpose(0, 2, 1))
    return normalizer(to_channels(augment_raw(xyz, cfg, rng), channels))
