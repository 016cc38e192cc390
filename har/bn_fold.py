"""Fold an eval-mode BatchNorm into the weight and bias of the conv / linear layer before it, in float64.

This is the project's only BatchNorm fold: `system_opts.flatten` (float executors) and
`model_opts.quant.graph` (int8 path) both call `fold_bn`.

Steps of `fold_bn`:
1. Convert the layer's weight and bias (zeros when it has none) and the BatchNorm's running mean,
   running variance, gamma and beta to float64 tensors.
2. Call torch's own `torch.nn.utils.fusion.fuse_conv_bn_weights` on them: with
   s = gamma * rsqrt(running_var + eps), per output channel the weight becomes W * s and the bias
   (b - running_mean) * s + beta. The weight's first axis must be the output channel, which holds for
   Conv1d (C_out, C_in, K) and Linear (out, in) alike, so the same call folds both; a depthwise conv
   (groups == C_in == C_out, weight (C, 1, K)) is per output channel too and folds the same way.
3. Return float64 numpy arrays; callers round to float32 once, after any further folding of their own
   (flatten also folds the input Normalizer into the first conv).

Why float64 and not torch's helper on the float32 parameters: on a trained CompactCNN1d the float32
fold differs from the float64 one by about one float32 ulp in a large share of the weights, enough to
move the int8 requantization multipliers and calibrated scales, so int8 artifacts built before would
not be reproduced. Fed float64 tensors, torch's helper equals the float64 formula used before
(W * gamma / sqrt(var + eps)) bit for bit after rounding to float32 (`tests/unit/test_bn_fold.py`).
Limits: eval-mode statistics only (running buffers must exist; no batch statistics); the
BatchNorm's channel count must equal the weight's output channels.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from har.errors import HarError


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().cpu().to(torch.float64)


def fold_bn(weight: np.ndarray, bias: np.ndarray | None,
            bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of the layer with `bn` folded in, float64; `weight` has output channels first."""
    if bn.running_mean is None or bn.running_var is None:
        raise HarError(f"cannot fold {bn}: it tracks no running statistics")
    if weight.shape[0] != bn.num_features:
        raise HarError(f"cannot fold {bn} into a layer with {weight.shape[0]} output channels")
    w = torch.from_numpy(np.asarray(weight, dtype=np.float64))
    # torch's helper keeps the bias dtype, so a missing bias must be float64 zeros, not its float32 default
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else torch.from_numpy(
        np.asarray(bias, dtype=np.float64))
    with torch.no_grad():
        fw, fb = fuse_conv_bn_weights(w, b, _f64(bn.running_mean), _f64(bn.running_var), bn.eps,
                                      _f64(bn.weight), _f64(bn.bias))
    return fw.detach().numpy(), fb.detach().numpy()
