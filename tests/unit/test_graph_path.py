"""The graph path: torch.fx import, float graph, int8 quantization, integer reference, planned arena and
C kernels (host), on modules written for the test (residual, depthwise, grouped, pooling) and the HAR CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from har.model import CNNConfig, CompactCNN1d
from model_opts.graph import floatrun, intref
from model_opts.graph.fx_import import UnsupportedOpError, import_module
from model_opts.graph.quantize import quantize
from system_opts import graph_c, graph_program
from tests.unit.graph_models import FlattenNet, ProbeNet, randomise_bn


def _model(seed=0):
    torch.manual_seed(seed)
    return randomise_bn(ProbeNet(), seed)


def _torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("make,shape", [(_model, (1, 28, 28)), (lambda: FlattenNet().eval(), (3, 8, 8)),
                                        (lambda: randomise_bn(CompactCNN1d(CNNConfig(), seed=0)), (6, 80)),
                                        (lambda: randomise_bn(CompactCNN1d(CNNConfig(separable=True), seed=0)),
                                         (6, 80))])
def test_float_graph_computes_the_module(make, shape):
    model = make()
    graph = import_module(model, shape)
    x = np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32)
    np.testing.assert_allclose(floatrun.run(graph, x), _torch(model, x), atol=1e-5, rtol=1e-5)
    assert not any(n.kind == "input" for n in graph.nodes[1:])


def test_import_fuses_bn_and_activations_and_drops_dropout():
    graph = import_module(_model(), (1, 28, 28))
    kinds = [n.kind for n in graph.nodes]
    assert kinds == ["input", "conv", "conv", "conv", "add", "maxpool", "avgpool", "conv", "mean", "flatten", "linear"]
    acts = {n.name: n.attrs.get("act") for n in graph.nodes}
    assert acts["stem.0"] == "relu6" and acts["block.dw"] == "relu" and acts["block"] == "relu"
    assert acts["block.pw"] == "none"  # its output is the add's input: the ReLU after the add is the add's
    add = graph.nodes[kinds.index("add")]
    assert graph.nodes[add.inputs[1]].name == "stem.0"  # the skip reads the block's input
    assert graph.nodes[7].attrs["groups"] == 2 and graph.nodes[2].attrs["groups"] == 8


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid())

    def forward(self, x):
        return self.body(x).flatten(1)


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.tanh(self.conv(x)).flatten(1)


class _LoneBn(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return self.bn(self.pool(x)).flatten(1)


@pytest.mark.parametrize("model,message", [
    (_Sigmoid(), "unsupported op Sigmoid at module path 'body.1'"),
    (_Functional(), "unsupported op torch.tanh at module path '<root>'"),
    (_LoneBn(), "BatchNorm2d at module path 'bn' must directly follow a conv"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Flatten()), "dilation"),
    (nn.Sequential(nn.MaxPool2d(2, padding=1), nn.Flatten()), "unpadded"),
])
def test_unsupported_ops_are_one_line_naming_op_and_path(model, message):
    with pytest.raises(UnsupportedOpError) as e:
        import_module(model.eval(), (1, 8, 8))
    assert message in str(e.value) and "\n" not in str(e.value)


def _quantized(seed=0, n_cal=64):
    model = _model(seed)
    graph = import_module(model, (1, 28, 28))
    rng = np.random.default_rng(seed)
    cal = [rng.standard_normal((n_cal, 1, 28, 28)).astype(np.float32)]
    return model, graph, quantize(graph, cal)


def test_int8_graph_tracks_the_float_graph():
    model, graph, q = _quantized()
    x = np.random.default_rng(7).standard_normal((64, 1, 28, 28)).astype(np.float32)
    fl = floatrun.run(graph, x)
    deq = intref.dequantize(q, intref.run(q, x))
    assert np.abs(deq - fl).max() < 0.05 * np.abs(fl).max()
    assert (deq.argmax(1) == fl.argmax(1)).mean() >= 0.9
    add = next(n for n in q.nodes if n.kind == "add")
    assert add.attrs["act_min"] == add.zero_point  # the fused ReLU is a clamp at the quantized zero
    for n in q.nodes:
        if n.kind in ("maxpool", "avgpool", "flatten"):
            src = q.nodes[n.inputs[0]]
            assert (n.scale, n.zero_point) == (src.scale, src.zero_point)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_c_kernels_equal_the_integer_reference(seed):
    _, _, q = _quantized(seed)
    rng = np.random.default_rng(seed)
    qin = rng.integers(-128, 128, size=(24, 28, 28, 1), dtype=np.int8)
    qin[0] = -128
    qin[1] = 127  # saturating extremes
    ref = intref.run_int8(q, qin)
    out = graph_c.run(graph_program.build(q), qin)
    np.testing.assert_array_equal(out, ref.reshape(len(ref), -1))


def test_har_cnn_through_the_graph_path_is_bit_exact_in_c():
    model = randomise_bn(CompactCNN1d(CNNConfig(separable=True), seed=3))
    graph = import_module(model, (6, 80))
    rng = np.random.default_rng(3)
    q = quantize(graph, [rng.standard_normal((32, 6, 80)).astype(np.float32)])
    x = rng.standard_normal((16, 6, 80)).astype(np.float32)
    ref = intref.run(q, x)
    out = graph_c.run(graph_program.build(q), intref.quantize_input(q, x))
    np.testing.assert_array_equal(out, ref)


def test_planned_arena_keeps_the_residual_input_alive_and_never_overlaps_live_tensors():
    _, _, q = _quantized()
    prog = graph_program.build(q)
    by_name = {b.name: b for b in prog.buffers}
    skip = by_name["t1.stem.0"]
    add_op = prog.op_names.index("block")
    assert skip.first_use == 0 and skip.last_use == add_op  # alive across dw and pw
    plan = prog.plan
    assert plan.overlaps() == [] and plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes
    assert plan.arena_bytes < plan.naive_bytes
    # the flatten has no buffer of its own: the linear reads the mean's output
    assert not any(".<root>" in b.name or "flatten" in b.name for b in prog.buffers)
    assert prog.ops[-1, 1] == prog.plan[[b.name for b in prog.buffers if b.name.endswith(".gap")][0]].offset_bytes


def test_program_refuses_an_overflowing_layer():
    _, _, q = _quantized()
    i = next(k for k, n in enumerate(q.nodes) if n.kind == "linear")
    n = q.nodes[i]
    bad = type(n)(**{**n.__dict__, "bias": np.full_like(n.bias, 2**31 - 10)})
    q2 = type(q)(q.nodes[:i] + (bad,) + q.nodes[i + 1:], q.input_shape)
    with pytest.raises(Exception, match="could overflow int32"):
        graph_program.build(q2)


def test_c_input_quantizer_equals_the_reference_on_every_float():
    import ctypes
    _, _, q = _quantized()
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(4096) * 4).astype(np.float32)
    x[:6] = [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 0.0]
    lib = graph_c.library()
    lib.har_g_quantize.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_float, ctypes.c_float, ctypes.c_int32,
                                   ctypes.c_void_p]
    out = np.zeros(len(x), np.int8)
    inv = np.float32(1.0) / np.float32(q.input.scale)
    lib.har_g_quantize(x.ctypes.data, len(x), float(inv), float(q.input.zero_point), q.input.zero_point,
                       out.ctypes.data)
    from model_opts.quant.intref import quantize_affine
    np.testing.assert_array_equal(out, quantize_affine(x, inv, np.float32(q.input.zero_point), q.input.zero_point))


class _ReluAfterFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.aux, self.fc = nn.Conv2d(1, 3, 3), nn.Conv2d(1, 2, 3), nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        unused = self.aux(x)  # noqa: F841 -- a dead branch: dropped, never computed
        return self.fc(torch.relu(self.conv(x).flatten(1)))


def test_flatten_order_survives_a_relu_dead_branches_drop_and_a_returned_map_is_refused():
    model = _ReluAfterFlatten().eval()
    graph = import_module(model, (1, 6, 6))
    assert [n.kind for n in graph.nodes] == ["input", "conv", "flatten", "relu", "linear"]
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(floatrun.run(graph, x), _torch(model, x), atol=1e-5)
    with pytest.raises(UnsupportedOpError, match="feeds the output"):
        import_module(nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten()).eval(), (1, 6, 6))


def test_padding_past_the_kernel_runs_in_c():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(3, 2)).eval()
    rng = np.random.default_rng(2)
    q = quantize(import_module(model, (2, 5, 5)), [rng.standard_normal((16, 2, 5, 5)).astype(np.float32)])
    qin = rng.integers(-128, 128, (6, 5, 5, 2), dtype=np.int8)
    np.testing.assert_array_equal(graph_c.run(graph_program.build(q), qin), intref.run_int8(q, qin))
