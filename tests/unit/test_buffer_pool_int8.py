"""Int8 static-pool session: bit-exact with the integer reference, no heap allocation per inference, honest
device arena; its artifacts for `measure`."""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from har import weightfile
from har.errors import BadDataError, BadOptionError
from har.measure import InferenceArtifact, MeasureConfig, measure, profile
from model_opts.quant import intref, ptq
from model_opts.quant.fixedpoint import multiply_by_quantized_multiplier
from int8_programs import adversarial_program
from system_opts import artifacts, buffer_pool, buffer_pool_int8, flatten, flatten_int8, kernels_int8, lazy_weights

STATIC = artifacts.SystemOptsConfig(static_pool=True, int8_kernels="numpy")
LAZY = artifacts.SystemOptsConfig(static_pool=True, lazy_weights=True, int8_kernels="numpy")


@pytest.fixture(scope="module")
def int8(trained):
    return ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold)


@pytest.fixture(scope="module")
def session(int8):
    return artifacts.int8_session(int8)


def test_session_is_bit_exact_with_the_integer_reference_on_every_test_window(trained, int8, session):
    x = trained.x_test
    ref = intref.run(int8.program, x)
    assert np.array_equal(session.predict_int8(x), ref)
    assert np.array_equal(session.predict(x), intref.dequantize_output(int8.program, ref))
    logits_only = artifacts.int8_session(flatten_int8.apply(int8, flatten_int8.FlattenInt8Config(False)))
    out = logits_only.predict(x[:200])
    assert out.dtype == np.int8 and np.array_equal(out, ref[:200])


@pytest.mark.parametrize("case", ["pool3-odd-length", "float64-gemm"])
def test_session_matches_reference_on_adversarial_programs(case):
    """What the fixture model does not exercise: positive shifts (and their int32 saturation), shift 0 and
    -31, zero multipliers, int32 wrap of acc + bias, a pool of width 3 over an odd length (remainder rows
    dropped), conv -> conv, unpadded convs, C_out % 16 in 1..8, K * C_in > 514 (float64 GEMM)."""
    rng = np.random.default_rng(0)
    if case == "pool3-odd-length":
        prog, x = adversarial_program(rng, [(9, 3, 1), (17, 5, 2), (24, 1, 0)], pool=3)
    else:
        prog, x = adversarial_program(rng, [(110, 3, 1), (8, 5, 2)], pool=0)
    ref = intref.run(prog, x)
    session = artifacts.int8_session(prog)
    assert np.array_equal(session.predict_int8(x), ref)
    assert np.array_equal(session.predict(x), intref.dequantize_output(prog, ref))
    assert len(np.unique(ref[:, 5:])) > 20  # outputs of normal channels spread over int8
    assert all(f"{op.name}.left" in session._views for op in session.program.ops
               if op.kind in ("conv1d_q", "linear_q"))
    if case == "float64-gemm":
        assert session._views["op2.conv1d_q.cols"].dtype == np.float64


def test_requantisation_formula_matches_fixedpoint():
    """The session's merged SRDHM + RoundingDivideByPOT (module docstring, step 3) on extreme values."""
    rng = np.random.default_rng(2)
    n = 200_000
    acc = np.concatenate([rng.integers(-(1 << 31), 1 << 31, n), rng.integers(-3000, 3000, n),
                          [-(1 << 31), (1 << 31) - 1, 0, -1, 1]]).astype(np.int64)
    mult = rng.integers(1 << 30, 1 << 31, acc.size)
    mult[:5] = [0, 1 << 30, (1 << 31) - 1, 1 << 30, (1 << 31) - 1]
    shift = rng.integers(-31, 31, acc.size)
    ref = multiply_by_quantized_multiplier(acc, mult.astype(np.int32), shift.astype(np.int32)).astype(np.int64)
    left, e = np.maximum(shift, 0), np.maximum(-shift, 0)
    x = np.clip(acc << left, -(1 << 31), (1 << 31) - 1) * mult
    neg = ((x + (1 << 30)) >> 63) & (np.minimum(e, 1) << 31)
    got = (x + (1 << 30) + (((1 << e) >> 1) << 31) - neg) >> (31 + e)
    assert np.array_equal(got, ref)


def test_no_heap_allocation_per_inference(trained, session, tmp_path, int8):
    """memray, default mode (system allocator calls): 1,000 windows through the session, zero allocations.
    With lazy weights the session itself still allocates nothing; the weight store's per-acquire array
    views do (`har.weightfile.WeightFile.view`: numpy's dimension storage, a few 16-byte blocks per window)."""
    windows = [np.ascontiguousarray(w) for w in trained.x_test[:1030]]
    lazy = artifacts.from_int8(int8, LAZY, weight_path=tmp_path / "w.harw")
    with threadpool_limits(1), lazy.store:  # OpenBLAS's threaded path mallocs per call
        profiles = []
        for s, n in ((session, 1000), (lazy.session, 200)):
            # the first traced call of each function makes CPython build its line table (a malloc > 512 B
            # for our longest closures): once per process, under tracing only, so trace a few calls first
            profile(lambda: s.run(windows[0]), repeat=3)
            it = iter(windows)  # a list iterator never allocates
            profiles.append(profile(lambda: s.run(next(it)), repeat=n, warmup=20, top_n=50))
    static, lazy_prof = profiles
    assert static.n_calls == 1000
    assert static.n_allocations == 0, static.top_sites
    assert all(site.location.startswith((lazy_weights.__file__, weightfile.__file__))
               for site in lazy_prof.top_sites), lazy_prof.top_sites
    assert lazy_prof.allocated_bytes_per_call <= 128


def test_device_arena_plan_and_in_place_pools(trained, int8, session):
    session.plan.check()
    session.host_plan.check()
    assert session.arena_bytes() == session.plan.arena_bytes == session.arena.nbytes
    assert session.plan.lower_bound_bytes <= session.arena_bytes() <= 1.05 * session.plan.lower_bound_bytes
    assert session.arena.ctypes.data % 64 == 0
    for spec, planned in zip(session.buffers, session.plan.buffers):
        assert session._views[spec.name].ctypes.data - session.arena.ctypes.data == planned.offset_bytes
    lives = session.tensor_lifetimes()
    kinds = {op.kind for op in session.program.ops}
    assert {"conv1d_q", "maxpool1d"} <= kinds
    assert sum(b.dtype == "float32" for b in session.buffers) == 2  # the window and the scores, nothing else
    for life, spec in zip(lives, session.buffers):
        assert life.size_bytes == spec.rows * spec.cols * np.dtype(spec.dtype).itemsize
    # a pool writes over its conv output: it has no buffer of its own
    assert not any(".maxpool1d" in b.name for b in session.buffers)
    for op in session.program.ops:
        if op.kind == "maxpool1d":
            assert np.shares_memory(session._data(op.output), session._data(op.input))
    linear = artifacts.int8_session(int8, buffer_pool_int8.Int8PoolConfig(planner="linear"))
    assert linear.arena_bytes() == session.plan.naive_bytes > session.arena_bytes()
    assert np.array_equal(linear.predict_int8(trained.x_test[:50]), session.predict_int8(trained.x_test[:50]))
    fp32 = buffer_pool.apply(flatten.apply(trained.model, trained.normalizer, trained.x_test.shape[1:]))
    assert session.arena_bytes() < 0.75 * fp32.plan.arena_bytes
    assert session.host_scratch_bytes == session.host_plan.arena_bytes > session.arena_bytes()
    assert session.host_constant_bytes > 0


def test_run_returns_an_arena_view_and_checks_shapes(trained, session):
    view = session.run(trained.x_test[0])
    assert np.shares_memory(view, session.arena) and view.dtype == np.float32
    first, logits = view.copy(), session.logits.copy()
    out = np.empty(5, np.float32)
    assert session.run(trained.x_test[0], out=out) is out and np.array_equal(out, first)
    assert np.array_equal(session.logits, logits)
    with pytest.raises(BadDataError):
        session.run(trained.x_test[0][:, :40])
    with pytest.raises(BadDataError):
        session.predict(trained.x_test[:2, :3])
    with pytest.raises(BadDataError):
        artifacts.int8_session(flatten.apply(trained.model, trained.normalizer, trained.x_test.shape[1:]))



F32_MAX = float(np.finfo(np.float32).max)


def _non_finite_windows(x: np.ndarray) -> np.ndarray:
    """Real windows with NaN, +-Inf, +-FLT_MAX at scattered places, a whole NaN channel, an all-NaN window."""
    x = np.array(x, dtype=np.float32)
    n, c, t = x.shape
    for i in range(n - 2):
        for j, v in enumerate((np.nan, np.inf, -np.inf, F32_MAX, -F32_MAX)):
            x[i, (i + j) % c, (7 * i + 5 * j) % t] = v
    x[-2, 1] = np.nan
    x[-1] = np.nan
    return x


def test_numpy_runtimes_agree_on_nan_and_infinite_windows(trained, int8, session):
    """One NaN / Inf policy (`intref.quantize_affine`) in the reference, the flat executor's int8 kernels
    and the static-pool session: same int8 input, same logits, and NaN is what the channel mean gives."""
    x = _non_finite_windows(trained.x_test[:24])
    q_ref = intref.quantize_input(int8.program, x)
    prog = flatten_int8.apply(int8)
    q_op = prog.ops[0]
    q_flat = kernels_int8.quantize_input(np.ascontiguousarray(x.transpose(0, 2, 1)), q_op.attrs,
                                         *(prog.weights[n] for n in q_op.params))
    assert np.array_equal(q_flat.transpose(0, 2, 1), q_ref)
    assert np.all(q_ref[np.isnan(x)] == int8.program.input.zero_point)
    ref = intref.run(int8.program, x)
    flat = artifacts.from_int8(int8, artifacts.SystemOptsConfig())  # the flat executor, no pool
    assert np.array_equal(flat.predict_int8(x), ref)
    assert np.array_equal(session.predict_int8(x), ref)
    imputed = np.where(np.isnan(x), trained.normalizer.mean[None, :, None], x)
    assert np.array_equal(session.predict_int8(x), session.predict_int8(imputed))
    # the mask and the masked copy leave no trace: a clean window afterwards runs as on a fresh session
    clean = trained.x_test[:4]
    assert np.array_equal(session.predict_int8(clean), intref.run(int8.program, clean))
    # the compiled kernels (har_q8 in har_int8.h, shared with the firmware) keep the same policy
    c_session = artifacts.int8_session(flatten_int8.apply(int8), buffer_pool_int8.Int8PoolConfig(kernels="c"))
    assert np.array_equal(c_session.predict_int8(x), ref)

def test_int8_artifacts_store_what_int8_artifact_stores_and_run_exactly(trained, int8, tmp_path):
    x = trained.x_test[:300]
    ref = int8.predict(x)
    reference_arrays = int8.weight_arrays()
    for cfg in (STATIC, LAZY, artifacts.SystemOptsConfig(), artifacts.SystemOptsConfig(lazy_weights=True)):
        art = artifacts.from_int8(int8, cfg, weight_path=tmp_path / f"{cfg.int8_name}.harw")
        assert isinstance(art, InferenceArtifact) and art.name == cfg.int8_name
        arrays = art.weight_arrays()
        assert arrays.keys() == reference_arrays.keys()
        assert all(np.array_equal(arrays[k], reference_arrays[k]) for k in arrays)
        assert np.array_equal(art.predict(x), ref)
        assert np.array_equal(art.predict_int8(x), intref.run(int8.program, x))
        assert art.macs_per_window() == int8.macs_per_window()
        if cfg.static_pool:
            assert art.arena_bytes() == art.session.arena_bytes()
        else:
            assert art.arena_bytes() is None
        if cfg.lazy_weights:
            layer_bytes = flatten_int8.apply(int8).op_weight_bytes()
            assert art.store.high_water_bytes <= max(layer_bytes) < art.store.total_bytes
            art.close()
    assert artifacts.from_int8(int8).name == "int8-static-pool"
    with pytest.raises(BadOptionError):
        artifacts.from_int8(int8, LAZY)


def test_measure_int8_static_pool_against_fp32_static_pool(trained, int8):
    x, y = trained.x_test, trained.y_test
    art = artifacts.from_int8(int8)
    fp32_art = artifacts.from_program(flatten.apply(trained.model, trained.normalizer, x.shape[1:]), STATIC)
    with threadpool_limits(1):
        q = measure(art, x, y, MeasureConfig.quick(throughput_batch=32))
    f = measure(fp32_art, x, y, MeasureConfig.static_only())
    ref = measure(int8, x, y, MeasureConfig.static_only())
    assert q.name == "int8-static-pool"
    assert q.allocations_per_inference == 0
    assert (q.weight_bytes, q.param_count, q.macs, q.accuracy) == (ref.weight_bytes, ref.param_count, ref.macs,
                                                                   ref.accuracy)
    assert q.activation_bytes_peak <= art.session.plan.lower_bound_bytes == q.arena_bytes  # unaligned vs aligned
    assert q.arena_bytes == art.session.arena_bytes() < f.arena_bytes
    assert q.model_bytes == q.weight_bytes + q.arena_bytes < 0.5 * f.model_bytes
