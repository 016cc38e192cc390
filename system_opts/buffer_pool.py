"""Static buffer pool: a `FlatProgram` run batch-1 inside one preallocated, planned byte arena.

Steps of `apply` (building a `Session`):
1. Give each tensor of the flat program one physical buffer, laid out for its consumer (channel-last rows):
   - consumed by a conv with padding p: p halo rows above and below the data rows (the producer writes
     the data rows; the conv refills the halo with its pad value, 0 or the folded normaliser's mean,
     before reading, because other buffers share those bytes between inferences);
   - produced by a conv and consumed by a k-wide pool: rows stored phase-major (all t = 0 mod k, then
     t = 1 mod k, ...), so the pool is k - 1 elementwise maxima (or sums) of contiguous blocks;
   - consumed by a linear: one trailing element set to 1.0 before the linear, so the packed bias row
     is applied by the same GEMM.
   A standalone ReLU works in place: its output shares its input's buffer. Each conv also gets an im2col
   scratch buffer (R, K * C_in + 1) live during that op only (trailing ones column = bias), filled and
   multiplied R output rows at a time (`PoolConfig.im2col_rows`; default one pool phase).
2. Plan all buffers with `system_opts.planner` (greedy by default) and allocate one aligned numpy uint8
   arena of `arena_bytes`; every buffer is a typed view at its planned offset.
3. Bind each op to closures over those views at build time: np.copyto (im2col from a zero-copy strided
   view, halos, ones), np.dot(..., out=) for conv / global average pool (a dot with a 1/T row) / linear,
   np.maximum(..., out=) for ReLU and max-pool. A run is then `copy window in; for step: step()`.
   These calls were picked because numpy runs them without heap allocation (np.matmul and broadcast
   ufuncs allocate an iterator per call; np.dot with a C-contiguous `out` goes straight to BLAS). The
   BLAS itself must not allocate either: run single-threaded (threadpoolctl; OpenBLAS's threaded path
   mallocs per call above ~1 MFLOP) and see `flatten`'s `weight_layout` for its small-matrix kernel.
`Session.run(window (C, T)) -> scores (K,)` returns a view into the arena (valid until the next run) or
copies into `out=`. `Session.predict(x)` loops `run` over windows and allocates only its (N, K) result
(plus small Python view objects per window).
Weights: a plain mapping is bound once; any other `WeightSource` (a lazy weight file) is asked for each
op's arrays right before the op and told to release them after (new view objects and, for lazy-release,
one madvise call per op: slower, but measured with no system-allocator call either).
Known limits: batch 1 only; the im2col scratch is the largest buffer, so speed is bought with memory:
smaller `im2col_rows` trades one GEMM call per chunk for a smaller arena; pools whose input is not
produced by a conv, and `normalize`, use broadcasting/strided ufuncs that do allocate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.lib.stride_tricks import as_strided

from har.errors import BadDataError, BadOptionError
from har.measure.artifact import TensorLife
from system_opts.flatten import FlatProgram
from system_opts.kernels import DictWeights, WeightSource
from system_opts.planner import DEFAULT_ALIGNMENT_BYTES, MemoryPlan, plan_buffers

_ARENA_BASE_ALIGN_BYTES = 64


@dataclass(frozen=True)
class PoolConfig:
    """`im2col_rows`: how many output rows of a conv one im2col chunk (and one GEMM) covers. None: one
    pool phase (the whole output when no pool follows), measured as fast as a single GEMM per conv;
    smaller R shrinks the scratch buffer at one more GEMM call per chunk (numbers in the report)."""

    planner: str = "greedy"
    alignment_bytes: int = DEFAULT_ALIGNMENT_BYTES
    im2col_rows: int | None = None

    def __post_init__(self) -> None:
        if self.im2col_rows is not None and self.im2col_rows < 1:
            raise BadOptionError(f"im2col_rows must be >= 1 or None (got {self.im2col_rows})")


@dataclass(frozen=True)
class BufferSpec:
    """A 2-D (rows, cols) buffer; `data` rows [halo, halo + data_rows) hold the tensor."""

    name: str
    rows: int
    cols: int
    dtype: str
    first_use: int
    last_use: int
    halo: int = 0
    data_rows: int = 0
    phases: int = 1  # > 1: rows stored phase-major for a pool of this width

    @property
    def size_bytes(self) -> int:
        return self.rows * self.cols * np.dtype(self.dtype).itemsize


def _layout(program: FlatProgram, im2col_rows: int | None) -> tuple[list[BufferSpec], list[int], dict[int, int]]:
    """Physical buffers, the buffer index of each tensor and the im2col scratch buffer index of each conv."""
    ops, tensors = program.ops, program.tensors
    last = len(ops) - 1
    producer = {op.output: i for i, op in enumerate(ops)}
    consumer = {op.input: i for i, op in enumerate(ops)}
    buf_of = list(range(len(tensors)))
    for op in ops:
        if op.kind == "relu":
            buf_of[op.output] = buf_of[op.input]
    specs: list[BufferSpec] = []
    index: dict[int, int] = {}
    for t in range(len(tensors)):
        root = buf_of[t]
        if root != t:
            continue
        members = [m for m in range(len(tensors)) if buf_of[m] == root]
        cons_i = consumer.get(members[-1])
        cons = ops[cons_i] if cons_i is not None else None
        prod = ops[producer[root]] if root in producer else None
        shape = tensors[members[-1]].shape
        if len(shape) == 2:
            rows, cols = shape
            halo = cons.attrs["padding"] if cons is not None and cons.kind == "conv1d" else 0
            phases = 1
            if cons is not None and cons.kind in ("maxpool1d", "avgpool1d") and prod is not None and prod.kind == "conv1d":
                phases = cons.attrs["kernel_size"]
                rows = rows // phases * phases  # floor mode: the pool never reads the remainder rows
            total = rows + 2 * halo
        else:
            rows, cols, halo, phases = 1, shape[0], 0, 1
            total = 1
            cols += cons is not None and cons.kind == "linear"
        index[root] = len(specs)
        specs.append(BufferSpec(tensors[root].name, total, cols, tensors[root].dtype, producer.get(root, 0),
                                cons_i if cons_i is not None else last, halo, rows, phases))
    scratch = {}
    for i, op in enumerate(ops):
        if op.kind == "conv1d":
            in_cols = specs[index[buf_of[op.input]]].cols
            out = specs[index[buf_of[op.output]]]
            per_phase = out.data_rows // out.phases
            rows = per_phase if im2col_rows is None else min(im2col_rows, per_phase)
            scratch[i] = len(specs)
            specs.append(BufferSpec(f"{op.name}.im2col", rows, op.attrs["kernel_size"] * in_cols + 1,
                                    "float32", i, i, 0, rows))
    return specs, [index[buf_of[t]] for t in range(len(tensors))], scratch


class Session:
    """Batch-1 inference of a flat program inside one planned arena; see the module docstring."""

    def __init__(self, program: FlatProgram, config: PoolConfig = PoolConfig(),
                 weights: Mapping[str, np.ndarray] | WeightSource | None = None):
        self.program, self.config = program, config
        self.buffers, self._buf_of_tensor, self._scratch = _layout(program, config.im2col_rows)
        self.plan: MemoryPlan = plan_buffers(self.buffers, config.planner, config.alignment_bytes)
        raw = np.zeros(self.plan.arena_bytes + _ARENA_BASE_ALIGN_BYTES, dtype=np.uint8)
        base = -raw.ctypes.data % _ARENA_BASE_ALIGN_BYTES
        self.arena = raw[base:base + self.plan.arena_bytes]
        self._views = [self._view(b, o.offset_bytes) for b, o in zip(self.buffers, self.plan.buffers)]
        if weights is None:
            weights = program.weights
        self._static = isinstance(weights, Mapping) or isinstance(weights, DictWeights)
        self.weights = DictWeights(weights) if isinstance(weights, Mapping) else weights
        self._one = np.ones((), np.float32)
        self.constants: dict[str, np.ndarray] = {}
        ops = [(self._bind(i, op), op.params) for i, op in enumerate(program.ops)]
        if self._static:
            self._calls = [(fn, tuple(self.weights.acquire(names))) for fn, names in ops]
        self._ops = ops
        self._input = self._data(0).T  # (C, T) view over the channel-last input rows
        k = program.tensors[-1].shape
        self._output = self._data(len(program.tensors) - 1).reshape(k)

    def _view(self, spec: BufferSpec, offset: int) -> np.ndarray:
        return self.arena[offset:offset + spec.size_bytes].view(spec.dtype).reshape(spec.rows, spec.cols)

    def _data(self, tensor: int) -> np.ndarray:
        """The tensor's rows (sequences) or its (1, F) elements (vectors) inside its buffer."""
        b = self._buf_of_tensor[tensor]
        spec, view = self.buffers[b], self._views[b]
        shape = self.program.tensors[tensor].shape
        if len(shape) == 1:
            return view[:, :shape[0]]
        return view[spec.halo:spec.halo + spec.data_rows]

    def _pool_blocks(self, op) -> list[np.ndarray]:
        k = op.attrs["kernel_size"]
        t_out = self.program.tensors[op.output].shape[0]
        x = self._data(op.input)
        if self.buffers[self._buf_of_tensor[op.input]].phases == k:
            return [x[j * t_out:(j + 1) * t_out] for j in range(k)]
        return [x[j:t_out * k:k] for j in range(k)]  # strided: numpy allocates an iterator here

    def _bind(self, i: int, op):
        x, y = self._data(op.input), self._data(op.output)
        kind = op.kind
        if kind == "conv1d":
            return self._bind_conv(i, op, x, y)
        if kind == "linear":
            full = self._views[self._buf_of_tensor[op.input]]
            ones = full[:, -1:]
            one, relu, nk = self._one, op.attrs["relu"], op.attrs.get("weight_layout") == "nk"

            def run_linear(w):
                np.copyto(ones, one)
                np.dot(full, w.T if nk else w, out=y)
                if relu:
                    np.maximum(y, 0, out=y)
            return run_linear
        if kind in ("maxpool1d", "avgpool1d"):
            blocks = self._pool_blocks(op)
            first, rest = blocks[0], blocks[1:]
            if kind == "maxpool1d":
                def run_pool():
                    if rest:
                        np.maximum(first, rest[0], out=y)
                    else:
                        np.copyto(y, first)
                    for blk in rest[1:]:
                        np.maximum(y, blk, out=y)
                return run_pool
            inv = np.asarray(1.0 / len(blocks), np.float32)

            def run_avg():
                np.copyto(y, first)
                for blk in rest:
                    np.add(y, blk, out=y)
                np.multiply(y, inv, out=y)
            return run_avg
        if kind == "global_avg_pool":
            u = np.full((1, x.shape[0]), 1.0 / x.shape[0], np.float32)
            self.constants[f"{op.name}.mean_row"] = u
            return lambda: np.dot(u, x, out=y)
        if kind == "relu":
            return lambda: np.maximum(y, 0, out=y)
        if kind == "normalize":
            def run_norm(mean, std):
                np.subtract(x, mean, out=y)
                np.divide(y, std, out=y)
            return run_norm
        raise BadDataError(f"op {op.name}: kind {kind!r} has no static-pool kernel")

    def _bind_conv(self, i: int, op, x: np.ndarray, y: np.ndarray):
        k, p, c_in = op.attrs["kernel_size"], op.attrs["padding"], op.attrs["in_channels"]
        relu, nk = op.attrs["relu"], op.attrs.get("weight_layout") == "nk"
        b_in = self._buf_of_tensor[op.input]
        full = self._views[b_in]
        cols = self._views[self._scratch[i]]
        n_rows = y.shape[0]
        phases = self.buffers[self._buf_of_tensor[op.output]].phases
        per_phase = n_rows // phases
        item, kc = full.itemsize, k * c_in
        chunk = cols.shape[0]
        # one chunk = the im2col copy of r output rows of one phase, then one GEMM writing exactly those rows
        chunks, row0 = [], 0
        for j in range(phases):
            for start in range(0, per_phase, chunk):
                r = min(chunk, per_phase - start)
                first_in = j + phases * start  # padded input row read by this chunk's first output row
                assert first_in + phases * (r - 1) + k <= full.shape[0], "im2col view would read past its buffer"
                src = as_strided(full[first_in:], (r, kc), (phases * c_in * item, item), writeable=False)
                chunks.append((cols[:r, :kc], src, cols[:r], y[row0:row0 + r]))
                row0 += r
        ones, one = cols[:, -1:], self._one
        halo = as_strided(full, (2, p, c_in), ((full.shape[0] - p) * c_in * item, c_in * item, item)) if p else None
        zeros = np.zeros(c_in, np.float32)

        def run_conv(w, pad_value=zeros):
            if halo is not None:
                np.copyto(halo, pad_value)
            np.copyto(ones, one)
            wk = w.T if nk else w
            for dst, src, c, yy in chunks:
                np.copyto(dst, src)
                np.dot(c, wk, out=yy)
            if relu:
                np.maximum(y, 0, out=y)
        return run_conv

    def run(self, window: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Scores (K,) of one un-normalised (C, T) float32 window: a view into the arena unless `out`."""
        if window.shape != self._input.shape:  # copyto would silently broadcast a (1, T) or (C, 1) window
            raise BadDataError(f"expected one window of shape {self._input.shape}, got {window.shape}")
        np.copyto(self._input, window)
        if self._static:
            for fn, w in self._calls:
                fn(*w)
        else:
            src = self.weights
            for fn, names in self._ops:
                w = src.acquire(names)
                fn(*w)
                del w
                src.release(names)
        if out is None:
            return self._output
        np.copyto(out, self._output)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, C, T) windows -> (N, K) scores, one `run` per window (allocates the result)."""
        x = np.asarray(x, dtype=np.float32)
        c, t = self.program.input_shape_ct
        if x.ndim != 3 or x.shape[1:] != (c, t):
            raise BadDataError(f"expected windows of shape (N, {c}, {t}), got {x.shape}")
        out = np.empty((len(x), *self._output.shape), np.float32)
        for i in range(len(x)):
            self.run(x[i], out=out[i])
        return out

    def tensor_lifetimes(self) -> list[TensorLife]:
        return [TensorLife(b.name, b.size_bytes, b.first_use, b.last_use) for b in self.buffers]


def apply(program: FlatProgram, config: PoolConfig = PoolConfig(),
          weights: Mapping[str, np.ndarray] | WeightSource | None = None) -> Session:
    """A `Session` running `program` in a planned static arena."""
    return Session(program, config, weights)
