"""Fixed-point primitives of the int8 path: rounding, saturation and requantization bounds."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from model_opts.quant.fixedpoint import (INT32_MAX, INT32_MIN, affine_qparams, dequantize, mean_multiplier,
                                         multiply_by_quantized_multiplier, quantize, quantize_multiplier,
                                         rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
                                         symmetric_scales)


@settings(max_examples=200, deadline=None)
@given(lo=st.floats(-50, -1e-3), hi=st.floats(1e-3, 50), frac=st.lists(st.floats(0, 1), min_size=1, max_size=64))
def test_quantize_dequantize_round_trip_within_half_a_step(lo, hi, frac):
    scale, zp = affine_qparams(lo, hi)
    x = lo + (hi - lo) * np.array(frac)
    err = np.abs(dequantize(quantize(x, scale, zp), scale, zp) - x)
    # half a step from rounding, plus float32 dequantization and the zero point's own rounding
    assert err.max() <= scale * 0.5 + scale * 0.5 + 1e-5 * max(abs(lo), hi)


def test_zero_is_exact_and_saturation_is_exactly_at_the_int8_limits():
    scale, zp = affine_qparams(-1.3, 2.7)
    assert dequantize(quantize(np.zeros(3), scale, zp), scale, zp).tolist() == [0.0, 0.0, 0.0]
    q = quantize(np.array([-1e9, -1.3 - 10 * scale, 2.7 + 10 * scale, 1e9]), scale, zp)
    assert q.dtype == np.int8 and q.tolist() == [-128, -128, 127, 127]
    lo_edge = quantize(np.array([(-128 - zp) * scale, (127 - zp) * scale]), scale, zp)
    assert lo_edge.tolist() == [-128, 127]


def test_symmetric_weight_scales_use_minus_127_to_127():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]])
    s = symmetric_scales(w)
    q = quantize(w, s[:, None], 0, -127, 127)
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0]


def test_rounding_divide_by_pot_rounds_half_away_from_zero():
    x = np.array([5, -5, 6, -6, 7, -7, 1, -1], dtype=np.int32)
    assert rounding_divide_by_pot(x, 1).tolist() == [3, -3, 3, -3, 4, -4, 1, -1]
    assert rounding_divide_by_pot(np.array([3, -3, 2, -2]), 2).tolist() == [1, -1, 1, -1]


def test_srdhm_saturates_the_single_overflow_case_and_rounds():
    assert saturating_rounding_doubling_high_mul(np.int32(INT32_MIN), np.int32(INT32_MIN)) == INT32_MAX
    # (a * 2^30) * 2 / 2^32 = a / 2; gemmlowp's nudge rounds ties upward (-1.5 -> -1, 1.5 -> 2)
    a = np.array([3, -3, 4, -4, 5, -5], dtype=np.int32)
    assert saturating_rounding_doubling_high_mul(a, np.int32(1 << 30)).tolist() == [2, -1, 2, -2, 3, -2]


@settings(max_examples=300, deadline=None)
@given(real=st.floats(1e-9, 1e3))
def test_quantize_multiplier_reconstructs_the_real(real):
    m, shift = quantize_multiplier(real)
    if m == 0:
        assert real < 2.0 ** -31
        return
    assert (1 << 30) <= m < (1 << 31)
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -30


def test_quantize_multiplier_rounds_a_tie_away_from_zero_like_tflite():
    k = (1 << 30) + 2  # even: round-half-to-even would keep k
    assert quantize_multiplier((k + 0.5) / 2 ** 31) == (k + 1, 0)


@settings(max_examples=300, deadline=None)
@given(s_in=st.floats(1e-4, 10.0), ratio=st.floats(1e-3, 1e3), n=st.integers(1, 5000))
def test_mean_multiplier_folds_one_over_n_into_the_mantissa(s_in, ratio, n):
    s_out = s_in / ratio
    m, shift = mean_multiplier(s_in, s_out, n)
    m0, e0 = quantize_multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))
    assert 0 < m < 2 ** 31 and -31 <= shift <= e0
    real = float(np.float32(s_in)) / (n * float(np.float32(s_out)))
    # m0 is within 2^-31 relative; the truncating division by n costs < 1 of a mantissa > 2^29
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -28
    if n & (n - 1) == 0:  # a power of two divides exactly
        assert (m, shift) == (m0, e0 - (n.bit_length() - 1))


def test_mean_multiplier_bad_values():
    with pytest.raises(ValueError):
        mean_multiplier(0.1, 0.2, 0)
    with pytest.raises(ValueError):
        mean_multiplier(0.1, 0.0, 4)


def test_quantize_multiplier_zero_and_bad_values():
    assert quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError):
        quantize_multiplier(-1.0)


@settings(max_examples=300, deadline=None)
@given(real=st.floats(1e-6, 8.0), acc=st.lists(st.integers(-2 ** 24, 2 ** 24), min_size=1, max_size=50))
def test_requantization_is_within_one_lsb_of_the_float_computation(real, acc):
    acc = np.array(acc, dtype=np.int32)
    m, shift = quantize_multiplier(real)
    got = multiply_by_quantized_multiplier(acc, np.int32(m), np.int32(shift)).astype(np.int64)
    exact = acc.astype(np.float64) * real
    inside = np.abs(exact) < 2 ** 30  # beyond int32 the left shift saturates by design
    assert np.all(np.abs(got[inside] - exact[inside]) <= 1.0)
    assert np.all(np.abs(got[inside] - np.round(exact[inside])) <= 1)


@pytest.mark.parametrize("real", [4.0, 37.5, 1000.0])
def test_left_shift_overflow_saturates_and_keeps_the_int8_clamp_exact(real):
    m, shift = quantize_multiplier(real)
    x = np.array([2 ** 30, -(2 ** 30), INT32_MAX, INT32_MIN + 1], dtype=np.int32)
    out = multiply_by_quantized_multiplier(x, np.int32(m), np.int32(shift)).astype(np.int64)
    assert np.all(np.sign(out) == np.sign(x)) and np.all(np.abs(out) >= 2 ** 29)  # never wraps around
    assert np.clip(out, -128, 127).tolist() == [127, -128, 127, -128]
