"""Int8 kernels of the flat executor, bit-exact with `model_opts.quant.intref` (the integer reference).

Same calling convention as `system_opts.kernels` (channel-last (N, T, C) arrays, `fn(x, attrs, *arrays)`).
Steps of `conv1d_q` / `linear_q`:
1. Pad the int8 rows with the input zero point (== zero padding of the real-valued input, as the
   reference does) and view them as im2col rows (zero-copy).
2. Subtract the zero point and multiply by the int8 weights with a BLAS GEMM in floating point: every
   product and every partial sum is an integer of magnitude <= terms * 255 * 127, so float32 is exact when
   that bound is <= 2^24 (terms = K * C_in <= 518) and float64 otherwise (<= 2^53 for any layer the
   reference accepts, which refuses terms > 65,793 for int32 safety). Exact integers sum to the same value
   in any order, so the accumulator equals the reference's int32 einsum bit for bit, only faster.
3. Add the int32 bias and requantize with the reference's own fixed-point primitive
   (`fixedpoint.multiply_by_quantized_multiplier`, TFLite's MultiplyByQuantizedMultiplier): one definition
   of the rounding rules, not a re-implementation that could drift. Add the output zero point, clamp to
   [act_min, act_max], store int8.
`dwconv1d_q` (depthwise, weight (C, K)): the padded rows viewed as (N, T_out, C, K) windows, an exact
int64 einsum per channel, then step 3.
`quantize_input` is the reference's own `intref.quantize_affine` (x * inv_scale, + offset in float32,
NaN -> the input zero point `attrs["zero_point"]`, else rint and clamp, so +-Inf saturate),
`global_avg_pool_q` sums int8 steps in int64 minus length * zp, `dequantize` is (q - zp) * scale.
Known limits: allocating (batch path); no static-pool (arena) version of these kernels yet.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from model_opts.quant.fixedpoint import INT8_MAX, INT8_MIN, multiply_by_quantized_multiplier
from model_opts.quant.intref import quantize_affine
from system_opts.rows import im2col_view, pad_rows

_F32_EXACT_TERMS = (1 << 24) // (255 * 127)


def _requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, attrs: dict,
                lo: int, hi: int) -> np.ndarray:
    out = multiply_by_quantized_multiplier(acc, multiplier.astype(np.int32), shift.astype(np.int32))
    return np.clip(out.astype(np.int64) + attrs["output_zero_point"], lo, hi).astype(np.int8)


def _int_gemm(cols: np.ndarray, zp: int, weight: np.ndarray) -> np.ndarray:
    """sum_j (cols[..., j] - zp) * weight[o, j] exactly, as int64."""
    ftype = np.float32 if weight.shape[1] <= _F32_EXACT_TERMS else np.float64
    xs = cols.astype(ftype)
    xs -= ftype(zp)
    return np.matmul(xs, weight.T.astype(ftype)).astype(np.int64)


def quantize_input(x: np.ndarray, attrs: dict, inv_scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return quantize_affine(x, inv_scale, offset, attrs["zero_point"])  # channel-last: (C,) rows broadcast


def conv1d_q(x: np.ndarray, attrs: dict, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
             shift: np.ndarray) -> np.ndarray:
    zp = attrs["input_zero_point"]
    xp = pad_rows(x, attrs["padding"], np.int8(zp)) if attrs["padding"] else np.ascontiguousarray(x)
    acc = _int_gemm(im2col_view(xp, attrs["kernel_size"]), zp, weight) + bias
    return _requantize(acc, multiplier, shift, attrs, attrs["act_min"], attrs["act_max"])


def dwconv1d_q(x: np.ndarray, attrs: dict, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
               shift: np.ndarray) -> np.ndarray:
    zp = attrs["input_zero_point"]
    xp = pad_rows(x, attrs["padding"], np.int8(zp)) if attrs["padding"] else np.ascontiguousarray(x)
    xs = xp.astype(np.int64) - zp
    acc = np.einsum("ntck,ck->ntc", sliding_window_view(xs, attrs["kernel_size"], axis=1), weight.astype(np.int64))
    acc = (acc + bias).astype(np.int32)  # the reference adds the bias in int32, wrapping
    return _requantize(acc, multiplier, shift, attrs, attrs["act_min"], attrs["act_max"])


def linear_q(x: np.ndarray, attrs: dict, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
             shift: np.ndarray) -> np.ndarray:
    acc = _int_gemm(x, attrs["input_zero_point"], weight) + bias
    return _requantize(acc, multiplier, shift, attrs, attrs["act_min"], attrs["act_max"])


def global_avg_pool_q(x: np.ndarray, attrs: dict, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    if x.shape[1] != attrs["length"]:
        raise ValueError(f"global average pool was built for {attrs['length']} steps, got {x.shape[1]}")
    s = x.sum(axis=1, dtype=np.int64) - np.int64(attrs["length"]) * attrs["input_zero_point"]
    return _requantize(s, multiplier, shift, attrs, INT8_MIN, INT8_MAX)


def dequantize(x: np.ndarray, attrs: dict) -> np.ndarray:
    return ((x.astype(np.int32) - attrs["zero_point"]) * np.float32(attrs["scale"])).astype(np.float32)


INT8_KERNELS = {"quantize_input": quantize_input, "conv1d_q": conv1d_q, "dwconv1d_q": dwconv1d_q, "linear_q": linear_q,
                "global_avg_pool_q": global_avg_pool_q, "dequantize": dequantize}
