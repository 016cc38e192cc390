"""Window statistics for the RandomForest peer: the same channels the CNN sees, counted features."""
from __future__ import annotations

import numpy as np
import pytest

from har.features import n_features, window_stats
from har.windows import to_channels


@pytest.mark.parametrize("channels, count", [("raw", 51), ("robust", 39), ("robust_tilt", 75)])
def test_feature_count_follows_the_channel_set(channels, count):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(7, 40, 3)).astype(np.float32) + np.array([0, 9.8, 0], np.float32)
    x = to_channels(xyz, channels)
    f = window_stats(x, channels)
    assert f.shape == (7, count) == (7, n_features(x.shape[1], channels))
    assert np.isfinite(f).all()


def test_raw_statistics_include_the_magnitude_and_orientation_free_ones_do_not_depend_on_rotation():
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(5, 40, 3)).astype(np.float32) + np.array([0, 9.8, 0], np.float32)
    flipped = xyz * np.array([1, -1, -1], np.float32)  # the phone turned upside down
    raw = window_stats(to_channels(xyz, "raw"), "raw")
    assert np.allclose(raw[:, 3], np.linalg.norm(xyz, axis=2).mean(axis=1), rtol=1e-5)  # mean |a|
    assert not np.allclose(raw, window_stats(to_channels(flipped, "raw"), "raw"))
    tilt = window_stats(to_channels(xyz, "robust_tilt"), "robust_tilt")
    assert np.allclose(tilt, window_stats(to_channels(flipped, "robust_tilt"), "robust_tilt"), atol=1e-4)
