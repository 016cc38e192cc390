"""Static buffer pool for the int8 flat program: batch-1 inference without heap allocation, bit-exact with
`model_opts.quant.intref` (int8 logits and dequantised scores).

Two memories, each planned with `system_opts.planner` (greedy, 16-byte alignment by default):
- DEVICE arena (`arena_bytes()`, `plan`, `tensor_lifetimes()`): what a C runtime of this op list needs:
  the float32 window, every int8 activation (with halo rows for padded convs), an int32 accumulator per
  conv / linear / global pool live during its op only (the planner overlaps them: one layer's worth), and
  the float32 scores. This is the figure `Footprint.arena_bytes` / `model_bytes` use.
- HOST scratch (`host_scratch_bytes`): float im2col and GEMM outputs and int64 requantisation temporaries,
  which exist only because numpy has no fused int8 kernels. `host_constant_bytes` counts what is derived
  once from in-memory weights: float weight copies and per-channel values repeated over the output rows
  (tiles: numpy allocates an iterator for every broadcasting ufunc, so operands must match in shape).
Steps of `Int8Session(program)` (buffers laid out by `system_opts.int8_layout`):
1. Layout (channel-last rows, as `system_opts.buffer_pool`): a tensor read by a conv with padding p gets p
   halo rows each side, filled with the input zero point (== zero padding of the real input) by that conv
   before it reads. A conv output read by a k-wide max pool is stored phase-major (rows t = 0 mod k, then
   1 mod k, ...) and the pool runs IN PLACE: out = max of the k blocks, written over block 0 (each
   element is read before, and only by, its own write); the next conv's halo after it lies in block 1,
   dead by then. A conv never writes over its input (a direct C conv reads while it writes); the input
   quantizer transforms the float window in place before casting it into the int8 rows (a NaN becomes
   the input zero point, through a host bool mask and a masked copy: `intref.quantize_affine`'s rule).
2. Conv: im2col of the int8 rows (strided views cast into a float scratch by np.copyto), minus the input
   zero point, one np.dot(out=) with float weights. Every product and partial sum is an integer of
   magnitude <= terms * 255 * 128: exact in float32 for terms = K * C_in <= 514, else float64 is used, so
   the sum equals the reference's int32 einsum whatever BLAS's order. Cast to the int32 accumulator, add
   the int32 bias there (wrapping like the reference). Linear: the same with one row. Global pool: a dot
   with a ones row (exact likewise), minus length * zp_in in int32. Depthwise conv: per tap k, the
   input rows t + k (one strided view per output phase) cast into an int32 scratch, minus zp_in, times
   the tap's weight tile, added onto the accumulator that starts as the bias tile (int32, exact).
3. Requantise (TFLite MultiplyByQuantizedMultiplier, `model_opts.quant.fixedpoint`) in int64, out= only:
      x = clamp(acc << left, int32 range)          only for ops with a positive shift
      x = x * m                                    |x * m| < 2^62
      y = (x + 2^30 + half * 2^31 - [x + 2^30 < 0] * [e > 0] * 2^31) >> (31 + e)
      q = int8(clamp(y + zp_out, act_min, act_max))  a fused ReLU is act_min = zp_out
   with e = max(-shift, 0), half = 2^e >> 1. The third line is SaturatingRoundingDoublingHighMul (its
   nudge and truncating division are floor((x * m + 2^30) / 2^31); m >= 0, so its INT32_MIN^2 saturation
   cannot occur) followed by RoundingDivideByPOT (ties away from zero: floor((v + half - [v < 0]) / 2^e)),
   merged into one floor division since floor(floor(a) / n) = floor(a / n). Checked against the
   fixedpoint functions on extreme values in tests/unit/test_buffer_pool_int8.py.
4. Dequantize: (q - zp) * scale in float32: the correctly rounded product, as the reference's.
Every callable is bound at build time to views at planned offsets; `run` is a loop of calls. BLAS must
run single-threaded (threadpoolctl; OpenBLAS's threaded path mallocs per call). In-memory weights are
prepared once; another `WeightSource` (lazy weight file) is acquired per op, prepared into host scratch
and released.
Known limits: batch 1; a max pool whose input is not a conv output runs on strided views (numpy may
allocate there); host memory (scratch + constants) exceeds the device arena several times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.lib.stride_tricks import as_strided

from har.errors import BadDataError
from har.measure.artifact import TensorLife
from system_opts.buffer_pool import BufferSpec
from system_opts.flatten import FlatProgram
from system_opts.int8_layout import TILES, make_arena, nk_layout, numpy_layout
from system_opts.kernels import DictWeights, WeightSource
from system_opts.planner import DEFAULT_ALIGNMENT_BYTES, plan_buffers

KINDS = ("quantize_input", "conv1d_q", "dwconv1d_q", "linear_q", "maxpool1d", "global_avg_pool_q", "dequantize")
_I64 = np.int64
_REQUANT = ("conv1d_q", "dwconv1d_q", "linear_q", "global_avg_pool_q")


def _c(value, dtype) -> np.ndarray:
    """A 0-d constant: ufuncs given Python scalars convert them on every call."""
    return np.asarray(value, dtype=dtype)


@dataclass(frozen=True)
class Int8PoolConfig:
    planner: str = "greedy"
    alignment_bytes: int = DEFAULT_ALIGNMENT_BYTES
    # which session `system_opts.artifacts.int8_session` builds: "numpy" (this module) or "c"
    # (`system_opts.buffer_pool_c`: same layout, no host scratch)
    kernels: str = "numpy"
    # C kernels only: convs with K * C_in below this run time-major (faster; int16 + int32 scratch in
    # the arena), the others as dot products; 0 = smallest arena
    time_major_max_terms: int = 64


def _nothing() -> None:
    return None


def _filler(tile: np.ndarray):
    """fill(row): `row` ((C,) or a 0-d value) into every row of `tile` without broadcasting: row 0, then
    blocks doubling in size (a broadcasting ufunc or copyto builds an iterator, one malloc per call)."""
    steps, n = [], 1
    while n < tile.shape[0]:
        m = min(n, tile.shape[0] - n)
        steps.append((tile[n:n + m], tile[:m]))
        n += m
    first = tile[0]

    def fill(row: np.ndarray) -> None:
        if row.ndim == 0:
            np.copyto(tile, row)
            return
        np.copyto(first, row)
        for dst, src in steps:
            np.copyto(dst, src)
    return fill


class Int8Session:
    """Batch-1 inference of an int8 flat program in one planned device arena; see the module docstring.

    `program`: an int8 `FlatProgram` (`system_opts.flatten_int8.apply`), or an `Int8Program` /
    `Int8Artifact`, flattened here with dequantised output. `run(window)` returns the program's output
    (float32 scores, or int8 logits for a program built without `dequantize`); `logits` is the int8
    logits view of the last run."""

    def __init__(self, program, config: Int8PoolConfig = Int8PoolConfig(),
                 weights: Mapping[str, np.ndarray] | WeightSource | None = None):
        if not isinstance(program, FlatProgram):
            from system_opts import flatten_int8
            program = flatten_int8.apply(program)
        bad = [op.kind for op in program.ops if op.kind not in KINDS]
        if bad or not program.ops or program.ops[0].kind != "quantize_input":
            raise BadDataError(f"Int8Session needs an int8 flat program starting with quantize_input (ops "
                               f"{', '.join(op.kind for op in program.ops[:3])}, ...; unsupported: {bad or 'none'})")
        self.program, self.config = program, config
        weights = program.weights if weights is None else weights
        self._static = isinstance(weights, (Mapping, DictWeights))
        self.weights = DictWeights(weights) if isinstance(weights, Mapping) else weights
        self.buffers, host, prepared, self._place, self._phases = self._layout()
        self.plan = plan_buffers(self.buffers, config.planner, config.alignment_bytes)
        self.arena, self._views = make_arena(self.buffers, self.plan)
        # in-memory weights are prepared once into constants; lazily read ones per op into host scratch
        self.constants = {s.name: np.zeros((s.rows, s.cols), s.dtype) for s in prepared} if self._static else {}
        self.host_buffers = host if self._static else host + prepared
        # numpy needs aligned int64 / float views whatever alignment the device plan is given
        self.host_plan = plan_buffers(self.host_buffers, config.planner, max(config.alignment_bytes, 16))
        self.host_arena, host_views = make_arena(self.host_buffers, self.host_plan)
        self._views.update(host_views)
        self._views.update(self.constants)
        self._ops = [(*self._bind(op), op.params) for op in program.ops]
        if self._static:
            for prepare, _, names in self._ops:
                prepare(*self.weights.acquire(names))
            self._runs = [run for _, run, _ in self._ops]
        self._input = self._data(0).T  # (C, T) view over the channel-last float rows
        self._output = self._data(len(program.tensors) - 1).reshape(program.tensors[-1].shape)
        last_q = max(t for t, s in enumerate(program.tensors) if s.dtype == "int8")
        self.logits = self._data(last_q).reshape(program.tensors[last_q].shape)

    def _layout(self):
        device, host, prepared, place, phases = numpy_layout(self.program, self._left_shifts())
        q = self.program.ops[0]  # the input quantizer's NaN mask: host-only (a C kernel tests v != v)
        host.append(BufferSpec(f"{q.name}.nan", *self.program.tensors[q.output].shape, "bool", 0, 0))
        return device, host, prepared, place, phases

    def _left_shifts(self) -> set[str]:
        """Ops with a positive shift somewhere (only they get the left-shift steps); checks multipliers."""
        out = set()
        for op in self.program.ops:
            if op.kind not in _REQUANT:
                continue
            names = [f"{op.name}.multiplier", f"{op.name}.shift"]
            multiplier, shift = self.weights.acquire(names)
            if np.any(multiplier < 0):
                raise BadDataError(f"{op.name}: negative requantisation multiplier")
            if np.any(shift > 0):
                out.add(op.name)
            self.weights.release(names)
        return out

    @property
    def host_scratch_bytes(self) -> int:
        """Bytes of the planned host work arena (numpy-only float / int64 buffers; not on a device)."""
        return self.host_plan.arena_bytes

    @property
    def host_constant_bytes(self) -> int:
        """Float weight copies and int64 requantisation tiles prepared once from in-memory weights."""
        return int(sum(a.nbytes for a in self.constants.values()))

    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    def _data(self, tensor: int) -> np.ndarray:
        b, row0, n = self._place[tensor]
        return self._views[self.buffers[b].name][row0:row0 + n]

    def _padded(self, tensor: int, p: int) -> np.ndarray:
        b, row0, n = self._place[tensor]
        return self._views[self.buffers[b].name][row0 - p:row0 + n + p]

    def _bind(self, op):
        """(prepare(*weights), run()) of one op: `prepare` writes everything `run` reads besides the
        activations (float weights, bias and requantisation tiles) into fixed buffers."""
        x, y, attrs, v = self._data(op.input), self._data(op.output), op.attrs, self._views
        if op.kind == "quantize_input":
            lo, hi, zp = _c(-128, np.float32), _c(127, np.float32), _c(attrs["zero_point"], np.float32)
            inv_scale, offset, nan = v[f"{op.name}.inv_scale"], v[f"{op.name}.offset"], v[f"{op.name}.nan"]
            fill_inv, fill_offset = _filler(inv_scale), _filler(offset)

            def prepare_quantize(inv_scale_row, offset_row):
                fill_inv(inv_scale_row)
                fill_offset(offset_row)

            def run_quantize():
                with np.errstate(over="ignore"):  # +-FLT_MAX * inv_scale -> +-Inf, saturated below
                    np.multiply(x, inv_scale, out=x)  # in place: the float window is dead after this op
                    np.add(x, offset, out=x)
                np.rint(x, out=x)
                np.maximum(x, lo, out=x)
                np.minimum(x, hi, out=x)
                np.isnan(x, out=nan)  # NaN -> the input zero point (intref.quantize_affine)
                np.copyto(x, zp, where=nan)
                np.copyto(y, x, casting="unsafe")
            return prepare_quantize, run_quantize
        if op.kind == "dequantize":
            zp, scale = _c(attrs["zero_point"], np.float32), _c(attrs["scale"], np.float32)

            def run_dequantize():
                np.copyto(y, x)
                np.subtract(y, zp, out=y)
                np.multiply(y, scale, out=y)
            return _nothing, run_dequantize
        if op.kind == "maxpool1d":
            return _nothing, self._bind_pool(op, x, y)
        prepare_rq, requant = self._requantizer(op, y)
        if op.kind == "dwconv1d_q":
            return self._bind_dwconv(op, prepare_rq, requant)
        cols, accf, acc = v[f"{op.name}.cols"], v[f"{op.name}.accf"], v[f"{op.name}.acc"]
        if op.kind == "global_avg_pool_q":
            if x.shape[0] != attrs["length"]:
                raise BadDataError(f"{op.name}: built for {attrs['length']} steps, gets {x.shape[0]}")
            ones = np.ones((1, x.shape[0]), cols.dtype)
            self.constants[f"{op.name}.ones"] = ones
            tzp = _c(attrs["length"] * attrs["input_zero_point"], np.int32)

            def run_gap():
                np.copyto(cols, x)
                np.dot(ones, cols, out=accf)  # a sum of int8 values: exact (see float_type)
                np.copyto(acc, accf, casting="unsafe")
                np.subtract(acc, tzp, out=acc)
                requant(acc)
            return prepare_rq, run_gap
        return self._bind_gemm(op, x, prepare_rq, requant)

    def _bind_pool(self, op, x: np.ndarray, y: np.ndarray):
        k = op.attrs["kernel_size"]
        t_out = y.shape[0]
        if self._phases.get(op.input) == k:
            # in place over block 0, passed as `y` itself: numpy then skips its overlap analysis, which
            # mallocs for two distinct views of the same bytes
            first, rest = y, [x[j * t_out:(j + 1) * t_out] for j in range(1, k)]
        else:
            first, rest = x[0:t_out * k:k], [x[j:t_out * k:k] for j in range(1, k)]  # strided: may allocate

        def run_pool():
            if first is not y:
                np.copyto(y, first)
            for blk in rest:
                np.maximum(y, blk, out=y)
        return run_pool

    def _requantizer(self, op, y: np.ndarray):
        """(prepare(multiplier, shift), requant(acc int32)): module docstring, step 3."""
        name, attrs, v = op.name, op.attrs, self._views
        x64, t64 = v[f"{name}.x64"], v[f"{name}.t64"]
        has_left = f"{name}.left" in v
        tiles = [v[f"{name}.{key}"] for key in (TILES if has_left else TILES[:-1])]
        mul, half, shift, neg = tiles[:4]
        left = tiles[4] if has_left else None
        m, s, e, h, big_e, nz = v[f"{name}.rows"]
        zero, one = _c(0, _I64), _c(1, _I64)
        # a per-tensor multiplier fills the tiles as a 0-d value
        per_tensor = m.size != tiles[0].shape[1]  # the global pool: one multiplier, kept twice in the rows
        fills = [(_filler(t), r[:1].reshape(()) if per_tensor else r) for t, r in zip(tiles, (m, h, big_e, nz, s))]
        lo = _c(attrs.get("act_min", -128), _I64)
        hi = _c(attrs.get("act_max", 127), _I64)
        zp = _c(attrs["output_zero_point"], _I64)
        i32_lo, i32_hi = _c(-(1 << 31), _I64), _c((1 << 31) - 1, _I64)
        nudge, s31, s63 = _c(1 << 30, _I64), _c(31, _I64), _c(63, _I64)
        out = y.reshape(x64.shape)

        def prepare_rq(multiplier, shift):
            np.copyto(m, multiplier.reshape(()) if per_tensor else multiplier)
            np.copyto(s, shift.reshape(()) if per_tensor else shift)
            np.negative(s, out=e)
            np.maximum(e, zero, out=e)  # right shift of RoundingDivideByPOT
            np.maximum(s, zero, out=s)  # left shift
            np.left_shift(one, e, out=h)
            np.right_shift(h, one, out=h)
            np.left_shift(h, s31, out=h)
            np.add(h, nudge, out=h)  # 2^30 + (2^e >> 1) * 2^31
            np.add(e, s31, out=big_e)
            np.minimum(e, one, out=nz)
            np.left_shift(nz, s31, out=nz)  # 2^31 where e > 0
            for fill, row in fills:
                fill(row)

        def requant(acc):
            np.copyto(x64, acc)
            if has_left:
                np.left_shift(x64, left, out=x64)
                np.minimum(x64, i32_hi, out=x64)
                np.maximum(x64, i32_lo, out=x64)
            np.multiply(x64, mul, out=x64)
            # SRDHM then RoundingDivideByPOT as one floor division (module docstring, step 3)
            np.add(x64, nudge, out=t64)
            np.right_shift(t64, s63, out=t64)
            np.bitwise_and(t64, neg, out=t64)
            np.add(x64, half, out=x64)
            np.subtract(x64, t64, out=x64)
            np.right_shift(x64, shift, out=x64)
            np.add(x64, zp, out=x64)
            np.maximum(x64, lo, out=x64)
            np.minimum(x64, hi, out=x64)
            np.copyto(out, x64, casting="unsafe")
        return prepare_rq, requant

    def _bind_gemm(self, op, x: np.ndarray, prepare_rq, requant):
        v, name, attrs = self._views, op.name, op.attrs
        cols, accf, acc, wf = v[f"{name}.cols"], v[f"{name}.accf"], v[f"{name}.acc"], v[f"{name}.wf"]
        bias_tile = v[f"{name}.bias"]
        fill_bias = _filler(bias_tile)
        nk = nk_layout(acc.shape[1], acc.shape[0])  # wf was laid out by the same rule
        zp = _c(attrs["input_zero_point"], cols.dtype)
        copies, halo, zp8 = [], None, _c(attrs["input_zero_point"], np.int8)
        if op.kind == "conv1d_q":
            k, p, c_in = attrs["kernel_size"], attrs["padding"], attrs["in_channels"]
            full = self._padded(op.input, p)
            item, n_pad = full.itemsize, full.shape[0]
            ph = self._phases.get(op.output, 1)
            per = cols.shape[0] // ph
            for j in range(ph):  # output rows t = j + ph * r read padded input rows t .. t + k - 1
                assert j + ph * (per - 1) + k <= n_pad, "im2col view would read past its buffer"
                src = as_strided(full[j:], (per, k * c_in), (ph * c_in * item, item), writeable=False)
                copies.append((cols[j * per:(j + 1) * per], src))
            if p:
                halo = as_strided(full, (2, p, c_in), ((n_pad - p) * c_in * item, c_in * item, item))
        else:
            copies.append((cols, x.reshape(cols.shape)))

        wk = wf.T if nk else wf

        def prepare(weight, bias, multiplier, shift):
            np.copyto(wf, weight if nk else weight.T)  # stored (C_out, K * C_in)
            fill_bias(bias)
            prepare_rq(multiplier, shift)

        def run_gemm():
            if halo is not None:
                np.copyto(halo, zp8)  # other buffers share these bytes between inferences
            for dst, src in copies:
                np.copyto(dst, src)
            np.subtract(cols, zp, out=cols)
            np.dot(cols, wk, out=accf)
            np.copyto(acc, accf, casting="unsafe")  # exact integers
            np.add(acc, bias_tile, out=acc)
            requant(acc)
        return prepare, run_gemm

    def _bind_dwconv(self, op, prepare_rq, requant):
        """Depthwise conv (module docstring, step 2): output rows t = j + ph * r of phase j read padded
        input rows t + kk for tap kk, a (rows, C) view of stride ph rows."""
        v, name, a = self._views, op.name, op.attrs
        cols, acc, wt, bias_tile = v[f"{name}.cols"], v[f"{name}.acc"], v[f"{name}.wt"], v[f"{name}.bias"]
        k, p, c = a["kernel_size"], a["padding"], a["in_channels"]
        rows = acc.shape[0]
        full = self._padded(op.input, p)
        item, ph = full.itemsize, self._phases.get(op.output, 1)
        per = rows // ph
        taps = []
        for kk in range(k):
            copies = []
            for j in range(ph):
                assert j + kk + ph * (per - 1) < full.shape[0], "tap view would read past its buffer"
                src = as_strided(full[j + kk:], (per, c), (ph * c * item, item), writeable=False)
                copies.append((cols[j * per:(j + 1) * per], src))
            taps.append((copies, wt[kk * rows:(kk + 1) * rows]))
        fills = [_filler(w) for _, w in taps]
        fill_bias = _filler(bias_tile)
        halo = as_strided(full, (2, p, c), ((full.shape[0] - p) * c * item, c * item, item)) if p else None
        zp, zp8 = _c(a["input_zero_point"], np.int32), _c(a["input_zero_point"], np.int8)

        def prepare(weight, bias, multiplier, shift):
            for kk, fill in enumerate(fills):
                fill(weight[:, kk])
            fill_bias(bias)
            prepare_rq(multiplier, shift)

        def run_dwconv():
            if halo is not None:
                np.copyto(halo, zp8)  # other buffers share these bytes between inferences
            np.copyto(acc, bias_tile)
            for copies, w in taps:
                for dst, src in copies:
                    np.copyto(dst, src)
                np.subtract(cols, zp, out=cols)
                np.multiply(cols, w, out=cols)
                np.add(acc, cols, out=acc)  # int32, wraps like the reference's bias add
            requant(acc)
        return prepare, run_dwconv

    def run(self, window: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Output (K,) of one un-normalised (C, T) float32 window: a view into the arena unless `out`."""
        if window.shape != self._input.shape:  # copyto would silently broadcast a (1, T) or (C, 1) window
            raise BadDataError(f"expected one window of shape {self._input.shape}, got {window.shape}")
        np.copyto(self._input, window)
        if self._static:
            for run in self._runs:
                run()
        else:
            src = self.weights
            for prepare, run, names in self._ops:
                prepare(*src.acquire(names))
                run()
                src.release(names)
        if out is None:
            return self._output
        np.copyto(out, self._output)
        return out

    def _loop(self, x: np.ndarray, view: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        c, t = self.program.input_shape_ct
        if x.ndim != 3 or x.shape[1:] != (c, t):
            raise BadDataError(f"expected windows of shape (N, {c}, {t}), got {x.shape}")
        out = np.empty((len(x), *view.shape), view.dtype)
        for i in range(len(x)):
            self.run(x[i])
            np.copyto(out[i], view)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, C, T) windows -> (N, K) outputs, one `run` per window (allocates the result)."""
        return self._loop(x, self._output)

    def predict_int8(self, x: np.ndarray) -> np.ndarray:
        """(N, C, T) windows -> (N, K) int8 logits."""
        return self._loop(x, self.logits)

    def tensor_lifetimes(self) -> list[TensorLife]:
        """Device buffers (int8 activations with halos, int32 accumulators, float input and scores)."""
        return [TensorLife(b.name, b.size_bytes, b.first_use, b.last_use) for b in self.buffers]

