"""Batch-1 latency and batch-256 throughput: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

All three run single-threaded (torch.set_num_threads(1) for this module, ORT intra_op_num_threads=1),
on real WISDM-2019 test-user windows of the shared trained CNN. Groups: `latency-batch1`,
`throughput-batch256`. With `--benchmark-disable` each runs once and checks the output shape.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from har.measure import TorchArtifact
from har.measure.peers import FP32_NAME, INT8_NAME, OrtInt8Config, PeerConfig, build_peers

ARTIFACTS = ("torch-eager", FP32_NAME, INT8_NAME)


@pytest.fixture(scope="module")
def artifacts(trained):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    peers = build_peers(trained.model, trained.normalizer, trained.x_train,
                        PeerConfig(int8=OrtInt8Config(n_calibration_windows=256)))
    arts = {"torch-eager": TorchArtifact(trained.model, trained.normalizer, example=trained.x_test[0]),
            **peers.artifacts}
    yield arts, peers.notes
    torch.set_num_threads(threads)


def _get(artifacts, name):
    arts, notes = artifacts
    if name not in arts:
        pytest.skip("; ".join(notes))
    return arts[name]


@pytest.mark.benchmark(group="latency-batch1")
@pytest.mark.parametrize("name", ARTIFACTS)
def test_latency_batch1(benchmark, artifacts, trained, name):
    art = _get(artifacts, name)
    window = np.ascontiguousarray(trained.x_test[:1])
    benchmark.extra_info.update(artifact=name, batch=1, threads=1)
    scores = benchmark(art.predict, window)
    assert scores.shape == (1, 5) and np.isfinite(scores).all()


@pytest.mark.benchmark(group="throughput-batch256")
@pytest.mark.parametrize("name", ARTIFACTS)
def test_throughput_batch256(benchmark, artifacts, trained, name):
    art = _get(artifacts, name)
    batch = np.ascontiguousarray(trained.x_test[np.arange(256) % len(trained.x_test)])
    benchmark.extra_info.update(artifact=name, batch=256, threads=1, windows_per_call=256)
    scores = benchmark(art.predict, batch)
    assert scores.shape == (256, 5) and np.isfinite(scores).all()
