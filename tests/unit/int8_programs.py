"""Small int8 programs with corner cases, calibrated on random windows: shared by the int8 session tests."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from model_opts.quant import intref
from model_opts.quant.fixedpoint import quantize_multipliers
from model_opts.quant.intref import Conv1dInt8, GlobalAvgPoolInt8, InputQuant, Int8Program, LinearInt8, MaxPool1dInt8


def layer(rng, q, zp_in, c_out, k=0, pad=0, relu=False):
    """A conv (k > 0) or linear (k == 0) whose requantisation spreads its outputs over int8 on `q`, with
    corner-case channels: 0 bias INT32_MAX (acc + bias wraps in int32), 1 multiplier 0, 2 shift -31,
    3 a single unit tap with a real multiplier 3 (left shift 2), 4 multiplier 2^20 (saturating left shift)."""
    c_in = q.shape[1]
    w = rng.integers(-127, 128, (c_out, c_in, max(k, 1))).astype(np.int8)
    w[3] = 0
    w[3, 0, max(k, 1) // 2] = 1
    bias = rng.integers(-5000, 5000, c_out).astype(np.int32)
    bias[3] = 0
    xs = q.astype(np.float64) - zp_in
    if k:
        cols = sliding_window_view(np.pad(xs, ((0, 0), (0, 0), (pad, pad))), k, axis=2)
        acc = np.einsum("nctk,ock->not", cols, w.astype(np.float64)) + bias[None, :, None]
    else:
        acc = xs @ w[:, :, 0].T.astype(np.float64) + bias
    real = 100.0 / np.maximum(np.abs(acc).max(axis=tuple(i for i in range(acc.ndim) if i != 1)), 1.0)
    real[3], real[4] = 3.0, 2.0 ** 20
    mult, shift = quantize_multipliers(real)
    bias[0] = np.iinfo(np.int32).max
    mult[1], shift[1], shift[2] = 0, 0, -31
    zp_out = int(rng.integers(-20, 20))
    common = (bias, mult, shift)
    if k:
        op = Conv1dInt8(w, *common, pad, zp_in, zp_out, zp_out if relu else -128)
        return op, intref.conv1d_int8(op, q)
    op = LinearInt8(w[:, :, 0], *common, zp_in, zp_out, zp_out if relu else -128)
    return op, intref.linear_int8(op, q)


def adversarial_program(rng, convs, pool, length=23, c_in=3):
    """Input quantizer, convs (c_out, k, pad) with a max pool of width `pool` after the first, global
    pool, linear + ReLU, linear; each layer calibrated on 300 random windows."""
    iq = InputQuant(rng.uniform(0.5, 20, c_in).astype(np.float32), rng.uniform(-50, 50, c_in).astype(np.float32),
                    0.1, 0)
    x = rng.normal(0, 5, (300, c_in, length)).astype(np.float32)
    h = intref.quantize_input(Int8Program(iq, (), 1.0, 0, c_in, length), x)
    zp, ops = 0, []
    for i, (c_out, k, pad) in enumerate(convs):
        op, h = layer(rng, h, zp, c_out, k, pad, relu=i % 2 == 0)
        ops.append(op)
        zp = op.output_zero_point
        if i == 0 and pool:
            ops.append(MaxPool1dInt8(pool))
            h = intref.maxpool1d_int8(ops[-1], h)
    sums = np.abs(h.astype(np.int64) - zp).sum(axis=2).max()
    m, sh = quantize_multipliers(np.array([100.0 / max(sums, 1)]))
    ops.append(GlobalAvgPoolInt8(h.shape[2], int(m[0]), int(sh[0]), zp, 3))
    h = intref.global_avg_pool_int8(ops[-1], h)
    op, h = layer(rng, h, 3, 7, relu=True)
    ops.append(op)
    ops.append(layer(rng, h, op.output_zero_point, 9)[0])
    return Int8Program(iq, tuple(ops), 0.05, ops[-1].output_zero_point, c_in, length).validate(), x
