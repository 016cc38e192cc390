"""TFLM peer: an `Int8Program` as an int8 .tflite flatbuffer, run by TFLM's own interpreter, arena measured.

Built with the `tflite-micro` wheel only (its model_editor writes the flatbuffer; no TensorFlow). Steps:
1. `to_tflite`: one subgraph, batch 1, NHWC with H = 1, int8 tensors (int32 biases), fixed tensor names:
     input [1, 1, T, C]: the already-quantized normalised window, (s_in, zp_in) of `prog.input`; the
       per-channel float input quantizer (`intref.quantize_input`) stays outside, as har_pre.c does
     Conv1dInt8 -> CONV_2D, filter [C_out, 1, K, C_in] (OHWI, per-channel scales on axis 0), bias int32 of
       scale s_in * s_w[c]; padding SAME when 2 * padding == K - 1, VALID when 0, otherwise an explicit PAD
       first (int8 PAD fills with the zero point, i.e. real 0, like our padding); fused RELU iff
       act_min == zp_out (TFLM clamps RELU to [zp_out, 127]), else NONE
     DepthwiseConv1dInt8 -> DEPTHWISE_CONV_2D, depth_multiplier 1, filter [1, 1, K, C] (per-channel scales
       on axis 3), bias, padding and activation as the conv (TFLM's per-channel int8 depthwise arithmetic
       is the same acc / MultiplyByQuantizedMultiplier / clamp)
     MaxPool1dInt8 -> MAX_POOL_2D 1 x k, stride k, VALID (a trailing remainder is dropped, as ours)
     GlobalAvgPoolInt8 -> MEAN over axis 2, keep_dims false -> [1, 1, C]
     LinearInt8 -> FULLY_CONNECTED, weights [C_out, C_in] per channel; output [1, C_out]
     output: the int8 logits [1, K] of (prog.output_scale, prog.output_zero_point); no DEQUANTIZE
   TFLM derives every requantization from the float32 scales stored in the file, so each op's integers are
   re-derived here with TFLM's rules (conv/FC: QuantizeMultiplier(double(s_in) * double(s_w[c]) /
   double(s_out)); MEAN: `fixedpoint.mean_multiplier`) and must equal the program's. Refused
   (BadDataError): a program without scales (hand-built), integers TFLM would not derive, a tensor whose
   scale or zero point changes between producer and consumer, activation ranges other than NONE/RELU, a
   pool whose (scale, zero point) equal its input's (some TFLM MEAN kernels truncate then), an op order
   other than (conv | depthwise conv | max pool)*, global pool, linear+, and a layer whose int32
   accumulator or left-shifted requantization input could overflow (undefined behaviour in TFLM's C++; ours saturates or wraps).
   The bytes are deterministic (same program -> same file). Buffers are 4-byte aligned (enough for TFLM's
   int32 loads); the Python packer ignores the schema's 16-byte force_align.
2. `TflmRunner` / `run`: `tflite_micro.runtime.Interpreter`, one window per invoke, (N, C, T) int8 in,
   (N, K) int8 out.
3. `min_arena_bytes`: the smallest `arena_size` with which allocation + invoke succeed and reproduce the
   output of a generous arena. A too-small arena can SEGFAULT TFLM instead of raising, so every probe runs
   in its own Python process; the search gallops from the `print_allocations` total and then bisects,
   assuming success is monotonic in the size. `reported_arena_bytes` parses print_allocations (C++ writes
   to file descriptor 2, so the descriptor is redirected, not sys.stderr).
Limits: the wheel is an x86-64 host build of the reference kernels; its persistent arena tail holds 8-byte
pointers, so a 32-bit Cortex-M build needs a smaller tail (the head, activations and scratch, is the same).
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from har.errors import BadDataError
from model_opts.quant.fixedpoint import INT8_MAX, INT8_MIN, INT32_MAX, mean_multiplier, quantize_multiplier
from model_opts.quant.intref import (Conv1dInt8, DepthwiseConv1dInt8, GlobalAvgPoolInt8, Int8Program, LinearInt8,
                                     MaxPool1dInt8)

HOST_BUILD_NOTE = ("tflite-micro wheel = x86-64 host build of TFLM's reference kernels: its persistent arena "
                   "tail holds 64-bit pointers, so a 32-bit MCU build needs a smaller tail; the head "
                   "(activations, scratch) is the same")
_MAX_ARENA_BYTES = 64 << 20
_PROBE_TIMEOUT_S = 120


@dataclass(frozen=True)
class TflmPeerResult:
    model_size_bytes: int  # the .tflite flatbuffer
    arena_min_bytes: int  # smallest working arena_size (subprocess search)
    arena_reported_bytes: int | None  # print_allocations "Arena allocation total"
    arena_head_bytes: int | None  # non-persistent part: planned activations + scratch
    arena_tail_bytes: int | None  # persistent part: TFLM structs, quantization data, op data
    runtime_version: str
    note: str = HOST_BUILD_NOTE


def _tflm():
    """The wheel's modules, imported on first use so that importing this module needs no tflite-micro."""
    from tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    return runtime, model_editor, schema


# ---------------------------------------------------------------- 1. export


def _f32(x) -> float:
    return float(np.float32(x))


def _check_scale(value, what: str) -> float:
    s = _f32(value)
    if not (np.isfinite(s) and s > 0):
        raise BadDataError(f"{what} has no usable float scale ({value!r}); TFLM derives its integers from scales")
    return s


def _check_no_overflow(weight: np.ndarray, bias: np.ndarray, shift: np.ndarray, zp_in: int, what: str) -> None:
    """Worst-case |acc + bias| (and its left shift) must fit int32: TFLM's C++ overflows there."""
    span = max(abs(INT8_MIN - zp_in), abs(INT8_MAX - zp_in))
    w = np.abs(weight.astype(np.int64)).reshape(len(weight), -1).sum(axis=1)
    bound = w * span + np.abs(bias.astype(np.int64))
    bound = bound << np.maximum(np.asarray(shift, np.int64), 0)
    if np.any(bound > INT32_MAX):
        c = int(np.argmax(bound > INT32_MAX))
        raise BadDataError(f"{what}: channel {c} could overflow int32 (bound {int(bound[c])}); TFLM's "
                           "result would be undefined there")


def _check_multipliers(op, s_in: float, s_out: float, what: str) -> np.ndarray:
    s_w = np.asarray(op.weight_scale, dtype=np.float64)
    if s_w.shape != (op.weight.shape[0],):
        raise BadDataError(f"{what} has no per-channel weight scales; TFLM derives its integers from scales")
    s_w = np.array([_check_scale(v, f"{what} weight") for v in s_w])
    for c, sw in enumerate(s_w):
        if quantize_multiplier(s_in * sw / s_out) != (int(op.multiplier[c]), int(op.shift[c])):
            raise BadDataError(f"{what}: channel {c}'s multiplier/shift are not the ones TFLM derives from "
                               "its scales")
    return s_w


def _activation(op, schema, what: str) -> int:
    act = schema.ActivationFunctionType
    if op.act_max == INT8_MAX and op.act_min == op.output_zero_point:
        return act.RELU
    if op.act_max == INT8_MAX and op.act_min == INT8_MIN:
        return act.NONE
    raise BadDataError(f"{what}: activation range [{op.act_min}, {op.act_max}] is neither NONE nor a fused RELU")


class _Graph:
    """Tensors and operators of one subgraph, named deterministically."""

    def __init__(self, me, schema):
        self.me, self.schema, self.ops = me, schema, []

    def act(self, name: str, shape, scale: float, zp: int):
        return self.me.Tensor(shape=tuple(int(d) for d in shape), dtype=self.schema.TensorType.INT8, name=name,
                              quantization=self.me.Quantization(scales=float(scale), zero_points=int(zp)))

    def const(self, name: str, data: np.ndarray, dtype, scales=None, axis: int = 0):
        q = None
        if scales is not None:
            q = self.me.Quantization(scales=[float(s) for s in scales], zero_points=[0] * len(scales), axis=axis)
        return self.me.Tensor(shape=data.shape, dtype=dtype, name=name, data=np.ascontiguousarray(data),
                              quantization=q)

    def op(self, code, inputs, outputs, opt_type=None, opts=None) -> None:
        o = self.me.Operator(opcode=code, inputs=inputs, outputs=outputs)
        if opts is not None:
            o._fb.builtinOptionsType, o._fb.builtinOptions = opt_type, opts
        self.ops.append(o)


def to_tflite(prog: Int8Program) -> bytes:
    """The program as int8 .tflite bytes (graph and refusals in the module docstring)."""
    _, me, schema = _tflm()
    bo, opts_t, int8, int32 = schema.BuiltinOperator, schema.BuiltinOptions, schema.TensorType.INT8, \
        schema.TensorType.INT32
    g = _Graph(me, schema)
    s, zp, t, c = _check_scale(prog.input.scale, "the input"), int(prog.input.zero_point), prog.length, \
        prog.in_channels
    x = g.act("input", (1, 1, t, c), s, zp)
    graph_input, stage = x, "time"
    for i, op in enumerate(prog.ops):
        what = f"op {i} ({type(op).__name__})"
        if isinstance(op, (Conv1dInt8, DepthwiseConv1dInt8, LinearInt8, GlobalAvgPoolInt8)):
            s_out = _check_scale(op.output_scale, f"{what} output")
            if _check_scale(op.input_scale, f"{what} input") != s or int(op.input_zero_point) != zp:
                raise BadDataError(f"{what}: input quantization differs from its producer's output")
            zp_out = int(op.output_zero_point)
        if isinstance(op, (Conv1dInt8, DepthwiseConv1dInt8)):
            if stage != "time":
                raise BadDataError(f"{what}: a conv after the global pool has no TFLM equivalent here")
            c_out, c_in, k = op.weight.shape
            depthwise = isinstance(op, DepthwiseConv1dInt8)
            if depthwise and (op.weight.shape[1] != 1 or op.weight.shape[0] != c):
                raise BadDataError(f"{what}: a depthwise weight {op.weight.shape} for {c} input channels")
            if depthwise:
                c_out = c_in = c
            s_w = _check_multipliers(op, s, s_out, what)
            _check_no_overflow(op.weight, op.bias, op.shift, zp, what)
            pad, p = schema.Padding.VALID, int(op.padding)
            if p and 2 * p == k - 1:
                pad = schema.Padding.SAME
            elif p:
                pads = g.const(f"{i}.pad.paddings", np.array([[0, 0], [0, 0], [p, p], [0, 0]], np.int32), int32)
                x_pad = g.act(f"{i}.pad", (1, 1, t + 2 * p, c), s, zp)
                g.op(bo.PAD, [x, pads], [x_pad], opts_t.PadOptions, schema.PadOptionsT())
                x, t = x_pad, t + 2 * p
            t = t - k + 1 if pad == schema.Padding.VALID else t
            if t < 1:
                raise BadDataError(f"{what}: no output step for a window of {prog.length} samples")
            if depthwise:  # filter [1, 1, K, C], per-channel scales on axis 3 (TFLM's depthwise layout)
                w = g.const(f"{i}.dwconv1d.weight", op.weight[:, 0, :].T.reshape(1, 1, k, c_out).astype(np.int8),
                            int8, s_w, axis=3)
                b = g.const(f"{i}.dwconv1d.bias", op.bias.astype("<i4"), int32, [_f32(s * sw) for sw in s_w])
                y = g.act(f"{i}.dwconv1d", (1, 1, t, c_out), s_out, zp_out)
                o = schema.DepthwiseConv2DOptionsT()
                o.padding, o.strideW, o.strideH, o.depthMultiplier = pad, 1, 1, 1
                o.fusedActivationFunction = _activation(op, schema, what)
                g.op(bo.DEPTHWISE_CONV_2D, [x, w, b], [y], opts_t.DepthwiseConv2DOptions, o)
            else:
                w = g.const(f"{i}.conv1d.weight",
                            op.weight.transpose(0, 2, 1).reshape(c_out, 1, k, c_in).astype(np.int8), int8, s_w)
                b = g.const(f"{i}.conv1d.bias", op.bias.astype("<i4"), int32, [_f32(s * sw) for sw in s_w])
                y = g.act(f"{i}.conv1d", (1, 1, t, c_out), s_out, zp_out)
                o = schema.Conv2DOptionsT()
                o.padding, o.strideW, o.strideH = pad, 1, 1
                o.fusedActivationFunction = _activation(op, schema, what)
                g.op(bo.CONV_2D, [x, w, b], [y], opts_t.Conv2DOptions, o)
            x, s, zp, c = y, s_out, zp_out, c_out
        elif isinstance(op, MaxPool1dInt8):
            k = int(op.kernel)
            if stage != "time" or not 1 <= k <= t:
                raise BadDataError(f"{what}: a max pool of {k} needs a time axis of at least {k} steps")
            t //= k
            y = g.act(f"{i}.maxpool1d", (1, 1, t, c), s, zp)  # max commutes with quantization
            o = schema.Pool2DOptionsT()
            o.padding, o.strideW, o.strideH, o.filterWidth, o.filterHeight = schema.Padding.VALID, k, 1, k, 1
            g.op(bo.MAX_POOL_2D, [x], [y], opts_t.Pool2DOptions, o)
            x = y
        elif isinstance(op, GlobalAvgPoolInt8):
            if stage != "time" or int(op.length) != t:
                raise BadDataError(f"{what}: pools {op.length} steps, its input has {t if stage == 'time' else 1}")
            if s_out == s and zp_out == zp:
                raise BadDataError(f"{what}: output quantization equals the input's; some TFLM MEAN kernels "
                                   "then truncate sum(q) / n instead of requantizing")
            if mean_multiplier(s, s_out, t) != (int(op.multiplier), int(op.shift)):
                raise BadDataError(f"{what}: multiplier/shift are not TFLM MEAN's (fixedpoint.mean_multiplier)")
            _check_no_overflow(np.ones((1, t), np.int64), np.zeros(1, np.int64), np.array([op.shift]), zp, what)
            axis = g.const(f"{i}.global_avg_pool.axis", np.array([2], np.int32), int32)
            y = g.act(f"{i}.global_avg_pool", (1, 1, c), s_out, zp_out)
            o = schema.ReducerOptionsT()
            o.keepDims = False
            g.op(bo.MEAN, [x, axis], [y], opts_t.ReducerOptions, o)
            x, s, zp, stage = y, s_out, zp_out, "pooled"
        elif isinstance(op, LinearInt8):
            if stage == "time":
                raise BadDataError(f"{what}: a linear layer needs the global pool before it")
            c_out, c_in = op.weight.shape
            if c_in != c:
                raise BadDataError(f"{what}: {c_in} inputs, its producer gives {c}")
            s_w = _check_multipliers(op, s, s_out, what)
            _check_no_overflow(op.weight, op.bias, op.shift, zp, what)
            w = g.const(f"{i}.linear.weight", op.weight.astype(np.int8), int8, s_w)
            b = g.const(f"{i}.linear.bias", op.bias.astype("<i4"), int32, [_f32(s * sw) for sw in s_w])
            y = g.act(f"{i}.linear", (1, c_out), s_out, zp_out)
            o = schema.FullyConnectedOptionsT()
            o.fusedActivationFunction = _activation(op, schema, what)
            g.op(bo.FULLY_CONNECTED, [x, w, b], [y], opts_t.FullyConnectedOptions, o)
            x, s, zp, c, stage = y, s_out, zp_out, c_out, "linear"
        else:
            raise BadDataError(f"{what} has no TFLM equivalent")
    if stage != "linear":
        raise BadDataError("the program must end with a linear layer (the int8 logits)")
    if _f32(prog.output_scale) != s or int(prog.output_zero_point) != zp:
        raise BadDataError("the program's output quantization differs from its last layer's")
    sg = me.Subgraph(operators=g.ops, inputs=[graph_input], outputs=[x])
    return bytes(me.Model(subgraphs=[sg], description="har-memopt Int8Program").build())


def buffer_offsets(model_bytes: bytes) -> list[int]:
    """Byte offsets of the non-empty constant buffers' data in the flatbuffer (for alignment checks)."""
    _, _, schema = _tflm()
    m = schema.Model.GetRootAs(model_bytes, 0)
    out = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            out.append(b._tab.Vector(b._tab.Offset(4)))
    return out


# ---------------------------------------------------------------- 2. run


def generous_arena_bytes(model_bytes: bytes) -> int:
    """An arena surely large enough (64 KiB + 4x all non-constant tensors + 1 KiB per tensor and op)."""
    _, _, schema = _tflm()
    m = schema.Model.GetRootAs(model_bytes, 0)
    sg = m.Subgraphs(0)
    acts = 0
    for i in range(sg.TensorsLength()):
        ten = sg.Tensors(i)
        if m.Buffers(ten.Buffer()).DataLength() == 0:
            acts += int(np.prod(ten.ShapeAsNumpy())) * 4
    return 65536 + 4 * acts + 1024 * (sg.TensorsLength() + sg.OperatorsLength())


class TflmRunner:
    """One TFLM interpreter over the model; `run` feeds (N, C, T) int8 windows one by one.
    An arena_size below `min_arena_bytes` may crash the process (TFLM): leave it None unless measured."""

    def __init__(self, model_bytes: bytes, arena_size: int | None = None):
        runtime, _, _ = _tflm()
        self.model_bytes = bytes(model_bytes)
        self.arena_size = int(arena_size) if arena_size is not None else generous_arena_bytes(self.model_bytes)
        self._it = runtime.Interpreter.from_bytes(self.model_bytes, arena_size=self.arena_size)
        shape = tuple(int(d) for d in self._it.get_input_details(0)["shape"])
        if len(shape) != 4 or shape[0] != 1:
            raise BadDataError(f"TFLM model input {shape} is not [1, H, W, C]")
        self.input_shape = shape
        self.length, self.channels = shape[2], shape[3]  # `run`'s windows: H == 1, W = T

    def run_nhwc(self, q: np.ndarray) -> np.ndarray:
        """(N, H, W, C) int8 inputs -> (N, outputs) int8."""
        q = np.asarray(q)
        if q.dtype != np.int8 or q.shape[1:] != self.input_shape[1:]:
            raise BadDataError(f"TFLM model needs int8 (N, {', '.join(map(str, self.input_shape[1:]))}) inputs, "
                               f"got {q.dtype} {q.shape}")
        outs = []
        for x in q:
            self._it.set_input(np.ascontiguousarray(x)[None], 0)
            self._it.invoke()
            outs.append(np.array(self._it.get_output(0), dtype=np.int8).reshape(-1))
        return np.stack(outs) if outs else np.zeros((0, 0), np.int8)

    def run(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q)
        if self.input_shape[1] != 1 or q.dtype != np.int8 or q.ndim != 3 or q.shape[1:] != (self.channels, self.length):
            raise BadDataError(f"TFLM model needs int8 (N, {self.channels}, {self.length}) windows, got "
                               f"{q.dtype} {q.shape}")
        outs = []
        for window in q:
            self._it.set_input(np.ascontiguousarray(window.T)[None, None], 0)
            self._it.invoke()
            outs.append(np.array(self._it.get_output(0), dtype=np.int8).reshape(-1))
        if not outs:
            return np.zeros((0, int(np.prod(self._it.get_output_details(0)["shape"]))), np.int8)
        return np.stack(outs)


def run(model_bytes: bytes, q: np.ndarray, arena_size: int | None = None) -> np.ndarray:
    """(N, C, T) int8 windows -> (N, K) int8 logits through TFLM."""
    return TflmRunner(model_bytes, arena_size).run(q)


# ---------------------------------------------------------------- 3. arena


@contextlib.contextmanager
def _capture_fd2():
    sys.stderr.flush()
    saved = os.dup(2)
    box = {}
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            box["text"] = f.read().decode(errors="replace")


def _allocations(model_bytes: bytes) -> dict[str, int]:
    """print_allocations' total/head/tail bytes ({} if the build prints none)."""
    runner = TflmRunner(model_bytes)
    with _capture_fd2() as cap:
        runner._it.print_allocations()
    found = re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", cap["text"])
    return {k: int(v) for k, v in found}


def reported_arena_bytes(model_bytes: bytes) -> int | None:
    """TFLM's own "Arena allocation total" (not the requirement: see `min_arena_bytes`)."""
    return _allocations(model_bytes).get("total")


_PROBE = r"""
import sys, numpy as np
from tflite_micro import runtime
d, n = sys.argv[1], int(sys.argv[2])
it = runtime.Interpreter.from_bytes(open(d + "/m.tflite", "rb").read(), arena_size=n)
it.set_input(np.load(d + "/x.npy"), 0)
it.invoke()
sys.exit(0 if np.array_equal(np.asarray(it.get_output(0)), np.load(d + "/y.npy")) else 3)
"""


@contextlib.contextmanager
def _prober(model_bytes: bytes):
    """ok(n): does arena_size n allocate, invoke and reproduce the generous arena's output on a fixed
    random window? Each call is a fresh Python process (a too-small arena can crash TFLM)."""
    runner = TflmRunner(model_bytes)
    x = np.random.default_rng(0).integers(INT8_MIN, INT8_MAX + 1, runner.input_shape)
    x = x.astype(np.int8)
    runner._it.set_input(x, 0)
    runner._it.invoke()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "m.tflite"), "wb") as f:
            f.write(runner.model_bytes)
        np.save(os.path.join(d, "x.npy"), x)
        np.save(os.path.join(d, "y.npy"), np.asarray(runner._it.get_output(0)))

        def ok(n: int) -> bool:
            return n > 0 and subprocess.run([sys.executable, "-c", _PROBE, d, str(int(n))], capture_output=True,
                                            timeout=_PROBE_TIMEOUT_S).returncode == 0
        yield ok


def arena_works(model_bytes: bytes, arena_size: int) -> bool:
    """Whether one arena size works (the predicate `min_arena_bytes` bisects on)."""
    with _prober(model_bytes) as ok:
        return ok(arena_size)


def min_arena_bytes(model_bytes: bytes) -> int:
    """Smallest arena_size (bytes) that allocates, invokes and gives the generous arena's output."""
    hint = max(int(reported_arena_bytes(model_bytes) or 1024), 16)
    step = 16
    with _prober(model_bytes) as ok:
        if ok(hint):  # gallop down to a failing size
            hi, lo = hint, hint - step
            while ok(lo):
                hi, step = lo, step * 2
                lo = hi - step
            lo = max(lo, 0)
        else:  # gallop up to a working size
            lo, hi = hint, hint + step
            while not ok(hi):
                if hi > _MAX_ARENA_BYTES:
                    raise BadDataError(f"no TFLM arena up to {_MAX_ARENA_BYTES} bytes runs this model")
                lo, step = hi, step * 2
                hi = lo + step
        while hi - lo > 1:  # invariant: ok(hi), not ok(lo)
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
    return hi


def measure_peer(prog: Int8Program) -> TflmPeerResult:
    """Export the program and measure the TFLM peer's model and arena."""
    from tflite_micro.python.tflite_micro._version import __version__
    model = to_tflite(prog)
    alloc = _allocations(model)
    return TflmPeerResult(len(model), min_arena_bytes(model), alloc.get("total"), alloc.get("head"),
                          alloc.get("tail"), __version__)
