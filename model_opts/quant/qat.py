"""Quantization-aware training: `apply(model, normalizer, windows, fold, cfg) -> Int8Artifact`.

Steps:
1. Start from the PTQ simulation (`ptq.simulate`: BatchNorm folded into the convs, activation ranges
   calibrated on training windows with `cfg.quant`).
2. Fine-tune the folded weights and biases through the fake quantizers (straight-through estimator)
   with `har.training.fit` on the fold's training users, early stopping on its validation users' macro-F1
   (same augmentation and conventions as the fp32 training; test users are never read). Activation ranges
   stay frozen at their calibrated values, so the network learns to live inside them.
3. Convert the best-validation simulation to the integer-only program (`fakequant.to_program`).
Limits: BatchNorm is folded before fine-tuning, so there are no batch statistics to adapt; with a small
learning rate over a few epochs this is stable for our networks. Activation ranges are not learned.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from har.splits import Fold
from har.training import TrainConfig, fit
from har.windows import Normalizer, Windows
from model_opts.quant.artifact import Int8Artifact
from model_opts.quant.config import QATConfig
from model_opts.quant.fakequant import QuantSim, to_program
from model_opts.quant.ptq import simulate


def finetune(sim: QuantSim, normalizer: Normalizer, windows: Windows, fold: Fold, cfg: QATConfig = QATConfig(),
             progress: bool = False, distil: Callable[[nn.Module], tuple[nn.Module, Callable]] | None = None
             ) -> tuple[QuantSim, list[dict]]:
    """Step 2 in place. `distil(sim) -> (module, loss_fn)` (optional; `model_opts.distill.with_teacher`) has
    `fit` train the sim inside `module` under `loss_fn` instead of cross-entropy; early stopping and the
    best-validation state are the sim's either way (the wrapper holds no state of its own)."""
    module, loss_fn = distil(sim) if distil is not None else (sim, None)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       patience=cfg.patience, seed=cfg.seed, axis_flips=windows.config.channels == "raw")
    x_tr, x_val = normalizer(windows.x[fold.train_idx]), normalizer(windows.x[fold.val_idx])
    _, history = fit(module, x_tr, windows.y[fold.train_idx], x_val, windows.y[fold.val_idx], tcfg,
                     desc="qat", loss_fn=loss_fn, progress=progress)
    return sim.eval(), history


def train_sim(model: nn.Sequential, normalizer: Normalizer, windows: Windows, fold: Fold,
              cfg: QATConfig = QATConfig(), progress: bool = False) -> QuantSim:
    sim = simulate(model, normalizer, windows.x[fold.train_idx], cfg.quant)
    return finetune(sim, normalizer, windows, fold, cfg, progress)[0]


def apply(model: nn.Sequential, normalizer: Normalizer, windows: Windows, fold: Fold,
          cfg: QATConfig = QATConfig(), name: str = "int8-qat") -> Int8Artifact:
    sim = train_sim(model, normalizer, windows, fold, cfg)
    return Int8Artifact(to_program(sim), name, windows.classes, info={"technique": "qat", "config": cfg.to_dict()})
