"""Fold a trained `CompactCNN1d`-like `nn.Sequential` into a flat list of float ops ready for int8.

Steps of `fold_model`:
1. Walk the Sequential in order. A Conv1d (stride 1, dilation 1, symmetric zero padding; groups 1, or
   depthwise: groups == C_in == C_out, which becomes `FloatDepthwiseConv1d`) is optionally followed by a
   BatchNorm1d and then optionally by a ReLU; a Linear optionally by a ReLU.
2. Fold BatchNorm into the conv with `har.bn_fold.fold_bn` (shared with `system_opts.flatten`): with
   s = gamma / sqrt(running_var + eps), the conv weight becomes W * s (per output channel) and the bias
   (b - running_mean) * s + beta (b = 0 for our bias-free convs: BatchNorm provides the bias); a
   depthwise weight (C, 1, K) has its output channel first too, so the same fold applies.
   Arithmetic in float64, stored as float32.
3. A ReLU right after a conv/linear is fused into that op (`relu=True`): in int8 it becomes the lower
   clamp of the requantized output, as in TFLite.
4. MaxPool1d (kernel == stride, no padding, floor mode) and AdaptiveAvgPool1d(1) are kept as ops;
   Flatten (after the global pool the tensor is already (N, C)) and Dropout (identity at inference) vanish.
Anything else raises `UnsupportedModelError` naming the module, instead of silently mis-converting.
Limits: only the op set of `har.model.CompactCNN1d` (with `separable`); BatchNorm must directly follow a
conv; grouped convs other than depthwise with depth multiplier 1 are refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from har.bn_fold import fold_bn
from har.errors import HarError


class UnsupportedModelError(HarError):
    """The model holds a module or setting the int8 path does not implement."""


@dataclass(frozen=True)
class FloatConv1d:
    weight: np.ndarray  # float32 (C_out, C_in, K)
    bias: np.ndarray  # float32 (C_out,)
    padding: int
    relu: bool


@dataclass(frozen=True)
class FloatDepthwiseConv1d:
    weight: np.ndarray  # float32 (C, 1, K): channel c is convolved with its own kernel only
    bias: np.ndarray  # float32 (C,)
    padding: int
    relu: bool


@dataclass(frozen=True)
class FloatLinear:
    weight: np.ndarray  # float32 (C_out, C_in)
    bias: np.ndarray  # float32 (C_out,)
    relu: bool


@dataclass(frozen=True)
class FloatMaxPool1d:
    kernel: int  # stride == kernel


@dataclass(frozen=True)
class FloatGlobalAvgPool:
    pass


FloatOp = FloatConv1d | FloatDepthwiseConv1d | FloatLinear | FloatMaxPool1d | FloatGlobalAvgPool


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _is_depthwise(conv: nn.Conv1d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _check_conv(conv: nn.Conv1d) -> int:
    pad = conv.padding[0] if isinstance(conv.padding, tuple) else conv.padding
    if (conv.stride != (1,) or conv.dilation != (1,) or not (conv.groups == 1 or _is_depthwise(conv))
            or not isinstance(pad, int) or conv.padding_mode != "zeros"):
        raise UnsupportedModelError(f"int8 path supports Conv1d with stride 1, dilation 1, groups 1 (or depthwise: "
                                    f"groups == in == out channels) and integer zero padding only, got {conv}")
    return pad


def fold_model(model: nn.Sequential) -> list[FloatOp]:
    """BN-folded, ReLU-fused float ops of `model` (which is left untouched)."""
    layers = list(model)
    ops: list[FloatOp] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Conv1d):
            pad = _check_conv(layer)
            w = _np(layer.weight)
            b = _np(layer.bias) if layer.bias is not None else np.zeros(w.shape[0])
            if isinstance(nxt, nn.BatchNorm1d):
                w, b = fold_bn(w, b, nxt)
                i += 1
            relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
            cls = FloatDepthwiseConv1d if _is_depthwise(layer) else FloatConv1d
            ops.append(cls(w.astype(np.float32), b.astype(np.float32), pad, relu))
            i += 2 if relu else 1
        elif isinstance(layer, nn.Linear):
            b = _np(layer.bias) if layer.bias is not None else np.zeros(layer.out_features)
            relu = isinstance(nxt, nn.ReLU)
            ops.append(FloatLinear(_np(layer.weight).astype(np.float32), b.astype(np.float32), relu))
            i += 2 if relu else 1
        elif isinstance(layer, nn.MaxPool1d):
            k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            stride = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            if stride != k or layer.padding not in (0, (0,)) or layer.dilation not in (1, (1,)) or layer.ceil_mode:
                raise UnsupportedModelError(f"int8 path supports MaxPool1d with stride == kernel only, got {layer}")
            ops.append(FloatMaxPool1d(int(k)))
            i += 1
        elif isinstance(layer, nn.AdaptiveAvgPool1d):
            if layer.output_size not in (1, (1,)):
                raise UnsupportedModelError(f"int8 path supports AdaptiveAvgPool1d(1) only, got {layer}")
            ops.append(FloatGlobalAvgPool())
            i += 1
        elif isinstance(layer, (nn.Flatten, nn.Dropout, nn.Identity)):
            i += 1
        else:
            raise UnsupportedModelError(f"int8 path does not support {type(layer).__name__} (layer {i})")
    if not ops or not isinstance(ops[-1], FloatLinear):
        raise UnsupportedModelError("int8 path expects the model to end with a Linear classifier")
    return ops


def run_float(ops: list[FloatOp], x: torch.Tensor, taps: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Float32 forward of folded ops on normalised input; appends every quantized tensor to `taps`
    (the input, each conv/linear output after its fused ReLU, each global-pool output)."""
    if taps is not None:
        taps.append(x)
    for op in ops:
        if isinstance(op, FloatConv1d):
            x = torch.nn.functional.conv1d(x, torch.from_numpy(op.weight), torch.from_numpy(op.bias),
                                           padding=op.padding)
        elif isinstance(op, FloatDepthwiseConv1d):
            x = torch.nn.functional.conv1d(x, torch.from_numpy(op.weight), torch.from_numpy(op.bias),
                                           padding=op.padding, groups=op.weight.shape[0])
        elif isinstance(op, FloatLinear):
            x = torch.nn.functional.linear(x, torch.from_numpy(op.weight), torch.from_numpy(op.bias))
        elif isinstance(op, FloatMaxPool1d):
            x = torch.nn.functional.max_pool1d(x, op.kernel)
            continue  # max-pool shares its input's quantization
        else:
            x = x.mean(dim=-1)
        if getattr(op, "relu", False):
            x = torch.relu(x)
        if taps is not None:
            taps.append(x)
    return x
