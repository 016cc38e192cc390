"""Stored arrays, batch-1 tensor shapes, lifetimes and MACs read from an ONNX graph.

Steps:
1. `stored_arrays`: every initializer (`onnx.numpy_helper.to_array`) plus the tensors of `Constant`
   nodes: weights, biases, int8 scales and zero points, int32 biases, normaliser statistics and the
   small int64 shape/axes constants. All of them are bytes a device stores.
2. `batch1_types`: fix the batch dimension of the graph inputs and outputs to 1, drop stale
   `value_info`, run `onnx.shape_inference.infer_shapes` (with data propagation, for Reshape). Values of
   operators the ONNX checker does not know (ONNX Runtime's `com.microsoft` ops such as QGemm) get no
   shape; the caller may pass `fill_missing`, which measures them (see `har.measure.peers`).
3. `graph_lifetimes`: the nodes are in topological order (an ONNX requirement, checked). A graph input
   lives from op 0; a node output from its node; each lives until its last consumer (graph outputs to
   the last op). Size = elements x item size of its batch-1 type. Initializers and constants are weights,
   not activations.
4. `graph_macs`: Conv / ConvInteger / QLinearConv: output elements x (C_in / groups) x kernel size;
   Gemm / QGemm / MatMul / MatMulInteger / QLinearMatMul: output elements x the reduced dimension. Other
   ops are elementwise or pooling work and are left out, as in `TorchArtifact`.
Limits: this is the graph as stored in the file, not ONNX Runtime's optimised graph (which fuses
nodes and may drop or merge intermediates), so the lifetimes describe the model, not ORT's own buffers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from har.measure.artifact import TensorLife

TypeMap = dict[str, tuple[tuple[int, ...], np.dtype]]
_CONV = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # op -> index of the weight input
_MATMUL = {"Gemm", "QGemm", "MatMul", "MatMulInteger", "QLinearMatMul"}


def stored_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    arrays[node.output[0]] = numpy_helper.to_array(attr.t)
    return arrays


def _weight_names(model: onnx.ModelProto) -> set[str]:
    consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return {t.name for t in model.graph.initializer} | consts


def _activation_names(model: onnx.ModelProto) -> list[str]:
    weights = _weight_names(model)
    names = [v.name for v in model.graph.input if v.name not in weights]
    names += [o for n in model.graph.node if n.op_type != "Constant" for o in n.output if o]
    return names


def _static_type(vi: onnx.ValueInfoProto) -> tuple[tuple[int, ...], np.dtype] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape") or tt.elem_type == 0:
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    if any(d < 0 for d in dims):
        return None
    return dims, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))


def batch1_types(model: onnx.ModelProto, fill_missing: Callable[[list[str]], TypeMap] | None = None) -> TypeMap:
    """Shape and dtype of every activation of a batch-1 inference (see the module docstring, step 2)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    weights = _weight_names(m)
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name not in weights and vi.type.tensor_type.shape.dim:
            vi.type.tensor_type.shape.dim[0].Clear()
            vi.type.tensor_type.shape.dim[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    known: TypeMap = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        t = _static_type(vi)
        if t is not None:
            known[vi.name] = t
    missing = [n for n in _activation_names(model) if n not in known]
    if missing and fill_missing is not None:
        known.update(fill_missing(missing))
        missing = [n for n in missing if n not in known]
    if missing:
        raise ValueError(f"no static batch-1 shape for {missing[:5]} (pass fill_missing)")
    return known


def graph_lifetimes(model: onnx.ModelProto, types: TypeMap) -> list[TensorLife]:
    """Lifetimes of every activation of one batch-1 inference, in order of production."""
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    weights = _weight_names(model)
    first: dict[str, int] = {v.name: 0 for v in model.graph.input if v.name not in weights}
    last = dict(first)
    for i, node in enumerate(nodes):
        for name in node.input:
            if not name or name in weights:
                continue
            if name not in first:
                raise ValueError(f"node {i} ({node.op_type}) reads {name!r} before it is produced: not topological")
            last[name] = max(last[name], i)
        for name in node.output:
            if name:
                first[name] = last[name] = i
    for vi in model.graph.output:
        last[vi.name] = len(nodes) - 1
    lives = []
    for name, start in first.items():
        shape, dtype = types[name]
        lives.append(TensorLife(name, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, start, last[name]))
    return lives


def graph_macs(model: onnx.ModelProto, types: TypeMap) -> int:
    """Multiply-accumulates of one batch-1 inference (see the module docstring, step 4)."""
    init_shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}

    def shape(name: str) -> tuple[int, ...]:
        return init_shapes[name] if name in init_shapes else types[name][0]

    macs = 0
    for node in model.graph.node:
        out = int(np.prod(shape(node.output[0]), dtype=np.int64)) if node.output else 0
        if node.op_type in _CONV:
            w = shape(node.input[_CONV[node.op_type]])
            macs += out * int(np.prod(w[1:], dtype=np.int64))  # w = (C_out, C_in / groups, *kernel)
        elif node.op_type in _MATMUL:
            a = shape(node.input[0])
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            macs += out * (a[-2] if trans_a else a[-1])
    return int(macs)
