"""Integer fixed-point primitives of the int8 path, following TFLite's int8 quantization spec.

Every function works elementwise on numpy integer arrays and is written to be transcribed 1:1 to C:
- `quantize_multiplier(M)`: a positive real multiplier M becomes (m, shift) with m an int32 Q31 mantissa
  in [2^30, 2^31) and M ~= m * 2^(shift - 31). M == 0 (a dead channel) gives (0, 0). A multiplier below
  2^-31 would need a right shift beyond 31 bits; it is flushed to (0, 0) (its output is the zero point).
  The mantissa is rounded half away from zero (TfLiteRound), as TFLite's QuantizeMultiplier does.
- `mean_multiplier(s_in, s_out, n)`: TFLite/TFLM's integer MEAN multiplier for n averaged elements (below).
- `saturating_rounding_doubling_high_mul(a, b)`: (a * b * 2) >> 32 with the rounding nudge of gemmlowp
  (+2^30 for a non-negative product, 1 - 2^30 for a negative one, then division truncating toward zero,
  so exact halves round upward: 1.5 -> 2, -1.5 -> -1); the one overflow case a == b == INT32_MIN
  saturates to INT32_MAX.
- `rounding_divide_by_pot(x, e)`: x / 2^e rounded to nearest, ties away from zero (gemmlowp's
  RoundingDivideByPOT: arithmetic shift plus a remainder test).
- `multiply_by_quantized_multiplier(x, m, shift)`: TFLite's MultiplyByQuantizedMultiplier. A positive
  shift is a left shift of x; unlike TFLite (where an overflowing left shift is undefined behaviour in C)
  the shifted value saturates to int32 here, and a C port must do the same. A saturated result keeps the
  sign and a magnitude >= 2^29, so the int8 clamp that always follows stays exact. There are two
  roundings (SRDHM, then the divide): TFLite's classic, not its single-rounding, requantization; the
  result is within one LSB of round(x * M).
- `quantize` / `dequantize` and the affine (asymmetric, activations) and symmetric (per-channel, weights)
  parameter choices. Rounding of reals to integers is round-half-to-even (`np.rint`; in C `har_q8`,
  har_int8.h), the same as `torch.round` and torch's fake-quantize kernels.
Why by hand: numpy has no fixed-point requantization and torch's quantized kernels do not expose their
integer arithmetic; the reference must be inspectable line by line.
"""
from __future__ import annotations

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_QMIN, WEIGHT_QMAX = -127, 127  # symmetric weights never use -128 (TFLite int8 spec)
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Real multiplier M >= 0 -> (Q31 mantissa m, exponent shift) with M ~= m * 2**(shift - 31)."""
    real = float(real)
    if not np.isfinite(real) or real < 0:
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    mantissa, shift = np.frexp(real)  # real = mantissa * 2**shift, mantissa in [0.5, 1)
    # half away from zero like TfLiteRound (Python's round() would go to even); the sum is exact in double
    q = int(np.floor(float(mantissa) * (1 << 31) + 0.5))
    if q == 1 << 31:  # rounding carried into the next power of two
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, int(shift)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of `quantize_multiplier`: int32 mantissas and int32 shifts."""
    pairs = [quantize_multiplier(r) for r in np.asarray(reals, dtype=np.float64).ravel()]
    m = np.array([p[0] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    s = np.array([p[1] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    return m.astype(np.int32), s.astype(np.int32)


def mean_multiplier(input_scale: float, output_scale: float, count: int) -> tuple[int, int]:
    """(m, shift) of TFLite/TFLM's int8 MEAN (reference_ops::QuantizedMeanOrSum) over `count` elements, so
    that mean = clamp(zp_out + MultiplyByQuantizedMultiplier(sum(q - zp_in), m, shift)) is bit-exact with TFLM:
        (m0, e0) = quantize_multiplier(double(s_in) / double(s_out))
        sh = min(floor(log2 count), 32, 31 + e0)            # keeps m in int32 and shift >= -31
        m = (int64(m0) << sh) / count (truncating), shift = e0 - sh
    The 1/count factor is folded into the mantissa by a truncating integer division, not into the real
    multiplier: quantize_multiplier(s_in / (count * s_out)) usually gives another pair, which moves a few
    sums in a thousand by one LSB. The scales are taken as float32, the precision a .tflite file stores
    and TFLM computes from."""
    count = int(count)
    if count < 1:
        raise ValueError(f"a mean needs at least one element, got {count}")
    if not (np.float32(input_scale) > 0 and np.float32(output_scale) > 0):
        raise ValueError(f"mean scales must be positive, got {input_scale} and {output_scale}")
    m0, e0 = quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))
    sh = min(count.bit_length() - 1, 32, 31 + e0)
    return int((m0 << sh) // count), int(e0 - sh)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 arrays (broadcasting), result int32."""
    a64 = np.asarray(a, dtype=np.int64)
    b64 = np.asarray(b, dtype=np.int64)
    ab = a64 * b64  # |ab| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    # C integer division truncates toward zero; an arithmetic shift floors, so shift the magnitude
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent, ties away from zero; 0 <= exponent <= 31."""
    x64 = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("rounding_divide_by_pot needs 0 <= exponent <= 31")
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return ((x64 >> e) + (remainder > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier: round(x * m * 2**(shift - 31)) in int32 arithmetic."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(np.asarray(x, dtype=np.int64) << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def affine_qparams(lo: float, hi: float, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> tuple[float, int]:
    """Asymmetric (scale, zero_point) covering [lo, hi] extended to include 0 (so 0 is exact: padding, ReLU)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-12:  # a constant-zero tensor: any scale represents it exactly
        return 1.0, 0
    scale = (hi - lo) / (qmax - qmin)
    zero_point = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    return scale, zero_point


def symmetric_scales(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-channel symmetric scales max|w| / 127 along `axis` (float64); an all-zero channel gets 1.0."""
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(np.asarray(w, dtype=np.float64)).max(axis=reduce_axes)
    return np.where(amax > 0, amax / WEIGHT_QMAX, 1.0)


def quantize(x: np.ndarray, scale, zero_point, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> np.ndarray:
    """round(x / scale) + zero_point, saturated to [qmin, qmax], as int8 (scale/zp broadcast with x)."""
    q = np.rint(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, qmin, qmax).astype(np.int8)


def dequantize(q: np.ndarray, scale, zero_point) -> np.ndarray:
    return ((np.asarray(q, dtype=np.int32) - zero_point) * np.asarray(scale, dtype=np.float64)).astype(np.float32)
