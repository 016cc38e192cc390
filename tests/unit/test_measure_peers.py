"""ONNX Runtime peers of the shared trained CNN: deterministic export, faithful graphs, all arrays counted."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from har.measure import MeasureConfig, TorchArtifact, measure
from har.measure.peers import (FP32_NAME, INT8_NAME, OrtInt8Config, PeerConfig, build_peers, calibration_windows,
                               quantize_int8, unavailable_reason)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from har.measure.onnx_export import export_error, export_onnx  # noqa: E402

INT8 = OrtInt8Config(n_calibration_windows=256)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def peers(trained):
    return build_peers(trained.model, trained.normalizer, trained.x_train, PeerConfig(int8=INT8))


@pytest.fixture(scope="module")
def torch_art(trained):
    return TorchArtifact(trained.model, trained.normalizer, example=trained.x_test[0])


def test_peers_are_built_without_notes(peers):
    assert unavailable_reason() is None
    assert set(peers.artifacts) == {FP32_NAME, INT8_NAME} and peers.notes == []


def test_export_and_quantisation_are_byte_identical_across_runs(trained, peers):
    fp32 = export_onnx(trained.model, trained.normalizer, 6, 80)
    assert fp32 == peers.artifacts[FP32_NAME].model_bytes
    assert quantize_int8(fp32, trained.x_train, INT8) == peers.artifacts[INT8_NAME].model_bytes


def test_fp32_export_matches_torch_and_int8_mostly_agrees(trained, peers, torch_art):
    x = trained.x_test[:512]
    assert export_error(trained.model, trained.normalizer, peers.artifacts[FP32_NAME].model_bytes, x) < 1e-4
    ref = torch_art.predict(x).argmax(1)
    agree = (peers.artifacts[INT8_NAME].predict(x).argmax(1) == ref).mean()
    assert agree > 0.9


def test_int8_graph_is_qoperator_and_every_initializer_is_counted(peers):
    art = peers.artifacts[INT8_NAME]
    ops = [n.op_type for n in art.proto.graph.node]
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops
    arrays = art.weight_arrays()
    assert set(arrays) == {t.name for t in art.proto.graph.initializer}
    dtypes = {str(a.dtype) for a in arrays.values()}
    assert {"int8", "int32", "float32", "uint8", "int64"} <= dtypes  # weights, biases, scales, zero points, shapes
    conv_w = [a for k, a in arrays.items() if k.endswith("weight_quantized") and a.ndim == 3]
    assert len(conv_w) == 3 and all(a.dtype == np.int8 for a in conv_w)
    scales = [a for k, a in arrays.items() if k.endswith("weight_scale")]
    assert [a.size for a in scales[:3]] == [16, 24, 32]  # per-channel


def test_macs_agree_across_torch_and_both_graphs(peers, torch_art):
    want = torch_art.macs_per_window()
    assert peers.artifacts[FP32_NAME].macs_per_window() == want
    assert peers.artifacts[INT8_NAME].macs_per_window() == want


def test_graph_lifetimes_cover_every_activation_with_batch1_sizes(peers):
    fp32, int8 = peers.artifacts[FP32_NAME], peers.artifacts[INT8_NAME]
    lives32 = {t.name: t for t in fp32.tensor_lifetimes()}
    assert lives32["windows"].size_bytes == 6 * 80 * 4 and lives32["windows"].first_op == 0
    assert lives32["scores"].size_bytes == 5 * 4
    assert lives32["scores"].last_op == len(fp32.proto.graph.node) - 1
    lives8 = {t.name: t for t in int8.tensor_lifetimes()}
    qgemm_out = [n.output[0] for n in int8.proto.graph.node if n.op_type == "QGemm"]
    assert all(lives8[o].size_bytes == 5 for o in qgemm_out)  # probed by one ORT run: (1, 5) uint8
    produced = {o for n in int8.proto.graph.node for o in n.output} | {"windows"}
    assert set(lives8) == produced


def test_static_footprints_compare_as_expected(peers, torch_art, trained):
    cfg = MeasureConfig.static_only()
    x, y = trained.x_test[:600], trained.y_test[:600]
    fps = {a.name: measure(a, x, y, cfg) for a in [torch_art, *peers.artifacts.values()]}
    t, f, q = fps["torch-eager"], fps[FP32_NAME], fps[INT8_NAME]
    assert q.weight_bytes < f.weight_bytes / 2.5  # int8 weights + per-channel scales vs float32
    assert f.weight_bytes < t.weight_bytes  # BatchNorm folded into the convolutions
    assert q.activation_bytes_peak < f.activation_bytes_peak
    for fp in fps.values():
        assert fp.activation_bytes_peak <= fp.activation_bytes_naive
    assert abs(f.accuracy - t.accuracy) <= 2 / 600
    assert q.accuracy > t.accuracy - 0.05


def test_calibration_subset_is_seeded_and_bounded(trained):
    a = calibration_windows(trained.x_train, INT8)
    assert a.shape == (256, 6, 80) and np.array_equal(a, calibration_windows(trained.x_train, INT8))
    assert len(calibration_windows(trained.x_train[:10], INT8)) == 10


def test_missing_onnxruntime_skips_peers_with_a_note(trained, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import now raises ImportError
    got = build_peers(trained.model, trained.normalizer, trained.x_train[:8])
    assert got.artifacts == {} and len(got.notes) == 1 and got.notes[0].startswith("ONNX Runtime peers skipped")
