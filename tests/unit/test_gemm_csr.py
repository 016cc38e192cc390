"""CSR int8 gemm: the encoding round-trips, and the numpy mirror and the C kernel's HAR_GEMM_CSR mode give
the dense reference's integers bit for bit (corner-case layers of int8_programs, sparsities 0 to 1)."""
import ctypes
from dataclasses import replace

import numpy as np
import pytest

from har.errors import BadDataError
from int8_programs import layer
from model_opts import csr as csr_mod
from model_opts.quant import intref
from system_opts import cbuild

SPARSITIES = (0.0, 0.5, 0.9, 1.0)
GEMM_CSR = 3  # har_int8.h HAR_GEMM_CSR


def sparsify(rng, w: np.ndarray, sparsity: float) -> np.ndarray:
    """`w` with round(sparsity * size) entries zeroed at random, and output channel 1 all zero."""
    w = w.copy()
    flat = w.reshape(-1)
    flat[rng.permutation(flat.size)[:int(round(sparsity * flat.size))]] = 0
    w[min(1, len(w) - 1)] = 0  # an empty CSR row: its output is requantised bias alone
    return w


def conv_layer(rng, sparsity, c_in=5, c_out=7, k=3, pad=1, length=11, relu=True):
    q = rng.integers(-128, 128, (40, c_in, length)).astype(np.int8)
    op, _ = layer(rng, q, int(rng.integers(-20, 20)), c_out, k, pad, relu)
    return replace(op, weight=sparsify(rng, op.weight, sparsity)), q


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_round_trip_and_bytes(sparsity):
    rng = np.random.default_rng(int(sparsity * 10))
    w = sparsify(rng, rng.integers(-128, 128, (9, 37)).astype(np.int8), sparsity)
    c = csr_mod.encode_csr(w)
    assert (c.row_ptr.dtype, c.col.dtype, c.val.dtype) == (np.uint16, np.uint16, np.int8)
    assert np.array_equal(csr_mod.decode_csr(c), w)
    assert c.nnz == np.count_nonzero(w) and np.all(c.val != 0)
    assert c.row_ptr[0] == 0 and np.all(np.diff(c.row_ptr.astype(int)) == np.count_nonzero(w, axis=1))
    for r in range(c.rows):  # increasing columns within each row
        assert np.all(np.diff(c.col[c.row_ptr[r]:c.row_ptr[r + 1]].astype(int)) > 0)
    assert csr_mod.csr_bytes(c) == 2 * (w.shape[0] + 1) + 3 * c.nnz


def test_gemm_matrix_is_the_flat_programs_conv_layout():
    from system_opts import flatten_int8
    rng = np.random.default_rng(0)
    op, _ = conv_layer(rng, 0.5)
    prog = intref.Int8Program(intref.InputQuant(np.ones(5, np.float32), np.zeros(5, np.float32), 1.0, 0),
                              (op,), 1.0, 0, 5, 11)
    flat = flatten_int8.apply(prog)
    assert np.array_equal(flat.weights["op1.conv1d_q.weight"], csr_mod.gemm_matrix(op))


def test_encode_refuses_what_uint16_cannot_index():
    with pytest.raises(BadDataError):
        csr_mod.encode_csr(np.ones((1, 65537), np.int8))
    with pytest.raises(BadDataError):
        csr_mod.encode_csr(np.ones((2, 40000), np.int8))  # 80,000 nonzeros
    with pytest.raises(BadDataError):
        csr_mod.encode_csr(np.ones((2, 3), np.int16))


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_numpy_mirror_equals_dense_reference(sparsity):
    rng = np.random.default_rng(1 + int(sparsity * 10))
    op, q = conv_layer(rng, sparsity)
    assert np.array_equal(csr_mod.conv1d_int8_csr(op, q), intref.conv1d_int8(op, q))
    op0, _ = conv_layer(rng, sparsity, pad=0, relu=False)
    assert np.array_equal(csr_mod.conv1d_int8_csr(op0, q), intref.conv1d_int8(op0, q))
    h = rng.integers(-128, 128, (40, 13)).astype(np.int8)
    lin, _ = layer(rng, h, 4, 9)
    lin = replace(lin, weight=sparsify(rng, lin.weight, sparsity))
    assert np.array_equal(csr_mod.linear_int8_csr(lin, h), intref.linear_int8(lin, h))


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def run_c_gemm(op, q_one: np.ndarray, mode: int, phases: int) -> np.ndarray:
    """One HAR_GEMM record (as system_opts/buffer_pool_c.py fills it) on one (C_in, T) int8 window."""
    lib = cbuild.library()
    is_conv = isinstance(op, intref.Conv1dInt8)
    c_out = op.weight.shape[0]
    if is_conv:
        _, c_in, k = op.weight.shape
        pad, n_in = op.padding, q_one.shape[1]
        rows = (n_in + 2 * pad - k + 1) // phases * phases
        x = np.full((n_in + 2 * pad, c_in), 99, np.int8)  # garbage halo: the kernel writes zp_in there
        x[pad:pad + n_in] = q_one.T
    else:
        c_in, k, pad, n_in, rows, phases = q_one.shape[0], 1, 0, 1, 1, 1
        x = q_one.reshape(1, -1).copy()
    w2d = csr_mod.gemm_matrix(op)
    c = csr_mod.encode_csr(w2d)
    y = np.zeros((rows, c_out), np.int8)
    bias, m, shift = op.bias.astype(np.int32), op.multiplier.astype(np.int32), op.shift.astype(np.int8)
    rec = cbuild.HarOp()
    rec.kind = cbuild.KIND["gemm"]
    rec.i[:12] = [n_in, c_in, k, pad, rows, c_out, phases, op.input_zero_point, op.output_zero_point,
                  op.act_min, op.act_max, mode]
    val = c.val if c.nnz else np.zeros(1, np.int8)  # a valid pointer even with no nonzeros
    col = c.col if c.nnz else np.zeros(1, np.uint16)
    w = val if mode == GEMM_CSR else w2d
    rec.p[:6] = [_address(x), _address(y), _address(w), _address(bias), _address(m), _address(shift)]
    if mode == GEMM_CSR:
        rec.p[6], rec.p[7] = _address(c.row_ptr), _address(col)
    assert lib.har_op_run(ctypes.byref(rec)) == 0
    return y


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("phases", [1, 2])
def test_c_csr_mode_equals_dot_mode_and_reference(sparsity, phases):
    rng = np.random.default_rng(10 + int(sparsity * 10) + phases)
    op, q = conv_layer(rng, sparsity, c_in=6, c_out=9, k=5, pad=2, length=17)
    ref = intref.conv1d_int8(op, q)  # (N, C_out, T_out)
    for window in range(4):
        dot = run_c_gemm(op, q[window], cbuild.GEMM_DOT, phases)
        sparse = run_c_gemm(op, q[window], GEMM_CSR, phases)
        assert np.array_equal(sparse, dot)
        per = len(dot) // phases
        t = np.arange(len(dot))
        assert np.array_equal(sparse[(t % phases) * per + t // phases], ref[window, :, :len(dot)].T)
    h = rng.integers(-128, 128, (3, 13)).astype(np.int8)
    lin, _ = layer(rng, h, -3, 9)
    lin = replace(lin, weight=sparsify(rng, lin.weight, sparsity))
    for window in range(3):
        sparse = run_c_gemm(lin, h[window], GEMM_CSR, 1)
        assert np.array_equal(sparse, run_c_gemm(lin, h[window], cbuild.GEMM_DOT, 1))
        assert np.array_equal(sparse[0], intref.linear_int8(lin, h[window:window + 1])[0])
