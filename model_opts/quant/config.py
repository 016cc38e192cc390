"""Frozen, JSON-serialisable configs of the int8 techniques (`ptq.apply`, `qat.apply`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from har.errors import BadOptionError

CALIBRATIONS = ("minmax", "percentile")


@dataclass(frozen=True)
class QuantConfig:
    """Post-training static int8: per-channel symmetric weights, per-tensor asymmetric activations.

    `calibration`: "minmax" takes each activation tensor's observed range; "percentile" clips it to the
    [100 - percentile, percentile] percentiles of the observed values (outliers then saturate instead of
    stretching the scale for everyone). `calib_windows`: size of the seeded random subset of training
    windows observed.
    """

    calibration: str = "minmax"
    percentile: float = 99.99
    calib_windows: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise BadOptionError(f"unknown calibration {self.calibration!r}; choose one of {list(CALIBRATIONS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise BadOptionError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.calib_windows < 1:
            raise BadOptionError(f"calib_windows must be >= 1, got {self.calib_windows}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware fine-tuning from the BN-folded fp32 model, starting at the PTQ ranges.

    Activation ranges stay frozen at their calibrated values (`quant`); weights and biases train through
    straight-through fake quantization with `har.training.fit` (AdamW, one-cycle schedule, augmentation,
    early stopping on validation users' macro-F1).
    """

    quant: QuantConfig = QuantConfig(calibration="percentile")
    epochs: int = 8
    patience: int = 3
    lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.lr <= 0:
            raise BadOptionError("QAT needs epochs >= 1, patience >= 1 and lr > 0")

    def to_dict(self) -> dict:
        return asdict(self)
