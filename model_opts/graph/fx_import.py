"""Import an `nn.Module` into a float dataflow graph (`FloatGraph`) through `torch.fx`.

Steps of `import_module(model, input_shape)`:
1. Trace with `torch.fx` (a Tracer that records, for every node, the qualified path of the module whose
   `forward` created it, so a function call inside a block is named by that block's path). Standard
   `torch.nn` modules are leaves; user modules are traced through.
2. Walk the nodes in order, keeping each one's output shape channel-last per sample: (H, W, C) for
   images, (1, T, C) for sequences (a Conv1d is a Conv2d of height 1, as TFLite lowers it) and (F,) for
   vectors. Supported: Conv1d / Conv2d (any groups, stride, zero padding, dilation 1), BatchNorm1d/2d
   (folded into the conv or linear it follows, in float64 by `har.bn_fold.fold_bn`), ReLU / ReLU6 (fused
   into the conv, linear or add before it when that op has no other user, else a standalone `relu` op),
   MaxPool1d/2d and AvgPool1d/2d (no padding, floor mode), AdaptiveAvgPool1d/2d(1) (`mean`), Flatten /
   torch.flatten (free: tensors are stored channel-last, so the Linear reading a flattened (H, W, C) map,
   directly or through a ReLU / Dropout, gets its columns permuted from torch's (C, H, W) order instead;
   a flattened map read by anything else, or returned, is refused), Linear, Dropout / Identity
   (dropped) and residual add (`+`, `torch.add`) of two equal shapes. Nodes whose result nothing reads
   are dropped first (`eliminate_dead_code`).
3. Anything else raises `UnsupportedOpError` with one line naming the op and the module path.
Weights are float64, conv weights OHWI (C_out, KH, KW, C_in / groups), linear (C_out, F).
Limits: one tensor input and one tensor output, batch dimension first; shapes are fixed at import (the
graph is specialised to `input_shape`); no concat, no broadcasting add, no padded pooling.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from har.bn_fold import fold_bn
from har.errors import HarError

KINDS = ("input", "conv", "linear", "relu", "maxpool", "avgpool", "mean", "add", "flatten")
ACTS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


class UnsupportedOpError(HarError):
    """The module holds an op (or an op setting) the graph path cannot run."""


@dataclass(frozen=True)
class Node:
    """One op. `inputs` index earlier nodes; `shape` is the output per sample, channel-last."""

    kind: str
    name: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


@dataclass(frozen=True)
class FloatGraph:
    nodes: tuple[Node, ...]
    input_shape: tuple[int, ...]  # torch layout per sample: (C, H, W) or (C, T)

    @property
    def output(self) -> int:
        return len(self.nodes) - 1

    def users(self, i: int) -> list[int]:
        return [j for j, n in enumerate(self.nodes) if i in n.inputs]

    def param_count(self) -> int:
        return sum(int(n.weight.size) + int(n.bias.size) for n in self.nodes if n.weight is not None)


class _PathTracer(fx.Tracer):
    """Records in `node.meta["path"]` the module whose forward created the node."""

    def __init__(self):
        super().__init__()
        self._paths = [""]

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        self._paths.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._paths.pop()

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["path"] = self._paths[-1] or "<root>"
        return node


def _describe(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_function":
        return f"{getattr(node.target, '__module__', '') or ''}.{getattr(node.target, '__name__', node.target)}".lstrip(".")
    return f"{node.op} {node.target}"


class _Builder:
    def __init__(self, gm: fx.GraphModule, input_shape: tuple[int, ...]):
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.where: dict[fx.Node, int] = {}  # fx node -> index of the graph node holding its value
        self.chw: dict[int, tuple[int, ...]] = {}  # torch shape per sample of each graph node's value
        self.flat_of: dict[int, tuple[int, int, int]] = {}  # flattened node -> the (H, W, C) it came from
        self.fx_users = {}
        self.input_shape = input_shape

    def add(self, node: Node, chw: tuple[int, ...]) -> int:
        self.nodes.append(node)
        self.chw[len(self.nodes) - 1] = chw
        return len(self.nodes) - 1

    def arg(self, node: fx.Node, a) -> int:
        if not isinstance(a, fx.Node) or a not in self.where:
            raise UnsupportedOpError(f"{_describe(node, self.modules)} at {node.meta['path']!r}: "
                                     f"argument {a!r} is not a tensor of the graph")
        return self.where[a]

    def replace(self, i: int, **changes) -> None:
        n = self.nodes[i]
        self.nodes[i] = Node(**{**n.__dict__, **changes})

    def fusable(self, i: int, fx_node: fx.Node) -> bool:
        """Node i may absorb a BN or an activation: a conv/linear/add whose only user is `fx_node`."""
        producer = self.nodes[i]
        src = [k for k, v in self.where.items() if v == i]
        return producer.kind in ("conv", "linear", "add") and all(len(s.users) == 1 for s in src) \
            and producer.attrs.get("act", "none") == "none"


def _spatial(chw: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W, C) of a torch per-sample shape (C, H, W) or (C, T)."""
    if len(chw) == 3:
        return chw[1], chw[2], chw[0]
    if len(chw) == 2:
        return 1, chw[1], chw[0]
    raise ValueError(chw)


def import_module(model: nn.Module, input_shape: tuple[int, ...]) -> FloatGraph:
    """The eval-mode float graph of `model` for inputs of per-sample shape `input_shape` ((C, H, W) or (C, T))."""
    model = model.eval()
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (2, 3):
        raise UnsupportedOpError(f"input shape {input_shape}: expected (C, T) or (C, H, W) per sample")
    try:
        gm = fx.GraphModule(model, _PathTracer().trace(model))
    except Exception as e:  # data-dependent control flow and the like
        raise UnsupportedOpError(f"torch.fx cannot trace {type(model).__name__}: {str(e).splitlines()[0]}") from None
    gm.graph.eliminate_dead_code()  # a branch whose result nothing reads computes nothing
    b = _Builder(gm, input_shape)
    out_index = None
    for node in gm.graph.nodes:
        path = node.meta.get("path", "<root>")
        if node.op == "placeholder":
            if any(n.kind == "input" for n in b.nodes):
                raise UnsupportedOpError(f"second input {node.target!r}: one tensor input only")
            h, w, c = _spatial(input_shape)
            b.where[node] = b.add(Node("input", node.name, (), (h, w, c) if len(input_shape) == 3 else (1, w, c),
                                       {"rank": len(input_shape)}), input_shape)
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise UnsupportedOpError(f"the model returns {type(out).__name__}: one tensor output only")
            out_index = b.arg(node, out)
        elif node.op == "get_attr":
            raise UnsupportedOpError(f"parameter read {node.target!r} at {path!r}: only module calls and "
                                     f"supported functions may touch weights")
        else:
            b.where[node] = _convert(b, node, path)
    if out_index != len(b.nodes) - 1 or out_index is None:
        raise UnsupportedOpError("the output is not the last op computed (a dead branch or a returned input)")
    for i, (h, w, c) in b.flat_of.items():  # channel-last rows are torch's order only through a Linear
        users = [j for j, n in enumerate(b.nodes) if i in n.inputs]
        if h * w > 1 and (i == out_index or any(b.nodes[j].kind not in ("linear", "relu") for j in users)):
            raise UnsupportedOpError(f"flatten at {b.nodes[i].name!r} of a ({c}, {h}, {w}) map feeds "
                                     f"{'the output' if i == out_index else 'a non-Linear op'}: only a Linear "
                                     "(its columns permuted) may read a flattened map")
    return FloatGraph(tuple(b.nodes), input_shape)


def _kind_of(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        m = modules[node.target]
        table = {nn.Conv1d: "conv", nn.Conv2d: "conv", nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn", nn.ReLU: "relu",
                 nn.ReLU6: "relu6", nn.MaxPool1d: "maxpool", nn.MaxPool2d: "maxpool", nn.AvgPool1d: "avgpool",
                 nn.AvgPool2d: "avgpool", nn.AdaptiveAvgPool1d: "adaptive", nn.AdaptiveAvgPool2d: "adaptive",
                 nn.Flatten: "flatten", nn.Linear: "linear", nn.Dropout: "drop", nn.Dropout1d: "drop",
                 nn.Dropout2d: "drop", nn.Identity: "drop"}
        return table.get(type(m), "?")
    if node.op == "call_function":
        table = {operator.add: "add", operator.iadd: "add", torch.add: "add", torch.relu: "relu", F.relu: "relu",
                 F.relu6: "relu6", torch.flatten: "flatten", F.dropout: "drop"}
        return table.get(node.target, "?")
    if node.op == "call_method":
        return {"relu": "relu", "flatten": "flatten", "add": "add"}.get(node.target, "?")
    return "?"


def _convert(b: _Builder, node: fx.Node, path: str) -> int:
    kind = _kind_of(node, b.modules)
    what = _describe(node, b.modules) if node.op != "call_method" else f"Tensor.{node.target}"
    if kind == "?":
        raise UnsupportedOpError(f"unsupported op {what} at module path {path!r}")
    m = b.modules.get(node.target) if node.op == "call_module" else None
    src = b.arg(node, node.args[0]) if node.args else None
    if src is None:
        raise UnsupportedOpError(f"{what} at {path!r} has no tensor input")
    chw = b.chw[src]
    if kind == "drop":
        return src
    if kind == "flatten":
        start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else (1 if node.op != "call_method" else 0))
        if m is not None:
            start, end = m.start_dim, m.end_dim
        else:
            end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
        if start != 1 or end != -1:
            raise UnsupportedOpError(f"{what} at {path!r}: only flatten(x, 1) (all but the batch) is supported")
        if len(chw) == 1:
            return src
        h, w, c = _spatial(chw)
        i = b.add(Node("flatten", path, (src,), (h * w * c,)), (h * w * c,))
        b.flat_of[i] = (h, w, c)
        return i
    if kind in ("relu", "relu6"):
        if b.fusable(src, node):
            b.replace(src, attrs={**b.nodes[src].attrs, "act": kind})
            return src
        i = b.add(Node("relu", path, (src,), b.nodes[src].shape, {"act": kind}), chw)
        if src in b.flat_of:  # a ReLU keeps the flattened order: the Linear after it still permutes
            b.flat_of[i] = b.flat_of[src]
        return i
    if kind == "bn":
        prod = b.nodes[src]
        if not (b.fusable(src, node) and prod.kind in ("conv", "linear")):
            raise UnsupportedOpError(f"{what} at module path {path!r} must directly follow a conv or linear "
                                     f"with no other user (it is folded into it)")
        wf, bf = fold_bn(prod.weight, prod.bias, m)
        b.replace(src, weight=wf.reshape(prod.weight.shape), bias=bf)
        return src
    if kind == "add":
        if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise UnsupportedOpError(f"{what} at {path!r}: only a + b of two tensors is supported")
        other = b.arg(node, node.args[1])
        if b.chw[other] != chw:
            raise UnsupportedOpError(f"{what} at {path!r}: shapes {chw} and {b.chw[other]} differ (no broadcasting)")
        if b.nodes[src].kind == "flatten" or b.nodes[other].kind == "flatten":
            raise UnsupportedOpError(f"{what} at {path!r}: add of flattened tensors is not supported")
        return b.add(Node("add", path, (src, other), b.nodes[src].shape, {"act": "none"}), chw)
    if node.op != "call_module":
        raise UnsupportedOpError(f"unsupported op {what} at module path {path!r}")
    if kind == "conv":
        return _conv(b, m, src, chw, path)
    if kind == "linear":
        if len(chw) != 1:
            raise UnsupportedOpError(f"Linear at {path!r} on a {len(chw)}-d tensor: flatten first")
        if chw[0] != m.in_features:
            raise UnsupportedOpError(f"Linear at {path!r} expects {m.in_features} inputs, gets {chw[0]}")
        w = m.weight.detach().double().numpy().copy()
        if src in b.flat_of:  # torch flattened (C, H, W); our rows are (H, W, C)
            h, wd, c = b.flat_of[src]
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        bias = np.zeros(w.shape[0]) if m.bias is None else m.bias.detach().double().numpy()
        return b.add(Node("linear", path, (src,), (m.out_features,), {"act": "none"}, w, bias), (m.out_features,))
    if kind in ("maxpool", "avgpool"):
        return _pool(b, m, kind, src, chw, path)
    if kind == "adaptive":
        size = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,)
        if any(s != 1 for s in size):
            raise UnsupportedOpError(f"{type(m).__name__}({m.output_size}) at {path!r}: only output size 1 (global pool)")
        h, w, c = _spatial(chw)
        return b.add(Node("mean", path, (src,), (1, 1, c), {"count": h * w}), (c, 1, 1) if len(chw) == 3 else (c, 1))
    raise UnsupportedOpError(f"unsupported op {what} at module path {path!r}")


def _conv(b: _Builder, m: nn.Module, src: int, chw: tuple[int, ...], path: str) -> int:
    name = type(m).__name__
    one_d = isinstance(m, nn.Conv1d)
    if len(chw) != (2 if one_d else 3):
        raise UnsupportedOpError(f"{name} at {path!r} on an input of shape {chw}")
    if m.padding_mode != "zeros":
        raise UnsupportedOpError(f"{name} at {path!r}: padding_mode {m.padding_mode!r} (only zeros)")
    dil = (1,) + tuple(m.dilation) if one_d else tuple(m.dilation)
    if any(d != 1 for d in dil):
        raise UnsupportedOpError(f"{name} at {path!r}: dilation {m.dilation} (only 1)")
    k = (1, m.kernel_size[0]) if one_d else tuple(m.kernel_size)
    s = (1, m.stride[0]) if one_d else tuple(m.stride)
    if isinstance(m.padding, str):  # "valid" or "same" (stride 1 only, torch's rule)
        pads = [0, 0] if m.padding == "valid" else [(kk - 1) // 2 for kk in k]
        if m.padding == "same" and any((kk - 1) % 2 for kk in k):
            raise UnsupportedOpError(f"{name} at {path!r}: padding='same' with an even kernel is asymmetric")
        p = tuple(pads)
    else:
        p = (0, m.padding[0]) if one_d else tuple(m.padding)
    h, w, c = _spatial(chw)
    if c != m.in_channels:
        raise UnsupportedOpError(f"{name} at {path!r} expects {m.in_channels} input channels, gets {c}")
    ho, wo = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    if ho < 1 or wo < 1:
        raise UnsupportedOpError(f"{name} at {path!r}: kernel {k} larger than its padded input ({h}, {w})")
    wt = m.weight.detach().double().numpy()
    wt = (wt[:, :, None, :] if one_d else wt).transpose(0, 2, 3, 1).copy()  # OHWI
    bias = np.zeros(wt.shape[0]) if m.bias is None else m.bias.detach().double().numpy()
    attrs = {"kernel": k, "stride": s, "padding": p, "groups": int(m.groups), "act": "none"}
    out_chw = (m.out_channels, wo) if one_d else (m.out_channels, ho, wo)
    return b.add(Node("conv", path, (src,), (ho, wo, m.out_channels), attrs, wt, bias), out_chw)


def _pool(b: _Builder, m: nn.Module, kind: str, src: int, chw: tuple[int, ...], path: str) -> int:
    name = type(m).__name__
    one_d = name.endswith("1d")
    if len(chw) != (2 if one_d else 3):
        raise UnsupportedOpError(f"{name} at {path!r} on an input of shape {chw}")
    n = 1 if one_d else 2

    def raw(v, what: str) -> tuple[int, ...]:
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,) * n
        if len(v) != n:
            raise UnsupportedOpError(f"{name} at {path!r}: {what} {v}")
        return tuple(int(x) for x in v)

    def dims(v, what: str) -> tuple[int, int]:  # (H, W) sizes; a 1-d op has height 1
        v = raw(v, what)
        return (1, v[0]) if one_d else v

    k = dims(m.kernel_size, "kernel")
    s = dims(m.stride if m.stride is not None else m.kernel_size, "stride")
    dilated = kind == "maxpool" and any(d != 1 for d in raw(m.dilation, "dilation"))
    if any(raw(m.padding, "padding")) or m.ceil_mode or dilated:
        raise UnsupportedOpError(f"{name} at {path!r}: only unpadded, floor-mode, undilated pooling")
    if kind == "avgpool" and getattr(m, "divisor_override", None):
        raise UnsupportedOpError(f"{name} at {path!r}: divisor_override is not supported")
    h, w, c = _spatial(chw)
    ho, wo = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    if ho < 1 or wo < 1:
        raise UnsupportedOpError(f"{name} at {path!r}: window {k} larger than its input ({h}, {w})")
    out_chw = (c, wo) if one_d else (c, ho, wo)
    return b.add(Node(kind, path, (src,), (ho, wo, c), {"kernel": k, "stride": s}), out_chw)
