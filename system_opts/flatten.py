"""Flatten a trained 1-d CNN (any module of the supported ops, plus its input `Normalizer`) into a flat list of primitive ops.

Steps of `apply`:
1. Import the model with the graph importer (`model_opts.graph.fx_import`, torch.fx: the one path every
   model takes, `nn.Sequential` or not): BatchNorm folded into its conv in float64 (`har.bn_fold.fold_bn`,
   shared with the int8 path), a ReLU after a conv / linear fused (flag `relu`), Dropout / Identity gone.
   An op outside this executor's set (residual add, ReLU6, strided or grouped convs, 2-d convs: those run
   on the graph path) raises `UnsupportedModuleError` naming the module path.
2. Conv1d (stride 1, groups 1, zero padding) becomes `conv1d`, Linear `linear`, a standalone ReLU `relu`,
   MaxPool1d / AvgPool1d (kernel == stride, no padding) `maxpool1d` / `avgpool1d`,
   AdaptiveAvgPool1d(1) `global_avg_pool`; Flatten of a vector vanishes.
3. The input Normalizer ((x - mean) / std per channel) is folded into the first conv: weights are divided
   by std per input channel and the bias absorbs -sum(W * mean / std). Zero padding of the *normalised*
   input is the same as padding the *raw* input with the per-channel mean, so the folded conv pads with
   `pad_value = mean` (stored as a weight) and is exact at the borders too; padding the raw input with
   zeros would not be. When the first op is not a conv (or `fold_normalizer=False`) a `normalize` op is
   kept instead.
4. Weights are packed in the layout the executors use: conv as (K * C_in + 1, C_out), row k * C_in + c
   holding tap k of input channel c and the last row holding the bias, so that one GEMM over an im2col
   matrix with a trailing ones column computes conv + bias; linear as (F + 1, out) the same way.
   `weight_layout` "kn" stores that matrix, "nk" its transpose (C_out, K * C_in + 1), which the GEMM
   reads as a transposed view. "auto" picks "nk" when C_out % 16 is 1..8: measured on this project's
   numpy wheel (OpenBLAS 0.3.31, SkylakeX kernels), the small-matrix SGEMM kernel for the non-transposed
   case mallocs a packing buffer on every call for such a column tail, the transposed one does not;
   "kn" is kept elsewhere because it is up to 2.8x faster for our larger layers (see buffer_pool).

Tensors are described per window (batch 1) and channel-last: sequences are (T, C), vectors (F,).
MACs count conv1d and linear only, like `har.measure.TorchArtifact`.
Known limits: chains only (add and concat run on the graph path); Flatten of a sequence (T > 1) is refused
(it would need the Linear's columns permuted from torch's (C, T) order); BatchNorm must follow a conv.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
from torch import nn

from har.errors import BadOptionError, HarError
from har.windows import Normalizer
from model_opts.graph.fx_import import UnsupportedOpError, import_module

SUPPORTED = ("Conv1d", "BatchNorm1d", "ReLU", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "Flatten",
             "Dropout", "Identity", "Linear")


class UnsupportedModuleError(HarError):
    """The model holds a module (or a module setting) the flat executor cannot run."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def size_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class FlatOp:
    kind: str
    name: str
    input: int
    output: int
    params: tuple[str, ...] = ()
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FlatProgram:
    """`ops` in execution order; `tensors[0]` is the raw (T, C) window, `tensors[-1]` the (K,) scores."""

    ops: tuple[FlatOp, ...]
    tensors: tuple[TensorSpec, ...]
    weights: Mapping[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def input_shape_ct(self) -> tuple[int, int]:
        t, c = self.tensors[0].shape
        return c, t

    def macs_per_window(self) -> int:
        macs = 0
        for op in self.ops:
            out = self.tensors[op.output].shape
            if op.kind in ("conv1d", "conv1d_q"):
                macs += out[0] * out[1] * op.attrs["in_channels"] * op.attrs["kernel_size"]
            elif op.kind in ("linear", "linear_q"):
                macs += out[0] * self.tensors[op.input].shape[0]
        return macs

    def op_weight_bytes(self) -> list[int]:
        return [sum(int(self.weights[p].nbytes) for p in op.params) for op in self.ops]

    def to_dict(self) -> dict:
        """JSON-ready structure (no weights): enough to rebuild the program around a weight mapping."""
        return {"format": "har-memopt/flat-program-v1", "meta": self.meta,
                "tensors": [asdict(t) for t in self.tensors],
                "ops": [{**asdict(op), "params": list(op.params)} for op in self.ops]}

    @classmethod
    def from_dict(cls, d: dict, weights: Mapping[str, np.ndarray]) -> "FlatProgram":
        try:
            tensors = tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in d["tensors"])
            ops = tuple(FlatOp(o["kind"], o["name"], o["input"], o["output"], tuple(o["params"]), o["attrs"])
                        for o in d["ops"])
        except (KeyError, TypeError) as exc:
            raise UnsupportedModuleError(f"not a flat program description: missing {exc}") from None
        return cls(ops, tensors, weights, d.get("meta", {}))


LAYOUTS = ("auto", "kn", "nk")


@dataclass(frozen=True)
class FlattenConfig:
    fold_normalizer: bool = True
    weight_layout: str = "auto"

    def __post_init__(self) -> None:
        if self.weight_layout not in LAYOUTS:
            raise BadOptionError(f"unknown weight layout {self.weight_layout!r}; choose one of {list(LAYOUTS)}")


def _pack(kn: np.ndarray, layout: str) -> tuple[np.ndarray, str]:
    if layout == "auto":
        layout = "nk" if 1 <= kn.shape[1] % 16 <= 8 else "kn"
    return (kn if layout == "kn" else kn.T), layout


def apply(model: nn.Sequential, normalizer: Normalizer, input_shape: tuple[int, int],
          config: FlattenConfig = FlattenConfig()) -> FlatProgram:
    """Flat program of `model` preceded by `normalizer`, for windows of `input_shape` = (C, T)."""
    try:
        graph = import_module(copy.deepcopy(model), tuple(input_shape))
    except UnsupportedOpError as e:
        raise UnsupportedModuleError(f"cannot flatten: {e}") from None
    c, t = input_shape
    tensors = [TensorSpec("input", (t, c))]
    ops: list[FlatOp] = []
    weights: dict[str, np.ndarray] = {}
    mean = normalizer.mean.astype(np.float64)
    std = normalizer.std.astype(np.float64)
    nodes = graph.nodes
    fold = config.fold_normalizer and len(nodes) > 1 and nodes[1].kind == "conv"

    def emit(kind: str, shape: tuple[int, ...], params: dict[str, np.ndarray] | None = None, **attrs) -> FlatOp:
        name = f"op{len(ops)}.{kind}"
        for key, arr in (params or {}).items():
            weights[f"{name}.{key}"] = np.ascontiguousarray(arr, dtype=np.float32)
        tensors.append(TensorSpec(f"{name}.out", tuple(int(s) for s in shape)))
        op = FlatOp(kind, name, len(tensors) - 2, len(tensors) - 1,
                    tuple(f"{name}.{key}" for key in (params or {})), attrs)
        ops.append(op)
        return op

    if not fold:
        emit("normalize", (t, c), {"mean": mean, "std": std})
    for k, n in enumerate(nodes[1:], start=1):
        path, act = n.name, n.attrs.get("act", "none")
        if n.inputs != (k - 1,):
            raise UnsupportedModuleError(f"cannot flatten module {path}: it reads {n.inputs}, not the op before "
                                         "it (the flat executor runs chains only; the graph path runs any graph)")
        what = {"conv": "Conv1d", "linear": "Linear", "maxpool": "MaxPool1d", "avgpool": "AvgPool1d",
                "mean": "AdaptiveAvgPool1d", "relu": act.upper(), "add": "add", "flatten": "Flatten"}[n.kind]
        if act not in ("none", "relu"):
            raise UnsupportedModuleError(f"module {path} ({what}): activation {act} is not supported")
        relu = act == "relu"
        if n.kind == "conv":
            (kh, k), (p0, p) = n.attrs["kernel"], n.attrs["padding"]
            for attr, bad in (("stride", n.attrs["stride"] != (1, 1)), ("groups", n.attrs["groups"] != 1),
                              ("2-d kernel", kh != 1 or p0 != 0)):
                if bad:
                    raise UnsupportedModuleError(f"module {path} (Conv1d): {attr} {n.attrs} is not supported")
            w, b = n.weight[:, 0].transpose(0, 2, 1), n.bias  # OHWI (O, 1, K, I) -> (O, I, K)
            c_in = w.shape[1]
            params = {}
            if fold and not ops:
                # conv(norm(x)) with zero pads == conv'(x padded with the mean), conv' = W / std, b - sum(W mean / std)
                b = b - np.einsum("ock,c->o", w, mean / std)
                w = w / std[None, :, None]
                if p:
                    params["pad_value"] = mean
            packed, layout = _pack(np.concatenate([w.transpose(2, 1, 0).reshape(k * c_in, w.shape[0]), b[None]]),
                                   config.weight_layout)
            emit("conv1d", (n.shape[1], n.shape[2]), {"weight": packed, **params}, kernel_size=int(k), padding=int(p),
                 in_channels=int(c_in), relu=relu, weight_layout=layout, source=path)
        elif n.kind == "linear":
            packed, layout = _pack(np.concatenate([n.weight.T, n.bias[None]]), config.weight_layout)
            emit("linear", n.shape, {"weight": packed}, relu=relu, weight_layout=layout, source=path)
        elif n.kind == "relu":
            emit("relu", tensors[-1].shape, source=path)
        elif n.kind in ("maxpool", "avgpool"):
            if n.attrs["kernel"] != n.attrs["stride"]:
                raise UnsupportedModuleError(f"module {path} ({what}): only kernel == stride, no padding, floor mode "
                                             f"is supported (got kernel {n.attrs['kernel'][1]}, stride "
                                             f"{n.attrs['stride'][1]})")
            emit(f"{n.kind}1d", (n.shape[1], n.shape[2]), kernel_size=int(n.attrs["kernel"][1]), source=path)
        elif n.kind == "mean":
            emit("global_avg_pool", (n.shape[2],), source=path)
        elif n.kind == "flatten":
            if len(tensors[-1].shape) != 1:
                raise UnsupportedModuleError(f"module {path} (Flatten) of a sequence {tensors[-1].shape} is not "
                                             "supported; pool to a vector first")
        else:
            raise UnsupportedModuleError(f"cannot flatten module {path} ({what}): the flat executor runs chains "
                                         "only (the graph path, model_opts.graph, runs it)")
    if not ops:
        raise UnsupportedModuleError("model has no computing module to flatten")
    meta = {"input_layout": "(C, T) float32 un-normalised; stored channel-last (T, C)",
            "normalizer": "folded into op0" if fold else "normalize op", "source": type(model).__name__}
    return FlatProgram(tuple(ops), tuple(tensors), weights, meta)
