"""The RandomForest peer as firmware (firmware.forest): C features vs numpy's window_stats, exact conversion
of sklearn's trees, the har_model.h adapter, and the forest on QEMU (real WISDM-2019 windows, small forests)."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from firmware import forest as F
from firmware import forest_c, preprocess
from har import datasets
from har.experiment import RunConfig, make_folds, windows_for
from har.features import window_stats

SCALE = preprocess.SampleFormat().scale_m_s2
SMALL = F.ForestConfig(trees=12, targets=())


@pytest.fixture(scope="module")
def case(recording):
    run = RunConfig.for_dataset("wisdm2019", "locomotion")
    keep = datasets.activity_labels("wisdm2019", "locomotion", recording.activities)
    win, raw = windows_for(recording, run.window, keep)
    fold = make_folds(win.user, run)[0]
    counts = preprocess.to_counts(raw)
    return win, raw, fold, counts


@pytest.fixture(scope="module")
def features(case):
    win, _, _, counts = case
    return forest_c.c_features(counts, win.config.channels, SCALE)


@pytest.fixture(scope="module")
def small(case, tmp_path_factory):
    win, raw, fold, _ = case
    out = tmp_path_factory.mktemp("forest") / "fw"
    return F.build_forest_firmware(win, raw, fold, out, SMALL)


def spread(idx: np.ndarray, n: int) -> np.ndarray:
    return idx[np.linspace(0, len(idx) - 1, min(n, len(idx))).astype(int)]


@pytest.mark.parametrize("channels", sorted(preprocess.CHANNEL_SETS))
def test_c_features_match_window_stats(case, channels):
    _, _, fold, counts = case
    c = counts[spread(fold.test_idx, 1500)]
    ch = forest_c.c_channels(c, channels, SCALE)
    ref_ch = preprocess.channels(c, SCALE, channels)  # numpy, bit-exact with har_pre.c
    assert np.array_equal(ch[:, :ref_ch.shape[1]], ref_ch)
    got = forest_c.c_features(c, channels, SCALE)
    ref = window_stats(ref_ch, channels)
    assert got.shape == ref.shape
    n_ch = ch.shape[1]
    argmax_cols = np.arange(5 * n_ch, 6 * n_ch)  # dominant FFT bin: an index, equal or a near-tie away
    rest = np.setdiff1d(np.arange(got.shape[1]), argmax_cols)
    np.testing.assert_allclose(got[:, rest], ref[:, rest], rtol=1e-4, atol=1e-4)
    assert np.mean(got[:, argmax_cols] == ref[:, argmax_cols]) >= 0.995
    # without an FPU (M0+) the integer square root must give the very same features
    assert np.array_equal(forest_c.c_features(c, channels, SCALE, soft_sqrt=True), got)


def test_threshold_keys_reproduce_sklearn_split_test():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(4000).astype(np.float32) * np.float32(10.0) ** rng.integers(-6, 4, 4000)
    b = a + np.abs(a) * np.float32(1e-3) + np.float32(1e-30)  # a split between two training values a < b
    thresholds = np.concatenate([a.astype(np.float64) / 2 + b.astype(np.float64) / 2, [0.0, -0.0, 1e-45, -3.5]])
    for thr in thresholds:
        base = np.float32(thr)
        x = np.array([np.nextafter(base, np.float32(-np.inf)), base, np.nextafter(base, np.float32(np.inf)),
                      -base, np.float32(0.0), np.float32(-0.0)], np.float32)
        got = F.float_key(x) < F.threshold_key(float(thr))
        assert np.array_equal(got, x.astype(np.float64) <= thr), thr


def test_forest_on_c_and_numpy_features_agrees(case, features):
    win, _, fold, counts = case
    fit = np.concatenate([fold.train_idx, fold.val_idx])
    forest = F.train_forest(features[fit], win.y[fit], F.ForestConfig(trees=30))
    test = fold.test_idx
    on_numpy = window_stats(preprocess.channels(counts[test], SCALE, win.config.channels), win.config.channels)
    assert np.mean(F.hard_vote(forest, on_numpy) == F.hard_vote(forest, features[test])) >= 0.995


def test_host_firmware_is_exactly_sklearns_trees(case, features, small):
    win, _, fold, counts = case
    fit = np.concatenate([fold.train_idx, fold.val_idx])
    forest = F.train_forest(features[fit], win.y[fit], SMALL)  # deterministic: the fixture's forest
    lib, _ = forest_c.host_library(small.out_dir)
    test = fold.test_idx
    host = forest_c.host_classify(lib, counts[test], win.config.channels, SCALE)
    assert np.array_equal(host, F.hard_vote(forest, features[test]))
    assert small.accuracy == np.mean(F.hard_vote(forest, features[test]) == win.y[test])
    assert small.host_equals_sklearn_trees and small.n_test_windows == len(test)
    assert len(np.unique(host)) > 2  # real windows, several classes
    # the firmware's own features are what it was trained on
    one = np.zeros(features.shape[1], np.float32)
    assert lib.har_forest_window_features(counts[test[0]], counts.shape[1], SCALE, 2, one) == 0
    assert np.array_equal(one, features[test[0]])
    assert lib.har_forest_classify(counts[test[0]], counts.shape[1] - 1, SCALE, 2) == -1


class HarResult(ctypes.Structure):
    _fields_ = [("label", ctypes.c_int32), ("scores", ctypes.c_int8 * 5)]


def test_adapter_streams_the_windows_har_classify_sees(case, small):
    win, _, fold, counts = case
    lib, _ = forest_c.host_library(small.out_dir)
    t, step = counts.shape[1], win.config.step
    # one user's consecutive windows overlap by t - step samples: rebuild that sample stream
    starts = win.start[fold.test_idx][:40]
    run = np.flatnonzero(np.diff(starts) != step)
    n = int(run[0]) + 1 if len(run) else len(starts)
    idx = fold.test_idx[:n]
    assert n >= 3
    stream = np.concatenate([counts[idx[0]], *(counts[i][t - step:] for i in idx[1:])]).astype(np.int16)
    assert lib.har_init() == 0
    lib.har_reset()
    res, got = HarResult(), []
    for s in stream:
        rc = lib.har_push(np.ascontiguousarray(s).ctypes.data_as(ctypes.c_void_p), ctypes.byref(res))
        assert rc in (0, 1)
        if rc == 1:
            got.append(res.label)
            assert list(res.scores) == [int(k == res.label) for k in range(5)]
    want = forest_c.host_classify(lib, counts[idx], win.config.channels, SCALE)
    assert got == list(want)


def test_firmware_dir_is_byte_identical(case, features, tmp_path):
    win, _, fold, _ = case
    forest = F.train_forest(features[fold.train_idx], win.y[fold.train_idx], F.ForestConfig(trees=3))
    a, _ = F.write_firmware_dir(tmp_path / "a", forest, 40, 20, win.config.channels, 5, SMALL)
    b, _ = F.write_firmware_dir(tmp_path / "b", forest, 40, 20, win.config.channels, 5, SMALL)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "har_forest_model.c" in names
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_budget_is_kept_and_chosen_without_test_users(case, features):
    win, _, fold, _ = case
    cfg = F.ForestConfig(node_budget=240)
    chosen, rows = F.choose_for_budget(features, win.y, fold, cfg)
    assert chosen.trees * (chosen.max_leaf_nodes - 1) <= 240 and len(rows) >= 2
    scrambled = win.y.copy()
    scrambled[fold.test_idx] = np.random.default_rng(1).permutation(scrambled[fold.test_idx])
    assert F.choose_for_budget(features, scrambled, fold, cfg) == (chosen, rows)


def test_forest_on_qemu_equals_the_host(case, small):
    from firmware.toolchain import require
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm"):
        require(tool)
    win, _, fold, counts = case
    lib, _ = forest_c.host_library(small.out_dir)
    test = spread(fold.test_idx, 40)
    host = forest_c.host_classify(lib, counts[test], win.config.channels, SCALE)
    cfg = F.ForestConfig(trees=12, count_windows=2)
    for target in F.TARGETS:
        r = F.measure_target(target, Path(small.out_dir), counts[test], host, len(win.classes), cfg)
        assert r.fits and r.windows == len(test) and r.agreement == 1.0
        fp = r.footprint
        assert fp["weights"]["flash_bytes"] > 0 and fp["preprocessing"]["flash_bytes"] > 0
        assert fp["arena"]["ram_bytes"] == 4 * (6 * 40 + 75) and fp["ring_buffer"]["ram_bytes"] == 40 * 6
        assert fp["stack_bytes"] > 0 and r.counted == 2 and 0 < r.instructions_min <= r.instructions_max
