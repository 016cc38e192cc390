"""Activation memory of one batch-1 inference, from an artifact's tensor lifetimes.

Two figures, both in bytes:
- naive: the sum of every tensor in `tensor_lifetimes()` (input, intermediates and output), i.e. what a
  runtime that gives each tensor its own buffer holds;
- peak: the most bytes live at once. A tensor is live at every op from `first_op` to `last_op`
  inclusive; steps: add each size at its first op and remove it after its last op (a difference
  array), take the running sum, return its maximum. No arena can be smaller than this, because all
  tensors live at that op must coexist; an arena planner may need more (fragmentation, alignment).
Limits: lifetimes are as the artifact reports them (op granularity): an op that can work in place is
still counted with separate input and output buffers.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from har.measure.artifact import TensorLife


def _checked(lifetimes: Iterable[TensorLife]) -> list[TensorLife]:
    lives = list(lifetimes)
    for t in lives:
        if t.size_bytes < 0 or t.first_op < 0 or t.last_op < t.first_op:
            raise ValueError(f"bad tensor lifetime {t}: need size_bytes >= 0 and 0 <= first_op <= last_op")
    return lives


def activation_naive_bytes(lifetimes: Iterable[TensorLife]) -> int:
    """Sum of the sizes of every tensor (one buffer per tensor, no reuse)."""
    return int(sum(t.size_bytes for t in _checked(lifetimes)))


def live_bytes_per_op(lifetimes: Iterable[TensorLife]) -> np.ndarray:
    """Bytes live during each op 0..max(last_op) (int64 array; empty when there are no tensors)."""
    lives = _checked(lifetimes)
    if not lives:
        return np.zeros(0, dtype=np.int64)
    n_ops = max(t.last_op for t in lives) + 1
    delta = np.zeros(n_ops + 1, dtype=np.int64)
    for t in lives:
        delta[t.first_op] += t.size_bytes
        delta[t.last_op + 1] -= t.size_bytes
    return np.cumsum(delta[:-1])


def activation_peak_bytes(lifetimes: Iterable[TensorLife]) -> int:
    """Most bytes live at once over all ops: the lower bound for any activation arena."""
    live = live_bytes_per_op(lifetimes)
    return int(live.max()) if live.size else 0
