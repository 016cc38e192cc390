"""Shared fixtures: real WISDM-2019 data (via $HAR_DATA_DIR) and one small CNN trained once per session.

Tests that need real data fail loudly when it is missing instead of skipping: a green run must mean the
real data was read. Point HAR_DATA_DIR at a folder laid out like ../shared/data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from har import datasets
from har.datasets.base import Recording
from har.model import CNNConfig, CompactCNN1d
from har.splits import Fold, subject_kfold
from har.training import TrainConfig, bound_threads, fit
from har.windows import Normalizer, WindowConfig, Windows, make_windows
from har.paths import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "wisdm2019").is_dir():
        pytest.fail(f"real data not found under {root}; set HAR_DATA_DIR to a folder laid out like ../shared/data")
    return root


@pytest.fixture(scope="session")
def recording(data_dir) -> Recording:
    return datasets.load_recording("wisdm2019", data_dir)


@pytest.fixture(scope="session")
def locomotion(recording) -> Windows:
    """Default-config windows of the five locomotion activities."""
    return make_windows(recording, WindowConfig(), keep_labels=np.arange(5))


@pytest.fixture(scope="session")
def fold0(locomotion) -> Fold:
    return subject_kfold(locomotion.user, k=4, seed=0)[0]


@dataclass(frozen=True)
class Trained:
    model: CompactCNN1d
    normalizer: Normalizer
    windows: Windows
    fold: Fold

    @property
    def x_test(self) -> np.ndarray:
        return self.windows.x[self.fold.test_idx]

    @property
    def y_test(self) -> np.ndarray:
        return self.windows.y[self.fold.test_idx]

    @property
    def x_train(self) -> np.ndarray:
        return self.windows.x[self.fold.train_idx]


@pytest.fixture(scope="session")
def trained(locomotion, fold0) -> Trained:
    """A small CompactCNN1d (widths 16, 24, 32) trained 4 epochs on fold 0's training users (~6 s)."""
    bound_threads(1)  # a tiny model: threads buy nothing and OpenMP spin-waits badly on a busy machine
    norm = Normalizer.fit(locomotion.x[fold0.train_idx])
    model = CompactCNN1d(CNNConfig(in_channels=locomotion.config.n_channels, n_classes=5, widths=(16, 24, 32)), seed=0)
    model, _ = fit(model, norm(locomotion.x[fold0.train_idx]), locomotion.y[fold0.train_idx],
                   norm(locomotion.x[fold0.val_idx]), locomotion.y[fold0.val_idx],
                   TrainConfig(epochs=4, patience=4, seed=0), progress=False)
    return Trained(model, norm, locomotion, fold0)


@pytest.fixture(scope="module")
def one_torch_thread(trained):
    """Measure single-threaded, as the CLIs do (after `trained` has been built); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def device_counts(locomotion, fold0, recording):
    """`counts(n, part="test")`: (window indices, int16 counts (N, T, 3)) of `n` windows spread evenly over
    fold 0's test (or "train") users, as a device's accelerometer would deliver them (+-4 g)."""
    from firmware import preprocess

    def counts(n: int, part: str = "test") -> tuple[np.ndarray, np.ndarray]:
        pool = {"test": fold0.test_idx, "train": fold0.train_idx}[part]
        idx = pool[np.linspace(0, len(pool) - 1, n).astype(int)]
        raw = recording.xyz[locomotion.start[idx][:, None] + np.arange(locomotion.config.length)[None]]
        return idx, preprocess.to_counts(raw.transpose(0, 2, 1))
    return counts
