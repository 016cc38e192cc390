"""Knowledge distillation (Hinton, Vinyals & Dean 2015) of a small `CompactCNN1d` student from a teacher.
`apply(teacher, student_config, normalizer, windows, fold, cfg) -> (student, info)`.

Steps of `apply`:
1. Check the options and that the teacher maps the fold's normalised windows to one logit per class of
   `windows`. Work on a deep copy of the teacher in eval mode with `requires_grad` off: the caller's teacher
   is never modified and never receives gradients; eval mode means no dropout and frozen BatchNorm
   statistics, so its logits do not draw from any random generator.
2. For each candidate (alpha, temperature) (`cfg.alphas` x `cfg.temperatures`, each defaulting to the single
   `cfg.alpha` / `cfg.temperature`; alphas outer): build the student with
   `CompactCNN1d(student_config, seed=cfg.seed + fold.index)` (the baseline's seeding, `har.experiment`)
   and train it with `har.training.fit` on the fold's training users (same augmentation, AdamW, one-cycle
   schedule, early stopping on validation macro-F1 as the baseline) under the loss
       alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE_ls(student, y)
   where CE_ls is cross-entropy with `TrainConfig.label_smoothing` (the project's hard-label loss) and the
   teacher's logits are computed on the SAME augmented batch the student sees. T^2 keeps the soft term's
   gradient scale independent of T (Hinton et al., section 2).
3. Keep the candidate with the best validation macro-F1 (ties: the earlier candidate). Test users are
   never read: only fold.train_idx and fold.val_idx are indexed.
`train_plain` is the control: the same student, seed, epochs and schedule with the plain CE_ls loss, i.e.
exactly what `apply` does with alpha = 0 (a unit test checks the weights are identical).

Ensemble teacher (`Ensemble`, `train_member`): the teacher may be the mean logits of the fold's baseline and
more networks of its architecture trained with the baseline's recipe (`train_config`) at other seeds
(member m >= 1: seed + fold index + 1000 m; member 0 is the baseline itself). Averaging members' logits
cancels part of each one's seed noise, which usually (not always: measured per fold in the README) makes
a better teacher than one member (the issue's "best ensemble you have"); the student and its control are
unchanged. Members train with the distillation config's epochs and patience: the baseline's in full runs
(`hybrid.run --quick` shortens both). Cost: one more baseline
training per member and fold, and one forward per member per training batch.

How the teacher sees the augmented batch without changing `har.training`: `fit` calls
`loss_fn(model(augmented), y)`, so the student is wrapped in `_WithTeacher`, whose training-mode forward
also runs the teacher on its input and keeps those logits for the loss. The teacher is held outside the
module tree (in a tuple), so `fit`'s optimizer, `state_dict` and `train()` only ever see the student.
Editing `har/training.py` instead would change `hybrid.codehash.baseline_digest` and retrain every cached
baseline.
Limits: the teacher must take the same normalised windows as the student (true for the fold's baseline,
whose normaliser is fitted on the same training users); one forward of the teacher per training batch
(about the teacher's inference cost again per epoch); every candidate is a full student training.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from har.errors import BadOptionError
from har.model import CNNConfig, CompactCNN1d, predict_logits
from har.splits import Fold
from har.training import TrainConfig, fit
from har.windows import Normalizer, Windows
from model_opts.prune import target_widths


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 4.0  # Hinton et al.'s range is 2..20; 4 softens a 5-class softmax without flattening it
    # weight of the soft term: most of the signal from the teacher, as in Hinton et al. (who weight the hard
    # term lower); the hard term keeps the student anchored where the teacher is wrong
    alpha: float = 0.7
    temperatures: tuple[float, ...] = ()  # candidates chosen on validation users; empty: just `temperature`
    alphas: tuple[float, ...] = ()  # candidates chosen on validation users; empty: just `alpha`
    # training recipe: `har.training.TrainConfig`'s (the baseline's); `for_dataset` takes har.sweep's epochs
    epochs: int = TrainConfig.epochs
    patience: int = TrainConfig.patience
    lr: float = TrainConfig.lr
    batch_size: int = TrainConfig.batch_size
    weight_decay: float = TrainConfig.weight_decay
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        for t in (self.temperature, *self.temperatures):
            if not np.isfinite(t) or t <= 0:
                raise BadOptionError(f"distill: temperatures must be finite and > 0, got {t}")
        for a in (self.alpha, *self.alphas):
            if not 0.0 <= a <= 1.0:
                raise BadOptionError(f"distill: alpha must be in [0, 1], got {a}")
        if len(set(self.alphas)) != len(self.alphas):
            raise BadOptionError(f"distill: candidate alphas repeat: {list(self.alphas)}")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise BadOptionError(f"distill: candidate temperatures repeat: {list(self.temperatures)}")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 2:
            raise BadOptionError("distill: needs epochs >= 1, patience >= 1 and batch_size >= 2")
        if not self.lr > 0 or self.weight_decay < 0:
            raise BadOptionError(f"distill: needs lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")

    @classmethod
    def for_dataset(cls, dataset: str, activities: str = "locomotion", **overrides) -> "DistillConfig":
        """The epochs `har.sweep --write-defaults` chose for `dataset` (the baseline's budget)."""
        from har.defaults import for_dataset
        return cls(**{"epochs": for_dataset(dataset, activities).epochs, **overrides})

    def candidates(self) -> tuple[tuple[float, float], ...]:
        """(alpha, temperature) pairs in the order they are trained (alphas outer)."""
        return tuple((a, t) for a in (self.alphas or (self.alpha,)) for t in (self.temperatures or (self.temperature,)))

    def to_dict(self) -> dict:
        return asdict(self)


def student_config(teacher_config: CNNConfig, ratio: float) -> CNNConfig:
    """The teacher's architecture at the widths pruning by `ratio` would leave (`prune.target_widths`)."""
    return replace(teacher_config, widths=target_widths(teacher_config.widths, ratio))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, temperature: float,
            alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * T^2 * KL(p_teacher^T || p_student^T) (batch mean) + (1 - alpha) * CE(student, y)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, y, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1 - alpha) * hard


class _WithTeacher(nn.Module):
    """The student, plus the teacher's logits on every training-mode input (see the module docstring)."""

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.student = student
        self._teacher = (teacher,)  # a tuple is not registered: no parameters, state or train() reach it
        self.teacher_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.teacher_logits = self._teacher[0](x)
        return self.student(x)


class Ensemble(nn.Module):
    """Mean logits of `members` (eval-mode networks mapping the same normalised windows to class logits)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise BadOptionError("distill: an ensemble teacher needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def member_seed(cfg: DistillConfig, fold: Fold, member: int) -> int:
    """Member 0 is the baseline (seed + fold index, `har.experiment`); member m >= 1 adds 1000 m."""
    return cfg.seed + fold.index + 1000 * member


def train_member(teacher_config: CNNConfig, normalizer: Normalizer, windows: Windows, fold: Fold,
                 cfg: DistillConfig, member: int) -> CompactCNN1d:
    """Ensemble member `member` >= 1 (eval mode): the teacher's architecture trained exactly as the baseline
    (`train_config`: its epochs, schedule, augmentation, early stopping on validation users) at
    `member_seed`. Only training and validation users are indexed."""
    if member < 1:
        raise BadOptionError(f"distill: ensemble member indices start at 1 (0 is the baseline), got {member}")
    x_tr, y_tr, x_val, y_val = _split(normalizer, windows, fold)
    seed = member_seed(cfg, fold, member)
    model = CompactCNN1d(teacher_config, seed=seed)
    model, _ = fit(model, x_tr, y_tr, x_val, y_val, replace(train_config(cfg, windows, fold), seed=seed),
                   desc=f"teacher member {member}", progress=False)
    return model.eval()


def train_config(cfg: DistillConfig, windows: Windows, fold: Fold) -> TrainConfig:
    # seed + fold index and axis flips on raw channels: exactly `har.experiment.train_fold_cnn`'s recipe
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       patience=cfg.patience, seed=cfg.seed + fold.index, axis_flips=windows.config.channels == "raw")


def _split(normalizer: Normalizer, windows: Windows, fold: Fold):
    # only the training and validation users are ever indexed
    return (normalizer(windows.x[fold.train_idx]), windows.y[fold.train_idx],
            normalizer(windows.x[fold.val_idx]), windows.y[fold.val_idx])


def _scores(model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict:
    pred = predict_logits(model, x).argmax(1).numpy()
    return {"accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0))}


def _new_student(student_config: CNNConfig, windows: Windows, cfg: DistillConfig, fold: Fold) -> CompactCNN1d:
    if student_config.n_classes != len(windows.classes) or student_config.in_channels != windows.config.n_channels:
        raise BadOptionError(f"distill: student config ({student_config.in_channels} channels, "
                             f"{student_config.n_classes} classes) does not fit the windows "
                             f"({windows.config.n_channels} channels, {len(windows.classes)} classes)")
    return CompactCNN1d(student_config, seed=cfg.seed + fold.index)


def _history_summary(history: list[dict]) -> dict:
    best = history[0]
    for h in history[1:]:  # har.training.fit's rule: a later epoch must beat the kept one by > 1e-4
        if h["val_macro_f1"] > best["val_macro_f1"] + 1e-4:
            best = h
    return {"epochs_run": len(history), "best_epoch": int(best["epoch"]),
            "best_val_macro_f1": float(best["val_macro_f1"]), "last_train_loss": float(history[-1]["train_loss"])}


def train_plain(student_config: CNNConfig, normalizer: Normalizer, windows: Windows, fold: Fold,
                cfg: DistillConfig = DistillConfig()) -> CompactCNN1d:
    """The control: same student, seed, epochs and schedule as `apply`, cross-entropy only (eval mode)."""
    x_tr, y_tr, x_val, y_val = _split(normalizer, windows, fold)
    student = _new_student(student_config, windows, cfg, fold)
    student, _ = fit(student, x_tr, y_tr, x_val, y_val, train_config(cfg, windows, fold),
                     desc="student (no KD)", progress=False)
    return student.eval()


def with_teacher(student: nn.Module, teacher: nn.Module, temperature: float, alpha: float,
                 label_smoothing: float) -> tuple[nn.Module, Callable]:
    """(module, loss_fn) for `har.training.fit`: it trains `student` (in place) under `kd_loss` against
    `teacher`'s logits on the same augmented batch. `teacher` must already be frozen (eval mode, no grad):
    `frozen_copy`. Also used by `model_opts.sparsity` to distil the dense network into its pruned self."""
    pair = _WithTeacher(student, teacher)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, pair.teacher_logits, y, temperature, alpha, label_smoothing)
    return pair, loss


def frozen_copy(teacher: nn.Module) -> nn.Module:
    """A deep copy in eval mode with requires_grad off: the caller's network is never changed or trained."""
    return copy.deepcopy(teacher).eval().requires_grad_(False)


def _frozen_teacher(teacher: nn.Module, x_val: np.ndarray, n_classes: int) -> nn.Module:
    frozen = frozen_copy(teacher)
    with torch.no_grad():
        out = frozen(torch.as_tensor(x_val[:2]))
    if out.ndim != 2 or out.shape[1] != n_classes:
        raise BadOptionError(f"distill: the teacher gives logits of shape {tuple(out.shape)}, "
                             f"expected (batch, {n_classes})")
    return frozen


def apply(teacher: nn.Module, student_config: CNNConfig, normalizer: Normalizer, windows: Windows, fold: Fold,
          cfg: DistillConfig = DistillConfig()) -> tuple[CompactCNN1d, dict]:
    """The distilled student (eval mode) and a JSON-serialisable record of the choices behind it."""
    x_tr, y_tr, x_val, y_val = _split(normalizer, windows, fold)
    if len(x_tr) < 2 or len(x_val) < 1:
        raise BadOptionError("distill: the fold needs >= 2 training and >= 1 validation windows")
    frozen = _frozen_teacher(teacher, x_val, len(windows.classes))
    tcfg = train_config(cfg, windows, fold)
    best, runs = None, []
    for a, t in cfg.candidates():
        pair, loss = with_teacher(_new_student(student_config, windows, cfg, fold), frozen, t, a,
                                  tcfg.label_smoothing)
        pair, history = fit(pair, x_tr, y_tr, x_val, y_val, tcfg, desc=f"distill alpha={a:g} T={t:g}",
                            loss_fn=loss, progress=False)
        student = pair.student.eval()
        run = {"alpha": a, "temperature": t, "val": _scores(student, x_val, y_val),
               "history": _history_summary(history)}
        runs.append(run)
        if best is None or run["val"]["macro_f1"] > best[1]["val"]["macro_f1"]:
            best = (student, run)
    student, chosen = best
    info = {"temperature": chosen["temperature"], "alpha": chosen["alpha"], "label_smoothing": tcfg.label_smoothing,
            "chosen_on": "validation users (macro-F1)", "val": chosen["val"], "history": chosen["history"],
            "candidates": runs, "teacher_val": _scores(frozen, x_val, y_val),
            "student_widths": list(student_config.widths),
            "config": {**cfg.to_dict(), "temperatures": list(cfg.temperatures), "alphas": list(cfg.alphas)}}
    return student, info
