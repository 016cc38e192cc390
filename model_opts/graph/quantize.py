"""Post-training int8 quantization of a `FloatGraph` into a `QGraph` (TFLite's int8 scheme, per op).

Steps of `quantize(graph, calibration, config)`:
1. Run the float graph (`floatrun.run`) on the calibration batches (training data only: the caller
   chooses them) and keep, per node, the min and max of its output (after its fused activation).
2. Give every tensor an affine (scale, zero point) over [min(lo, 0), max(hi, 0)] (`fixedpoint.affine_qparams`;
   `percentile` < 100 clips the range to that percentile of |values| instead), stored as float32 because a
   .tflite file stores float32 and TFLM derives its integers from those. Ops that TFLite's kernels
   require to keep their input's quantization keep it: max pool, average pool, standalone ReLU and
   flatten (max and clamps commute with a monotonic quantization; TFLite's int8 AVERAGE_POOL_2D rounds
   sum(q) / n in the input's scale).
3. Conv and linear: per-output-channel symmetric int8 weights in [-127, 127] (`fixedpoint.symmetric_scales`),
   int32 bias round(b / (s_in * s_w[c])) saturated, and the requantization (multiplier, shift) of
   double(s_in) * double(s_w[c]) / double(s_out) (`fixedpoint.quantize_multiplier`, TFLM's rule).
   Mean: `fixedpoint.mean_multiplier` (TFLM's MEAN). Add: TFLite's int8 ADD parameters (left shift 20;
   inputs rescaled by s_i / (2 max(s_1, s_2)), output by 2 max(s_1, s_2) / (2^20 s_out)).
4. Fused activations become clamp bounds as TFLite computes them: ReLU act_min = zp, ReLU6 act_max =
   zp + round(6 / s) (round half away from zero, float32 division), both within [-128, 127].
Limits: PTQ only (no QAT here); per-tensor activations, per-channel weights; a layer whose accumulator
could overflow int32 (terms * 255 * 128 >= 2^31) is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from har.errors import BadDataError, BadOptionError
from model_opts.graph import floatrun
from model_opts.graph.fx_import import FloatGraph
from model_opts.quant.fixedpoint import (INT8_MAX, INT8_MIN, affine_qparams, mean_multiplier, quantize_multiplier,
                                         symmetric_scales)

ADD_LEFT_SHIFT = 20
MAX_ACC_TERMS = 65_793  # as model_opts.quant.intref: terms * 255 * 128 below 2^31
KEEPS_INPUT_QPARAMS = ("maxpool", "avgpool", "relu", "flatten")


@dataclass(frozen=True)
class QuantizeConfig:
    percentile: float = 100.0  # of |activation| per tensor; 100 = min/max
    calibration_batch: int = 256

    def __post_init__(self):
        if not 50.0 <= self.percentile <= 100.0:
            raise BadOptionError(f"percentile must lie in [50, 100], got {self.percentile}")


@dataclass(frozen=True)
class QNode:
    kind: str
    name: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    scale: float  # of the output tensor (float32 value)
    zero_point: int
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None  # int8, conv OHWI / linear (C_out, F)
    bias: np.ndarray | None = None  # int32
    multiplier: np.ndarray | None = None  # int32 per output channel
    shift: np.ndarray | None = None  # int32
    weight_scale: np.ndarray | None = None  # float32 per output channel


@dataclass(frozen=True)
class QGraph:
    nodes: tuple[QNode, ...]
    input_shape: tuple[int, ...]  # torch layout per sample

    @property
    def input(self) -> QNode:
        return self.nodes[0]

    @property
    def output(self) -> QNode:
        return self.nodes[-1]

    def weight_bytes(self) -> int:
        """Stored parameter bytes: int8 weights + int32 biases (requantization constants not included)."""
        return sum(n.weight.size + 4 * n.bias.size for n in self.nodes if n.weight is not None)


def _f32(v: float) -> float:
    return float(np.float32(v))


def _round_away(v: float) -> int:
    return int(np.sign(v) * np.floor(abs(v) + 0.5))


def act_bounds(act: str, scale: float, zp: int) -> tuple[int, int]:
    lo, hi = INT8_MIN, INT8_MAX
    if act in ("relu", "relu6"):
        lo = max(lo, zp)
    if act == "relu6":
        hi = min(hi, zp + _round_away(float(np.float32(6.0) / np.float32(scale))))
    return lo, hi


def calibrate(graph: FloatGraph, batches, percentile: float = 100.0) -> list[tuple[float, float]]:
    """Per node (lo, hi) over the calibration batches."""
    lo = [np.inf] * len(graph.nodes)
    hi = [-np.inf] * len(graph.nodes)
    seen: list[list[np.ndarray]] = [[] for _ in graph.nodes]
    for x in batches:
        for i, v in enumerate(floatrun.run(graph, x, keep_all=True)):
            lo[i], hi[i] = min(lo[i], float(v.min())), max(hi[i], float(v.max()))
            if percentile < 100:
                seen[i].append(np.abs(v).ravel()[::7])  # a fixed subsample keeps memory bounded
    if percentile < 100:
        for i in range(len(graph.nodes)):
            q = float(np.percentile(np.concatenate(seen[i]), percentile))
            lo[i], hi[i] = max(lo[i], -q), min(hi[i], q)
    return list(zip(lo, hi))


def add_params(s1: float, s2: float, s_out: float) -> dict:
    """TFLite int8 ADD: multipliers and shifts of both inputs and the output (from float32 scales)."""
    twice = 2.0 * max(float(np.float32(s1)), float(np.float32(s2)))
    m1, e1 = quantize_multiplier(float(np.float32(s1)) / twice)
    m2, e2 = quantize_multiplier(float(np.float32(s2)) / twice)
    mo, eo = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * float(np.float32(s_out))))
    if max(e1, e2, eo) > 0:
        raise BadDataError(f"add scales {s1}, {s2} -> {s_out} need a multiplier above 1")
    return {"m1": m1, "e1": e1, "m2": m2, "e2": e2, "mo": mo, "eo": eo, "left_shift": ADD_LEFT_SHIFT}


def quantize(graph: FloatGraph, calibration, config: QuantizeConfig = QuantizeConfig()) -> QGraph:
    """Int8 graph of `graph`; `calibration` is an iterable of torch-layout float batches."""
    ranges = calibrate(graph, calibration, config.percentile)
    nodes: list[QNode] = []
    for i, n in enumerate(graph.nodes):
        if n.kind in KEEPS_INPUT_QPARAMS:
            src = nodes[n.inputs[0]]
            scale, zp = src.scale, src.zero_point
        else:
            scale, zp = affine_qparams(*ranges[i])
            scale = _f32(scale)
        attrs = dict(n.attrs)
        extra: dict = {}
        if n.kind in ("conv", "linear", "add", "relu"):
            attrs["act_min"], attrs["act_max"] = act_bounds(n.attrs["act"], scale, zp)
        if n.kind in ("conv", "linear"):
            s_in = nodes[n.inputs[0]].scale
            terms = int(np.prod(n.weight.shape[1:]))
            if terms > MAX_ACC_TERMS:
                raise BadDataError(f"{n.name}: {terms} accumulated terms could overflow int32")
            w_scale = symmetric_scales(n.weight.reshape(n.weight.shape[0], -1)).astype(np.float32)
            wq = np.clip(np.round(n.weight / w_scale.reshape(-1, *[1] * (n.weight.ndim - 1))), -127, 127)
            bias = np.clip(np.round(n.bias / (np.float64(s_in) * w_scale.astype(np.float64))),
                           -(1 << 31), (1 << 31) - 1)
            mults = [quantize_multiplier(float(np.float32(s_in)) * float(ws) / float(np.float32(scale)))
                     for ws in w_scale]
            extra = {"weight": wq.astype(np.int8), "bias": bias.astype(np.int32), "weight_scale": w_scale,
                     "multiplier": np.array([m for m, _ in mults], np.int32),
                     "shift": np.array([e for _, e in mults], np.int32)}
        elif n.kind == "mean":
            src = nodes[n.inputs[0]]
            m, e = mean_multiplier(src.scale, scale, n.attrs["count"])
            attrs.update(multiplier=m, shift=e)
        elif n.kind == "add":
            a, b = (nodes[j] for j in n.inputs)
            attrs.update(add_params(a.scale, b.scale, scale))
        nodes.append(QNode(n.kind, n.name, n.inputs, n.shape, scale, int(zp), attrs, **extra))
    return QGraph(tuple(nodes), graph.input_shape)
