import numpy as np
import pytest

from har.errors import BadOptionError
from har.splits import random_kfold, subject_kfold


def test_subject_folds_have_disjoint_users_and_cover_everyone():
    users = np.repeat(np.arange(1600, 1622), 50)
    folds = subject_kfold(users, k=4, n_val_users=2, seed=3)
    seen = []
    for f in folds:
        tr, va, te = (set(users[i]) for i in (f.train_idx, f.val_idx, f.test_idx))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert len(va) == 2 and te == set(f.test_users)
        assert len(f.train_idx) + len(f.val_idx) + len(f.test_idx) == len(users)
        assert not f.leaky
        seen += f.test_users
    assert sorted(seen) == list(range(1600, 1622))


def test_subject_folds_are_seeded():
    users = np.repeat(np.arange(10), 5)
    a, b = subject_kfold(users, 4, seed=1), subject_kfold(users, 4, seed=1)
    assert [f.test_users for f in a] == [f.test_users for f in b]
    assert [f.test_users for f in a] != [f.test_users for f in subject_kfold(users, 4, seed=2)]


def test_random_split_is_marked_leaky():
    folds = random_kfold(100, 4, seed=0)
    assert all(f.leaky for f in folds)
    assert sorted(np.concatenate([f.test_idx for f in folds]).tolist()) == list(range(100))


def test_too_many_folds_is_a_clear_error():
    with pytest.raises(BadOptionError):
        subject_kfold(np.array([1, 2, 3]), k=4)
