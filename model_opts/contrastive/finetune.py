"""Put a classifier on a (pretrained) `CompactCNN1d` with a fraction of the labels: the `apply` verb.

Modes of `HeadConfig.mode`:
- `linear`: the encoder is frozen (eval mode, BatchNorm statistics untouched); its embeddings of the
  labelled windows are computed once and only Dropout + Linear is trained on them, then copied into
  the model's last layer. Cheap, and the honest test of the representation.
- `finetune`: the whole network is trained with `har.training.fit` (same recipe as the baseline:
  amplitude scaling + jitter augmentation, AdamW, one-cycle schedule, early stopping). Given a freshly
  initialised model this IS the from-scratch arm, so both arms share one code path.
Optional distillation (`distill_alpha` > 0, with `teacher_logits` for the labelled windows): the loss is
(1 - a) * CE(labels) + a * T^2 * KL(softmax(teacher / T) || softmax(student / T)). It rides on
`har.training.fit` by passing window indices as the "labels" and looking both targets up in the loss.
`label_subset` draws the labelled windows: stratified by class, seeded, from the rows it is given
(training users' windows only). Validation users' windows early-stop every arm alike.
Limits: teacher logits are computed on un-augmented windows while the student sees augmented ones.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn

from har.errors import BadDataError, BadOptionError
from har.measure.artifact import TorchArtifact
from har.model import CompactCNN1d, predict_logits
from har.training import TrainConfig, fit
from har.windows import Normalizer
from model_opts.contrastive.pretrain import encoder_of

MODES = ("linear", "finetune")


@dataclass(frozen=True)
class HeadConfig:
    mode: str = "linear"
    epochs: int = 60
    patience: int = 12
    lr: float = 3e-3
    batch_size: int = 64
    distill_alpha: float = 0.0
    distill_temperature: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadOptionError(f"unknown head mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise BadOptionError(f"distill_alpha must be in [0, 1] (got {self.distill_alpha})")


def label_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded `fraction` of `y` (all rows for fraction 1)."""
    if not 0.0 < fraction <= 1.0:
        raise BadOptionError(f"label fraction must be in (0, 1] (got {fraction})")
    idx = np.arange(len(y))
    if fraction == 1.0:
        return idx
    n_classes = len(np.unique(y))
    if round(fraction * len(y)) < n_classes:
        raise BadDataError(f"{fraction:.0%} of {len(y)} windows cannot hold one window of each of {n_classes} classes")
    keep, _ = train_test_split(idx, train_size=fraction, stratify=y, random_state=seed)
    return np.sort(keep)


def _distill_loss(labels: torch.Tensor, teacher: torch.Tensor, alpha: float, temp: float):
    def loss(student_logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(student_logits, labels[idx])
        kl = F.kl_div(F.log_softmax(student_logits / temp, 1), F.log_softmax(teacher[idx] / temp, 1),
                      reduction="batchmean", log_target=True)
        return (1 - alpha) * ce + alpha * temp * temp * kl
    return loss


def apply(model: CompactCNN1d, cfg: HeadConfig, normalizer: Normalizer, x_train: np.ndarray, y_train: np.ndarray,
          x_val: np.ndarray, y_val: np.ndarray, teacher_logits: np.ndarray | None = None,
          name: str = "contrastive") -> TorchArtifact:
    """A trained copy of `model` (the input is left untouched) wrapped as a `TorchArtifact`."""
    if len(x_train) != len(y_train):
        raise BadDataError(f"x_train has {len(x_train)} windows but y_train {len(y_train)} labels")
    model = copy.deepcopy(model)
    xt, xv = normalizer(x_train), normalizer(x_val)
    yt, yv = np.asarray(y_train, dtype=np.int64), np.asarray(y_val, dtype=np.int64)
    tcfg = TrainConfig(epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed)
    if cfg.mode == "linear":
        trunk = encoder_of(model)
        et, ev = predict_logits(trunk, xt).numpy(), predict_logits(trunk, xv).numpy()
        torch.manual_seed(cfg.seed)
        probe = copy.deepcopy(nn.Sequential(*list(model)[-2:]))  # Dropout + Linear: exactly the layers the model keeps
        probe, _ = fit(probe, et, yt, ev, yv, TrainConfig(epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr,
                                                           batch_size=cfg.batch_size, scale_aug=0.0,
                                                           jitter_aug=0.0, seed=cfg.seed), progress=False)
        model[-1].load_state_dict(probe[-1].state_dict())
    elif cfg.distill_alpha > 0:
        if teacher_logits is None or len(teacher_logits) != len(x_train):
            raise BadDataError("distillation needs teacher logits for every labelled training window")
        loss = _distill_loss(torch.as_tensor(yt), torch.as_tensor(teacher_logits, dtype=torch.float32),
                             cfg.distill_alpha, cfg.distill_temperature)
        model, _ = fit(model, xt, np.arange(len(xt)), xv, yv, tcfg, loss_fn=loss, progress=False)
    else:
        model, _ = fit(model, xt, yt, xv, yv, tcfg, progress=False)
    model.eval()
    return TorchArtifact(model, normalizer, name=name, example=np.asarray(x_train[0], dtype=np.float32))
