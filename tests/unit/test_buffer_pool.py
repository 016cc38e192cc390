import itertools

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from har.errors import BadDataError, BadOptionError
from har.measure import profile
from har.model import CNNConfig, CompactCNN1d
from har.windows import Normalizer
from system_opts import buffer_pool, flatten
from system_opts.kernels import run_program
from system_opts.planner import plan_buffers


@pytest.fixture(scope="module")
def program(trained):
    return flatten.apply(trained.model, trained.normalizer, trained.x_test.shape[1:])


def test_session_matches_flat_executor_and_torch(trained, program):
    x = trained.x_test
    session = buffer_pool.apply(program)
    with torch.inference_mode():
        ref = trained.model.eval()(torch.from_numpy(trained.normalizer(x))).numpy()
    out = session.predict(x)
    assert np.array_equal(out.argmax(1), ref.argmax(1))
    assert np.abs(out - ref).max() <= 1e-4
    assert np.abs(out - run_program(program, x)).max() <= 1e-5


def test_run_returns_an_arena_view_or_fills_out(trained, program):
    session = buffer_pool.apply(program)
    w = trained.x_test[0]
    view = session.run(w)
    assert np.shares_memory(view, session.arena)
    first = view.copy()
    session.run(trained.x_test[1])
    assert not np.array_equal(view, first)  # the view is reused by the next run
    out = np.empty(5, np.float32)
    assert session.run(w, out=out) is out
    np.testing.assert_array_equal(out, first)
    with pytest.raises(BadDataError):
        session.predict(trained.x_test[:, :3])


def test_every_buffer_view_sits_at_its_planned_offset(program):
    session = buffer_pool.apply(program)
    session.plan.check()
    base = session.arena.ctypes.data
    assert base % 64 == 0
    for spec, planned, view in zip(session.buffers, session.plan.buffers, session._views):
        assert view.ctypes.data - base == planned.offset_bytes
        assert view.nbytes == planned.size_bytes == spec.size_bytes
    assert session.plan.arena_bytes == session.arena.nbytes


def test_greedy_arena_is_within_5_percent_of_the_bound_on_project_cnns():
    norm = Normalizer(np.zeros(6, np.float32), np.ones(6, np.float32))
    for widths, k, length in itertools.product([(16, 24, 32), (32, 48, 64), (64, 96, 128)], [3, 5, 7], [40, 80, 200]):
        prog = flatten.apply(CompactCNN1d(CNNConfig(widths=widths, kernel_size=k)).eval(), norm, (6, length))
        for rows in (None, 10):
            session = buffer_pool.apply(prog, buffer_pool.PoolConfig(im2col_rows=rows))
            plan = session.plan
            linear = plan_buffers(session.buffers, "linear")
            assert plan.lower_bound_bytes <= plan.arena_bytes <= 1.05 * plan.lower_bound_bytes
            assert plan.arena_bytes <= linear.arena_bytes
    lin_session = buffer_pool.apply(prog, buffer_pool.PoolConfig(planner="linear"))
    assert lin_session.plan.arena_bytes == plan_buffers(lin_session.buffers, "linear").arena_bytes


def test_smaller_im2col_chunks_shrink_the_arena_not_the_result(trained, program):
    x = trained.x_test[:100]
    whole = buffer_pool.apply(program)
    ref = whole.predict(x)
    sizes = [whole.plan.arena_bytes]
    for rows in (16, 10, 3):
        session = buffer_pool.apply(program, buffer_pool.PoolConfig(im2col_rows=rows))
        np.testing.assert_allclose(session.predict(x), ref, atol=1e-5)
        sizes.append(session.plan.arena_bytes)
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 0.7 * sizes[0]
    with pytest.raises(BadOptionError):
        buffer_pool.PoolConfig(im2col_rows=0)


def test_session_handles_every_supported_op():
    torch.manual_seed(0)
    norm = Normalizer(np.array([1.0, -2.0, 0.5], np.float32), np.array([2.0, 0.5, 1.0], np.float32))
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool1d(3), nn.Conv1d(8, 8, 1),
                          nn.BatchNorm1d(8), nn.MaxPool1d(2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = np.random.default_rng(0).normal(2, 3, size=(16, 3, 20)).astype(np.float32)
    for fold in (True, False):
        prog = flatten.apply(model, norm, (3, 20), flatten.FlattenConfig(fold_normalizer=fold))
        np.testing.assert_allclose(buffer_pool.apply(prog).predict(x), run_program(prog, x), atol=1e-5)


def test_static_session_makes_no_heap_allocation_per_inference(trained, program):
    """memray, default mode (system allocator calls): 1,000 windows through the session, zero allocations;
    torch eager on the same windows allocates on every call."""
    session = buffer_pool.apply(program)
    windows = [np.ascontiguousarray(w) for w in trained.x_test[:1020]]
    it = iter(windows)  # a list iterator never allocates (itertools.cycle would grow its saved list)
    with threadpool_limits(1):  # OpenBLAS's threaded path allocates per call; a device runs one thread
        prof = profile(lambda: session.run(next(it)), repeat=1000, warmup=20)
    assert prof.n_calls == 1000
    assert prof.n_allocations == 0, prof.top_sites
    model = trained.model.eval()
    tt = iter([torch.from_numpy(trained.normalizer(w[None])) for w in windows[:105]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # memray tracking torch's thread pool costs ~0.1 s per call
    try:
        with torch.inference_mode():
            eager = profile(lambda: model(next(tt)), repeat=100, warmup=5)
    finally:
        torch.set_num_threads(threads)
    assert eager.allocations_per_call > 1
