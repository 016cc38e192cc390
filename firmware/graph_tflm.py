"""TFLM peer of the graph path: a `QGraph` as an int8 .tflite flatbuffer (written with the tflite-micro
wheel's model_editor, no TensorFlow), run by TFLM's own interpreter and its arena measured.

Steps of `to_tflite(graph)`: one subgraph, batch 1, NHWC, int8 activations with the graph's float32 scales
(TFLM derives every requantization from them; the integers must come out as ours, which `quantize` made
sure of by deriving them with TFLM's formulas), per-channel int8 weights and int32 biases:
- input [1, H, W, C] (a Conv1d graph: H = 1);
- conv, groups 1 -> CONV_2D, filter OHWI; groups == C_in -> DEPTHWISE_CONV_2D, filter [1, KH, KW, C_out],
  depth multiplier C_out / C_in; other groups -> CONV_2D with a filter of C_in / groups input channels
  (TFLite's grouped conv). Padding: SAME when TFLite's SAME rule gives our padding, else an explicit PAD
  (int8 PAD fills with the zero point, which is our padding) and VALID;
- fused activations NONE / RELU / RELU6 (TFLM's clamp bounds are the quantizer's `act_bounds`);
- maxpool -> MAX_POOL_2D, avgpool -> AVERAGE_POOL_2D (VALID), mean -> RESHAPE to [1, 1, H*W, C] (when H > 1)
  then MEAN over axis 2 (the rule `fixedpoint.mean_multiplier` reproduces), add -> ADD, relu -> RELU /
  RELU6, flatten -> RESHAPE [1, F], linear -> FULLY_CONNECTED;
- output: the last node's int8 tensor; no DEQUANTIZE.
Refused (BadDataError): a mean whose output quantization equals its input's (TFLM then takes another
kernel path), a clamp range that is none of the three activations.
`run(model, q)`: (N, H, W, C) int8 through `firmware.tflm.TflmRunner`; `measure_peer`: model bytes and
the smallest working arena (`firmware.tflm.min_arena_bytes`; the wheel is a 64-bit host build, so its
persistent tail is larger than on a 32-bit MCU: `firmware.tflm.HOST_BUILD_NOTE`).
"""
from __future__ import annotations

import numpy as np

from firmware.tflm import HOST_BUILD_NOTE, TflmPeerResult, TflmRunner, _allocations, _f32, _Graph, _tflm, \
    min_arena_bytes
from har.errors import BadDataError
from model_opts.graph.quantize import QGraph, act_bounds


def _same(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TFLite's SAME: (output size, padding before, padding after)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _activation(node, schema) -> int:
    act = schema.ActivationFunctionType
    lo, hi = node.attrs["act_min"], node.attrs["act_max"]
    for name, code in (("none", act.NONE), ("relu", act.RELU), ("relu6", act.RELU6)):
        if (lo, hi) == act_bounds(name, node.scale, node.zero_point) and node.attrs.get("act", name) == name:
            return code
    raise BadDataError(f"{node.name}: clamp [{lo}, {hi}] is none of NONE, RELU, RELU6")


def to_tflite(graph: QGraph) -> bytes:
    _, me, schema = _tflm()
    bo, ot, int8, int32 = schema.BuiltinOperator, schema.BuiltinOptions, schema.TensorType.INT8, schema.TensorType.INT32
    g = _Graph(me, schema)
    nodes = graph.nodes
    ten: dict[int, object] = {}
    shape4: dict[int, tuple] = {}
    for i, n in enumerate(nodes):
        tag = f"{i}.{n.kind}"
        if n.kind == "input":
            ten[i] = g.act("input", (1, *n.shape), n.scale, n.zero_point)
            shape4[i] = (1, *n.shape)
            continue
        src = nodes[n.inputs[0]]
        x = ten[n.inputs[0]]
        a = n.attrs
        if n.kind == "conv":
            (h, w, c), (ho, wo, co) = src.shape, n.shape
            kh, kw = a["kernel"]
            sh, sw = a["stride"]
            ph, pw = a["padding"]
            pad = schema.Padding.VALID
            if (ph or pw) and _same(h, kh, sh) == (ho, ph, ph) and _same(w, kw, sw) == (wo, pw, pw):
                pad = schema.Padding.SAME
            elif ph or pw:
                pads = g.const(f"{tag}.paddings", np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32), int32)
                xp = g.act(f"{tag}.pad", (1, h + 2 * ph, w + 2 * pw, c), src.scale, src.zero_point)
                g.op(bo.PAD, [x, pads], [xp], ot.PadOptions, schema.PadOptionsT())
                x = xp
            s_w = [float(v) for v in n.weight_scale]
            b = g.const(f"{tag}.bias", n.bias.astype("<i4"), int32, [_f32(_f32(src.scale) * v) for v in s_w])
            y = g.act(tag, (1, ho, wo, co), n.scale, n.zero_point)
            groups = a["groups"]
            if groups == c and groups > 1:
                wt = g.const(f"{tag}.weight", n.weight.transpose(3, 1, 2, 0).astype(np.int8), int8, s_w, axis=3)
                o = schema.DepthwiseConv2DOptionsT()
                o.depthMultiplier = co // c
                code, opt_t = bo.DEPTHWISE_CONV_2D, ot.DepthwiseConv2DOptions
            else:
                wt = g.const(f"{tag}.weight", n.weight.astype(np.int8), int8, s_w, axis=0)
                o = schema.Conv2DOptionsT()
                code, opt_t = bo.CONV_2D, ot.Conv2DOptions
            o.padding, o.strideH, o.strideW = pad, sh, sw
            o.fusedActivationFunction = _activation(n, schema)
            g.op(code, [x, wt, b], [y], opt_t, o)
        elif n.kind in ("maxpool", "avgpool"):
            y = g.act(tag, (1, *n.shape), n.scale, n.zero_point)
            o = schema.Pool2DOptionsT()
            o.padding = schema.Padding.VALID
            o.filterHeight, o.filterWidth = a["kernel"]
            o.strideH, o.strideW = a["stride"]
            g.op(bo.MAX_POOL_2D if n.kind == "maxpool" else bo.AVERAGE_POOL_2D, [x], [y], ot.Pool2DOptions, o)
        elif n.kind == "mean":
            h, w, c = src.shape
            if (_f32(n.scale), n.zero_point) == (_f32(src.scale), src.zero_point):
                raise BadDataError(f"{n.name}: a mean with its input's quantization takes another TFLM kernel path")
            if h > 1:
                shp = g.const(f"{tag}.shape", np.array([1, 1, h * w, c], np.int32), int32)
                xr = g.act(f"{tag}.reshape", (1, 1, h * w, c), src.scale, src.zero_point)
                g.op(bo.RESHAPE, [x, shp], [xr], ot.ReshapeOptions, _reshape_opts(schema, [1, 1, h * w, c]))
                x = xr
            axis = g.const(f"{tag}.axis", np.array([2], np.int32), int32)
            y = g.act(tag, (1, 1, c), n.scale, n.zero_point)
            o = schema.ReducerOptionsT()
            o.keepDims = False
            g.op(bo.MEAN, [x, axis], [y], ot.ReducerOptions, o)
        elif n.kind == "add":
            y = g.act(tag, (1, *n.shape), n.scale, n.zero_point)
            o = schema.AddOptionsT()
            o.fusedActivationFunction = _activation(n, schema)
            g.op(bo.ADD, [x, ten[n.inputs[1]]], [y], ot.AddOptions, o)
        elif n.kind == "relu":
            y = g.act(tag, (1, *n.shape), n.scale, n.zero_point)
            g.op(bo.RELU6 if a["act"] == "relu6" else bo.RELU, [x], [y])
        elif n.kind == "flatten":
            f = int(np.prod(n.shape))
            shp = g.const(f"{tag}.shape", np.array([1, f], np.int32), int32)
            y = g.act(tag, (1, f), n.scale, n.zero_point)
            g.op(bo.RESHAPE, [x, shp], [y], ot.ReshapeOptions, _reshape_opts(schema, [1, f]))
        elif n.kind == "linear":
            s_w = [float(v) for v in n.weight_scale]
            wt = g.const(f"{tag}.weight", n.weight.astype(np.int8), int8, s_w, axis=0)
            b = g.const(f"{tag}.bias", n.bias.astype("<i4"), int32, [_f32(_f32(src.scale) * v) for v in s_w])
            y = g.act(tag, (1, n.shape[0]), n.scale, n.zero_point)
            o = schema.FullyConnectedOptionsT()
            o.fusedActivationFunction = _activation(n, schema)
            g.op(bo.FULLY_CONNECTED, [x, wt, b], [y], ot.FullyConnectedOptions, o)
        else:
            raise BadDataError(f"{n.name}: {n.kind} has no TFLM equivalent")
        ten[i] = y
    sg = me.Subgraph(operators=g.ops, inputs=[ten[0]], outputs=[ten[len(nodes) - 1]])
    return bytes(me.Model(subgraphs=[sg], description="har-memopt QGraph").build())


def _reshape_opts(schema, shape):
    o = schema.ReshapeOptionsT()
    o.newShape = list(shape)
    return o


def run(model_bytes: bytes, q: np.ndarray) -> np.ndarray:
    """(N, H, W, C) int8 -> (N, outputs) int8 through TFLM."""
    return TflmRunner(model_bytes).run_nhwc(np.asarray(q, np.int8))


def measure_peer(graph: QGraph) -> TflmPeerResult:
    from tflite_micro.python.tflite_micro._version import __version__
    model = to_tflite(graph)
    alloc = _allocations(model)
    return TflmPeerResult(len(model), min_arena_bytes(model), alloc.get("total"), alloc.get("head"),
                          alloc.get("tail"), __version__, HOST_BUILD_NOTE)
