"""`QuantSim`: the fake-quant torch model (float arithmetic on int8-representable values), and its
conversion to the integer-only `Int8Program`.

The simulation mirrors `intref` op by op: the input is quantized per tensor in the normalised domain;
each conv/linear uses per-output-channel symmetric weights (scale max|w| / 127, recomputed from the
current weights on every forward), an int32-rounded bias of scale s_in * s_w, its fused ReLU, and a
fake-quantized output (a depthwise conv likewise, with F.conv1d groups=C and one weight scale per
channel, and becomes `DepthwiseConv1dInt8`); max-pool passes through; the global average pool is a mean
followed by its own fake quantization. Gradients flow by the straight-through estimator (torch's
fake-quantize kernels pass the gradient inside the range and zero it outside; the bias rounding passes it
unchanged), which is what `qat` trains. Activation (scale, zero point) are buffers frozen at their calibrated values.

`to_program` derives the integers with the same float32 expressions as the simulation (w * (1/scale)
rounded half-to-even, bias / (s_in * s_w) rounded), so integer weights are identical; the only remaining
difference to the integer reference is requantization (Q31 multiplier vs float32 product), which moves a
value by at most one LSB at a rounding boundary.
The global average pool's (multiplier, shift) are TFLM's, not quantize_multiplier(s_in / (T * s_out)):
`fixedpoint.mean_multiplier` folds 1/T into TFLM MEAN's mantissa by integer division, so the exported
.tflite (`firmware.tflm`) reproduces the pool bit for bit. When the pool's calibrated (scale, zero point)
equal its input's, its output scale is moved up one float32 step (`_distinct_mean_scale`; the next layer
uses the moved scale), because some TFLM MEAN kernels take a truncating shortcut for equal parameters.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from har.windows import Normalizer
from model_opts.quant.fixedpoint import (INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, mean_multiplier,
                                         quantize_multipliers)
from model_opts.quant.graph import (FloatConv1d, FloatDepthwiseConv1d, FloatGlobalAvgPool, FloatLinear,
                                    FloatMaxPool1d, FloatOp)
from model_opts.quant.intref import (Conv1dInt8, DepthwiseConv1dInt8, GlobalAvgPoolInt8, InputQuant, Int8Program,
                                     LinearInt8, MaxPool1dInt8)

_KIND = {FloatConv1d: "conv", FloatDepthwiseConv1d: "dwconv", FloatLinear: "linear"}


def fake_quant_act(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, INT8_MIN, INT8_MAX)


def weight_scales(w: torch.Tensor) -> torch.Tensor:
    amax = w.detach().abs().amax(dim=tuple(range(1, w.ndim)))
    return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))


def fake_quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = weight_scales(w)
    zp = torch.zeros(len(scale), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -127, 127), scale


def bias_int(b: torch.Tensor, in_scale: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(b / (in_scale * w_scale)), INT32_MIN, INT32_MAX)


class QuantSim(nn.Module):
    """Fake-quant network over normalised input (`forward`) or un-normalised input (`forward_raw`)."""

    def __init__(self, ops: list[FloatOp], act_qparams: list[tuple[float, int]], normalizer: Normalizer,
                 length: int, dropout: float = 0.0):
        super().__init__()
        self.kinds: list[str] = []
        self.meta: list[dict] = []
        self._act_names: list[str] = []
        self.length = int(length)
        self.dropout = nn.Dropout(dropout)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.register_buffer("norm_mean", torch.from_numpy(normalizer.mean.astype(np.float32).copy()))
        self.register_buffer("norm_std", torch.from_numpy(normalizer.std.astype(np.float32).copy()))
        qp = iter(act_qparams)
        self._add_act("input", *next(qp))
        for i, op in enumerate(ops):
            if type(op) in _KIND:
                self.weights.append(nn.Parameter(torch.from_numpy(op.weight.copy())))
                self.biases.append(nn.Parameter(torch.from_numpy(op.bias.copy())))
                self.kinds.append(_KIND[type(op)])
                self.meta.append({"relu": op.relu, "padding": getattr(op, "padding", 0),
                                  "param": len(self.weights) - 1})
                self._add_act(f"act{i}", *next(qp))
            elif isinstance(op, FloatMaxPool1d):
                self.kinds.append("maxpool")
                self.meta.append({"kernel": op.kernel})
            elif isinstance(op, FloatGlobalAvgPool):
                self.kinds.append("gap")
                self.meta.append({})
                self._add_act(f"act{i}", *next(qp))
        if next(qp, None) is not None:
            raise ValueError("more activation qparams than quantized tensors")

    def _add_act(self, name: str, scale: float, zero_point: int) -> None:
        self.register_buffer(f"{name}_scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer(f"{name}_zp", torch.tensor(zero_point, dtype=torch.int32))
        self._act_names.append(name)

    def act(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        name = self._act_names[k]
        return getattr(self, f"{name}_scale"), getattr(self, f"{name}_zp")

    def input_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 per-channel (inv_scale, offset) that quantize un-normalised input in one multiply-add."""
        s_in, zp_in = self.act(0)
        denom = self.norm_std.double() * s_in.double()
        inv = (1.0 / denom).float()
        offset = (zp_in.double() - self.norm_mean.double() / denom).float()
        return inv, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, zp = self.act(0)
        return self._body(fake_quant_act(x, s, zp))

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Same input quantization as `intref.quantize_input`, on un-normalised windows."""
        inv, offset = self.input_affine()
        q = torch.clamp(torch.round(x * inv[None, :, None] + offset[None, :, None]), INT8_MIN, INT8_MAX)
        s, zp = self.act(0)
        return self._body((q - zp) * s)

    def layer_weight(self, p: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(fake-quantized weight, per-channel scale) of conv/linear layer `p`; a technique that stores
        its weights otherwise (clustering) passes its own to `_body`."""
        return fake_quant_weight(self.weights[p])

    def _body(self, x: torch.Tensor, layer_weight=None) -> torch.Tensor:
        layer_weight = layer_weight or self.layer_weight
        act_k = 1
        in_scale = self.act(0)[0]
        for kind, meta in zip(self.kinds, self.meta):
            if kind == "maxpool":
                x = F.max_pool1d(x, meta["kernel"])
                continue
            if kind == "gap":
                x = x.mean(dim=-1)
            else:
                b = self.biases[meta["param"]]
                w_fq, w_scale = layer_weight(meta["param"])
                b_scale = in_scale * w_scale
                b_fq = b + (bias_int(b, in_scale, w_scale) * b_scale - b).detach()
                if kind == "conv":
                    x = F.conv1d(x, w_fq, b_fq, padding=meta["padding"])
                elif kind == "dwconv":
                    x = F.conv1d(x, w_fq, b_fq, padding=meta["padding"], groups=w_fq.shape[0])
                else:
                    x = F.linear(self.dropout(x), w_fq, b_fq)
                if meta["relu"]:
                    x = torch.relu(x)
            s, zp = self.act(act_k)
            x = fake_quant_act(x, s, zp)
            in_scale = s
            act_k += 1
        return x


def _distinct_mean_scale(s_in: torch.Tensor, zp_in: int, s_out: torch.Tensor, zp_out: int) -> torch.Tensor:
    """The global pool's output scale, one float32 step larger when its (scale, zero point) equal the
    input's: some TFLM MEAN kernels (older reference ones, Xtensa HiFi) then skip requantization and
    truncate sum(q) / n, which our arithmetic does not do (a dead layer calibrates both to (1.0, 0))."""
    if float(s_out) == float(s_in) and zp_out == zp_in:
        return torch.tensor(float(np.nextafter(np.float32(s_out), np.float32(np.inf))), dtype=torch.float32)
    return s_out


def to_program(sim: QuantSim) -> Int8Program:
    """Integer-only program equivalent to `sim` (see module docstring for the one rounding difference)."""
    inv, offset = sim.input_affine()
    s_in, zp_in = sim.act(0)
    cur_s, cur_zp, t, c = s_in, int(zp_in), sim.length, int(sim.norm_mean.numel())
    in_channels = c
    ops: list = []
    act_k = 1
    with torch.no_grad():
        for kind, meta in zip(sim.kinds, sim.meta):
            if kind == "maxpool":
                ops.append(MaxPool1dInt8(int(meta["kernel"])))
                t //= meta["kernel"]
                continue
            s_out, zp_out = sim.act(act_k)
            act_k += 1
            if kind == "gap":
                s_out = _distinct_mean_scale(cur_s, cur_zp, s_out, int(zp_out))
                m, sh = mean_multiplier(float(cur_s), float(s_out), t)
                ops.append(GlobalAvgPoolInt8(t, m, sh, cur_zp, int(zp_out), float(cur_s), float(s_out)))
                t = 1
            else:
                w = sim.weights[meta["param"]].detach()
                b = sim.biases[meta["param"]].detach()
                w_scale = weight_scales(w)
                inv_w = 1.0 / w_scale
                w_q = torch.clamp(torch.round(w * inv_w.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127)
                b_q = bias_int(b, cur_s, w_scale)
                real = float(cur_s) * w_scale.double().numpy() / float(s_out)
                m, sh = quantize_multipliers(real)
                act_min = int(zp_out) if meta["relu"] else INT8_MIN
                common = dict(weight=w_q.numpy().astype(np.int8), bias=b_q.numpy().astype(np.int64).astype(np.int32),
                              multiplier=m, shift=sh, input_zero_point=cur_zp, output_zero_point=int(zp_out),
                              act_min=act_min, input_scale=float(cur_s), output_scale=float(s_out),
                              weight_scale=w_scale.double().numpy())
                if kind in ("conv", "dwconv"):
                    cls = Conv1dInt8 if kind == "conv" else DepthwiseConv1dInt8
                    ops.append(cls(padding=int(meta["padding"]), **common))
                    t = t + 2 * int(meta["padding"]) - w.shape[2] + 1
                else:
                    ops.append(LinearInt8(**common))
            cur_s, cur_zp = s_out, int(zp_out)
    return Int8Program(InputQuant(inv.numpy().copy(), offset.numpy().copy(), float(s_in), int(zp_in)),
                       tuple(ops), float(cur_s), cur_zp, in_channels, sim.length).validate()


def class_agreement(sim: QuantSim, program: Int8Program, x: np.ndarray) -> float:
    """Fraction of windows whose predicted class is the same from the integer reference and the fake-quant
    model (both fed the same un-normalised windows; ties resolve to the lowest class index in both)."""
    from model_opts.quant import intref
    with torch.inference_mode():
        fq = torch.cat([sim.forward_raw(torch.from_numpy(x[i:i + 1024])) for i in range(0, len(x), 1024)])
    return float((fq.argmax(1).numpy() == intref.run(program, x).argmax(1)).mean())
