"""The flat executor: one plain numpy function per op kind, run over a `FlatProgram` in a loop.

No `nn.Module` dispatch, no autograd, no torch at all: `run_program` transposes the (N, C, T) windows to
channel-last (N, T, C) once, then calls `KERNELS[op.kind](x, attrs, *weights)` for each op, in order.
Weights come from a `WeightSource` (a plain mapping, or a lazy weight file) that is asked for each op's
arrays right before the op and told to release them right after, which is what lets a lazy source keep
only one layer resident.

Conv1d is im2col + GEMM: the padded input is viewed (zero-copy, `system_opts.rows`) as (N, T_out, K * C_in)
rows, copied to a contiguous matrix and multiplied by the packed (K * C_in, C_out) weight; the packed
weight's last row is the bias.
Known limits: every op allocates its output (this is the reference path used for batch accuracy runs;
`system_opts.buffer_pool.Session` is the allocation-free one); windows are processed in chunks of
`batch_size` to bound the im2col matrix.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np

from har.errors import BadDataError
from system_opts.rows import im2col_view, pad_rows


class WeightSource(Protocol):
    def acquire(self, names: Sequence[str]) -> list[np.ndarray]:
        """The arrays called `names`, usable until `release(names)`."""

    def release(self, names: Sequence[str]) -> None: ...


class DictWeights:
    """Weights already in memory: acquire is a lookup, release does nothing."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = arrays

    def acquire(self, names: Sequence[str]) -> list[np.ndarray]:
        return [self.arrays[n] for n in names]

    def release(self, names: Sequence[str]) -> None:
        return None


def conv1d(x: np.ndarray, attrs: dict, weight: np.ndarray, pad_value: np.ndarray | None = None) -> np.ndarray:
    xp = pad_rows(x, attrs["padding"], pad_value) if attrs["padding"] else np.ascontiguousarray(x)
    cols = np.ascontiguousarray(im2col_view(xp, attrs["kernel_size"]))
    weight = kn(weight, attrs)
    y = np.matmul(cols, weight[:-1])
    y += weight[-1]
    return np.maximum(y, 0, out=y) if attrs["relu"] else y


def kn(weight: np.ndarray, attrs: dict) -> np.ndarray:
    """The packed (rows, C_out) matrix, whichever way it is stored."""
    return weight.T if attrs.get("weight_layout", "kn") == "nk" else weight


def linear(x: np.ndarray, attrs: dict, weight: np.ndarray) -> np.ndarray:
    weight = kn(weight, attrs)
    y = x @ weight[:-1]
    y += weight[-1]
    return np.maximum(y, 0, out=y) if attrs["relu"] else y


def _pool_blocks(x: np.ndarray, k: int) -> np.ndarray:
    n, t, c = x.shape
    return x[:, :t // k * k].reshape(n, t // k, k, c)


def maxpool1d(x: np.ndarray, attrs: dict) -> np.ndarray:
    return _pool_blocks(x, attrs["kernel_size"]).max(axis=2)


def avgpool1d(x: np.ndarray, attrs: dict) -> np.ndarray:
    return _pool_blocks(x, attrs["kernel_size"]).mean(axis=2, dtype=np.float32)


def global_avg_pool(x: np.ndarray, attrs: dict) -> np.ndarray:
    return x.mean(axis=1, dtype=np.float32)


def relu(x: np.ndarray, attrs: dict) -> np.ndarray:
    return np.maximum(x, 0)


def normalize(x: np.ndarray, attrs: dict, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x - mean) / std).astype(np.float32)


KERNELS = {"conv1d": conv1d, "linear": linear, "maxpool1d": maxpool1d, "avgpool1d": avgpool1d,
           "global_avg_pool": global_avg_pool, "relu": relu, "normalize": normalize}


def kernel(kind: str):
    """The batch kernel of an op kind. Int8 kinds come from `system_opts.kernels_int8`, imported here
    on first need: it pulls in `model_opts.quant` (and torch with it), which fp32 runs never need."""
    if kind in KERNELS:
        return KERNELS[kind]
    from system_opts.kernels_int8 import INT8_KERNELS
    if kind not in INT8_KERNELS:
        raise BadDataError(f"op kind {kind!r} has no kernel in the flat executor")
    return INT8_KERNELS[kind]


def check_windows(x: np.ndarray, input_shape_ct: tuple[int, int]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or tuple(x.shape[1:]) != tuple(input_shape_ct):
        raise BadDataError(f"expected windows of shape (N, {input_shape_ct[0]}, {input_shape_ct[1]}), got {x.shape}")
    return x.astype(np.float32, copy=False)


def run_program(program, x: np.ndarray, weights: WeightSource | None = None, batch_size: int = 256) -> np.ndarray:
    """Scores (N, K) of a `FlatProgram` for un-normalised windows `x` (N, C, T)."""
    x = check_windows(x, program.input_shape_ct)
    source = weights if weights is not None else DictWeights(program.weights)
    kernels = [kernel(op.kind) for op in program.ops]
    outs = []
    for start in range(0, len(x), batch_size):
        h = np.ascontiguousarray(x[start:start + batch_size].transpose(0, 2, 1))
        for op, fn in zip(program.ops, kernels):
            arrays = source.acquire(op.params)
            h = fn(h, op.attrs, *arrays)
            del arrays
            source.release(op.params)
        outs.append(h)
    out = program.tensors[-1]
    return np.concatenate(outs) if outs else np.zeros((0, *out.shape), dtype=out.dtype)
