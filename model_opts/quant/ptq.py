"""Post-training static int8 quantization: `apply(model, normalizer, windows, fold, cfg) -> Int8Artifact`.

Steps:
1. Fold BatchNorm into each conv and fuse ReLUs (`graph.fold_model`).
2. Calibrate activation ranges on a seeded subset of the fold's TRAINING windows, normalised with the
   training Normalizer (`calibrate.activation_qparams`, min/max or percentile).
3. Build the fake-quant simulation `QuantSim` (weights per-output-channel symmetric int8, biases int32),
   and convert it to the integer-only `Int8Program` (`fakequant.to_program`), whose input quantizer has
   the Normalizer folded in.
Validation and test windows are not read. Deterministic: same model, data and config -> same program.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from har.splits import Fold
from har.windows import Normalizer, Windows
from model_opts.quant.artifact import Int8Artifact
from model_opts.quant.calibrate import activation_qparams
from model_opts.quant.config import QuantConfig
from model_opts.quant.fakequant import QuantSim, to_program
from model_opts.quant.graph import fold_model


def _dropout_p(model: nn.Module) -> float:
    return next((m.p for m in model.modules() if isinstance(m, nn.Dropout)), 0.0)


def simulate(model: nn.Sequential, normalizer: Normalizer, x_train: np.ndarray,
             cfg: QuantConfig = QuantConfig()) -> QuantSim:
    """Calibrated fake-quant model of `model` from un-normalised training windows `x_train` (N, C, T)."""
    ops = fold_model(model)
    qparams = activation_qparams(ops, normalizer(x_train), cfg)
    return QuantSim(ops, qparams, normalizer, length=x_train.shape[2], dropout=_dropout_p(model)).eval()


def apply(model: nn.Sequential, normalizer: Normalizer, windows: Windows, fold: Fold,
          cfg: QuantConfig = QuantConfig(), name: str | None = None) -> Int8Artifact:
    sim = simulate(model, normalizer, windows.x[fold.train_idx], cfg)
    return Int8Artifact(to_program(sim), name or f"int8-ptq-{cfg.calibration}", windows.classes,
                        info={"technique": "ptq", "config": cfg.to_dict()})
