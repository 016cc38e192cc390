"""The distilled variant's ensemble teacher members (`hybrid.execute._teacher_member`): trained once per
(baseline, fold, seed, member) and then loaded from the stage cache, equal to `model_opts.distill.train_member`,
and distinct per member; a stretched student schedule (`epoch_multiple`) leaves the members on the baseline's
recipe."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from har.model import CNNConfig, CompactCNN1d
from har.splits import Fold
from har.windows import Normalizer, WindowConfig, Windows
from hybrid.cache import StageCache
from hybrid.execute import FP32, FoldContext, State, _distill, _teacher_member
from hybrid.steps import DistillStep
from model_opts import distill


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    cfg = WindowConfig(length=40, step=20)
    n = 150
    y = rng.integers(0, 3, n)
    x = np.sin(2 * np.pi * (y[:, None, None] + 1) * np.arange(40) / 40 + rng.uniform(0, 6, (n, 6, 1)))
    x = (x + 0.5 * rng.standard_normal((n, 6, 40))).astype(np.float32)
    user = np.repeat(np.arange(5), 30)
    win = Windows(x, y.astype(np.int64), user, np.zeros(n, np.int64), ("a", "b", "c"), cfg)
    fold = Fold(0, np.flatnonzero(user < 3), np.flatnonzero(user == 3), np.flatnonzero(user == 4), (4,), (3,))
    norm = Normalizer.fit(x[fold.train_idx])
    base = CompactCNN1d(CNNConfig(in_channels=6, n_classes=3, widths=(4, 6)), seed=0).eval()
    tmp = tmp_path_factory.mktemp("members")
    return FoldContext(win, fold, base, norm, tmp / "model", tmp / "work", 0, "baseline-test", None, 2)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_members_are_trained_once_cached_and_distinct(ctx, tmp_path):
    cache = StageCache(tmp_path / "cache")
    state = State(FP32, ctx.model, ctx.normalizer)
    cfg = distill.DistillConfig(epochs=2, patience=2, batch_size=32, seed=ctx.seed)
    first = _teacher_member(state, ctx, cache, cfg, 1)
    keys = sorted(p.name for p in (tmp_path / "cache" / "stages").iterdir())
    assert len(keys) == 1 and keys[0].startswith("teacher-") and cache.done(keys[0]) is not None
    again = _teacher_member(state, ctx, cache, cfg, 1)  # a cache hit: no second training
    assert _same(first, again) and len(list((tmp_path / "cache" / "stages").iterdir())) == 1
    assert _same(first, distill.train_member(ctx.model.config, ctx.normalizer, ctx.windows, ctx.fold, cfg, 1))
    second = _teacher_member(state, ctx, cache, cfg, 2)
    assert not _same(first, second) and len(list((tmp_path / "cache" / "stages").iterdir())) == 2
    # another epoch budget is another member
    _teacher_member(state, ctx, cache, replace(cfg, epochs=3), 1)
    assert len(list((tmp_path / "cache" / "stages").iterdir())) == 3


def test_a_stretched_student_schedule_leaves_the_members_on_the_baseline_recipe(ctx, tmp_path):
    cache = StageCache(tmp_path / "cache")
    state = State(FP32, ctx.model, ctx.normalizer)
    step = DistillStep(temperatures=(2.0,), alphas=(0.7,), epochs=2, patience=1, teachers=2, epoch_multiple=2)
    _, info = _distill(step, state, ctx, cache, "distilled-stage", "distilled")
    assert (info["config"]["epochs"], info["config"]["patience"]) == (4, 2)  # the student's schedule, doubled
    assert 3 <= info["history"]["epochs_run"] <= 4  # patience 2 of 4 epochs: more than the unstretched 2
    stages = tmp_path / "cache" / "stages"
    members = sorted(p.name for p in stages.iterdir() if p.name.startswith("teacher-"))
    assert len(members) == 1
    # the member is the one the unstretched recipe names: asking for it again is a cache hit
    _teacher_member(state, ctx, cache, distill.DistillConfig(epochs=2, patience=1, seed=ctx.seed), 1)
    assert sorted(p.name for p in stages.iterdir() if p.name.startswith("teacher-")) == members
