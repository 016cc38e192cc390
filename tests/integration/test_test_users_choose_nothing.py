"""No code path lets test users influence a default, a choice or a ranking.

Every selection is run twice on the same split: once on the real data, once with the test users' labels
replaced by random classes AND their signals by noise. Window length x channels x epochs (`har.select`),
PTQ calibration and PTQ vs QAT, PCA's k, the cascade threshold and the budget ranking must come out
identical, with identical validation scores; only test-user scores may move.
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from har.experiment import RunConfig
from har.select import SelectionConfig, UserSplit, select_fold, vote
from har.splits import subject_kfold
from har.training import TrainConfig
from har.windows import WindowConfig, Windows, make_windows
from hybrid import CascadeStep, FoldContext, PCAStep, Pipeline, PipelineConfig, QuantStep, StageCache
from hybrid.steps import ClusterStep, DistillStep, SparseStep
from hybrid.budget import BudgetConfig, search

pytestmark = pytest.mark.slow


def poison(win: Windows, test_users) -> Windows:
    """Random labels and Gaussian noise for every window of `test_users`; other windows untouched."""
    rng = np.random.default_rng(123)
    test = np.isin(win.user, test_users)
    y, x = win.y.copy(), win.x.copy()
    y[test] = rng.integers(0, len(win.classes), test.sum())
    x[test] = rng.normal(size=x[test].shape).astype(np.float32) * 5
    assert (y[test] != win.y[test]).mean() > 0.5
    return replace(win, x=x, y=y)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_window_channels_and_epochs_are_chosen_without_test_users(recording, one_thread):
    users = np.unique(recording.user)[:9]  # a small study keeps this test fast
    rec = recording.select(np.isin(recording.user, users))
    keep = np.arange(5)
    outer = subject_kfold(users, k=3, n_val_users=1, seed=0)[0]
    split = UserSplit.of(outer, users)
    cfg = SelectionConfig(lengths=(40, 80), channel_sets=("raw", "robust_tilt"), epochs=(1, 2), inner_folds=2,
                          inner_val_users=1, test_scores=True)
    base = RunConfig(model_widths=(4, 4, 4), train=replace(TrainConfig(), epochs=1, patience=1), val_users=1)

    def factory(poisoned: bool):
        @lru_cache(maxsize=None)
        def windows_of(length: int, channels: str) -> Windows:
            win = make_windows(rec, WindowConfig(length=length, step=length // 2, channels=channels), keep)
            return poison(win, split.test) if poisoned else win
        return windows_of

    clean, dirty = (select_fold(factory(p), split, 0, cfg, base) for p in (False, True))
    assert clean.choice == dirty.choice and vote([clean]) == vote([dirty])  # the shipped default too
    assert clean.stage1 == dirty.stage1 and clean.stage2 == dirty.stage2  # every validation score, bit for bit
    assert all(set(s.test).isdisjoint(split.test) and set(s.train).isdisjoint(split.test) for s in clean.inner)
    assert clean.test_accuracy != dirty.test_accuracy  # the test users really were poisoned
    assert clean.test_not_used != dirty.test_not_used and len(clean.test_not_used) == 5  # reported only


def test_hybrid_choices_and_budget_ranking_ignore_test_users(trained, tmp_path, one_thread):
    clean = trained.windows
    dirty = poison(clean, trained.fold.test_users)
    steps = {"quantize": QuantStep(qat_epochs=1, qat_patience=1, calib_windows=256),
             "pca": PCAStep(ks=(4, 8), epochs=2, patience=1),
             "cascade": CascadeStep(thresholds=(0.5, 0.8, 0.95), epochs=1, patience=1),
             "cluster": ClusterStep(k=4, epochs=1, patience=1),
             # scopes x labels-only / distilled fine-tuning, all chosen on validation users
             "sparsity": SparseStep(target=0.9, scopes=("layer", "erk"), schedules=("1x1+1",), kd_alphas=(0.0, 0.7)),
             "distill": DistillStep(epochs=1, patience=1, teachers=2)}  # an ensemble teacher: its member too
    results, rankings = [], []
    for tag, win in (("clean", clean), ("dirty", dirty)):
        ctx = FoldContext(win, trained.fold, trained.model, trained.normalizer, tmp_path / tag / "model",
                          tmp_path / tag / "work", 0, "poison-test")
        cache = StageCache(tmp_path / tag / "cache")
        choices = {}
        for kind, step in steps.items():
            built = Pipeline(PipelineConfig(f"p-{kind}", (step,))).build(ctx, cache)
            choices.update(built.choices)
            built.close()
        results.append(choices)
        runner = SimpleNamespace(
            context=lambda k, ctx=ctx: ctx, run_cfg=SimpleNamespace(model_widths=(16, 24, 32)), cache=cache,
            s=SimpleNamespace(quick=True, threads=1, progress=False), data=SimpleNamespace(windows=win),
            out=tmp_path / tag)
        budget = search(BudgetConfig(budget_bytes=1 << 20, widths=((16, 24, 32),), ratios=(0.0, 0.5),
                                     methods=("ptq", "qat")), runner, tmp_path / tag)
        rankings.append(budget)
    assert results[0] == results[1]
    q = results[0]["quantize"]
    assert set(q["calibration_val_accuracy"]) == {"minmax", "percentile"} and q["method"] in ("ptq", "qat")
    assert results[0]["pca"]["k"] in (4, 8) and "threshold" in results[0]["cascade"]
    # the techniques of model_opts III record what they fitted and scored: equal with poisoned test users
    assert results[0]["cluster"]["layers"] and results[0]["sparsity"]["layers"] and results[0]["distill"]["widths"]
    assert results[0]["distill"]["teachers"] == 2
    assert set(results[0]["sparsity"]["val_accuracy"]) == {f"{scope} 1x1+1 kd={a}" for scope in ("layer", "erk")
                                                           for a in ("0", "0.7")}
    a, b = rankings
    assert [r["val_accuracy"] for r in a["rows"]] == [r["val_accuracy"] for r in b["rows"]]
    assert (a["winner"]["ratio"], a["winner"]["method"]) == (b["winner"]["ratio"], b["winner"]["method"])
    assert len([r for r in a["rows"] if r["val_accuracy"] is not None]) == 4  # PTQ and QAT at both ratios
    tested = [r for r in a["rows"] if r["test_accuracy"] is not None]
    assert tested == [a["winner"]]  # only the chosen point is ever scored on test users
    assert a["winner"]["test_accuracy"] != b["winner"]["test_accuracy"]


def test_firmware_budget_ranking_ignores_test_users(trained, recording, tmp_path, one_thread):
    from firmware import toolchain
    from hybrid.device_budget import DeviceBudgetConfig, search as device_search
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        toolchain.require(tool)
    clean = trained.windows
    dirty = poison(clean, trained.fold.test_users)
    raw = recording.xyz[clean.start[:, None] + np.arange(clean.config.length)[None]].transpose(0, 2, 1)
    cfg = DeviceBudgetConfig(64 * 1024, 16 * 1024, widths=((16, 24, 32),), ratios=(0.5,), recipes=("ptq", "kd+qat"))
    results = []
    for tag, win in (("clean", clean), ("dirty", dirty)):
        ctx = FoldContext(win, trained.fold, trained.model, trained.normalizer, tmp_path / tag / "model",
                          tmp_path / tag / "work", 0, "poison-test")
        runner = SimpleNamespace(
            context=lambda k, ctx=ctx: ctx, run_cfg=SimpleNamespace(model_widths=(16, 24, 32)),
            cache=StageCache(tmp_path / tag / "cache"), s=SimpleNamespace(quick=True, threads=1, progress=False),
            data=SimpleNamespace(windows=win, raw_xyz=raw, folds=[trained.fold], fold_indices=[0]),
            out=tmp_path / tag)
        results.append(device_search(cfg, runner, tmp_path / tag))
    a, b = results
    assert [r["val_accuracy"] for r in a["rows"]] == [r["val_accuracy"] for r in b["rows"]]
    assert [r["measured_flash_bytes"] for r in a["rows"]] == [r["measured_flash_bytes"] for r in b["rows"]]
    (wa,), (wb,) = ([c["winner"] for c in r["choices"]] for r in results)
    assert wa["recipe"] == wb["recipe"]
    assert [r for r in a["rows"] if r["test_accuracy"] is not None] == [wa]
    assert wa["test_accuracy"] != wb["test_accuracy"]  # the test users really were poisoned
