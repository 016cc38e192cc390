"""Depthwise-separable CNN: `apply(in_channels, n_classes, widths, normalizer, windows, fold, cfg) -> CompactCNN1d`.

The technique is architectural: every conv block but the first becomes MobileNet's block, a depthwise
Conv1d(c_in, c_in, k, groups=c_in) -> BatchNorm1d -> ReLU followed by a pointwise Conv1d(c_in, width, 1)
-> BatchNorm1d -> ReLU (`har.model.CNNConfig(separable=True)`), so a block costs k * c_in + c_in * width
weights and MACs per step instead of k * c_in * width. The first block stays a full conv: its input has
only a few channels (3 to 9), where a depthwise conv saves almost nothing and mixes no channels.
Steps of `apply`:
1. Build `CompactCNN1d(CNNConfig(..., separable=True))` seeded with cfg.seed + fold.index, the seed
   `har.experiment.train_fold_cnn` gives the baseline of the same fold.
2. Train it from scratch exactly as the baseline is trained: `har.training.fit` with `cfg.train` (its seed
   replaced by cfg.seed + fold.index, axis flips iff the windows are raw device axes), on the fold's
   training users, early stopping on its validation users' macro-F1. Test users are never read.
The trained model goes through the int8 path like any CompactCNN1d (BN fold, PTQ / QAT, the int8 op
`DepthwiseConv1dInt8`, the flat op `dwconv1d_q`, the C kernel `dwconv`, firmware export).
`count_macs(cfg, length)` / `count_params(cfg)` give the analytic MACs per window and weights.
Limits: depth multiplier 1 only; the float flattener (`system_opts.flatten`) refuses grouped convs, so
the fp32 static-pool session does not run this model (its int8 sessions do).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from har.errors import BadOptionError
from har.model import CNNConfig, CompactCNN1d
from har.splits import Fold
from har.training import TrainConfig, fit
from har.windows import Normalizer, Windows


@dataclass(frozen=True)
class SeparableConfig:
    kernel_size: int = 5
    dropout: float = 0.3
    train: TrainConfig = field(default_factory=TrainConfig)  # the baseline's recipe by default
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise BadOptionError(f"kernel_size must be odd and >= 1 (same padding), got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise BadOptionError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


def model_config(in_channels: int, n_classes: int, widths: tuple[int, ...],
                 cfg: SeparableConfig = SeparableConfig()) -> CNNConfig:
    if not widths or min(widths) < 1:
        raise BadOptionError(f"widths must be a non-empty tuple of positive ints, got {widths}")
    return CNNConfig(in_channels=in_channels, n_classes=n_classes, widths=tuple(int(w) for w in widths),
                     kernel_size=cfg.kernel_size, dropout=cfg.dropout, separable=True)


def apply(in_channels: int, n_classes: int, widths: tuple[int, ...], normalizer: Normalizer, windows: Windows,
          fold: Fold, cfg: SeparableConfig = SeparableConfig(), progress: bool = False) -> CompactCNN1d:
    """Steps 1-2 of the module docstring; `normalizer` is the fold's training Normalizer."""
    seed = cfg.seed + fold.index
    model = CompactCNN1d(model_config(in_channels, n_classes, widths, cfg), seed=seed)
    tcfg = replace(cfg.train, seed=seed, axis_flips=windows.config.channels == "raw")
    x_tr, x_val = normalizer(windows.x[fold.train_idx]), normalizer(windows.x[fold.val_idx])
    model, _ = fit(model, x_tr, windows.y[fold.train_idx], x_val, windows.y[fold.val_idx], tcfg,
                   desc=f"separable fold {fold.index}", progress=progress)
    return model.eval()


def _blocks(cfg: CNNConfig, length: int):
    """(c_in, width, steps) of every conv block, steps = output length (same padding, pools of 2)."""
    t, c_in = length, cfg.in_channels
    for i, width in enumerate(cfg.widths):
        yield i, c_in, width, t
        if i < len(cfg.widths) - 1:
            t //= 2
        c_in = width


def count_macs(cfg: CNNConfig, length: int) -> int:
    """Multiply-accumulates per window of the convs and the classifier (as `TorchArtifact` counts them)."""
    k, macs = cfg.kernel_size, 0
    for i, c_in, width, t in _blocks(cfg, length):
        macs += t * (c_in * k + c_in * width if cfg.separable and i > 0 else c_in * k * width)
    return macs + cfg.widths[-1] * cfg.n_classes


def count_params(cfg: CNNConfig) -> int:
    """Weights and biases, BatchNorm affine parameters included (as `har.model.param_count`)."""
    k, n = cfg.kernel_size, 0
    for i, c_in, width, _ in _blocks(cfg, 1):
        n += (c_in * k + 2 * c_in + c_in * width if cfg.separable and i > 0 else c_in * k * width) + 2 * width
    return n + cfg.widths[-1] * cfg.n_classes + cfg.n_classes
