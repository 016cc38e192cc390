"""Batch-1 latency of the system-level executors vs torch eager, in one pytest-benchmark group.

Group `session-latency-batch1`, all single-threaded (torch.set_num_threads(1) and BLAS limited to one
thread with threadpoolctl for this module), on a real WISDM-2019 test-user window of the shared trained
CNN: torch eager `nn.Module` forward on the normalised window (the strict baseline: normalisation and
numpy conversion are left out of it), the same through `TorchArtifact.predict`, the flat executor, the
static-pool `Session.run` and the Session fed by lazy-release weights; and the int8 static pool of the
PTQ int8 model of the same CNN: the numpy `Int8Session` and the compiled `CInt8Session` (alone and fed by
lazy-release int8 weights). With
`--benchmark-disable` each runs once and checks its scores against torch (fp32) or, bit for bit, against
the integer reference `model_opts.quant.intref` (int8).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from har.measure import TorchArtifact
from model_opts.quant import intref, ptq
from system_opts import artifacts as sys_artifacts
from system_opts import buffer_pool, flatten

NAMES = ("torch-eager-module", "torch-eager-artifact", "flat", "static-pool-session", "static-pool+lazy-weights")


@pytest.fixture(scope="module")
def runners(trained, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    limits = threadpool_limits(1)
    model = trained.model.eval()
    window = np.ascontiguousarray(trained.x_test[0])
    x_norm = torch.from_numpy(trained.normalizer(window[None]))
    prog = flatten.apply(model, trained.normalizer, window.shape)
    session = buffer_pool.apply(prog)
    lazy = sys_artifacts.from_program(prog, sys_artifacts.SystemOptsConfig(static_pool=True, lazy_weights=True),
                                      weight_path=tmp_path_factory.mktemp("bench") / "w.harw")
    flat = sys_artifacts.from_program(prog)
    torch_art = TorchArtifact(model, trained.normalizer, example=window)

    def eager():
        with torch.inference_mode():
            return model(x_norm).numpy()[0]

    run = {"torch-eager-module": eager,
           "torch-eager-artifact": lambda: torch_art.predict(window[None])[0],
           "flat": lambda: flat.predict(window[None])[0],
           "static-pool-session": lambda: session.run(window),
           "static-pool+lazy-weights": lambda: lazy.session.run(window)}
    yield run, eager()
    lazy.close()
    limits.restore_original_limits()
    torch.set_num_threads(threads)


@pytest.mark.benchmark(group="session-latency-batch1")
@pytest.mark.parametrize("name", NAMES)
def test_latency_batch1(benchmark, runners, name):
    run, expected = runners
    benchmark.extra_info.update(executor=name, batch=1, threads=1)
    scores = benchmark(run[name])
    assert scores.shape == (5,)
    assert np.abs(scores - expected).max() <= 1e-4


INT8_NAMES = ("int8-static-pool-numpy", "int8-static-pool-c", "int8-static-pool-c+lazy-weights")


@pytest.fixture(scope="module")
def int8_runners(trained, runners, tmp_path_factory):
    """Built after `runners`, so torch and BLAS are already single-threaded."""
    int8 = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold)
    window = np.ascontiguousarray(trained.x_test[0])
    numpy_pool = sys_artifacts.from_int8(int8, sys_artifacts.SystemOptsConfig(static_pool=True, int8_kernels="numpy"))
    c_pool = sys_artifacts.from_int8(int8, sys_artifacts.SystemOptsConfig(static_pool=True, int8_kernels="c"))
    lazy = sys_artifacts.from_int8(int8, sys_artifacts.SystemOptsConfig(static_pool=True, lazy_weights=True),
                                   weight_path=tmp_path_factory.mktemp("bench-int8") / "w.harw")
    run = {"int8-static-pool-numpy": lambda: numpy_pool.session.run(window),
           "int8-static-pool-c": lambda: c_pool.session.run(window),
           "int8-static-pool-c+lazy-weights": lambda: lazy.session.run(window)}
    yield run, intref.dequantize_output(int8.program, intref.run(int8.program, window[None]))[0]
    lazy.close()


@pytest.mark.benchmark(group="session-latency-batch1")
@pytest.mark.parametrize("name", INT8_NAMES)
def test_int8_latency_batch1(benchmark, int8_runners, name):
    run, expected = int8_runners
    benchmark.extra_info.update(executor=name, batch=1, threads=1)
    scores = benchmark(run[name])
    assert scores.shape == (5,)
    assert np.array_equal(scores, expected)
