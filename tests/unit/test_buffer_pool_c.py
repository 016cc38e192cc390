"""Int8 static pool with compiled C kernels: bit-exact with the integer reference and the numpy session,
no heap allocation per inference, a smaller device arena, clear build errors."""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from har import weightfile
from har.errors import BadDataError, BadOptionError
from har.measure import profile
from int8_programs import adversarial_program
from model_opts.quant import intref, ptq
from system_opts import artifacts, buffer_pool_int8, cbuild, flatten_int8, lazy_weights
from system_opts.buffer_pool_c import CInt8Session

C = buffer_pool_int8.Int8PoolConfig(kernels="c")
DOT_ONLY = buffer_pool_int8.Int8PoolConfig(kernels="c", time_major_max_terms=0)
TIME_MAJOR = buffer_pool_int8.Int8PoolConfig(kernels="c", time_major_max_terms=10 ** 6)


@pytest.fixture(scope="module")
def int8(trained):
    return ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold)


@pytest.fixture(scope="module")
def session(int8):
    return artifacts.int8_session(int8, C)


def _gemm_orders(s: CInt8Session) -> set[bool]:
    return {s._time_major(op) for op in s.program.ops if op.kind == "conv1d_q"}


@pytest.mark.parametrize("config", [C, DOT_ONLY, TIME_MAJOR], ids=["default", "dot", "time-major"])
def test_bit_exact_with_the_integer_reference_on_every_test_window(trained, int8, config):
    s = artifacts.int8_session(int8, config)
    assert isinstance(s, CInt8Session)
    x = trained.x_test
    ref = intref.run(int8.program, x)
    assert np.array_equal(s.predict_int8(x), ref)
    assert np.array_equal(s.predict(x), intref.dequantize_output(int8.program, ref))
    if config is C:  # the fixture CNN (widths 16, 24, 32) exercises both loop orders by default
        assert _gemm_orders(s) == {True, False}


@pytest.mark.parametrize("config", [DOT_ONLY, TIME_MAJOR], ids=["dot", "time-major"])
@pytest.mark.parametrize("case", ["pool3-odd-length", "float64-gemm"])
def test_adversarial_programs_match_reference_and_numpy_session(case, config):
    """Positive shifts with int32 saturation, shift 0 and -31, zero multipliers, int32 wrap of acc + bias,
    a width-3 pool over an odd length, unpadded convs, 110 output channels (see int8_programs)."""
    rng = np.random.default_rng(0)
    convs = [(9, 3, 1), (17, 5, 2), (24, 1, 0)] if case == "pool3-odd-length" else [(110, 3, 1), (8, 5, 2)]
    prog, x = adversarial_program(rng, convs, pool=3 if case == "pool3-odd-length" else 0)
    ref = intref.run(prog, x)
    s = artifacts.int8_session(prog, config)
    assert np.array_equal(s.predict_int8(x), ref)
    assert np.array_equal(s.predict(x), intref.dequantize_output(prog, ref))
    assert np.array_equal(s.predict(x), artifacts.int8_session(prog).predict(x))
    assert _gemm_orders(s) == {config is TIME_MAJOR}


def test_lazy_weights_read_the_mapped_file_and_match(trained, int8, tmp_path):
    x = trained.x_test[:300]
    lazy = artifacts.from_int8(int8, artifacts.SystemOptsConfig(static_pool=True, lazy_weights=True),
                               weight_path=tmp_path / "w.harw")
    with lazy.store:
        assert isinstance(lazy.session, CInt8Session) and not lazy.session._static
        assert np.array_equal(lazy.session.predict_int8(x), intref.run(int8.program, x))
        layer_bytes = flatten_int8.apply(int8).op_weight_bytes()
        assert lazy.store.high_water_bytes <= max(layer_bytes) < lazy.store.total_bytes


def test_no_heap_allocation_per_inference(trained, session, int8, tmp_path):
    windows = [np.ascontiguousarray(w) for w in trained.x_test[:1030]]
    lazy = artifacts.from_int8(int8, artifacts.SystemOptsConfig(static_pool=True, lazy_weights=True),
                               weight_path=tmp_path / "w.harw")
    with threadpool_limits(1), lazy.store:
        profiles = []
        for s, n in ((session, 1000), (lazy.session, 200)):
            profile(lambda: s.run(windows[0]), repeat=3)  # CPython's first-trace line tables
            it = iter(windows)
            profiles.append(profile(lambda: s.run(next(it)), repeat=n, warmup=20, top_n=50))
    static, lazy_prof = profiles
    assert static.n_calls == 1000 and static.n_allocations == 0, static.top_sites
    assert all(site.location.startswith((lazy_weights.__file__, weightfile.__file__))
               for site in lazy_prof.top_sites), lazy_prof.top_sites


def test_arena_is_planned_and_smaller_than_the_numpy_sessions(trained, int8, session):
    numpy_session = artifacts.int8_session(int8)
    dot = artifacts.int8_session(int8, DOT_ONLY)
    for s in (session, dot):
        s.plan.check()
        assert s.arena_bytes() == s.arena.nbytes and s.host_scratch_bytes == 0 and s.host_constant_bytes == 0
        for spec, planned in zip(s.buffers, s.plan.buffers):
            assert s._views[spec.name].ctypes.data - s.arena.ctypes.data == planned.offset_bytes
    # the dot order needs no scratch: only the tensors, as the numpy session has them, without its
    # (T, C_out) int32 accumulator tiles
    assert [b.name for b in dot.buffers] == [b.name for b in numpy_session.buffers if not b.name.endswith(".acc")]
    assert dot.arena_bytes() <= session.arena_bytes() < numpy_session.arena_bytes()
    scratch = {b.name.rsplit(".", 1)[1] for b in session.buffers if b.name.startswith("op")}
    assert scratch == {"out", "xt", "acc"}


def test_bad_arrays_shapes_and_options_are_refused(trained, int8):
    prog = flatten_int8.apply(int8)
    bad = dict(prog.weights)
    name = next(k for k in bad if k.endswith("conv1d_q.weight"))
    bad[name] = bad[name].astype(np.int32)
    with pytest.raises(BadDataError, match="the C kernel reads int8"):
        artifacts.int8_session(prog, C, weights=bad)
    s = artifacts.int8_session(prog, C)
    with pytest.raises(BadDataError):
        s.run(trained.x_test[0][:, :40])
    with pytest.raises(BadOptionError, match="unknown int8 kernels"):
        artifacts.int8_session(prog, buffer_pool_int8.Int8PoolConfig(kernels="asm"))


def test_build_is_keyed_by_source_and_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HAR_CACHE_DIR", str(tmp_path / "cache"))
    first = cbuild.library_path()
    broken = tmp_path / "har_int8.c"
    broken.write_text(cbuild.SOURCE.read_text() + "\nint broken(void) { return }\n")
    monkeypatch.setattr(cbuild, "SOURCE", broken)
    assert cbuild.library_path() != first
    with pytest.raises(cbuild.BuildError) as e:
        cbuild.build(cbuild.library_path())
    assert "compiling har_int8.c failed" in str(e.value) and "\n" not in str(e.value)
    assert not any(p.suffix == ".so" for p in (tmp_path / "cache" / "cbuild").iterdir())  # no half-built file
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(cbuild.BuildError, match="need a C compiler"):
        cbuild.library_path()
