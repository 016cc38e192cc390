"""`measure` -> `Footprint` on the shared trained CNN: real storage bytes, determinism, spread, skipped = None."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from har import model_io
from har.errors import BadDataError, BadOptionError
from har.evaluate import score
from har.measure import (BYTE_FIELDS, FIELDS, Footprint, MeasureConfig, TensorLife, TorchArtifact, chain_lifetimes,
                         measure)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def safetensors_spans(path) -> dict[str, int]:
    """Bytes of each tensor in a safetensors file, read from its header (u64 length + JSON)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    d = model_io.save(tmp_path_factory.mktemp("m") / "fold0", trained.model, trained.normalizer,
                      trained.windows.config, trained.windows.classes)
    return d, model_io.load(d)


@pytest.fixture(scope="module")
def artifact(saved, trained):
    return TorchArtifact(saved[1].model, saved[1].normalizer, example=trained.x_test[0])


def test_weight_bytes_equal_the_tensor_bytes_of_the_weight_file(saved, artifact):
    # Rule: every tensor in model.safetensors counts, except BatchNorm's num_batches_tracked (a training
    # counter TorchArtifact leaves out because inference never reads it); the normaliser stats count.
    spans = safetensors_spans(saved[0] / model_io.WEIGHTS_FILE)
    counters = {k: v for k, v in spans.items() if k.endswith("num_batches_tracked")}
    assert len(counters) == 3 and all(v == 8 for v in counters.values())
    fp = measure(artifact, np.zeros((1, 6, 80), np.float32), config=MeasureConfig.static_only())
    assert fp.weight_bytes == sum(spans.values()) - sum(counters.values())
    assert fp.param_count == fp.weight_bytes // 4  # every stored inference tensor is float32
    n_params = sum(p.numel() for p in saved[1].model.parameters())
    n_buffers = sum(b.numel() for k, b in saved[1].model.state_dict().items()
                    if "running_" in k)  # BN running mean/var
    assert fp.param_count == n_params + n_buffers + 2 * 6  # + normaliser mean/std per channel


def test_static_fields_match_hand_counts(artifact):
    fp = measure(artifact, np.zeros((1, 6, 80), np.float32), config=MeasureConfig.static_only())
    # widths (16, 24, 32), kernel 5, T=80 halved by each of the 2 max-pools, 5 classes
    assert fp.macs == 16 * 80 * 6 * 5 + 24 * 40 * 16 * 5 + 32 * 20 * 24 * 5 + 32 * 5
    # biggest pair of neighbours in the chain: conv1 output and BN1 output, 16 x 80 float32 each
    assert fp.activation_bytes_peak == 2 * 16 * 80 * 4
    assert fp.activation_bytes_peak <= fp.activation_bytes_naive
    assert fp.arena_bytes is None and fp.model_bytes == fp.weight_bytes + fp.activation_bytes_peak
    assert fp.peak_heap_bytes is None and fp.latency_ms_p50 is None and fp.accuracy is None
    assert "no arena plan" in fp.notes


def test_accuracy_is_har_evaluate_on_the_given_windows(artifact, trained, saved):
    x, y = trained.x_test[:700], trained.y_test[:700]
    fp = measure(artifact, x, y, MeasureConfig.static_only(eval_batch=256))
    want = score(y, saved[1].logits(x).argmax(1), 5)
    assert (fp.accuracy, fp.macro_f1, fp.n_eval_windows) == (want.accuracy, want.macro_f1, 700)


def test_measuring_twice_gives_identical_byte_fields_and_latency_has_spread(artifact, trained):
    cfg = MeasureConfig.quick(n_stream_windows=10, n_alloc_inferences=5, n_latency_repeats=20,
                              throughput_batch=32, evaluate=False)
    a, b = (measure(artifact, trained.x_test[:50], config=cfg) for _ in range(2))
    assert {f: getattr(a, f) for f in BYTE_FIELDS} == {f: getattr(b, f) for f in BYTE_FIELDS}
    for fp in (a, b):
        assert 0 < fp.latency_ms_p50 <= fp.latency_ms_p95
        assert fp.latency_ms_iqr >= 0 and fp.latency_ms_std >= 0
        assert fp.throughput_windows_per_s > 0
        assert fp.peak_heap_bytes > 0 and fp.allocations_per_inference > 0  # torch allocates per op
        assert fp.allocated_bytes_per_inference > 0


class PlannedArtifact:
    """Minimal numpy artifact with an arena plan, to check the model-bytes rule's other branch."""

    name = "planned"

    def __init__(self):
        self.w = np.arange(6 * 3, dtype=np.float32).reshape(3, 6)
        self.scale = np.float32(0.5) * np.ones(3, np.float32)

    def predict(self, x):
        return (x.mean(axis=2) @ self.w.T) * self.scale

    def weight_arrays(self):
        return {"w": self.w, "scale": self.scale}

    def macs_per_window(self):
        return 6 * 80 + 6 * 3

    def tensor_lifetimes(self):
        return chain_lifetimes(["in", "mean", "out"], [6 * 80 * 4, 6 * 4, 3 * 4])

    def arena_bytes(self):
        return 2048


def test_model_bytes_use_the_arena_when_there_is_one_and_json_round_trips():
    fp = measure(PlannedArtifact(), np.ones((4, 6, 80), np.float32), np.array([0, 1, 2, 0]),
                 MeasureConfig.static_only(), notes="toy")
    assert (fp.weight_bytes, fp.param_count, fp.arena_bytes) == (18 * 4 + 12, 21, 2048)
    assert fp.model_bytes == 84 + 2048 and fp.notes == "toy"
    assert fp.activation_bytes_peak == 6 * 80 * 4 + 24
    d = json.loads(fp.to_json())
    assert list(d) == list(FIELDS) and Footprint.from_dict(d) == fp


def test_bad_inputs_are_refused(artifact):
    with pytest.raises(BadOptionError, match="InferenceArtifact"):
        measure(object(), np.zeros((1, 6, 80), np.float32))
    with pytest.raises(BadDataError):
        measure(artifact, np.zeros((1, 6, 80), np.float64))
    with pytest.raises(BadDataError, match="labels"):
        measure(artifact, np.zeros((2, 6, 80), np.float32), np.zeros(3))
    with pytest.raises(BadOptionError):
        MeasureConfig(n_latency_repeats=0)


def test_lifetime_validation_reaches_measure():
    class Broken(PlannedArtifact):
        def tensor_lifetimes(self):
            return [TensorLife("t", 4, 2, 1)]

    with pytest.raises(ValueError, match="bad tensor lifetime"):
        measure(Broken(), np.ones((1, 6, 80), np.float32), config=MeasureConfig.static_only())


def test_torch_threads_are_untouched(artifact, trained):
    before = torch.get_num_threads()
    measure(artifact, trained.x_test[:4], config=MeasureConfig.static_only())
    assert torch.get_num_threads() == before
