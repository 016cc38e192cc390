"""The firmware's preprocessing in numpy, bit-exact with `firmware/csrc/har_pre.c`.

A device hands the library int16 accelerometer counts; `SampleFormat.scale_m_s2` (m/s^2 per count) turns
them into the units the model was trained on. `to_counts` makes such counts from the dataset's m/s^2 windows
(round half to even, saturating at the int16 range), which is what a sensor at that scale would report.
Steps of `channels(counts, scale, channel_set)` (the C file's rule; every value float32, one IEEE operation
at a time, in this order; numpy's float32 ufuncs round each operation exactly as the C code does):
1. gravity g[k] = (float(sum_t c[t][k]) * s) / float(T), the sum exact in int64 (int32 in C: |sum| < 2^31);
2. n = max(sqrt((g0*g0 + g1*g1) + g2*g2), 1e-6), u = g / n;
3. per sample a = float(c) * s; raw: a; robust: v = (a0*u0 + a1*u1) + a2*u2, m = sqrt((a0*a0 + a1*a1) +
   a2*a2), h = sqrt(max(m*m - v*v, 0)) -> (v, h, m); robust_tilt: robust + |u| repeated over the window.
The channels equal `har.windows.to_channels` up to float rounding (that one sums with numpy's pairwise
float reductions); the int8 input then comes from the model's own quantizer (`intref.quantize_input`).
Limits: windows must be (N, T, 3) int16; counts outside int16 saturate in `to_counts` (a sensor clips too).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from har.errors import BadDataError, BadOptionError

CHANNEL_SETS = {"raw": 0, "robust": 1, "robust_tilt": 2}  # the C enum HAR_CH_*
G_M_S2 = 9.80665
_F = np.float32


@dataclass(frozen=True)
class SampleFormat:
    """int16 counts per axis; default: a 16-bit accelerometer at +-4 g full scale (0.122 mg per count,
    e.g. LSM6DSx / BMI270 at +-4 g): every fold's training users' samples fit it (a test checks this on
    training users only; the phones' own data clip near +-2 g)."""

    full_scale_g: float = 4.0

    def __post_init__(self) -> None:
        if not (0.0 < self.full_scale_g <= 64.0):
            raise BadOptionError(f"full scale must be in (0, 64] g, got {self.full_scale_g}")

    @property
    def scale_m_s2(self) -> float:
        """m/s^2 per count, as the float32 the C code is compiled with."""
        return float(_F(self.full_scale_g * G_M_S2 / 32768.0))

    def to_dict(self) -> dict:
        return {**asdict(self), "scale_m_s2": self.scale_m_s2}


def to_counts(raw_xyz: np.ndarray, fmt: SampleFormat = SampleFormat()) -> np.ndarray:
    """(N, 3, T) m/s^2 device-axis windows (`har.experiment.windows_for`) -> (N, T, 3) int16 counts."""
    raw = np.asarray(raw_xyz, dtype=np.float64)
    if raw.ndim != 3 or raw.shape[1] != 3:
        raise BadDataError(f"expected (N, 3, T) device-axis windows, got {raw.shape}")
    counts = np.rint(raw / fmt.scale_m_s2)
    counts = np.nan_to_num(counts, nan=0.0)  # a missing sample reads as 0 counts, as a cleared register
    return np.clip(counts, -32768, 32767).astype(np.int16).transpose(0, 2, 1).copy()


def channels(counts: np.ndarray, scale_m_s2: float, channel_set: str) -> np.ndarray:
    """(N, T, 3) int16 counts -> (N, C, T) float32 channels, exactly as har_pre_channels_f32 computes them."""
    if channel_set not in CHANNEL_SETS:
        raise BadOptionError(f"unknown channel set {channel_set!r}; choose one of {sorted(CHANNEL_SETS)}")
    c = np.asarray(counts)
    if c.dtype != np.int16 or c.ndim != 3 or c.shape[2] != 3:
        raise BadDataError(f"expected (N, T, 3) int16 counts, got {c.dtype} {c.shape}")
    n, t, _ = c.shape
    s = _F(scale_m_s2)
    a = c.astype(_F) * s  # (N, T, 3)
    if channel_set == "raw":
        return np.ascontiguousarray(a.transpose(0, 2, 1))
    g = (c.sum(axis=1, dtype=np.int64).astype(_F) * s) / _F(t)  # (N, 3)
    norm = np.sqrt((g[:, 0] * g[:, 0] + g[:, 1] * g[:, 1]) + g[:, 2] * g[:, 2])
    norm = np.where(norm > _F(1e-6), norm, _F(1e-6))
    u = g / norm[:, None]
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    vert = (a0 * u[:, 0:1] + a1 * u[:, 1:2]) + a2 * u[:, 2:3]
    mag = np.sqrt((a0 * a0 + a1 * a1) + a2 * a2)
    h2 = mag * mag - vert * vert
    h2 = np.where(h2 > _F(0.0), h2, _F(0.0))
    parts = [vert, np.sqrt(h2), mag]
    if channel_set == "robust_tilt":
        parts += [np.repeat(np.abs(u[:, k:k + 1]), t, axis=1) for k in range(3)]
    out = np.stack(parts, axis=1)
    return out
