"""The system-level techniques alone and together, measured by `har.measure.measure` on real test users."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from har.measure import MeasureConfig, TorchArtifact, measure
from model_opts.quant import intref, ptq
from system_opts import artifacts, flatten, flatten_int8
from system_opts.kernels import run_program
from system_opts.lazy_weights import LazyConfig

CONFIGS = {"flat": artifacts.SystemOptsConfig(),
           "static-pool": artifacts.SystemOptsConfig(static_pool=True),
           "lazy-weights": artifacts.SystemOptsConfig(lazy_weights=True),
           "static-pool+lazy-weights": artifacts.SystemOptsConfig(static_pool=True, lazy_weights=True)}


@pytest.fixture(scope="module")
def footprints(trained, tmp_path_factory):
    # single-threaded like a device (and: memray tracking torch's 2-thread pool costs ~0.1 s per call)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    limits = threadpool_limits(1)
    x, y = trained.x_test, trained.y_test
    cfg = MeasureConfig.quick(n_alloc_inferences=200, throughput_batch=64)
    prog = flatten.apply(trained.model, trained.normalizer, x.shape[1:])
    arts = {"torch-eager": TorchArtifact(trained.model, trained.normalizer, example=x[0])}
    for name, c in CONFIGS.items():
        arts[name] = artifacts.from_program(prog, c, weight_path=tmp_path_factory.mktemp(name) / "w.harw")
        assert arts[name].name == name
    fps = {name: measure(a, x, y, cfg) for name, a in arts.items()}
    yield arts, fps, prog
    for a in arts.values():
        getattr(a, "close", lambda: None)()
    limits.restore_original_limits()
    torch.set_num_threads(threads)


def test_measure_fills_arena_and_counts_allocations(footprints):
    arts, fps, prog = footprints
    pool = fps["static-pool"]
    session = arts["static-pool"].session
    assert pool.arena_bytes == session.plan.arena_bytes == fps["static-pool+lazy-weights"].arena_bytes
    assert pool.activation_bytes_peak == session.plan.lower_bound_bytes  # measure's peak of the arena buffers
    assert pool.arena_bytes <= 1.05 * session.plan.lower_bound_bytes
    assert pool.allocations_per_inference == 0
    assert fps["torch-eager"].allocations_per_inference > 10
    assert fps["flat"].arena_bytes is None and fps["torch-eager"].arena_bytes is None
    assert fps["flat"].macs == fps["torch-eager"].macs
    # packed weights: BN and the normaliser are folded away, so the flat model stores less than torch
    assert fps["flat"].weight_bytes == sum(a.nbytes for a in prog.weights.values()) < fps["torch-eager"].weight_bytes
    for name in CONFIGS:
        assert fps[name].accuracy == fps["torch-eager"].accuracy, name
        assert fps[name].macro_f1 == fps["torch-eager"].macro_f1, name


def test_lazy_release_keeps_one_layer_resident(footprints):
    arts, fps, prog = footprints
    layer_bytes = prog.op_weight_bytes()
    for name in ("lazy-weights", "static-pool+lazy-weights"):
        store = arts[name].store
        assert store.high_water_bytes <= max(layer_bytes)
        assert store.high_water_bytes + store.header_bytes < sum(layer_bytes)
        assert store.resident_bytes == 0


def test_int8_flat_executor_is_bit_exact_with_the_integer_reference(trained, tmp_path):
    int8 = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold)
    x = trained.x_test
    ref = intref.run(int8.program, x)
    flat = flatten_int8.apply(int8, flatten_int8.FlattenInt8Config(dequantize_output=False))
    assert flat.tensors[-1].dtype == "int8"
    out = run_program(flat, x)
    assert out.dtype == np.int8 and np.array_equal(out, ref)
    scores = flatten_int8.apply(int8)
    assert np.array_equal(run_program(scores, x), int8.predict(x))
    assert scores.macs_per_window() == int8.macs_per_window()
    assert artifacts.FlatArtifact(scores, "int8-flat").tensor_lifetimes()[1].size_bytes == x.shape[1] * x.shape[2]
    # the int8 program through the lazy weight file: still bit-exact, one layer resident
    path = artifacts.save_program(tmp_path / "int8.harw", flat)
    loaded, store = artifacts.load_program(path, LazyConfig("lazy-release"))
    with store:
        store.reset_high_water()
        assert np.array_equal(run_program(loaded, x[:500], weights=store), ref[:500])
        assert store.high_water_bytes == max(flat.op_weight_bytes())
