"""Integer-only numpy reference of a `QGraph`: the specification the C kernels (`har_graph.c`) and TFLM
must match bit for bit.

Tensors are (N, H, W, C) int8 (vectors (N, F)). Per op, TFLite's int8 rules:
- input: q = quantize_affine(x, 1 / s, zp) per element (`model_opts.quant.intref.quantize_affine`: float32
  x * inv_scale + zp, NaN -> zp, rint, clamp), or int8 given directly (`run_int8`).
- conv (groups g, stride, zero padding = padding with zp_in): per output (h, w, o) of group g(o)
      acc = bias[o] + sum_{kh, kw, c in g(o)} (q_in[h*s + kh - p, w*s + kw - p, c] - zp_in) * w[o, kh, kw, c]
      q = clamp(zp_out + MultiplyByQuantizedMultiplier(acc, m[o], shift[o]), act_min, act_max)
  computed exactly: products and sums are integers below 2^53, summed by a float64 matmul.
- linear: the same over the F inputs.
- maxpool: max over each window; avgpool: TFLite's int8 rule on the raw values, s = sum(q), n = window
  size, avg = (s + n/2) / n if s > 0 else (s - n/2) / n (C division: truncation toward zero), clamped.
- mean (global average pool): clamp(zp_out + MultiplyByQuantizedMultiplier(sum(q - zp_in), m, shift)),
  TFLM's MEAN (`fixedpoint.mean_multiplier`).
- add: TFLite's int8 ADD: x_i = (q_i - zp_i) << 20, y_i = MBQM(x_i, m_i, e_i) (e_i <= 0), then
  clamp(zp_out + MBQM(y_1 + y_2, m_out, e_out), act_min, act_max).
- relu (standalone): clamp(q, act_min, act_max); flatten: a reshape (tensors are channel-last already).
Limits: the op set of `model_opts.graph.fx_import`; evaluate large sets in batches (`batch`).
"""
from __future__ import annotations

import numpy as np

from model_opts.graph.floatrun import conv_cols, grouped_matmul, to_nhwc, windows
from model_opts.graph.quantize import QGraph, QNode
from model_opts.quant.fixedpoint import multiply_by_quantized_multiplier as mbqm
from model_opts.quant.intref import quantize_affine


def _requant(acc: np.ndarray, node: QNode) -> np.ndarray:
    out = mbqm(acc, node.multiplier.astype(np.int64), node.shift.astype(np.int64)).astype(np.int64)
    return np.clip(out + node.zero_point, node.attrs["act_min"], node.attrs["act_max"]).astype(np.int8)


def quantize_input(graph: QGraph, x: np.ndarray) -> np.ndarray:
    """Torch-layout float batch -> (N, H, W, C) int8."""
    node = graph.input
    inv = np.float32(1.0) / np.float32(node.scale)
    return quantize_affine(to_nhwc(np.asarray(x, np.float32)), inv, np.float32(node.zero_point), node.zero_point)


def _trunc_div(a: np.ndarray, n: int) -> np.ndarray:
    return np.sign(a) * (np.abs(a) // n)


def run_node(node: QNode, xs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    x = xs[0]
    src = graph.nodes[node.inputs[0]] if node.inputs else None
    if node.kind == "conv":
        cols = conv_cols(x, node.attrs, np.int8(src.zero_point)).astype(np.int64) - src.zero_point
        acc = np.rint(grouped_matmul(cols, node.weight, node.attrs["groups"])).astype(np.int64) + node.bias
        return _requant(acc, node)
    if node.kind == "linear":
        cols = x.reshape(len(x), -1).astype(np.float64) - src.zero_point
        acc = np.rint(cols @ node.weight.T.astype(np.float64)).astype(np.int64) + node.bias
        return _requant(acc, node)
    if node.kind == "relu":
        return np.clip(x, node.attrs["act_min"], node.attrs["act_max"]).astype(np.int8)
    if node.kind == "maxpool":
        return windows(x, node.attrs["kernel"], node.attrs["stride"]).max(axis=(4, 5))
    if node.kind == "avgpool":
        s = windows(x, node.attrs["kernel"], node.attrs["stride"]).astype(np.int64).sum(axis=(4, 5))
        n = int(np.prod(node.attrs["kernel"]))
        avg = np.where(s > 0, _trunc_div(s + n // 2, n), _trunc_div(s - n // 2, n))
        return np.clip(avg, -128, 127).astype(np.int8)
    if node.kind == "mean":
        s = (x.astype(np.int64) - src.zero_point).sum(axis=(1, 2), keepdims=True)
        out = mbqm(s, np.int64(node.attrs["multiplier"]), np.int64(node.attrs["shift"])).astype(np.int64)
        return np.clip(out + node.zero_point, -128, 127).astype(np.int8)
    if node.kind == "add":
        a, b = (graph.nodes[j] for j in node.inputs)
        at = node.attrs
        y1 = mbqm((x.astype(np.int64) - a.zero_point) << at["left_shift"], np.int64(at["m1"]), np.int64(at["e1"]))
        y2 = mbqm((xs[1].astype(np.int64) - b.zero_point) << at["left_shift"], np.int64(at["m2"]), np.int64(at["e2"]))
        out = mbqm(y1.astype(np.int64) + y2, np.int64(at["mo"]), np.int64(at["eo"])).astype(np.int64)
        return np.clip(out + node.zero_point, at["act_min"], at["act_max"]).astype(np.int8)
    if node.kind == "flatten":
        return x.reshape(len(x), -1)
    raise ValueError(f"no int8 rule for {node.kind}")


def run_int8(graph: QGraph, q: np.ndarray, keep_all: bool = False):
    """Int8 outputs (the last node's, or all) of (N, H, W, C) int8 inputs."""
    values = [np.asarray(q, np.int8)]
    for node in graph.nodes[1:]:
        values.append(run_node(node, [values[i] for i in node.inputs], graph))
    return values if keep_all else values[-1]


def run(graph: QGraph, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Int8 outputs (N, ...) of a torch-layout float batch, `batch` samples at a time."""
    outs = [run_int8(graph, quantize_input(graph, x[i:i + batch])) for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def dequantize(graph: QGraph, q: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) - graph.output.zero_point) * np.float32(graph.output.scale)
