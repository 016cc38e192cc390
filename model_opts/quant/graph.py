"""Fold a trained 1-d CNN (`CompactCNN1d` or any module of the same ops) into a flat list of float ops ready for int8.

Steps of `fold_model`:
1. Import the module with the graph importer (`model_opts.graph.fx_import`: torch.fx, the one path every
   model takes): BatchNorm folded into its conv in float64 (`har.bn_fold.fold_bn`), a ReLU right after
   a conv / linear fused into it (in int8 the lower clamp of the requantized output, as in TFLite),
   Flatten and Dropout gone. The importer needs a shape; the ops do not depend on the window length,
   so it traces at `NOMINAL_LENGTH` unless `length` is given.
2. Map the graph to this module's op records: Conv1d (stride 1, symmetric zero padding; groups 1 ->
   `FloatConv1d`, depthwise groups == C_in == C_out -> `FloatDepthwiseConv1d`; weights (C_out, C_in, K)),
   Linear, MaxPool1d (kernel == stride), AdaptiveAvgPool1d(1) (`FloatGlobalAvgPool`); stored float32.
Anything else (residual add, average pooling, a standalone or ReLU6 activation, strided or grouped convs)
raises `UnsupportedModelError` naming the op and its module path: those run on the graph path
(`model_opts.graph`), not on this 1-d op list.
Limits: the op set of `har.model.CompactCNN1d` (with `separable`); the model must end with a Linear.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from har.errors import HarError
from model_opts.graph.fx_import import UnsupportedOpError, import_module


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


NOMINAL_LENGTH = 4096  # the ops do not depend on the window length; shapes are traced at this one


def fold_model(model: nn.Module, length: int | None = None) -> list[FloatOp]:
    """BN-folded, ReLU-fused float ops of `model` (which is left untouched), from the graph importer."""
    in_channels = _in_channels(model)
    try:
        graph = import_module(copy.deepcopy(model), (in_channels, length or NOMINAL_LENGTH))
    except UnsupportedOpError as e:
        raise UnsupportedModelError(f"int8 path: {e}") from None
    ops: list[FloatOp] = []
    for k, n in enumerate(graph.nodes[1:], start=1):
        act = n.attrs.get("act", "none")
        if n.inputs != (k - 1,):
            raise UnsupportedModelError(f"int8 path runs chains only: {n.kind} at {n.name!r} reads {n.inputs}")
        if act not in ("none", "relu") or n.kind in ("add", "avgpool", "relu"):
            what = f"{n.kind} ({act})" if n.kind != "relu" else f"a standalone {act.upper()}"
            raise UnsupportedModelError(f"int8 path does not support {what} at module path {n.name!r}")
        relu = act == "relu"
        if n.kind == "conv":
            (kh, k), stride, (ph, pad) = n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
            c_in = graph.nodes[n.inputs[0]].shape[-1]
            depthwise = n.attrs["groups"] > 1 and n.attrs["groups"] == c_in == n.shape[-1]
            if kh != 1 or stride != (1, 1) or ph or not (n.attrs["groups"] == 1 or depthwise):
                raise UnsupportedModelError(f"int8 path supports Conv1d with stride 1 and groups 1 (or depthwise: "
                                            f"groups == in == out channels) only, got {n.name!r} {n.attrs}")
            w = n.weight[:, 0].transpose(0, 2, 1)  # OHWI (O, 1, K, I) -> (O, I, K)
            cls = FloatDepthwiseConv1d if depthwise else FloatConv1d
            ops.append(cls(w.astype(np.float32), n.bias.astype(np.float32), int(pad), relu))
        elif n.kind == "linear":
            ops.append(FloatLinear(n.weight.astype(np.float32), n.bias.astype(np.float32), relu))
        elif n.kind == "maxpool":
            if n.attrs["kernel"] != n.attrs["stride"]:
                raise UnsupportedModelError(f"int8 path supports MaxPool1d with stride == kernel only ({n.name!r})")
            ops.append(FloatMaxPool1d(int(n.attrs["kernel"][1])))
        elif n.kind == "mean":
            ops.append(FloatGlobalAvgPool())
        elif n.kind != "flatten":
            raise UnsupportedModelError(f"int8 path does not support {n.kind} at module path {n.name!r}")
    if not ops or not isinstance(ops[-1], FloatLinear):
        raise UnsupportedModelError("int8 path expects the model to end with a Linear classifier")
    return ops


def _in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            return int(m.in_channels)
        if isinstance(m, nn.Linear):
            return int(m.in_features)
    raise UnsupportedModelError(f"int8 path: {type(model).__name__} holds no Conv1d or Linear")


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
