"""Structured pruning of a `CompactCNN1d`: whole conv channels are physically removed, so tensors,
parameters, MACs and stored bytes all shrink. `apply(model, normalizer, windows, fold, cfg) -> TorchArtifact`.

Steps of `apply`:
1. Copy the model (the caller's is untouched). With `ratio == 0` the copy is returned as is.
2. Build a Torch-Pruning `BasePruner` (local pruning: every conv loses the same fraction of its output
   channels) over the dependency graph traced on one window; the classifier Linear is an ignored layer,
   so its outputs (the classes) are never pruned, only its inputs follow the last conv. The pruner keeps
   each conv's BatchNorm and the next layer's input channels consistent with the removed channels.
3. Importance per channel group (conv out-filter + its BatchNorm + the next layer's input slice):
   "l1" / "l2" = Torch-Pruning's `MagnitudeImportance(p=1|2)`: per member, sum of |w|^p over the
   channel's weights (the L1 norm, or the squared L2 norm), averaged over the group's members (BN
   weight included); "random" = `RandomImportance`, the baseline any criterion must beat (seeded).
   The lowest-scoring channels of each conv go.
4. Iterate `steps` times: prune to ratio * s / steps (the last step exactly `ratio`), then fine-tune with
   `har.training.fit` on the fold's training users, early stopping on its validation users. Test users
   are never read.
5. Rebuild a clean `CompactCNN1d` whose `CNNConfig.widths` are the pruned widths and copy the weights in
   with `strict=True` (`rebuild_compact`): it saves/loads with `har.model_io` and flattens like any model.
   Each conv keeps int(width * (1 - ratio)) channels (`target_widths`); anything else is an error.
Why Torch-Pruning rather than own code: its dependency graph already handles Conv-BN-next-layer
coupling and the Flatten into the Linear; our own code would re-implement exactly that.
`finetune_control` runs the same fine-tuning schedule without pruning: the control that separates what
extra training does from what removing channels costs.
Limits: local (uniform per-layer) ratios only; MACs shrink roughly with (1 - ratio)^2 for inner convs.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from har.errors import BadOptionError
from har.measure.artifact import TorchArtifact
from har.model import CNNConfig, CompactCNN1d
from har.splits import Fold
from har.training import TrainConfig, fit
from har.windows import Normalizer, Windows

IMPORTANCES = ("l1", "l2", "random")


@dataclass(frozen=True)
class PruneConfig:
    ratio: float = 0.3  # fraction of every conv's output channels removed
    importance: str = "l1"
    steps: int = 3  # prune + fine-tune rounds
    finetune_epochs: int = 8  # per round, early stopping on validation users
    patience: int = 4
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.importance not in IMPORTANCES:
            raise BadOptionError(f"unknown importance {self.importance!r}; choose one of {list(IMPORTANCES)}")
        if not 0.0 <= self.ratio < 1.0:
            raise BadOptionError(f"pruning ratio must be in [0, 1), got {self.ratio}")
        if self.steps < 1 or self.finetune_epochs < 0:
            raise BadOptionError("pruning needs steps >= 1 and finetune_epochs >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def importance(name: str) -> tp.importance.Importance:
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "random":
        return tp.importance.RandomImportance()
    raise BadOptionError(f"unknown importance {name!r}; choose one of {list(IMPORTANCES)}")


def target_widths(widths: tuple[int, ...], ratio: float) -> tuple[int, ...]:
    """Channels each conv keeps at `ratio` (Torch-Pruning's rounding: int(width * (1 - ratio)))."""
    return tuple(int(w * (1 - ratio)) for w in widths)


def pruned_widths(model: nn.Module) -> tuple[int, ...]:
    return tuple(m.out_channels for m in model.modules() if isinstance(m, nn.Conv1d))


def rebuild_compact(model: nn.Sequential) -> CompactCNN1d:
    """A fresh `CompactCNN1d` with the (pruned) widths of `model` and its weights copied in (strict)."""
    convs = [m for m in model if isinstance(m, nn.Conv1d)]
    linear = [m for m in model if isinstance(m, nn.Linear)][-1]
    drop = next((m.p for m in model if isinstance(m, nn.Dropout)), 0.0)
    base = getattr(model, "config", CNNConfig())
    cfg = replace(base, in_channels=convs[0].in_channels, n_classes=linear.out_features,
                  widths=tuple(c.out_channels for c in convs), kernel_size=convs[0].kernel_size[0], dropout=drop)
    clean = CompactCNN1d(cfg)
    clean.load_state_dict(model.state_dict(), strict=True)
    return clean.eval()


def _schedule(ratio: float, steps: int) -> list[float]:
    # Torch-Pruning indexes this list by step (entry 0 = before any step); the last entry is exactly
    # `ratio` so that the final widths are target_widths(widths, ratio) without float drift
    return [ratio * i / steps for i in range(steps)] + [ratio]


def prune_model(model: CompactCNN1d, normalizer: Normalizer, windows: Windows, fold: Fold,
                cfg: PruneConfig = PruneConfig(), progress: bool = False) -> tuple[CompactCNN1d, list[dict]]:
    """Pruned, fine-tuned, rebuilt copy of `model` and the per-step log (widths, validation history)."""
    work = copy.deepcopy(model).eval()
    if cfg.ratio == 0:
        return rebuild_compact(work), []
    example = torch.from_numpy(normalizer(windows.x[fold.train_idx[:1]]))
    classifier = [m for m in work if isinstance(m, nn.Linear)][-1]
    torch.manual_seed(cfg.seed)
    pruner = tp.pruner.BasePruner(work, example, importance=importance(cfg.importance), pruning_ratio=cfg.ratio,
                                  iterative_steps=cfg.steps, iterative_pruning_ratio_scheduler=_schedule,
                                  ignored_layers=[classifier], global_pruning=False)
    x_tr, y_tr = normalizer(windows.x[fold.train_idx]), windows.y[fold.train_idx]
    x_val, y_val = normalizer(windows.x[fold.val_idx]), windows.y[fold.val_idx]
    log = []
    for step in range(cfg.steps):
        torch.manual_seed(cfg.seed * 1000 + step)  # RandomImportance draws from torch's global generator
        pruner.step()
        entry: dict = {"step": step, "widths": list(pruned_widths(work))}
        if cfg.finetune_epochs:
            tcfg = TrainConfig(epochs=cfg.finetune_epochs, patience=cfg.patience, lr=cfg.lr,
                               seed=cfg.seed * 1000 + step, axis_flips=windows.config.channels == "raw")
            work, hist = fit(work, x_tr, y_tr, x_val, y_val, tcfg, desc=f"prune step {step}", progress=progress)
            entry["best_val_macro_f1"] = max(h["val_macro_f1"] for h in hist)
        log.append(entry)
    want = target_widths(model.config.widths, cfg.ratio)
    if pruned_widths(work) != want:
        raise RuntimeError(f"pruning produced widths {pruned_widths(work)}, expected {want}")
    return rebuild_compact(work), log


def finetune_control(model: CompactCNN1d, normalizer: Normalizer, windows: Windows, fold: Fold,
                     cfg: PruneConfig = PruneConfig()) -> CompactCNN1d:
    """The same `steps` x `finetune_epochs` schedule without pruning: the control that separates what
    the extra training does from what removing channels costs."""
    work = copy.deepcopy(model)
    x_tr, y_tr = normalizer(windows.x[fold.train_idx]), windows.y[fold.train_idx]
    x_val, y_val = normalizer(windows.x[fold.val_idx]), windows.y[fold.val_idx]
    for step in range(cfg.steps if cfg.finetune_epochs else 0):
        tcfg = TrainConfig(epochs=cfg.finetune_epochs, patience=cfg.patience, lr=cfg.lr,
                           seed=cfg.seed * 1000 + step, axis_flips=windows.config.channels == "raw")
        work, _ = fit(work, x_tr, y_tr, x_val, y_val, tcfg, desc=f"control step {step}", progress=False)
    return rebuild_compact(work)


def apply(model: CompactCNN1d, normalizer: Normalizer, windows: Windows, fold: Fold,
          cfg: PruneConfig = PruneConfig(), name: str | None = None) -> TorchArtifact:
    pruned, _ = prune_model(model, normalizer, windows, fold, cfg)
    return TorchArtifact(pruned, normalizer, name or f"pruned-{cfg.importance}-{cfg.ratio:g}",
                         example=np.ascontiguousarray(windows.x[fold.train_idx[0]]))
