"""PCA front-end: fitted on training users only, projection bytes counted, storage round trip."""
from __future__ import annotations

import numpy as np
import pytest

from har.datasets import arff
from har.errors import BadDataError, BadOptionError
from har.measure import InferenceArtifact, MeasureConfig, measure
from har.splits import subject_kfold
from model_opts.pca import PCAArtifact, PCAConfig, apply

FAST = dict(epochs=2, patience=2)


@pytest.fixture(scope="module")
def pca_windows(locomotion, fold0):
    w, f = locomotion, fold0
    return apply(PCAConfig(n_components=8, **FAST), w.x[f.train_idx], w.y[f.train_idx], w.user[f.train_idx],
                 w.x[f.val_idx], w.y[f.val_idx], w.classes)


@pytest.fixture(scope="module")
def feature_table(data_dir):
    return arff.load(arff.find_features_file(data_dir))


def test_pca_on_windows_never_sees_test_users(pca_windows, locomotion, fold0):
    w, f = locomotion, fold0
    assert set(pca_windows.fit_users) == set(np.unique(w.user[f.train_idx]).tolist())
    assert set(pca_windows.fit_users).isdisjoint(f.test_users)
    assert pca_windows.fit_n_samples == len(f.train_idx)
    # the stored PCA mean is the mean of exactly the preprocessed training rows ...
    z_train = pca_windows.preprocess(w.x[f.train_idx])
    np.testing.assert_allclose(pca_windows.arrays["pca.mean"], z_train.mean(0), atol=1e-5)
    # ... and not what it would be with the test users' rows in (so the check above has teeth)
    z_all = pca_windows.preprocess(w.x[np.concatenate([f.train_idx, f.test_idx])])
    assert np.abs(z_all.mean(0) - pca_windows.arrays["pca.mean"]).max() > 1e-3
    np.testing.assert_allclose(pca_windows.arrays["input_norm.mean"],
                               w.x[f.train_idx].mean(axis=(0, 2)), rtol=1e-4, atol=1e-5)


def test_projection_bytes_count_in_weight_bytes(pca_windows, locomotion, fold0):
    assert isinstance(pca_windows, InferenceArtifact)
    x = locomotion.x[fold0.test_idx[:64]]
    fp = measure(pca_windows, x, locomotion.y[fold0.test_idx[:64]], MeasureConfig.static_only())
    d = x.shape[1] * x.shape[2]
    assert pca_windows.arrays["pca.components"].shape == (8, d)
    mlp_bytes = sum(v.nbytes for k, v in pca_windows.weight_arrays().items() if k.startswith("mlp."))
    assert fp.weight_bytes == (8 * d + d + 2 * x.shape[1]) * 4 + mlp_bytes
    assert fp.macs == 8 * d + 8 * 64 + 64 * 5
    assert 0.0 <= fp.accuracy <= 1.0


def test_save_load_gives_identical_predictions(pca_windows, locomotion, fold0, tmp_path):
    x = locomotion.x[fold0.test_idx[:200]]
    pca_windows.save(tmp_path / "a")
    again = PCAArtifact.load(tmp_path / "a")
    assert np.array_equal(pca_windows.predict(x), again.predict(x))
    again.save(tmp_path / "b")
    assert (tmp_path / "a/pca.safetensors").read_bytes() == (tmp_path / "b/pca.safetensors").read_bytes()


def test_pca_on_features_never_sees_test_users(feature_table):
    t = feature_table
    f = subject_kfold(t.user, 4, seed=0)[1]
    art = apply(PCAConfig(n_components=6, input="features", **FAST), t.features[f.train_idx],
                t.label[f.train_idx], t.user[f.train_idx], t.features[f.val_idx], t.label[f.val_idx], t.classes)
    assert set(art.fit_users).isdisjoint(f.test_users) and art.fit_n_samples == len(f.train_idx)
    train_rows = t.features[f.train_idx]
    np.testing.assert_allclose(art.arrays["impute.median"], np.nanmedian(train_rows, axis=0), rtol=1e-6)
    np.testing.assert_allclose(art.arrays["pca.mean"], art.preprocess(train_rows).mean(0), atol=1e-5)
    assert np.isnan(t.features[f.test_idx]).any()  # the test rows hold '?' values ...
    x_test = t.features[f.test_idx][:, :, None]
    scores = art.predict(x_test)
    assert np.isfinite(scores).all()  # ... and imputation keeps the scores finite
    fp = measure(art, np.ascontiguousarray(x_test), t.label[f.test_idx].astype(np.int64),
                 MeasureConfig.static_only())
    assert fp.weight_bytes == sum(v.nbytes for v in art.weight_arrays().values())
    assert np.array_equal(art.predict(t.features[f.test_idx]), scores)  # (N, F) and (N, F, 1) agree


def test_bad_options_are_readable_errors(locomotion, fold0):
    with pytest.raises(BadOptionError):
        PCAConfig(input="images")
    with pytest.raises(BadOptionError):
        PCAConfig(n_components=0)
    w, f = locomotion, fold0
    with pytest.raises(BadOptionError, match="exceeds"):
        apply(PCAConfig(n_components=10_000, **FAST), w.x[f.train_idx], w.y[f.train_idx], w.user[f.train_idx],
              w.x[f.val_idx], w.y[f.val_idx], w.classes)
    with pytest.raises(BadDataError):
        apply(PCAConfig(**FAST), w.x[:10], w.y[:9], w.user[:10], w.x[:5], w.y[:5], w.classes)
