import numpy as np
from hypothesis import given, settings, strategies as st

from har.datasets.base import Recording
from har.windows import Normalizer, WindowConfig, make_windows, segment_starts, to_channels, window_starts

STEP_NS = 50_000_000  # 20 Hz


def _recording(segments):
    """segments: list of (user, label, n_samples, gap_before_ns)."""
    users, labels, times, t = [], [], [], 0
    for user, label, n, gap in segments:
        t += gap
        users += [user] * n
        labels += [label] * n
        times += list(t + STEP_NS * np.arange(n))
        t = (times[-1] if times else t) + STEP_NS
    n = len(users)
    rng = np.random.default_rng(0)
    return Recording(np.array(users, np.int32), np.array(labels, np.int16), np.array(times, np.int64),
                     rng.normal(size=(n, 3)).astype(np.float32), ("a", "b", "c"), 20.0, "synthetic")


def _check_no_crossing(rec, win, cfg):
    idx = win.start[:, None] + np.arange(cfg.length)[None, :]
    assert (rec.user[idx] == rec.user[idx[:, :1]]).all()
    assert (rec.label[idx] == rec.label[idx[:, :1]]).all()
    dt = np.diff(rec.timestamp_ns[idx], axis=1)
    assert ((dt > 0) & (dt <= cfg.max_gap_s * 1e9)).all()


def test_windows_respect_user_activity_and_gap_boundaries():
    rec = _recording([(1, 0, 100, 0), (1, 1, 100, 0), (2, 1, 100, 0), (2, 1, 100, 2_000_000_000)])
    cfg = WindowConfig(length=40, step=20, channels="raw")
    win = make_windows(rec, cfg)
    _check_no_crossing(rec, win, cfg)
    # each 100-sample segment holds (100 - 40) // 20 + 1 = 4 windows; the 2 s gap splits the last user-2 run
    assert len(win) == 16
    assert list(segment_starts(rec, 1.0)) == [0, 100, 200, 300]


def test_backwards_timestamp_breaks_a_segment():
    rec = _recording([(1, 0, 50, 0)])
    t = rec.timestamp_ns.copy()
    t[25:] -= 10 * STEP_NS
    rec = Recording(rec.user, rec.label, t, rec.xyz, rec.activities, 20.0, "s")
    assert list(segment_starts(rec, 1.0)) == [0, 25]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 2), st.integers(0, 70),
                          st.sampled_from([0, 0, 0, 1_500_000_000])), min_size=1, max_size=8),
       st.integers(2, 30), st.integers(1, 15))
def test_windows_never_cross_boundaries_property(segments, length, step):
    rec = _recording(segments)
    cfg = WindowConfig(length=length, step=step, channels="raw")
    win = make_windows(rec, cfg)
    if len(win):
        _check_no_crossing(rec, win, cfg)
    # count = sum over segments of the closed-form number of windows
    starts = segment_starts(rec, cfg.max_gap_s)
    ends = np.append(starts[1:], rec.n_samples)
    assert len(win) == int(np.maximum(0, (ends - starts - length) // step + 1).sum())


def test_window_starts_matches_a_plain_loop():
    seg = np.array([0, 7, 30, 31, 90])
    got = window_starts(seg, 120, 10, 3)
    want = [s + k for s, e in zip(seg, list(seg[1:]) + [120]) for k in range(0, e - s - 10 + 1, 3)]
    assert got.tolist() == want


def test_activity_filter_relabels_and_keeps_original_start_indices():
    rec = _recording([(1, 0, 60, 0), (1, 2, 60, 0)])
    win = make_windows(rec, WindowConfig(length=20, step=20, channels="raw"), keep_labels=np.array([2]))
    assert win.classes == ("c",) and set(win.y) == {0}
    assert (win.start >= 60).all()
    np.testing.assert_array_equal(win.x[0], rec.xyz[win.start[0]:win.start[0] + 20].T)


def test_robust_channels_are_invariant_to_phone_orientation():
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(5, 40, 3)) + np.array([0.5, 9.0, 1.0])
    flipped = xyz * np.array([-1, -1, 1])  # phone upside down: 180 degrees about z
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = xyz @ q.T
    a = to_channels(xyz, "robust_tilt")
    np.testing.assert_allclose(a, to_channels(flipped, "robust_tilt"), atol=1e-5)
    np.testing.assert_allclose(a[:, :3], to_channels(rotated, "robust")[:, :3], atol=1e-4)
    assert a.shape == (5, 6, 40) and a.dtype == np.float32


def test_normalizer_uses_only_what_it_is_given():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    norm = Normalizer.fit(x)
    z = norm(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1, atol=1e-4)
