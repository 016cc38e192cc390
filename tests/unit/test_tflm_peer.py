"""TFLM peer (`firmware.tflm`): the exported .tflite run by TFLM's interpreter equals `intref` bit for bit."""
from dataclasses import replace

import importlib.util
import os

import numpy as np
import pytest

if importlib.util.find_spec("tflite_micro") is None:  # installed with the README's `make`; CI must have it
    if os.environ.get("CI"):
        raise RuntimeError("tflite-micro not installed: pip install -e '.[firmware]' (CI is set: no skip)")
    pytest.skip("tflite-micro not installed (pip install -e '.[firmware]')", allow_module_level=True)

from firmware import tflm  # noqa: E402
from har.errors import BadDataError  # noqa: E402
from model_opts.quant import intref, ptq  # noqa: E402
from model_opts.quant.config import QuantConfig  # noqa: E402
from model_opts.quant.fakequant import to_program  # noqa: E402
from model_opts.quant.fixedpoint import INT32_MAX, mean_multiplier, quantize_multipliers  # noqa: E402
from model_opts.quant.intref import (GlobalAvgPoolInt8, InputQuant, Int8Program, LinearInt8,  # noqa: E402
                                     MaxPool1dInt8)

from int8_programs import adversarial_program  # noqa: E402

CONVS = [(8, 5, 2), (6, 3, 0), (5, 4, 3)]  # SAME, VALID, and a padding that needs an explicit PAD


def with_tflm_scales(prog: Int8Program, rng) -> Int8Program:
    """`adversarial_program` with float32 scales from which every multiplier is re-derived by TFLM's rules
    (each channel's real multiplier kept, as far as float32 weight scales allow: the dead channel stays
    dead, shift -31 stays tiny). Dropped, because TFLM's C++ overflows there: the INT32_MAX bias and the
    2^20 multiplier (capped at 8, a left shift of 4)."""
    s = np.float32(prog.input.scale)
    ops = []
    for op in prog.ops:
        if isinstance(op, MaxPool1dInt8):
            ops.append(op)
            continue
        s_out = np.float32(rng.uniform(0.02, 0.5))
        if isinstance(op, GlobalAvgPoolInt8):
            m, sh = mean_multiplier(s, s_out, op.length)
            ops.append(replace(op, multiplier=m, shift=sh, input_scale=float(s), output_scale=float(s_out)))
        else:
            real = op.multiplier.astype(np.float64) * 2.0 ** (op.shift.astype(np.float64) - 31)
            real = np.where(real == 0, 2.0 ** -40, np.minimum(real, 8.0))
            s_w = (real * float(s_out) / float(s)).astype(np.float32).astype(np.float64)
            m, sh = quantize_multipliers(float(s) * s_w / float(s_out))
            bias = np.where(op.bias == INT32_MAX, 12345, op.bias).astype(np.int32)
            ops.append(replace(op, bias=bias, multiplier=m, shift=sh, input_scale=float(s),
                               output_scale=float(s_out), weight_scale=s_w))
        s = s_out
    return replace(prog, ops=tuple(ops), output_scale=float(s))


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(7)
    prog, x = adversarial_program(rng, CONVS, pool=2)
    return with_tflm_scales(prog, rng), x, prog


@pytest.fixture(scope="module")
def ptq_program(trained):
    sim = ptq.simulate(trained.model, trained.normalizer, trained.x_train, QuantConfig(calibration="minmax",
                                                                                      calib_windows=1024))
    return to_program(sim)


def test_synthetic_program_is_bit_exact_in_tflm(synthetic):
    prog, x, _ = synthetic
    q = intref.quantize_input(prog, x)
    got = tflm.run(tflm.to_tflite(prog), q)
    want = intref.run_ops(prog, q)
    assert got.shape == want.shape == (len(x), prog.ops[-1].weight.shape[0])
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 20  # the outputs spread over int8, not a constant


def test_real_ptq_program_is_bit_exact_in_tflm(ptq_program, trained):
    q = intref.quantize_input(ptq_program, trained.x_test[:2000])
    got = tflm.run(tflm.to_tflite(ptq_program), q)
    np.testing.assert_array_equal(got, intref.run_ops(ptq_program, q))
    assert len(q) >= 300 and got.shape == (len(q), 5)


def test_gap_rule_equals_tflm_mean_on_random_scales():
    """GAP (+ an identity linear that passes its int8 output through) against TFLM's MEAN."""
    rng = np.random.default_rng(3)
    compared = 0
    for _ in range(400):
        t, c = int(rng.choice([1, 2, 3, 5, 10, 20, 40, 80, 255, 1000])), int(rng.integers(1, 9))
        s_in, s_out = np.float32(np.exp(rng.uniform(-6, 1))), np.float32(np.exp(rng.uniform(-9, 2)))
        zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, 2))
        m, sh = mean_multiplier(s_in, s_out, t)
        gap = GlobalAvgPoolInt8(t, m, sh, zp_in, zp_out, float(s_in), float(s_out))
        m1, sh1 = quantize_multipliers(np.ones(c))  # s_w = 1, s_out = s_in: multiplier exactly 1
        ident = LinearInt8(np.eye(c, dtype=np.int8), np.zeros(c, np.int32), m1, sh1, zp_out, zp_out, -128,
                           input_scale=float(s_out), output_scale=float(s_out), weight_scale=np.ones(c))
        prog = Int8Program(InputQuant(np.ones(c, np.float32), np.zeros(c, np.float32), float(s_in), zp_in),
                           (gap, ident), float(s_out), zp_out, c, t)
        q = rng.integers(-128, 128, (4, c, t)).astype(np.int8)
        q[1] = np.clip(zp_in + rng.integers(-3, 4, (c, t)), -128, 127)  # means near the zero point
        want = intref.global_avg_pool_int8(gap, q)
        np.testing.assert_array_equal(intref.run_ops(prog, q), want)  # the identity is exact
        np.testing.assert_array_equal(tflm.run(tflm.to_tflite(prog), q), want)
        compared += want.size
    assert compared > 1000


def test_export_is_deterministic_aligned_and_refuses_what_tflm_cannot_express(synthetic):
    prog, _, raw = synthetic
    model = tflm.to_tflite(prog)
    assert tflm.to_tflite(replace(prog)) == model
    assert all(off % 4 == 0 for off in tflm.buffer_offsets(model))  # int32 biases load aligned on an MCU
    with pytest.raises(BadDataError, match="scale"):
        tflm.to_tflite(raw)  # hand-built: integers without scales
    conv = prog.ops[0]
    bad_m = replace(conv, multiplier=conv.multiplier + np.int32(1))
    gap_i = next(i for i, op in enumerate(prog.ops) if isinstance(op, GlobalAvgPoolInt8))
    gap = prog.ops[gap_i]
    for i, bad, why in [(0, bad_m, "multiplier"), (0, replace(conv, act_min=conv.output_zero_point + 1), "RELU"),
                        (0, replace(conv, bias=np.full_like(conv.bias, INT32_MAX)), "overflow"),
                        (gap_i, replace(gap, multiplier=gap.multiplier + 1), "MEAN")]:
        ops = list(prog.ops)
        ops[i] = bad
        with pytest.raises(BadDataError, match=why):
            tflm.to_tflite(replace(prog, ops=tuple(ops)))
    same = replace(gap, output_scale=gap.input_scale, output_zero_point=gap.input_zero_point)
    with pytest.raises(BadDataError, match="equals the input"):
        tflm.to_tflite(replace(prog, ops=prog.ops[:gap_i] + (same,) + prog.ops[gap_i + 1:]))


def test_arena_search_finds_the_boundary(synthetic):
    prog, _, _ = synthetic
    model = tflm.to_tflite(prog)
    need = tflm.min_arena_bytes(model)
    assert tflm.arena_works(model, need) and not tflm.arena_works(model, need - 1)
    reported = tflm.reported_arena_bytes(model)
    # the arena holds at least the input and output of the largest op at once
    sizes = [int(np.prod(shape)) for _, shape in intref.tensor_shapes(prog)]
    largest = max(a + b for a, b in zip(sizes, sizes[1:]))
    assert reported is not None and reported >= largest and need >= largest
    q = intref.quantize_input(prog, np.zeros((3, prog.in_channels, prog.length), np.float32))
    np.testing.assert_array_equal(tflm.TflmRunner(model, need).run(q), intref.run_ops(prog, q))
