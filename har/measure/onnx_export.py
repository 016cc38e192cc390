"""Deterministic ONNX export of a trained `CompactCNN1d` together with its input normaliser.

Steps of `export_onnx`:
1. Fold each eval-mode BatchNorm1d into the Conv1d before it (`torch.nn.utils.fusion.fuse_conv_bn_eval`),
   so the file's initializers are what a device stores (ONNX Runtime would fold them at load anyway).
2. Wrap the network in a module that first normalises `(x - mean) / std` with the training-user
   statistics, so the exported graph takes the same un-normalised windows every artifact takes. The
   normaliser is NOT folded into the first convolution: with zero ("same") padding that fold is not exact
   at the window edges (a padded zero in normalised space is the mean, not zero, in raw space).
3. Export with the torch.export-based exporter (`dynamo=True`, opset 18), batch dimension dynamic
   (batch-1 latency and batch-256 throughput run the same file).
4. Drop every doc string and metadata property (they carry exporter stack traces and source paths),
   then serialise. Same weights + same library versions -> byte-identical bytes (checked by a test).
Limits: only the layer types of `CompactCNN1d` are known to export to plain ONNX ops; opset 18.
"""
from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from har.windows import Normalizer

OPSET = 18
INPUT_NAME = "windows"
OUTPUT_NAME = "scores"


class NormalisedNet(nn.Module):
    """`net((x - mean) / std)` with the statistics as buffers (they become graph initializers)."""

    def __init__(self, net: nn.Module, normalizer: Normalizer):
        super().__init__()
        self.net = net
        self.register_buffer("input_mean", torch.from_numpy(normalizer.mean.copy()).view(1, -1, 1))
        self.register_buffer("input_std", torch.from_numpy(normalizer.std.copy()).view(1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.input_mean) / self.input_std)


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """A copy of an eval-mode Sequential with every Conv1d -> BatchNorm1d pair fused into one Conv1d."""
    mods, out, i = list(model), [], 0
    while i < len(mods):
        if isinstance(mods[i], nn.Conv1d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm1d):
            out.append(fuse_conv_bn_eval(mods[i].eval(), mods[i + 1].eval()))
            i += 2
        else:
            out.append(mods[i])
            i += 1
    return nn.Sequential(*out).eval()


@contextlib.contextmanager
def _quiet_exporter():
    # the exporter logs one warning per missing optional torchvision op and emits FutureWarnings
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _strip_metadata(proto) -> None:
    proto.doc_string = ""
    del proto.metadata_props[:]
    graph = proto.graph
    graph.doc_string = ""
    del graph.metadata_props[:]
    for group in (graph.node, graph.input, graph.output, graph.value_info, graph.initializer):
        for item in group:
            item.doc_string = ""
            del item.metadata_props[:]


def export_onnx(model: nn.Sequential, normalizer: Normalizer, n_channels: int, length: int,
                opset: int = OPSET) -> bytes:
    """ONNX bytes of `normalise -> model` (BatchNorm folded), taking float32 (batch, C, T) windows."""
    wrapped = NormalisedNet(fold_batchnorm(model.eval()), normalizer).eval()
    example = torch.zeros(2, n_channels, length, dtype=torch.float32)  # batch 2: avoid 0/1 specialisation
    with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    proto = program.model_proto
    _strip_metadata(proto)
    return proto.SerializeToString(deterministic=True)


def export_error(model: nn.Sequential, normalizer: Normalizer, onnx_bytes: bytes, x: np.ndarray) -> float:
    """Largest |torch - onnxruntime| score difference on windows `x` (a check that the export is faithful)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
    with torch.inference_mode():
        want = model.eval()(torch.from_numpy(normalizer(x))).numpy()
    return float(np.abs(got - want).max())
