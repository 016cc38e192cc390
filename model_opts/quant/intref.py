"""Integer-only numpy reference of the int8 network: the specification a C port must match bit for bit.

An `Int8Program` is an input quantizer, a tuple of op records and the output quantization:
- `InputQuant`: the only float step on the way in. Per channel c, in float32 and in this order
  (no fused multiply-add: compile C with -ffp-contract=off):
      t = x * inv_scale[c]; t = t + offset[c]; q = zero_point if t is NaN else clamp(rint(t), -128, 127)
  `rint` is round-half-to-even (C: har_q8 in har_int8.h, clamp then round half to even without libm). Non-finite input, the
  one policy of every runtime (numpy, C kernels, firmware): a NaN sample quantizes to the input zero
  point, the normalised value 0, i.e. the training mean of its channel (a missing reading is imputed
  by the mean); +Inf saturates to 127 and -Inf to -128 through the clamp, as do finite values beyond
  the range (+-FLT_MAX). The input
  Normalizer is folded in: inv_scale[c] = 1 / (std[c] * s_in), offset[c] = zp_in - mean[c] / (std[c] * s_in),
  so un-normalised windows are quantized once, straight into the normalised int8 domain.
- `Conv1dInt8` (stride 1, zero padding `padding` on both sides, which is padding with the input zero point
  in the int8 domain) and `LinearInt8`: int8 weights (per-output-channel symmetric, zero point 0, values in
  [-127, 127]), int32 bias (scale s_in * s_w[c], zero point 0). Per output channel c:
      acc = bias[c] + sum_{i,k} (q_in[i, t + k - padding] - zp_in) * w[c, i, k]     (exact in int32)
      q_out = clamp(zp_out + MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]), act_min, act_max)
  multiplier/shift encode s_in * s_w[c] / s_out (`fixedpoint.quantize_multiplier`). A fused ReLU is
  act_min = zp_out (the quantized real zero); otherwise act_min = -128. act_max = 127.
- `DepthwiseConv1dInt8` (MobileNet's depthwise conv, depth multiplier 1): int8 weight (C, 1, K), channel c
  convolved with its own kernel only; otherwise exactly Conv1dInt8's rules (padding, zero points, bias,
  per-channel requantization, clamps):
      acc[c, t] = bias[c] + sum_k (q_in[c, t + k - padding] - zp_in) * w[c, 0, k]
- `MaxPool1dInt8`: max over non-overlapping windows of `kernel` samples (a trailing remainder is dropped,
  like torch's floor mode). Max commutes with the monotonic quantization, so input and output share
  scale and zero point: no arithmetic at all.
- `GlobalAvgPoolInt8`: sum over the `length` time steps in int32 of (q_in - zp_in), then requantize
  with its own multiplier/shift encoding s_in / (length * s_out) and add zp_out; clamp to [-128, 127].
  The pair is TFLM's int8 MEAN rule (`fixedpoint.mean_multiplier`: quantize s_in / s_out, then divide the
  mantissa by `length` in integers), so this op equals TFLM's MEAN over time bit for bit; TFLM's
  AVERAGE_POOL_2D cannot stand in (it needs equal input/output quantization, rounds sum(q) / n).
  Its output has its own calibrated scale (narrower than its input's), and `length` is fixed when the
  program is built; another input length is refused.
The output is int8 logits; `dequantize_output` gives (q - zp_out) * s_out, and predicted classes can be
taken on the int8 values directly (argmax; ties go to the lowest class index, as numpy and torch do).
MultiplyByQuantizedMultiplier is TFLite's (SaturatingRoundingDoublingHighMul then RoundingDivideByPOT,
two roundings; exact rules in `fixedpoint`), so a requantized value is within one LSB of round(acc * M).
Accumulator bound: |acc| <= C_in * K * 255 * 127 + |bias|, so `Int8Program.validate` refuses layers with
C_in * K > 65,793 (int32 overflow: 255 * 128 per term); int32 biases saturate when built.
Vectorisation: im2col by `numpy.lib.stride_tricks.sliding_window_view` and an int32 `einsum`, in batches
of `batch` windows to bound memory. No float appears between `quantize_input` and `dequantize_output`.
Limits: op set of `har.model.CompactCNN1d` (standard or separable) only (ReLU exists only fused into a conv/linear).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from model_opts.quant.fixedpoint import INT8_MAX, INT8_MIN, multiply_by_quantized_multiplier

MAX_ACC_TERMS = 65_793  # C_in * K above which |sum (x - zp) * w| <= terms * 255 * 128 could pass 2^31 - 1


@dataclass(frozen=True)
class InputQuant:
    inv_scale: np.ndarray  # float32 (C,)
    offset: np.ndarray  # float32 (C,)
    scale: float  # s_in, the scale of the normalised input (informational)
    zero_point: int


@dataclass(frozen=True)
class Conv1dInt8:
    weight: np.ndarray  # int8 (C_out, C_in, K)
    bias: np.ndarray  # int32 (C_out,)
    multiplier: np.ndarray  # int32 (C_out,) Q31 mantissa
    shift: np.ndarray  # int32 (C_out,) exponent
    padding: int
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int = INT8_MAX
    # float scales the integers were derived from; the integer math never reads them
    input_scale: float = 0.0
    output_scale: float = 0.0
    weight_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class DepthwiseConv1dInt8:
    weight: np.ndarray  # int8 (C, 1, K)
    bias: np.ndarray  # int32 (C,)
    multiplier: np.ndarray  # int32 (C,)
    shift: np.ndarray  # int32 (C,)
    padding: int
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int = INT8_MAX
    input_scale: float = 0.0
    output_scale: float = 0.0
    weight_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class LinearInt8:
    weight: np.ndarray  # int8 (C_out, C_in)
    bias: np.ndarray  # int32 (C_out,)
    multiplier: np.ndarray  # int32 (C_out,)
    shift: np.ndarray  # int32 (C_out,)
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int = INT8_MAX
    input_scale: float = 0.0
    output_scale: float = 0.0
    weight_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class MaxPool1dInt8:
    kernel: int


@dataclass(frozen=True)
class GlobalAvgPoolInt8:
    length: int
    multiplier: int
    shift: int
    input_zero_point: int
    output_zero_point: int
    input_scale: float = 0.0
    output_scale: float = 0.0


Int8Op = Conv1dInt8 | DepthwiseConv1dInt8 | LinearInt8 | MaxPool1dInt8 | GlobalAvgPoolInt8
_CONVS = (Conv1dInt8, DepthwiseConv1dInt8)


@dataclass(frozen=True)
class Int8Program:
    input: InputQuant
    ops: tuple[Int8Op, ...]
    output_scale: float
    output_zero_point: int
    in_channels: int
    length: int  # input window length T the program was built for

    def validate(self) -> "Int8Program":
        for op in self.ops:
            if isinstance(op, DepthwiseConv1dInt8) and (op.weight.ndim != 3 or op.weight.shape[1] != 1):
                raise ValueError(f"a depthwise weight must be (C, 1, K), got {op.weight.shape}")
            if isinstance(op, (*_CONVS, LinearInt8)):
                terms = int(np.prod(op.weight.shape[1:]))
                if terms > MAX_ACC_TERMS:
                    raise ValueError(f"layer with {terms} accumulated terms could overflow int32")
                if op.weight.dtype != np.int8 or op.bias.dtype != np.int32:
                    raise ValueError("weights must be int8 and biases int32")
        return self


def quantize_affine(x: np.ndarray, inv_scale: np.ndarray, offset: np.ndarray, zero_point: int) -> np.ndarray:
    """float32 values -> int8 by the module docstring's input rule: t = x * inv_scale, t = t + offset
    (float32, in this order), then NaN -> `zero_point`, else clamp(rint(t), -128, 127) (+-Inf saturate).
    `inv_scale` / `offset` broadcast against `x` (per channel on whichever axis the caller holds channels)."""
    with np.errstate(over="ignore"):  # a finite sample overflowing to +-Inf saturates: no warning
        t = np.asarray(x, dtype=np.float32) * inv_scale
        t = t + offset
    q = np.clip(np.rint(t), INT8_MIN, INT8_MAX)
    q[np.isnan(q)] = zero_point  # before the cast: NaN has no int8 value (numpy would warn and pick one)
    return q.astype(np.int8)


def quantize_input(prog: Int8Program, x: np.ndarray) -> np.ndarray:
    """Un-normalised float32 (N, C, T) -> int8 (N, C, T) in the normalised input's quantization; a NaN
    sample becomes the input zero point, +-Inf saturate (module docstring)."""
    return quantize_affine(x, prog.input.inv_scale[None, :, None], prog.input.offset[None, :, None],
                           prog.input.zero_point)


def _requantize(acc: np.ndarray, multiplier, shift, zp_out: int, lo: int, hi: int) -> np.ndarray:
    out = multiply_by_quantized_multiplier(acc, multiplier, shift).astype(np.int64) + zp_out
    return np.clip(out, lo, hi).astype(np.int8)


def conv1d_int8(op: Conv1dInt8, q: np.ndarray) -> np.ndarray:
    xs = q.astype(np.int32) - np.int32(op.input_zero_point)
    if op.padding:
        xs = np.pad(xs, ((0, 0), (0, 0), (op.padding, op.padding)))  # 0 == the input zero point
    c_out, c_in, k = op.weight.shape
    cols = sliding_window_view(xs, k, axis=2)  # (N, C_in, T_out, K), a view
    n, _, t_out, _ = cols.shape
    cols = cols.transpose(0, 2, 1, 3).reshape(n * t_out, c_in * k)  # im2col: one row per output step
    # numpy's 2-D integer einsum is several times faster than an integer matmul or a 4-D einsum
    acc = np.einsum("mj,oj->mo", cols, op.weight.reshape(c_out, -1).astype(np.int32), optimize=False)
    acc += op.bias[None, :]
    out = _requantize(acc, op.multiplier[None, :], op.shift[None, :], op.output_zero_point, op.act_min,
                      op.act_max)
    return np.ascontiguousarray(out.reshape(n, t_out, c_out).transpose(0, 2, 1))


def dwconv1d_int8(op: DepthwiseConv1dInt8, q: np.ndarray) -> np.ndarray:
    xs = q.astype(np.int32) - np.int32(op.input_zero_point)
    if op.padding:
        xs = np.pad(xs, ((0, 0), (0, 0), (op.padding, op.padding)))  # 0 == the input zero point
    cols = sliding_window_view(xs, op.weight.shape[2], axis=2)  # (N, C, T_out, K), a view
    acc = np.einsum("nctk,ck->nct", cols, op.weight[:, 0, :].astype(np.int32), optimize=False)
    acc += op.bias[None, :, None]  # int32: wraps like the conv
    return _requantize(acc, op.multiplier[None, :, None], op.shift[None, :, None], op.output_zero_point,
                       op.act_min, op.act_max)


def linear_int8(op: LinearInt8, q: np.ndarray) -> np.ndarray:
    xs = q.astype(np.int32) - np.int32(op.input_zero_point)
    acc = np.einsum("nc,oc->no", xs, op.weight.astype(np.int32), optimize=False) + op.bias[None, :]
    return _requantize(acc, op.multiplier[None, :], op.shift[None, :], op.output_zero_point, op.act_min,
                       op.act_max)


def maxpool1d_int8(op: MaxPool1dInt8, q: np.ndarray) -> np.ndarray:
    n, c, t = q.shape
    t_out = t // op.kernel
    return q[:, :, :t_out * op.kernel].reshape(n, c, t_out, op.kernel).max(axis=3)


def global_avg_pool_int8(op: GlobalAvgPoolInt8, q: np.ndarray) -> np.ndarray:
    if q.shape[2] != op.length:
        raise ValueError(f"global average pool was built for {op.length} steps, got {q.shape[2]}")
    s = (q.astype(np.int32) - np.int32(op.input_zero_point)).sum(axis=2, dtype=np.int32)
    return _requantize(s, op.multiplier, op.shift, op.output_zero_point, INT8_MIN, INT8_MAX)


_KERNELS = {Conv1dInt8: conv1d_int8, DepthwiseConv1dInt8: dwconv1d_int8, LinearInt8: linear_int8,
            MaxPool1dInt8: maxpool1d_int8,
            GlobalAvgPoolInt8: global_avg_pool_int8}


def run_ops(prog: Int8Program, q: np.ndarray, batch: int = 512) -> np.ndarray:
    """int8 input (N, C, T) -> int8 logits (N, K), integer arithmetic only."""
    if q.dtype != np.int8 or q.ndim != 3:
        raise ValueError("run_ops needs an int8 (N, C, T) array")
    outs = []
    for start in range(0, len(q), batch):
        h = q[start:start + batch]
        for op in prog.ops:
            h = _KERNELS[type(op)](op, h)
        outs.append(h)
    if not outs:
        return np.zeros((0, prog.ops[-1].weight.shape[0]), dtype=np.int8)
    return np.concatenate(outs)


def dequantize_output(prog: Int8Program, q: np.ndarray) -> np.ndarray:
    return ((q.astype(np.int32) - prog.output_zero_point) * np.float32(prog.output_scale)).astype(np.float32)


def run(prog: Int8Program, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Un-normalised float32 windows (N, C, T) -> int8 logits (N, K)."""
    return run_ops(prog, quantize_input(prog, x), batch)


def macs_per_window(prog: Int8Program) -> int:
    """Multiply-accumulates of conv and linear layers for one window (as `TorchArtifact` counts them)."""
    t, macs = prog.length, 0
    for op in prog.ops:
        if isinstance(op, _CONVS):  # depthwise: C * K * T_out (its weight is (C, 1, K))
            t = t + 2 * op.padding - op.weight.shape[2] + 1
            macs += t * int(np.prod(op.weight.shape))
        elif isinstance(op, LinearInt8):
            macs += int(np.prod(op.weight.shape))
        elif isinstance(op, MaxPool1dInt8):
            t //= op.kernel
        else:
            t = 1
    return macs


def tensor_shapes(prog: Int8Program) -> list[tuple[str, tuple[int, ...]]]:
    """(name, per-window shape) of the int8 input and of every op's int8 output, in execution order."""
    c, t = prog.in_channels, prog.length
    shapes = [("input_q", (c, t))]
    for i, op in enumerate(prog.ops):
        if isinstance(op, Conv1dInt8):
            c, t = op.weight.shape[0], t + 2 * op.padding - op.weight.shape[2] + 1
            shapes.append((f"{i}.conv1d", (c, t)))
        elif isinstance(op, DepthwiseConv1dInt8):
            t = t + 2 * op.padding - op.weight.shape[2] + 1
            shapes.append((f"{i}.dwconv1d", (c, t)))
        elif isinstance(op, MaxPool1dInt8):
            t //= op.kernel
            shapes.append((f"{i}.maxpool1d", (c, t)))
        elif isinstance(op, GlobalAvgPoolInt8):
            t = 1
            shapes.append((f"{i}.global_avg_pool", (c,)))
        else:
            c = op.weight.shape[0]
            shapes.append((f"{i}.linear", (c,)))
    return shapes
