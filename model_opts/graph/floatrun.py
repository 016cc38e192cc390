"""Float execution of a `FloatGraph` in numpy: the check that import kept the module's function, and the
calibration pass of `model_opts.graph.quantize`.

Batch tensors are (N, H, W, C) float64 (vectors (N, F)); `run(graph, x)` takes torch-layout input
(N, C, H, W) or (N, C, T) and returns every node's output (`keep_all`) or the last one. Conv is im2col
(`sliding_window_view`) and one matmul per group; pools are window reductions; the fused activation
clamps to `fx_import.ACTS`.
Limits: float64 and batch-at-once: call it on batches of a few hundred images.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from har.errors import BadDataError
from model_opts.graph.fx_import import ACTS, FloatGraph, Node


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C); (N, C, T) -> (N, 1, T, C)."""
    x = np.asarray(x)
    if x.ndim == 3:
        return np.ascontiguousarray(x.transpose(0, 2, 1)[:, None])
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    raise BadDataError(f"expected a batch of (C, T) or (C, H, W) inputs, got shape {x.shape}")


def windows(x: np.ndarray, kernel, stride) -> np.ndarray:
    """(N, H, W, C) -> (N, Ho, Wo, C, KH, KW) strided windows (a view)."""
    v = sliding_window_view(x, tuple(kernel), axis=(1, 2))
    return v[:, ::stride[0], ::stride[1]]


def conv_cols(x: np.ndarray, attrs: dict, pad_value) -> np.ndarray:
    """Padded (N, Ho, Wo, KH, KW, C) windows of an (N, H, W, C) input."""
    ph, pw = attrs["padding"]
    if ph or pw:
        x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=pad_value)
    return windows(x, attrs["kernel"], attrs["stride"]).transpose(0, 1, 2, 4, 5, 3)


def grouped_matmul(cols: np.ndarray, weight: np.ndarray, groups: int) -> np.ndarray:
    """sum over (kh, kw, c in group) of cols * weight[o]: (N, Ho, Wo, KH, KW, C) x OHWI -> (N, Ho, Wo, C_out)."""
    n, ho, wo, kh, kw, c = cols.shape
    c_out, cg = weight.shape[0], c // groups
    og = c_out // groups
    out = np.empty((n, ho, wo, c_out), dtype=np.float64)
    for g in range(groups):
        a = cols[..., g * cg:(g + 1) * cg].reshape(n * ho * wo, kh * kw * cg).astype(np.float64)
        w = weight[g * og:(g + 1) * og].reshape(og, kh * kw * cg).astype(np.float64)
        out[..., g * og:(g + 1) * og] = (a @ w.T).reshape(n, ho, wo, og)
    return out


def _act(y: np.ndarray, act: str) -> np.ndarray:
    lo, hi = ACTS[act]
    return np.clip(y, lo, hi)


def run_node(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    if node.kind == "conv":
        y = grouped_matmul(conv_cols(x, node.attrs, 0.0), node.weight, node.attrs["groups"]) + node.bias
        return _act(y, node.attrs["act"])
    if node.kind == "linear":
        return _act(x.reshape(len(x), -1) @ node.weight.T + node.bias, node.attrs["act"])
    if node.kind == "relu":
        return _act(x, node.attrs["act"])
    if node.kind == "maxpool":
        return windows(x, node.attrs["kernel"], node.attrs["stride"]).max(axis=(4, 5))
    if node.kind == "avgpool":
        return windows(x, node.attrs["kernel"], node.attrs["stride"]).mean(axis=(4, 5))
    if node.kind == "mean":
        return x.mean(axis=(1, 2), keepdims=True)
    if node.kind == "add":
        return _act(x + xs[1], node.attrs["act"])
    if node.kind == "flatten":
        return x.reshape(len(x), -1)
    raise ValueError(f"no float rule for {node.kind}")


def run(graph: FloatGraph, x: np.ndarray, keep_all: bool = False):
    """Outputs of the graph on torch-layout batch `x` (every node's when `keep_all`)."""
    values = [to_nhwc(np.asarray(x, dtype=np.float64))]
    for node in graph.nodes[1:]:
        values.append(run_node(node, [values[i] for i in node.inputs]))
    return values if keep_all else values[-1]
