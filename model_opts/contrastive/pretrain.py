"""SimCLR-style pretraining of a compact encoder (the convolutional trunk of `CompactCNN1d`).

Steps of `pretrain`:
1. Build a `CompactCNN1d` of the requested widths; its trunk (conv blocks, global average pool,
   flatten) is the encoder, and a 2-layer projection head (Linear-ReLU-Linear) is added for training
   only (discarded afterwards, as in SimCLR: the representation before the head transfers better).
2. Each epoch: a seeded permutation of the UNLABELLED training windows (raw device axes, training users
   only); per batch of `batch_size` windows draw two independent augmented views (`augment.make_view`:
   augment raw axes -> channels -> the training normaliser), embed both, and take an AdamW step on
   `nt_xent` under a cosine learning-rate schedule.
3. Return the full `CompactCNN1d` (trained trunk, untrained classifier) and the per-epoch loss history.
Labels are never read here. Limits: no validation-based stopping (the loss on unlabelled data says
little about downstream accuracy), so `epochs` is a fixed budget; BatchNorm statistics are those of
augmented views.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from har.errors import BadDataError
from har.model import CNNConfig, CompactCNN1d
from har.training import seed_everything
from har.windows import CHANNEL_SETS, Normalizer
from model_opts.contrastive.augment import AugmentConfig, make_view
from model_opts.contrastive.ntxent import nt_xent


@dataclass(frozen=True)
class PretrainConfig:
    widths: tuple[int, ...] = (32, 48, 64)
    kernel_size: int = 5
    epochs: int = 12
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    projection_dim: int = 32
    channels: str = "robust_tilt"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0


def encoder_of(model: CompactCNN1d) -> nn.Sequential:
    """The trunk of a CompactCNN1d (everything before Dropout + Linear); shares modules with `model`."""
    return nn.Sequential(*list(model)[:-2])


def pretrain(cfg: PretrainConfig, raw_train: np.ndarray, normalizer: Normalizer, n_classes: int
             ) -> tuple[CompactCNN1d, list[dict]]:
    """Contrastively pretrain the trunk on (N, 3, T) raw training windows; returns (model, history)."""
    if raw_train.ndim != 3 or raw_train.shape[1] != 3:
        raise BadDataError(f"pretraining needs raw (N, 3, T) windows, got shape {raw_train.shape}")
    if len(raw_train) < 4:
        raise BadDataError(f"{len(raw_train)} windows are too few to pretrain on")
    batch_size = min(cfg.batch_size, len(raw_train))
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = CompactCNN1d(CNNConfig(in_channels=CHANNEL_SETS[cfg.channels], n_classes=n_classes,
                                   widths=cfg.widths, kernel_size=cfg.kernel_size))
    trunk = encoder_of(model)
    width = cfg.widths[-1]
    head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, cfg.projection_dim))
    params = list(trunk.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(raw_train) // batch_size  # drop the ragged last batch: NT-Xent wants full batches
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    history = []
    for epoch in range(cfg.epochs):
        trunk.train()
        head.train()
        order = rng.permutation(len(raw_train))
        total = 0.0
        for b in range(steps_per_epoch):
            batch = raw_train[order[b * batch_size:(b + 1) * batch_size]]
            v1 = torch.from_numpy(make_view(batch, cfg.augment, rng, cfg.channels, normalizer))
            v2 = torch.from_numpy(make_view(batch, cfg.augment, rng, cfg.channels, normalizer))
            z = head(trunk(torch.cat([v1, v2])))
            loss = nt_xent(z[:len(batch)], z[len(batch):], cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        history.append({"epoch": epoch, "ntxent": total / steps_per_epoch})
    model.eval()
    return model, history
