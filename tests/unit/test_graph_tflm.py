"""The graph path's .tflite writer: TFLM's own interpreter gives our integer reference's outputs bit for
bit (residual add, depthwise and grouped convs, stride-2 conv with explicit padding, max / avg / global
pooling, ReLU6, a (C, H, W) flatten, and the HAR CNN as a height-1 graph)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from firmware import graph_tflm
from har.errors import BadDataError
from har.model import CNNConfig, CompactCNN1d
from model_opts.graph import intref
from model_opts.graph.fx_import import import_module
from model_opts.graph.quantize import QGraph, quantize
from tests.unit.graph_models import FlattenNet, ProbeNet, randomise_bn

pytest.importorskip("tflite_micro")


def _quantized(model, shape, seed=0):
    graph = import_module(model, shape)
    rng = np.random.default_rng(seed)
    return quantize(graph, [rng.standard_normal((64, *shape)).astype(np.float32)])


@pytest.mark.parametrize("make,shape", [(lambda: randomise_bn(ProbeNet()), (1, 28, 28)),
                                        (lambda: FlattenNet().eval(), (3, 8, 8)),
                                        (lambda: randomise_bn(CompactCNN1d(CNNConfig(separable=True), seed=0)), (6, 80)),
                                        (lambda: nn.Sequential(nn.Conv2d(3, 6, 5, stride=3, padding=2), nn.ReLU6(),
                                                               nn.AvgPool2d(3, 2), nn.Conv2d(6, 12, 3, groups=3, padding=1),
                                                               nn.Flatten(), nn.Linear(72, 4)).eval(), (3, 17, 19))])
def test_tflm_is_bit_exact_with_the_integer_reference(make, shape):
    torch.manual_seed(0)
    q = _quantized(make(), shape)
    rng = np.random.default_rng(1)
    qin = rng.integers(-128, 128, (16, *q.input.shape), dtype=np.int8)
    qin[0], qin[1] = -128, 127
    model = graph_tflm.to_tflite(q)
    np.testing.assert_array_equal(graph_tflm.run(model, qin), intref.run_int8(q, qin).reshape(16, -1))
    assert graph_tflm.to_tflite(q) == model  # deterministic bytes


def test_a_mean_that_keeps_its_input_quantization_is_refused():
    torch.manual_seed(0)
    q = _quantized(randomise_bn(ProbeNet()), (1, 28, 28))
    i = next(k for k, n in enumerate(q.nodes) if n.kind == "mean")
    src = q.nodes[q.nodes[i].inputs[0]]
    bad = type(q.nodes[i])(**{**q.nodes[i].__dict__, "scale": src.scale, "zero_point": src.zero_point})
    with pytest.raises(BadDataError, match="another TFLM kernel path"):
        graph_tflm.to_tflite(QGraph(q.nodes[:i] + (bad,) + q.nodes[i + 1:], q.input_shape))
