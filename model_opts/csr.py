"""CSR storage of a sparse int8 gemm weight matrix, and a numpy mirror of the C kernel's CSR loop order.

The matrix is the one the flat program and the C kernels store per conv / linear (system_opts/flatten_int8.py):
W (C_out rows x `terms` columns, int8), term j = kk * C_in + ch (channel-last im2col order), i.e.
W[c] = weight[c].transpose(1, 0).reshape(-1) of the reference's (C_out, C_in, K) array (`gemm_matrix`).
Steps:
1. `encode_csr(W)`: per row c, the column indices of its nonzeros in increasing order (`col`, uint16) and their
   values (`val`, int8), concatenated row after row; `row_ptr` (uint16, C_out + 1) gives row c's slice
   row_ptr[c]:row_ptr[c + 1] (an all-zero row is an empty slice). `decode_csr` inverts it exactly.
2. `gemm_csr(cols, csr, ...)`: what `HAR_GEMM_CSR` in system_opts/csrc/har_int8.c computes per output (t, c):
   acc = sum over row c's nonzeros of (cols[t, col[j]] - zp_in) * val[j] (exact: every partial sum fits
   int32 under the kernels' contract), then acc + bias wrapping in int32, TFLite requantisation
   (`fixedpoint.multiply_by_quantized_multiplier`), + zp_out, clamp to [act_min, act_max]. A sum of exact
   integers does not depend on its order, so this equals the dense reference (`intref`) bit for bit.
   `conv1d_int8_csr` / `linear_int8_csr` wrap it with the reference's (N, C, T) calling convention.
Storage: `csr_bytes` = 2 (C_out + 1) + 3 nnz against C_out * terms dense: smaller below density ~1/3.
Limits: uint16 indices, so terms <= 65,536 and nnz <= 65,535 per matrix (BadDataError otherwise); the
numpy mirror gathers (rows x nnz) values at once, so it is for checking, not for speed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from har.errors import BadDataError
from model_opts.quant.fixedpoint import multiply_by_quantized_multiplier
from model_opts.quant.intref import Conv1dInt8, LinearInt8

INDEX_MAX = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class Csr:
    row_ptr: np.ndarray  # uint16 (rows + 1,)
    col: np.ndarray  # uint16 (nnz,), increasing within a row
    val: np.ndarray  # int8 (nnz,), all nonzero
    terms: int  # columns of the dense matrix

    @property
    def rows(self) -> int:
        return len(self.row_ptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.val)


def gemm_matrix(op: Conv1dInt8 | LinearInt8) -> np.ndarray:
    """The (C_out, terms) int8 matrix the flat program stores for a reference conv / linear."""
    w = op.weight
    if w.ndim == 2:
        return np.ascontiguousarray(w)
    return np.ascontiguousarray(w.transpose(0, 2, 1).reshape(w.shape[0], -1))


def encode_csr(w2d: np.ndarray) -> Csr:
    w2d = np.asarray(w2d)
    if w2d.dtype != np.int8 or w2d.ndim != 2:
        raise BadDataError(f"CSR encodes a 2-D int8 matrix, got {w2d.dtype} {w2d.shape}")
    rows, terms = w2d.shape
    nz_rows, nz_cols = np.nonzero(w2d)  # row-major order: rows ascending, columns ascending within a row
    if terms > INDEX_MAX + 1 or len(nz_cols) > INDEX_MAX:
        raise BadDataError(f"CSR with uint16 indices holds <= {INDEX_MAX + 1} columns and <= {INDEX_MAX} "
                           f"nonzeros; got {terms} columns, {len(nz_cols)} nonzeros")
    row_ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(nz_rows, minlength=rows), out=row_ptr[1:])
    return Csr(row_ptr.astype(np.uint16), nz_cols.astype(np.uint16), w2d[nz_rows, nz_cols].copy(), int(terms))


def decode_csr(csr: Csr) -> np.ndarray:
    w = np.zeros((csr.rows, csr.terms), dtype=np.int8)
    rows = np.repeat(np.arange(csr.rows), np.diff(csr.row_ptr.astype(np.int64)))
    w[rows, csr.col.astype(np.int64)] = csr.val
    return w


def csr_bytes(csr: Csr) -> int:
    """Bytes a device stores for the matrix: row_ptr + col + val."""
    return int(csr.row_ptr.nbytes + csr.col.nbytes + csr.val.nbytes)


def gemm_csr(cols: np.ndarray, csr: Csr, bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray,
             zp_in: int, zp_out: int, act_min: int, act_max: int) -> np.ndarray:
    """int8 (M, terms) im2col rows -> int8 (M, C_out), the C kernel's HAR_GEMM_CSR arithmetic."""
    if cols.ndim != 2 or cols.shape[1] != csr.terms:
        raise BadDataError(f"gemm_csr needs (M, {csr.terms}) rows, got {cols.shape}")
    prod = (cols[:, csr.col.astype(np.int64)].astype(np.int64) - zp_in) * csr.val.astype(np.int64)
    # segment sums by a prefix sum with a leading 0: row c's sum = cs[row_ptr[c + 1]] - cs[row_ptr[c]]
    cs = np.zeros((len(cols), csr.nnz + 1), dtype=np.int64)
    np.cumsum(prod, axis=1, out=cs[:, 1:])
    ptr = csr.row_ptr.astype(np.int64)
    acc = cs[:, ptr[1:]] - cs[:, ptr[:-1]]
    a = (acc + bias.astype(np.int64)[None, :]).astype(np.int32)  # wraps like the C kernel's uint32 add
    out = multiply_by_quantized_multiplier(a, multiplier.astype(np.int32)[None, :],
                                           shift.astype(np.int32)[None, :]).astype(np.int64) + zp_out
    return np.clip(out, act_min, act_max).astype(np.int8)


def conv1d_int8_csr(op: Conv1dInt8, q: np.ndarray, csr: Csr | None = None) -> np.ndarray:
    """`intref.conv1d_int8` through `gemm_csr`: int8 (N, C_in, T) -> int8 (N, C_out, T_out)."""
    csr = csr or encode_csr(gemm_matrix(op))
    c_out, _, k = op.weight.shape
    rows = q.transpose(0, 2, 1)  # channel-last, as the kernels read it
    if op.padding:
        rows = np.pad(rows, ((0, 0), (op.padding, op.padding), (0, 0)), constant_values=op.input_zero_point)
    win = sliding_window_view(rows, k, axis=1)  # (N, T_out, C_in, K)
    n, t_out = win.shape[:2]
    cols = win.transpose(0, 1, 3, 2).reshape(n * t_out, -1)  # term kk * C_in + ch
    out = gemm_csr(cols, csr, op.bias, op.multiplier, op.shift, op.input_zero_point, op.output_zero_point,
                   op.act_min, op.act_max)
    return np.ascontiguousarray(out.reshape(n, t_out, c_out).transpose(0, 2, 1))


def linear_int8_csr(op: LinearInt8, q: np.ndarray, csr: Csr | None = None) -> np.ndarray:
    """`intref.linear_int8` through `gemm_csr`: int8 (N, C_in) -> int8 (N, C_out)."""
    csr = csr or encode_csr(gemm_matrix(op))
    return gemm_csr(q, csr, op.bias, op.multiplier, op.shift, op.input_zero_point, op.output_zero_point,
                    op.act_min, op.act_max)
