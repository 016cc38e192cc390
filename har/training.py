"""Seeded, bounded-thread training of a torch classifier with early stopping on validation users.

Steps of `fit`: seed torch and numpy from `TrainConfig.seed`; each epoch draws a seeded permutation,
augments each batch (random 180-degree flips of phone axis pairs for raw channels, amplitude scaling,
Gaussian jitter), takes AdamW steps under a cosine learning-rate schedule, then scores macro-F1 on the
validation windows; the best-scoring state is kept and training stops after `patience` epochs without
improvement. Test windows never enter here.
Limits: full-batch validation in memory (fine for our few thousand windows); augmentation assumes
channel 0..2 are device axes when `axis_flips` is on.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class TrainConfig:
    # the fallback budget; each dataset's own is chosen by `har.sweep` on validation users (har/defaults.json)
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    patience: int = 5
    label_smoothing: float = 0.05
    scale_aug: float = 0.1
    jitter_aug: float = 0.05
    axis_flips: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def bound_threads(n: int | None = None) -> int:
    """Cap torch's intra-op threads at the machine's cores (or `n`); oversubscription only adds noise."""
    n = n or min(2, os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _augment(xb: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    n = xb.shape[0]
    if cfg.axis_flips:
        # a phone upside down or facing the other way = a 180-degree turn = two axes change sign
        pair = torch.randint(0, 4, (n,), generator=gen)
        signs = torch.ones(n, xb.shape[1])
        for p, (i, j) in enumerate(((0, 1), (0, 2), (1, 2))):
            sel = pair == p + 1
            signs[sel, i] = -1
            signs[sel, j] = -1
        xb = xb * signs[:, :, None]
    if cfg.scale_aug:
        xb = xb * (1 + cfg.scale_aug * (2 * torch.rand(n, 1, 1, generator=gen) - 1))
    if cfg.jitter_aug:
        xb = xb + cfg.jitter_aug * torch.randn(xb.shape, generator=gen)
    return xb


def fit(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
        cfg: TrainConfig, desc: str = "train", loss_fn: Callable | None = None,
        progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Train `model` in place and return it in its best-validation state, with the per-epoch history."""
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train, dtype=torch.long)
    xv, yv = torch.as_tensor(x_val), np.asarray(y_val)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(xt) / cfg.batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    best_f1, best_state, since_best, history = -1.0, None, 0, []
    bar = tqdm(range(cfg.epochs), desc=desc, leave=False, disable=not progress)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(_augment(xt[idx], cfg, gen)), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.inference_mode():
            pred = model(xv).argmax(1).numpy()
        f1 = float(f1_score(yv, pred, average="macro", zero_division=0))
        history.append({"epoch": epoch, "train_loss": total / len(xt), "val_macro_f1": f1})
        bar.set_postfix(loss=f"{total / len(xt):.3f}", val_f1=f"{f1:.3f}")
        if f1 > best_f1 + 1e-4:
            best_f1, best_state, since_best = f1, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history
