"""Evaluation splits. Default: subject-independent k-fold by user, validation users drawn from training users.

`subject_kfold` steps: shuffle the distinct users with the seed, deal them into k near-equal test groups;
for fold i the test users are group i, and `n_val_users` of the remaining users (chosen by the same
seeded generator) are held out for early stopping and model selection. Test users are never seen by
training, validation or any fitted preprocessing.

`random_kfold` splits windows at random. Overlapping windows of one user then sit on both sides, so
its numbers are optimistic; every fold it returns is marked `leaky=True` and every output that uses it
must say `split: random (leaky)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from har.errors import BadOptionError


@dataclass(frozen=True)
class Fold:
    index: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    test_users: tuple[int, ...]
    val_users: tuple[int, ...]
    leaky: bool = False


def subject_kfold(users: np.ndarray, k: int = 4, n_val_users: int = 2, seed: int = 0) -> list[Fold]:
    """k folds over per-window `users`; each fold's test, validation and train users are disjoint."""
    distinct = np.unique(users)
    if k < 2 or k > len(distinct):
        raise BadOptionError(f"k={k} folds needs 2 <= k <= number of users ({len(distinct)})")
    rng = np.random.default_rng(seed)
    order = rng.permutation(distinct)
    groups = np.array_split(order, k)
    folds = []
    for i, test_users in enumerate(groups):
        rest = np.setdiff1d(order, test_users)
        n_val = min(n_val_users, len(rest) - 1)
        val_users = np.sort(rng.choice(rest, size=n_val, replace=False)) if n_val > 0 else rest[:0]
        train_users = np.setdiff1d(rest, val_users)
        folds.append(Fold(
            index=i,
            train_idx=np.flatnonzero(np.isin(users, train_users)),
            val_idx=np.flatnonzero(np.isin(users, val_users)),
            test_idx=np.flatnonzero(np.isin(users, test_users)),
            test_users=tuple(int(u) for u in np.sort(test_users)),
            val_users=tuple(int(u) for u in val_users)))
    return folds


def random_kfold(n_windows: int, k: int = 4, val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
    """LEAKY window-level k-fold; only on explicit request."""
    if k < 2 or k > n_windows:
        raise BadOptionError(f"k={k} folds needs 2 <= k <= number of windows ({n_windows})")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_windows)
    groups = np.array_split(order, k)
    folds = []
    for i, test in enumerate(groups):
        rest = rng.permutation(np.setdiff1d(order, test))
        n_val = max(1, int(len(rest) * val_fraction))
        folds.append(Fold(i, np.sort(rest[n_val:]), np.sort(rest[:n_val]), np.sort(test), (), (), leaky=True))
    return folds
