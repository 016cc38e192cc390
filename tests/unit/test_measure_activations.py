"""Naive and peak activation bytes from tensor lifetimes: hand-computed cases and properties."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from har.measure import TensorLife, activation_naive_bytes, activation_peak_bytes, chain_lifetimes, live_bytes_per_op


def test_chain_peak_is_max_over_ops_of_input_plus_output():
    # input 100 B -> op0 -> a 400 B -> op1 -> b 200 B -> op2 -> out 40 B
    lives = chain_lifetimes(["in", "a", "b", "out"], [100, 400, 200, 40])
    assert [(t.first_op, t.last_op) for t in lives] == [(0, 0), (0, 1), (1, 2), (2, 2)]
    # op0 holds in + a = 500, op1 holds a + b = 600, op2 holds b + out = 240
    assert live_bytes_per_op(lives).tolist() == [500, 600, 240]
    assert activation_peak_bytes(lives) == 600
    assert activation_naive_bytes(lives) == 740


def test_skip_connection_keeps_a_tensor_alive_across_ops():
    lives = [TensorLife("x", 100, 0, 2), TensorLife("a", 50, 0, 1), TensorLife("b", 70, 1, 2),
             TensorLife("y", 10, 2, 2)]
    # op0: x + a = 150; op1: x + a + b = 220; op2: x + b + y = 180
    assert live_bytes_per_op(lives).tolist() == [150, 220, 180]
    assert activation_peak_bytes(lives) == 220
    assert activation_naive_bytes(lives) == 230


def test_no_tensors_is_zero_and_bad_lifetimes_are_refused():
    assert activation_peak_bytes([]) == 0 and activation_naive_bytes([]) == 0
    with pytest.raises(ValueError, match="bad tensor lifetime"):
        activation_peak_bytes([TensorLife("t", 8, 3, 2)])
    with pytest.raises(ValueError, match="bad tensor lifetime"):
        activation_naive_bytes([TensorLife("t", -1, 0, 0)])


lifetimes = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 20), st.integers(0, 5)).map(
        lambda t: TensorLife("t", t[0], t[1], t[1] + t[2])), max_size=30)


@settings(max_examples=200, deadline=None)
@given(lifetimes)
def test_peak_matches_brute_force_and_is_bounded_by_naive(lives):
    n_ops = max((t.last_op for t in lives), default=-1) + 1
    brute = max((sum(t.size_bytes for t in lives if t.first_op <= op <= t.last_op) for op in range(n_ops)), default=0)
    peak = activation_peak_bytes(lives)
    assert peak == brute
    assert max((t.size_bytes for t in lives), default=0) <= peak <= activation_naive_bytes(lives)
