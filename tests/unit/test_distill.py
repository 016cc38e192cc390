"""Knowledge distillation on tiny synthetic windows: the loss, the alpha = 0 control, the teacher left alone,
determinism, test users never read, option checks, temperature chosen on validation users."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from har.errors import BadOptionError
from har.model import CNNConfig, CompactCNN1d
from har.splits import Fold
from har.training import TrainConfig, fit
from har.windows import Normalizer, WindowConfig, Windows
from model_opts import distill
from model_opts.prune import target_widths

N_CLASSES, N_USERS, PER_USER = 3, 6, 30
STUDENT = CNNConfig(in_channels=6, n_classes=N_CLASSES, widths=(4, 6, 8))
FAST = distill.DistillConfig(epochs=2, patience=2, batch_size=32)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    """Windows whose class sets a sine frequency, 6 users: 4 train, 1 validation, 1 test."""
    rng = np.random.default_rng(0)
    cfg = WindowConfig(length=40, step=20)
    n = N_USERS * PER_USER
    y = rng.integers(0, N_CLASSES, n)
    t = np.arange(cfg.length)
    x = np.sin(2 * np.pi * (y[:, None, None] + 1) * t / cfg.length + rng.uniform(0, 6, (n, 6, 1)))
    x = (x + 0.5 * rng.standard_normal((n, 6, cfg.length))).astype(np.float32)
    user = np.repeat(np.arange(N_USERS), PER_USER)
    win = Windows(x, y.astype(np.int64), user, np.zeros(n, np.int64), ("a", "b", "c"), cfg)
    fold = Fold(0, np.flatnonzero(user < 4), np.flatnonzero(user == 4), np.flatnonzero(user == 5), (5,), (4,))
    norm = Normalizer.fit(x[fold.train_idx])
    teacher = CompactCNN1d(replace(STUDENT, widths=(8, 12, 16)), seed=7)
    teacher, _ = fit(teacher, norm(x[fold.train_idx]), win.y[fold.train_idx], norm(x[fold.val_idx]),
                     win.y[fold.val_idx], TrainConfig(epochs=3, seed=7), progress=False)
    return teacher, norm, win, fold


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_kd_loss_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g), 3 * torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 2, 1, 2])
    temp, alpha, ls = 2.5, 0.6, 0.1

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    sn, tn = s.double().numpy(), t.double().numpy()
    log_ps, log_pt = log_softmax(sn / temp), log_softmax(tn / temp)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(1).mean()
    log_q = log_softmax(sn)
    ce = ((1 - ls) * -log_q[np.arange(4), y.numpy()] + ls * -log_q.mean(1)).mean()
    hand = alpha * temp ** 2 * kl + (1 - alpha) * ce
    got = distill.kd_loss(s, t, y, temp, alpha, ls).item()
    assert got == pytest.approx(hand, rel=1e-5)
    assert distill.kd_loss(s, s, y, temp, 1.0).item() == pytest.approx(0.0, abs=1e-6)  # KL(p || p) = 0
    assert kl > 0 and distill.kd_loss(s, t, y, temp, 0.0, ls).item() == pytest.approx(ce, rel=1e-5)


def test_alpha_zero_is_plain_training_and_kd_changes_it(data):
    teacher, norm, win, fold = data
    plain = distill.train_plain(STUDENT, norm, win, fold, FAST)
    kd0, info0 = distill.apply(teacher, STUDENT, norm, win, fold, replace(FAST, alpha=0.0))
    kd, _ = distill.apply(teacher, STUDENT, norm, win, fold, FAST)
    assert isinstance(kd0, CompactCNN1d) and not kd0.training and not plain.training
    assert _same(kd0, plain)
    assert not _same(kd, plain)  # the soft term reaches the weights
    assert info0["alpha"] == 0.0 and info0["history"]["epochs_run"] >= 1


def test_teacher_is_not_modified_and_gets_no_gradients(data):
    teacher, norm, win, fold = data
    teacher.train()  # even a teacher handed over in training mode stays as it was
    teacher.zero_grad(set_to_none=True)  # fit leaves the last step's gradients behind
    before = _state(teacher)
    distill.apply(teacher, STUDENT, norm, win, fold, replace(FAST, epochs=1))
    assert teacher.training and _same_state(teacher, before)
    assert all(p.grad is None and p.requires_grad for p in teacher.parameters())
    teacher.eval()
    # and inside the training wrapper: a loss backward reaches the student only
    pair = distill._WithTeacher(CompactCNN1d(STUDENT, seed=0), teacher).train()
    x = torch.as_tensor(norm(win.x[fold.train_idx[:8]]))
    distill.kd_loss(pair(x), pair.teacher_logits, torch.as_tensor(win.y[fold.train_idx[:8]]), 4.0, 0.7).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in pair.student.parameters())
    assert len(list(pair.parameters())) == len(list(pair.student.parameters()))


def _same_state(model, state) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in now)


def test_same_seed_same_student_and_info(data):
    teacher, norm, win, fold = data
    a, info_a = distill.apply(teacher, STUDENT, norm, win, fold, FAST)
    b, info_b = distill.apply(teacher, STUDENT, norm, win, fold, FAST)
    c, _ = distill.apply(teacher, STUDENT, norm, win, fold, replace(FAST, seed=1))
    assert _same(a, b) and json.dumps(info_a, sort_keys=True) == json.dumps(info_b, sort_keys=True)
    assert not _same(a, c)


def test_test_users_are_never_read(data):
    teacher, norm, win, fold = data
    x = win.x.copy()
    x[fold.test_idx] = np.nan
    poisoned = replace(win, x=x)
    cfg = replace(FAST, temperatures=(2.0, 4.0))
    a, info_a = distill.apply(teacher, STUDENT, norm, win, fold, cfg)
    b, info_b = distill.apply(teacher, STUDENT, norm, poisoned, fold, cfg)
    assert _same(a, b) and info_a == info_b
    assert _same(distill.train_plain(STUDENT, norm, win, fold, FAST),
                 distill.train_plain(STUDENT, norm, poisoned, fold, FAST))


def test_temperature_is_the_best_candidate_on_validation_users(data):
    teacher, norm, win, fold = data
    cfg = replace(FAST, temperatures=(1.0, 3.0, 8.0))
    student, info = distill.apply(teacher, STUDENT, norm, win, fold, cfg)
    scores = [r["val"]["macro_f1"] for r in info["candidates"]]
    assert [r["temperature"] for r in info["candidates"]] == [1.0, 3.0, 8.0]
    assert info["temperature"] == cfg.temperatures[int(np.argmax(scores))]  # argmax: the first best, as apply
    assert info["val"]["macro_f1"] == max(scores)
    assert json.loads(json.dumps(info)) == info  # JSON-serialisable as is
    assert student.config.widths == STUDENT.widths


def test_alpha_and_temperature_pairs_are_candidates_chosen_on_validation_users(data):
    teacher, norm, win, fold = data
    cfg = replace(FAST, alphas=(0.3, 0.9), temperatures=(2.0, 4.0))
    assert cfg.candidates() == ((0.3, 2.0), (0.3, 4.0), (0.9, 2.0), (0.9, 4.0))  # alphas outer
    _, info = distill.apply(teacher, STUDENT, norm, win, fold, cfg)
    runs = info["candidates"]
    assert [(r["alpha"], r["temperature"]) for r in runs] == list(cfg.candidates())
    best = runs[int(np.argmax([r["val"]["macro_f1"] for r in runs]))]
    assert (info["alpha"], info["temperature"]) == (best["alpha"], best["temperature"])
    # a pair trained alone gives the student of that pair: candidates do not share state
    alone, _ = distill.apply(teacher, STUDENT, norm, win, fold, replace(FAST, alpha=runs[-1]["alpha"],
                                                                         temperature=runs[-1]["temperature"]))
    assert distill._scores(alone, norm(win.x[fold.val_idx]), win.y[fold.val_idx]) == runs[-1]["val"]


def test_student_config_takes_the_pruned_widths():
    teacher = CNNConfig()
    s = distill.student_config(teacher, 0.7)
    assert s.widths == target_widths(teacher.widths, 0.7)
    assert all(a < b for a, b in zip(s.widths, teacher.widths))
    assert replace(s, widths=teacher.widths) == teacher  # only the widths change


@pytest.mark.parametrize("bad", [dict(temperature=0.0), dict(temperature=-1.0), dict(temperature=float("nan")),
                                 dict(alpha=-0.1), dict(alpha=1.5), dict(temperatures=(2.0, 0.0)),
                                 dict(temperatures=(2.0, 2.0)), dict(alphas=(0.5, 1.5)), dict(alphas=(0.3, 0.3)), dict(epochs=0), dict(batch_size=1), dict(lr=0.0)])
def test_bad_options_raise(bad):
    with pytest.raises(BadOptionError):
        distill.DistillConfig(**bad)


def test_mismatched_teacher_or_student_raises(data):
    teacher, norm, win, fold = data
    with pytest.raises(BadOptionError):
        distill.apply(teacher, replace(STUDENT, n_classes=4), norm, win, fold, FAST)
    wrong = CompactCNN1d(replace(STUDENT, n_classes=4), seed=0)
    with pytest.raises(BadOptionError):
        distill.apply(wrong, STUDENT, norm, win, fold, FAST)


def test_for_dataset_takes_the_swept_epochs():
    from har.defaults import for_dataset
    assert distill.DistillConfig.for_dataset("wisdm2019").epochs == for_dataset("wisdm2019").epochs
    assert distill.DistillConfig().to_dict()["epochs"] == TrainConfig().epochs


def test_ensemble_teacher_is_the_mean_of_its_members_logits(data):
    teacher, norm, win, fold = data
    other = CompactCNN1d(teacher.config, seed=3).eval()
    ens = distill.Ensemble([teacher.eval(), other]).eval()
    x = torch.as_tensor(norm(win.x[:5]))
    with torch.no_grad():
        assert torch.allclose(ens(x), (teacher(x) + other(x)) / 2)
    with pytest.raises(BadOptionError):
        distill.Ensemble([])
    student, info = distill.apply(ens, STUDENT, norm, win, fold, FAST)  # an ensemble is a teacher like any
    assert info["teacher_val"] == distill._scores(ens, *distill._split(norm, win, fold)[2:])


def test_teacher_member_is_the_baseline_recipe_at_its_own_seed_and_never_reads_test_users(data):
    teacher, norm, win, fold = data
    cfg = replace(FAST, seed=5)
    one = distill.train_member(teacher.config, norm, win, fold, cfg, 1)
    assert distill.member_seed(cfg, fold, 0) == cfg.seed + fold.index  # member 0: the baseline's seed
    assert distill.member_seed(cfg, fold, 1) == cfg.seed + fold.index + 1000
    # member 1 is exactly `fit` of the teacher's architecture at member_seed with the baseline's recipe
    ref = CompactCNN1d(teacher.config, seed=distill.member_seed(cfg, fold, 1))
    x_tr, y_tr, x_val, y_val = distill._split(norm, win, fold)
    ref, _ = fit(ref, x_tr, y_tr, x_val, y_val, replace(distill.train_config(cfg, win, fold),
                                                         seed=distill.member_seed(cfg, fold, 1)), progress=False)
    assert _same(one, ref) and not one.training
    assert not _same(one, distill.train_member(teacher.config, norm, win, fold, cfg, 2))
    x = win.x.copy()
    x[fold.test_idx] = np.nan
    assert _same(one, distill.train_member(teacher.config, norm, replace(win, x=x), fold, cfg, 1))
    with pytest.raises(BadOptionError):
        distill.train_member(teacher.config, norm, win, fold, cfg, 0)
