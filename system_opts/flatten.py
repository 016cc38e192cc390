"""Flatten a trained `nn.Sequential` CNN (plus its input `Normalizer`) into a flat list of primitive ops.

Steps of `apply`:
1. Walk the Sequential's leaf modules in order (nested Sequentials are expanded; there is no dataflow
   other than the chain, which is why an explicit walker is enough and torch.fx is not needed). Anything
   outside the supported set raises `UnsupportedModuleError` naming the module and its position.
2. Conv1d (stride 1, dilation 1, groups 1, zero padding) becomes `conv1d`; a following BatchNorm1d is
   folded into its weight and bias in float64 (`har.bn_fold.fold_bn`, shared with the int8 path), a
   following ReLU is fused (flag `relu`). Linear becomes `linear`, also with an optional fused ReLU.
   MaxPool1d / AvgPool1d (kernel == stride, no padding) become `maxpool1d` / `avgpool1d`,
   AdaptiveAvgPool1d(1) becomes `global_avg_pool`; Flatten of a vector, Dropout and Identity vanish
   (eval-mode no-ops).
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
Known limits: chains only (no add/concat: our models have none); Flatten of a sequence (T > 1) is refused
(it would need the Linear's columns permuted from torch's (C, T) order); BatchNorm must follow a conv.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
from torch import nn

from har.bn_fold import fold_bn
from har.errors import BadOptionError, HarError
from har.windows import Normalizer

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


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModuleError(f"flatten needs an nn.Sequential chain, got {type(model).__name__} at "
                                     f"{prefix or 'top level'}")
    out = []
    for name, child in model.named_children():
        path = f"{prefix}.{name}" if prefix else name
        out += _leaves(child, path) if isinstance(child, nn.Sequential) else [(path, child)]
    return out


def _check_conv(path: str, m: nn.Conv1d) -> None:
    bad = {"stride": m.stride != (1,), "dilation": m.dilation != (1,), "groups": m.groups != 1,
           "padding_mode": m.padding_mode != "zeros", "padding": isinstance(m.padding, str)}
    for attr, is_bad in bad.items():
        if is_bad:
            raise UnsupportedModuleError(f"module {path} (Conv1d): {attr}={getattr(m, attr)!r} is not supported")


def _check_pool(path: str, m: nn.Module) -> int:
    k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
    s = m.stride if isinstance(m.stride, int) else m.stride[0]
    p = m.padding if isinstance(m.padding, int) else m.padding[0]
    if s != k or p != 0 or m.ceil_mode or getattr(m, "dilation", 1) not in (1, (1,)):
        raise UnsupportedModuleError(f"module {path} ({type(m).__name__}): only kernel == stride, no padding, "
                                     f"floor mode is supported (got kernel {k}, stride {s}, padding {p})")
    return k


def apply(model: nn.Sequential, normalizer: Normalizer, input_shape: tuple[int, int],
          config: FlattenConfig = FlattenConfig()) -> FlatProgram:
    """Flat program of `model` preceded by `normalizer`, for windows of `input_shape` = (C, T)."""
    leaves = _leaves(model)
    for path, m in leaves:
        if type(m).__name__ not in SUPPORTED:
            raise UnsupportedModuleError(f"cannot flatten module {path} ({type(m).__name__}); supported: "
                                         f"{', '.join(SUPPORTED)}")
    c, t = input_shape
    tensors = [TensorSpec("input", (t, c))]
    ops: list[FlatOp] = []
    weights: dict[str, np.ndarray] = {}
    mean = normalizer.mean.astype(np.float64)
    std = normalizer.std.astype(np.float64)
    fold = config.fold_normalizer and bool(leaves) and isinstance(leaves[0][1], nn.Conv1d)

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
    i = 0
    while i < len(leaves):
        path, m = leaves[i]
        shape = tensors[-1].shape
        nxt = [type(x).__name__ for _, x in leaves[i + 1:i + 3]]
        if isinstance(m, nn.Conv1d):
            _check_conv(path, m)
            if len(shape) != 2 or shape[1] != m.in_channels:
                raise UnsupportedModuleError(f"module {path} (Conv1d) expects {m.in_channels} channels, gets {shape}")
            k, p = m.kernel_size[0], m.padding[0]
            w = m.weight.detach().double().numpy()
            b = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels)
            used = 1
            if nxt[:1] == ["BatchNorm1d"]:
                w, b = fold_bn(w, b, leaves[i + 1][1])
                used += 1
            params = {}
            if fold and not ops:
                # conv(norm(x)) with zero pads == conv'(x padded with the mean), conv' = W / std, b - sum(W mean / std)
                b = b - np.einsum("ock,c->o", w, mean / std)
                w = w / std[None, :, None]
                if p:
                    params["pad_value"] = mean
            relu = [type(x).__name__ for _, x in leaves[i + used:i + used + 1]] == ["ReLU"]
            used += relu
            packed, layout = _pack(np.concatenate([w.transpose(2, 1, 0).reshape(k * m.in_channels, m.out_channels),
                                                   b[None]]), config.weight_layout)
            t_out = shape[0] + 2 * p - k + 1
            emit("conv1d", (t_out, m.out_channels), {"weight": packed, **params}, kernel_size=k, padding=p,
                 in_channels=m.in_channels, relu=relu, weight_layout=layout, source=path)
            i += used
            continue
        if isinstance(m, nn.Linear):
            if len(shape) != 1 or shape[0] != m.in_features:
                raise UnsupportedModuleError(f"module {path} (Linear) expects ({m.in_features},), gets {shape}")
            b = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
            packed, layout = _pack(np.concatenate([m.weight.detach().double().numpy().T, b[None]]), config.weight_layout)
            relu = nxt[:1] == ["ReLU"]
            emit("linear", (m.out_features,), {"weight": packed}, relu=relu, weight_layout=layout, source=path)
            i += 1 + relu
            continue
        kind = type(m).__name__
        if kind == "BatchNorm1d":
            raise UnsupportedModuleError(f"module {path} (BatchNorm1d) must directly follow a Conv1d to be folded")
        if kind == "ReLU":
            emit("relu", shape, source=path)
        elif kind in ("MaxPool1d", "AvgPool1d"):
            k = _check_pool(path, m)
            if len(shape) != 2:
                raise UnsupportedModuleError(f"module {path} ({kind}) needs a sequence input, gets {shape}")
            emit(kind.lower(), (shape[0] // k, shape[1]), kernel_size=k, source=path)
        elif kind == "AdaptiveAvgPool1d":
            size = m.output_size if isinstance(m.output_size, int) else m.output_size[0]
            if size != 1 or len(shape) != 2:
                raise UnsupportedModuleError(f"module {path} (AdaptiveAvgPool1d): only output_size=1 is supported")
            emit("global_avg_pool", (shape[1],), source=path)
        elif kind == "Flatten":
            if len(shape) != 1:
                raise UnsupportedModuleError(f"module {path} (Flatten) of a sequence {shape} is not supported; "
                                             "pool to a vector first")
        i += 1
    if not ops:
        raise UnsupportedModuleError("model has no computing module to flatten")
    meta = {"input_layout": "(C, T) float32 un-normalised; stored channel-last (T, C)",
            "normalizer": "folded into op0" if fold else "normalize op", "source": type(model).__name__}
    return FlatProgram(tuple(ops), tuple(tensors), weights, meta)
