"""Nested, subject-wise selection of window length x channel set x training length: no test user decides.

Steps of `select_fold(windows_of, outer, index, cfg, base)` for one outer fold:
1. Development users = the outer fold's training + validation users. Its test users are never read
   while choosing (a test hands in poisoned test labels and checks that no choice or score moves).
2. Inner split: `har.splits.subject_kfold` over the development users, k = `inner_folds`; in each inner
   fold `inner_val_users` of the inner training users early-stop the CNN and the inner held-out users
   score it. Every development user is held out exactly once, so a score rests on all of them, not on
   two validation users.
3. Stage 1: every (length, channel set) at the middle budget of `epochs` (a rule, not a choice: with
   (6, 12, 20) that is 12); score = mean accuracy over the
   inner folds (the std over inner folds is kept: it is the noise a choice has to beat). Best mean wins,
   ties go to the earlier candidate in grid order.
4. Stage 2: at the stage-1 winner, every epoch budget in `epochs` (the stage-1 run reused); best mean
   wins, ties go to the shorter schedule.
5. Nested estimate: the fold's choice trained on the outer training users (early stopping on the outer
   validation users) and scored once on the outer test users. With `test_scores`, every candidate is
   scored the same way, reported in a column labelled "not used for selection".
`nested_forests` scores the RandomForest peers inside the same procedure (the fold's chosen window; its
channels and raw axes), so the CNN-RF gap is a nested figure too.
`vote(folds)` turns the outer folds' choices into the shipped default: (length, channels) by majority,
ties broken by the mean stage-1 score over folds; then the epoch budget by majority of the folds that chose
that window, ties broken by their mean stage-2 score, then the shorter budget.
Limits: coordinate-wise (stage 1 then stage 2: 11 candidates per fold, not the joint 27); the window step
is half the length; scores are window accuracy; the CNN widths and the rest of the recipe stay fixed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from har.experiment import RunConfig, forest_predict, train_fold_cnn
from har.features import window_stats
from har.model import predict_logits
from har.splits import Fold, subject_kfold
from har.windows import Windows, WindowConfig

WindowsOf = Callable[[int, str], Windows]


@dataclass(frozen=True)
class SelectionConfig:
    lengths: tuple[int, ...] = (40, 80, 200)
    channel_sets: tuple[str, ...] = ("raw", "robust", "robust_tilt")
    epochs: tuple[int, ...] = (6, 12, 20)
    inner_folds: int = 3
    inner_val_users: int = 2
    test_scores: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class UserSplit:
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @classmethod
    def of(cls, fold: Fold, all_users) -> "UserSplit":
        rest = sorted(set(int(u) for u in all_users) - set(fold.test_users) - set(fold.val_users))
        return cls(tuple(rest), tuple(fold.val_users), tuple(fold.test_users))

    def on(self, users: np.ndarray, index: int) -> Fold:
        """This user split as window indices of a window set with per-window `users`."""
        idx = {part: np.flatnonzero(np.isin(users, getattr(self, part))) for part in ("train", "val", "test")}
        return Fold(index, idx["train"], idx["val"], idx["test"], self.test, self.val)


def inner_splits(outer: UserSplit, cfg: SelectionConfig, seed: int) -> list[UserSplit]:
    dev = np.array(sorted(outer.train + outer.val))
    folds = subject_kfold(dev, cfg.inner_folds, n_val_users=cfg.inner_val_users, seed=seed)
    return [UserSplit.of(f, dev) for f in folds]


def _accuracy(win: Windows, fold: Fold, run: RunConfig) -> float:
    model, norm = train_fold_cnn(win, fold, run, progress=False)
    pred = predict_logits(model, norm(win.x[fold.test_idx])).argmax(1).numpy()
    return float(np.mean(pred == win.y[fold.test_idx]))


def _run_cfg(base: RunConfig, windows: Windows, epochs: int) -> RunConfig:
    return replace(base, window=windows.config, train=replace(base.train, epochs=epochs))


@dataclass
class FoldSelection:
    index: int
    split: UserSplit
    inner: list[UserSplit]
    stage1: list[dict] = field(default_factory=list)  # {length, channels, epochs, inner_scores, mean, std}
    stage2: list[dict] = field(default_factory=list)
    choice: dict = field(default_factory=dict)
    test_accuracy: float | None = None  # of the choice: the nested estimate
    test_not_used: dict = field(default_factory=dict)  # candidate name -> test accuracy, never read here
    forest_test_accuracy: dict = field(default_factory=dict)  # "rf" / "rf-raw" at the fold's choice

    def to_dict(self) -> dict:
        return {"fold": self.index, "test_users": list(self.split.test), "val_users": list(self.split.val),
                "train_users": list(self.split.train),
                "inner": [{"held_out": list(s.test), "val": list(s.val)} for s in self.inner],
                "stage1": self.stage1, "stage2": self.stage2, "choice": self.choice,
                "test_accuracy_of_choice": self.test_accuracy, "forest_test_accuracy": self.forest_test_accuracy,
                "test_accuracy_not_used_for_selection": self.test_not_used}


def candidate_name(length: int, channels: str, epochs: int) -> str:
    return f"{length}/{channels}/{epochs}ep"


def _best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["mean"], -rows.index(r)))


def select_fold(windows_of: WindowsOf, outer: UserSplit, index: int, cfg: SelectionConfig, base: RunConfig,
                bar=None) -> FoldSelection:
    sel = FoldSelection(index, outer, inner_splits(outer, cfg, seed=base.seed + 1000 + index))

    def score(length: int, channels: str, epochs: int) -> dict:
        win = windows_of(length, channels)
        scores = []
        for j, split in enumerate(sel.inner):
            fold = split.on(win.user, index=100 * (index + 1) + j)
            scores.append(_accuracy(win, fold, _run_cfg(base, win, epochs)))
            if bar is not None:
                bar.update(1)
        return {"length": length, "channels": channels, "epochs": epochs, "inner_scores": scores,
                "mean": float(np.mean(scores)), "std": float(np.std(scores))}

    base_epochs = stage1_epochs(cfg)
    sel.stage1 = [score(n, c, base_epochs) for n in cfg.lengths for c in cfg.channel_sets]
    w = _best(sel.stage1)
    sel.stage2 = [w if e == base_epochs else score(w["length"], w["channels"], e) for e in sorted(cfg.epochs)]
    best = _best(sel.stage2)
    sel.choice = {"length": best["length"], "channels": best["channels"], "epochs": best["epochs"]}
    if cfg.test_scores:  # computed after every choice is fixed; only reported
        for r in sel.stage1 + [r for r in sel.stage2 if r["epochs"] != base_epochs]:
            name = candidate_name(r["length"], r["channels"], r["epochs"])
            sel.test_not_used[name] = outer_test_accuracy(windows_of, outer, index, base, r["length"],
                                                          r["channels"], r["epochs"])
            if bar is not None:
                bar.update(1)
    chosen = candidate_name(**sel.choice)
    sel.test_accuracy = (sel.test_not_used[chosen] if chosen in sel.test_not_used else
                         outer_test_accuracy(windows_of, outer, index, base, **sel.choice))
    return sel


def outer_test_accuracy(windows_of: WindowsOf, outer: UserSplit, index: int, base: RunConfig, length: int,
                        channels: str, epochs: int) -> float:
    """Train on the outer training users (early stopping on its validation users), score its test users."""
    win = windows_of(length, channels)
    return _accuracy(win, outer.on(win.user, index), _run_cfg(base, win, epochs))


def stage1_epochs(cfg: SelectionConfig) -> int:
    """The epoch budget stage 1 runs at: the middle of the stage-2 grid (lower middle for an even count)."""
    grid = sorted(cfg.epochs)
    return grid[(len(grid) - 1) // 2]


def trainings_per_fold(cfg: SelectionConfig, base_epochs: int) -> int:
    n1 = len(cfg.lengths) * len(cfg.channel_sets)
    n2 = len([e for e in cfg.epochs if e != base_epochs])
    return (n1 + n2) * cfg.inner_folds + (n1 + n2 if cfg.test_scores else 1)


def select(windows_of: WindowsOf, outer_folds: list[Fold], all_users, cfg: SelectionConfig, base: RunConfig,
           progress: bool = True) -> list[FoldSelection]:
    total = trainings_per_fold(cfg, stage1_epochs(cfg)) * len(outer_folds)
    with tqdm(total=total, desc="nested selection (trainings)", disable=not progress) as bar:
        return [select_fold(windows_of, UserSplit.of(f, all_users), f.index, cfg, base, bar) for f in outer_folds]


def nested_forests(windows_of: WindowsOf, folds: list[FoldSelection], base: RunConfig) -> None:
    """The RandomForest peers inside the same procedure: per outer fold, on that fold's chosen window,
    statistics of the chosen channels (`rf`) and of the raw axes (`rf-raw`), fit on its training +
    validation users, scored once on its test users (`FoldSelection.forest_test_accuracy`)."""
    for f in folds:
        c = f.choice
        for name, channels in (("rf", c["channels"]), ("rf-raw", "raw")):
            win = windows_of(c["length"], channels)
            fold = f.split.on(win.user, f.index)
            stats = window_stats(win.x, channels)
            fit = np.concatenate([fold.train_idx, fold.val_idx])
            pred = forest_predict(stats[fit], win.y[fit], stats[fold.test_idx], base)
            f.forest_test_accuracy[name] = float(np.mean(pred == win.y[fold.test_idx]))


def vote(folds: list[FoldSelection]) -> dict:
    """Majority over the outer folds' choices, per dimension (module docstring)."""
    windows = Counter((f.choice["length"], f.choice["channels"]) for f in folds)
    stage1_mean: dict = {}
    for f in folds:
        for r in f.stage1:
            stage1_mean.setdefault((r["length"], r["channels"]), []).append(r["mean"])
    top = max(windows.values())
    tied = [w for w, n in windows.items() if n == top]
    length, channels = max(tied, key=lambda w: float(np.mean(stage1_mean[w])))
    epochs = Counter(f.choice["epochs"] for f in folds if (f.choice["length"], f.choice["channels"]) ==
                     (length, channels))
    top_e = max(epochs.values())
    e_mean: dict = {}
    for f in folds:
        if (f.choice["length"], f.choice["channels"]) != (length, channels):
            continue  # epoch scores at another window say nothing about this one
        for r in f.stage2:
            e_mean.setdefault(r["epochs"], []).append(r["mean"])
    tied_e = sorted(e for e, n in epochs.items() if n == top_e)
    chosen_epochs = max(tied_e, key=lambda e: (float(np.mean(e_mean[e])), -e))
    rule = (f"majority of {len(folds)} outer folds' nested choices: window {length}/{channels} chosen by "
            f"{windows[(length, channels)]} of {len(folds)} folds"
            + (" (tie broken by mean stage-1 validation score)" if len(tied) > 1 else "")
            + f", {chosen_epochs} epochs by {epochs[chosen_epochs]} of those")
    return {"window": WindowConfig(length=length, step=max(1, length // 2), channels=channels).to_dict(),
            "epochs": chosen_epochs, "chosen_by": rule,
            "votes": [candidate_name(**f.choice) for f in folds]}


__all__ = ["nested_forests", "stage1_epochs", "SelectionConfig", "UserSplit", "FoldSelection", "select", "select_fold",
           "vote", "candidate_name",
           "inner_splits", "outer_test_accuracy", "trainings_per_fold"]
