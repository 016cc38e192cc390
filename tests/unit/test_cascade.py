"""Cascade: stage 2 is loaded only for unconfident windows, never at threshold 0; storage round trip."""
from __future__ import annotations

import numpy as np
import pytest

from har import model_io
from har.errors import BadOptionError, DataNotFoundError
from har.measure import InferenceArtifact, MeasureConfig, TorchArtifact, measure
from model_opts.cascade import CascadeArtifact, CascadeConfig, apply, train_stage1


@pytest.fixture(scope="module")
def stage2_dir(trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("stage2")
    model_io.save(d, trained.model, trained.normalizer, trained.windows.config, trained.windows.classes)
    return d


@pytest.fixture(scope="module")
def cascade(trained, stage2_dir, tmp_path_factory):
    w, f = trained.windows, trained.fold
    rows = f.train_idx[::4]  # a quarter of the training windows: stage 1 only has to exist, not excel
    cfg = CascadeConfig(threshold=0.8, epochs=2, patience=2)
    stage1 = train_stage1(cfg, w.x[rows], w.y[rows], w.x[f.val_idx], w.y[f.val_idx], len(w.classes))
    return apply(cfg, stage2_dir, tmp_path_factory.mktemp("cascade"), w.x[rows], w.y[rows], w.x[f.val_idx],
                 w.y[f.val_idx], stage1=stage1)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_threshold_zero_never_loads_stage2(cascade, trained):
    art = cascade.with_threshold(0.0)
    x = trained.x_test[:300]
    probs = art.predict(x)
    s = art.stats()
    assert s.stage2_loads == 0 and s.stage2_windows == 0 and s.windows == 300
    assert not art.stage2_resident
    assert s.peak_resident_weight_bytes == s.stage1_weight_bytes
    np.testing.assert_allclose(probs, _softmax(cascade.stage1.predict(x)), rtol=1e-5, atol=1e-6)


def test_threshold_above_one_always_uses_stage2(cascade, trained):
    art = cascade.with_threshold(1.01)
    x = trained.x_test[:300]
    probs = art.predict(x)
    s = art.stats()
    assert s.stage2_windows == 300 and s.stage2_loads == 1
    assert not art.stage2_resident  # released right after the call
    assert s.peak_resident_weight_bytes == s.stage1_weight_bytes + s.stage2_weight_bytes
    ref = TorchArtifact(trained.model, trained.normalizer).predict(x)
    np.testing.assert_allclose(probs, _softmax(ref), rtol=1e-4, atol=1e-6)


def test_intermediate_threshold_routes_only_unconfident_windows(cascade, trained):
    x = trained.x_test[:400]
    conf = cascade.stage1_confidence(x)
    t = float(np.median(conf))
    art = cascade.with_threshold(t)
    probs = art.predict(x)
    need = conf < t
    assert art.stats().stage2_windows == need.sum() and 0 < need.sum() < len(x)
    np.testing.assert_allclose(probs[~need], _softmax(cascade.stage1.predict(x[~need])), rtol=1e-5, atol=1e-6)
    for i in range(5):  # batch-1 streaming: one load per unconfident window
        art.predict(x[i:i + 1])
    assert art.stats().stage2_loads == 1 + int(need[:5].sum())


def test_artifact_protocol_measure_and_round_trip(cascade, trained, stage2_dir, tmp_path):
    assert isinstance(cascade, InferenceArtifact)
    x = trained.x_test[:200]
    fp = measure(cascade, x, trained.y_test[:200], MeasureConfig.static_only())
    stage2 = TorchArtifact(trained.model, trained.normalizer, example=x[0])
    s2_bytes = sum(a.nbytes for a in stage2.weight_arrays().values())
    assert fp.weight_bytes == cascade.stats().stage1_weight_bytes + s2_bytes
    assert cascade.stats().stage2_weight_bytes == s2_bytes
    assert fp.macs == cascade.stage1.macs_per_window() + stage2.macs_per_window()
    cascade.save(tmp_path)
    again = CascadeArtifact.load(tmp_path)
    a, b = cascade.with_threshold(0.9), again.with_threshold(0.9)
    assert np.array_equal(a.predict(x), b.predict(x))
    assert a.stats() == b.stats()
    again.save(tmp_path / "copy")
    for name in ("stage2.harw", "stage1/model.safetensors", "cascade.json"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "copy" / name).read_bytes()


def test_bad_inputs_are_readable_errors(tmp_path):
    with pytest.raises(BadOptionError):
        CascadeConfig(threshold=-0.1)
    with pytest.raises(DataNotFoundError):
        CascadeArtifact.load(tmp_path)
