"""Compact image CNNs for the graph path (MNIST, Fashion-MNIST, CIFAR-10) and their training.

`ImageCNNConfig(widths, separable_from, residual, in_channels, n_classes)` builds `ImageCNN`: per width a
block Conv2d(3x3, same padding, no bias) -> BatchNorm2d -> ReLU (from block `separable_from` on, a
depthwise 3x3 + pointwise 1x1 pair instead), a 2x2 max pool after every block but the last, optionally a
residual depthwise block (dw 3x3 -> BN -> ReLU -> pw 1x1 -> BN, + input, ReLU) after the last, then global
average pool and one Linear. Only ops the graph importer supports appear (`model_opts.graph.fx_import`).

Steps of `train(model, fit, val, config)`:
1. Inputs are pixels / 255 (float32, NCHW); augmentation on the fit images only: a random shift of up to
   `shift_px` pixels (zero fill) and, when `hflip`, a random horizontal flip.
2. AdamW with a one-cycle schedule over `max_epochs`, label smoothing 0.05, batch 128; after every epoch
   the validation accuracy is measured and the best epoch's weights are kept; training stops after
   `patience` epochs without a better one (the epoch count is chosen on validation images only).
3. Everything draws from `torch.Generator`s seeded by `config.seed`, so a rerun on the same thread count
   gives the same weights.
Knowledge distillation (`teacher=`): the loss is `kd_loss` on the same augmented batch the teacher sees;
sparsity (`after_step=`): a callback re-applies the masks after every step.
Limits: CPU training; no mixed precision.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class ImageCNNConfig:
    widths: tuple[int, ...] = (16, 32, 32)
    separable_from: int = 99  # block index from which blocks are depthwise-separable
    residual: bool = False
    in_channels: int = 1
    n_classes: int = 10

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class _ResidualDW(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn2(self.pw(torch.relu(self.bn1(self.dw(x))))) + x)


class ImageCNN(nn.Module):
    def __init__(self, cfg: ImageCNNConfig, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[nn.Module] = []
            c = cfg.in_channels
            for i, w in enumerate(cfg.widths):
                if i >= cfg.separable_from:
                    layers += [nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                               nn.Conv2d(c, w, 1, bias=False)]
                else:
                    layers.append(nn.Conv2d(c, w, 3, padding=1, bias=False))
                layers += [nn.BatchNorm2d(w), nn.ReLU()]
                if i < len(cfg.widths) - 1:
                    layers.append(nn.MaxPool2d(2))
                c = w
            self.features = nn.Sequential(*layers)
            self.residual = _ResidualDW(c) if cfg.residual else nn.Identity()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(c, cfg.n_classes)
        self.config = cfg

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.residual(self.features(x))), 1))


@dataclass(frozen=True)
class ImageTrainConfig:
    max_epochs: int = 12
    patience: int = 3
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch: int = 128
    shift_px: int = 2
    hflip: bool = False
    seed: int = 0


def to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255.0)


def _augment(x: torch.Tensor, cfg: ImageTrainConfig, g: torch.Generator) -> torch.Tensor:
    if cfg.shift_px:
        s = cfg.shift_px
        n, _, h, w = x.shape
        pad = nn.functional.pad(x, (s, s, s, s))
        dy = torch.randint(0, 2 * s + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * s + 1, (n,), generator=g)
        rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * s)
        x = torch.gather(pad, 2, rows)
        cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
        x = torch.gather(x, 3, cols)
    if cfg.hflip:
        flip = torch.rand(len(x), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(labels), batch):
        out = model(torch.from_numpy(to_float(images[i:i + batch])))
        hits += int((out.argmax(1).numpy() == labels[i:i + batch]).sum())
    return hits / max(len(labels), 1)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, alpha: float, temperature: float,
            ce: nn.Module) -> torch.Tensor:
    """Hinton et al.: alpha T^2 KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) CE(s, y)."""
    t = temperature
    soft = nn.functional.kl_div(nn.functional.log_softmax(student / t, 1), nn.functional.softmax(teacher / t, 1),
                                reduction="batchmean")
    return alpha * t * t * soft + (1 - alpha) * ce(student, y)


def train(model: nn.Module, fit, val, cfg: ImageTrainConfig = ImageTrainConfig(), progress: bool = True,
          teacher: nn.Module | None = None, alpha: float = 0.5, temperature: float = 4.0,
          after_step=None) -> dict:
    """Train in place (steps in the module docstring); returns the history and the chosen epoch. With a
    `teacher` (frozen, eval mode, fed the same augmented batch) the loss is `kd_loss`; `after_step(model)`
    runs after every optimiser step (sparsity masks)."""
    if teacher is not None:
        teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    g = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = torch.from_numpy(to_float(fit.images)), torch.from_numpy(fit.labels)
    steps = (len(y_all) + cfg.batch - 1) // cfg.batch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.max_epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    best, best_state, history, since = -1.0, None, [], 0
    for epoch in range(cfg.max_epochs):
        model.train()
        order = torch.randperm(len(y_all), generator=g)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.max_epochs}", disable=not progress, leave=False)
        for s in bar:
            idx = order[s * cfg.batch:(s + 1) * cfg.batch]
            xb = _augment(x_all[idx], cfg, g)
            if teacher is None:
                loss = loss_fn(model(xb), y_all[idx])
            else:
                with torch.no_grad():
                    t_logits = teacher(xb)
                loss = kd_loss(model(xb), t_logits, y_all[idx], alpha, temperature, loss_fn)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
        acc = accuracy(model, val.images, val.labels)
        history.append(acc)
        if acc > best:
            best, since = acc, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return {"val_accuracy_by_epoch": history, "chosen_epoch": int(np.argmax(history)) + 1, "val_accuracy": best}
