"""Flatten the int8 network (`model_opts.quant.intref.Int8Program`, or an `Int8Artifact`) into a `FlatProgram`.

The int8 reference already is a list of ops; this turns it into the same flat form as the fp32 path
(channel-last (T, C) tensors) so that the same executor, planner and weight file serve both. Weights are
packed output-channel major, (C_out, K * C_in), the layout int8 device kernels (TFLite, CMSIS-NN,
`system_opts/csrc/har_int8.c`) read: each output is one contiguous dot product with an im2col row. Op kinds and their arrays (names `op<i>.<kind>.<field>`):
- `quantize_input` (float32 -> int8): inv_scale, offset (float32, normaliser folded in by the reference);
  attr zero_point (what a NaN becomes);
- `conv1d_q`: weight int8 (C_out, K * C_in), bias int32, multiplier int32, shift int8; attrs padding,
  kernel_size, in_channels, input/output zero point, act_min/act_max (a fused ReLU is act_min = zp_out);
- `dwconv1d_q` (depthwise conv, depth multiplier 1): weight int8 (C, K), one row per channel, then as
  conv1d_q (in_channels == C == the output channels);
- `maxpool1d` (dtype-agnostic, shared with fp32), `global_avg_pool_q` (multiplier int32 (1,), shift int8
  (1,); attrs zero points and the fixed length), `linear_q` (like conv1d_q, weight (C_out, C_in));
- `dequantize` (int8 -> float32 scores), only when `dequantize_output` (default); without it the
  program's output is the int8 logits, which is what bit-exactness is checked on.
Known limits: exactly the op set of the reference (`Conv1dInt8`, `DepthwiseConv1dInt8`, `LinearInt8`,
`MaxPool1dInt8`, `GlobalAvgPoolInt8`); the arithmetic lives in `system_opts.kernels_int8`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from system_opts.flatten import FlatOp, FlatProgram, TensorSpec, UnsupportedModuleError


@dataclass(frozen=True)
class FlattenInt8Config:
    dequantize_output: bool = True


def apply(program, config: FlattenInt8Config = FlattenInt8Config()) -> FlatProgram:
    """Flat program of an `Int8Program` (or of anything with a `.program` attribute holding one)."""
    from model_opts.quant.intref import Conv1dInt8, DepthwiseConv1dInt8, GlobalAvgPoolInt8, LinearInt8, MaxPool1dInt8

    program = getattr(program, "program", program)
    c, t = program.in_channels, program.length
    tensors = [TensorSpec("input", (t, c))]
    ops: list[FlatOp] = []
    weights: dict[str, np.ndarray] = {}

    def emit(kind: str, shape: tuple[int, ...], dtype: str, params: dict[str, np.ndarray], **attrs) -> None:
        name = f"op{len(ops)}.{kind}"
        for key, arr in params.items():
            weights[f"{name}.{key}"] = np.ascontiguousarray(arr)
        tensors.append(TensorSpec(f"{name}.out", tuple(int(s) for s in shape), dtype))
        ops.append(FlatOp(kind, name, len(tensors) - 2, len(tensors) - 1, tuple(f"{name}.{k}" for k in params), attrs))

    emit("quantize_input", (t, c), "int8", {"inv_scale": program.input.inv_scale.astype(np.float32),
                                           "offset": program.input.offset.astype(np.float32)},
         zero_point=int(program.input.zero_point))  # a NaN input value quantizes to it
    for i, op in enumerate(program.ops):
        if isinstance(op, (Conv1dInt8, DepthwiseConv1dInt8, LinearInt8, GlobalAvgPoolInt8)):
            zps = dict(input_zero_point=int(op.input_zero_point), output_zero_point=int(op.output_zero_point))
        if isinstance(op, (Conv1dInt8, DepthwiseConv1dInt8, LinearInt8)):
            # shifts lie in [-31, 30]: int8 is what a device stores
            requant = {"multiplier": op.multiplier.astype(np.int32), "shift": op.shift.astype(np.int8)}
        if isinstance(op, Conv1dInt8):
            c_out, c_in, k = op.weight.shape
            t = t + 2 * op.padding - k + 1
            emit("conv1d_q", (t, c_out), "int8",
                 {"weight": op.weight.transpose(0, 2, 1).reshape(c_out, k * c_in), "bias": op.bias.astype(np.int32),
                  **requant}, kernel_size=int(k), padding=int(op.padding), in_channels=int(c_in),
                 act_min=int(op.act_min), act_max=int(op.act_max), **zps)
            c = c_out
        elif isinstance(op, DepthwiseConv1dInt8):
            c, _, k = op.weight.shape
            t = t + 2 * op.padding - k + 1
            emit("dwconv1d_q", (t, c), "int8",
                 {"weight": op.weight.reshape(c, k), "bias": op.bias.astype(np.int32), **requant},
                 kernel_size=int(k), padding=int(op.padding), in_channels=int(c),
                 act_min=int(op.act_min), act_max=int(op.act_max), **zps)
        elif isinstance(op, LinearInt8):
            c = op.weight.shape[0]
            emit("linear_q", (c,), "int8", {"weight": op.weight, "bias": op.bias.astype(np.int32), **requant},
                 act_min=int(op.act_min), act_max=int(op.act_max), **zps)
        elif isinstance(op, MaxPool1dInt8):
            t //= op.kernel
            emit("maxpool1d", (t, c), "int8", {}, kernel_size=int(op.kernel))
        elif isinstance(op, GlobalAvgPoolInt8):
            emit("global_avg_pool_q", (c,), "int8",
                 {"multiplier": np.array([op.multiplier], np.int32), "shift": np.array([op.shift], np.int8)},
                 length=int(op.length), **zps)
        else:
            raise UnsupportedModuleError(f"int8 op {i} ({type(op).__name__}) has no flat equivalent")
    if config.dequantize_output:
        emit("dequantize", tensors[-1].shape, "float32", {}, zero_point=int(program.output_zero_point),
             scale=float(program.output_scale))
    meta = {"input_layout": "(C, T) float32 un-normalised; stored channel-last (T, C)", "source": "Int8Program",
            "output": "dequantized scores" if config.dequantize_output else "int8 logits"}
    return FlatProgram(tuple(ops), tuple(tensors), weights, meta)
