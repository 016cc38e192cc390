"""Ingest speed of WISDM-2019 (22 phone-accelerometer .xz files): full parse vs cache reload.

Targets (read them in the saved JSON's extra_info; never asserted, a shared machine is too noisy):
parse <= 1.3 s, cache reload <= 0.2 s. `HAR_CACHE_DIR` points at a temporary folder so neither the
project cache nor other runs are touched. With `--benchmark-disable` each runs once as a smoke test.
"""
from __future__ import annotations

import numpy as np
import pytest

from har.datasets import wisdm2019

N_ROWS = 1_433_489  # rows of the 22 shared files


@pytest.fixture
def cache_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("HAR_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.benchmark(group="ingest")
def test_parse_22_xz_files(benchmark, data_dir, cache_tmp):
    assert len(wisdm2019.find_files(data_dir)) == 22
    benchmark.extra_info.update(target_s=1.3, use_cache=False, files=22)
    rec = benchmark.pedantic(wisdm2019.load, args=(data_dir,), kwargs={"use_cache": False}, rounds=3, iterations=1)
    assert rec.n_samples == N_ROWS and rec.rejects == {}
    assert list(cache_tmp.iterdir()) == []  # use_cache=False neither reads nor writes the cache


@pytest.mark.benchmark(group="ingest")
def test_cache_reload(benchmark, data_dir, cache_tmp):
    built = wisdm2019.load(data_dir, use_cache=True)  # parse once and write the cache (untimed)
    assert len(list(cache_tmp.glob("wisdm2019-*.npz"))) == 1
    benchmark.extra_info.update(target_s=0.2, use_cache=True)
    rec = benchmark.pedantic(wisdm2019.load, args=(data_dir,), rounds=5, iterations=1)
    assert rec.n_samples == N_ROWS
    assert np.array_equal(rec.xyz, built.xyz) and np.array_equal(rec.timestamp_ns, built.timestamp_ns)
