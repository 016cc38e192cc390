"""`CompactCNN1d`: the project's reference network, built only from ops every later stage supports.

Layout (for widths (w1, ..., wn)): n blocks of Conv1d(k, same padding, no bias) -> BatchNorm1d -> ReLU,
each but the last followed by MaxPool1d(2); then global average pool, dropout and one Linear.
Only Conv1d, BatchNorm1d, ReLU, MaxPool1d, AdaptiveAvgPool1d(1), Flatten, Dropout and Linear appear,
in one `nn.Sequential`, so that flattening, pruning and int8 conversion can walk it as a list.
`separable=True` (MobileNet's depthwise-separable block) replaces every conv block but the first (whose
input has only a few channels, where a depthwise conv saves little and loses much) by a depthwise
Conv1d(c_in, c_in, k, groups=c_in) -> BatchNorm1d -> ReLU -> pointwise Conv1d(c_in, width, 1) ->
BatchNorm1d -> ReLU: about k * c_in + c_in * width weights instead of k * c_in * width. The int8 path
handles the grouped conv (`model_opts.quant`); the float flattener (`system_opts.flatten`) refuses it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int = 6
    n_classes: int = 5
    widths: tuple[int, ...] = (32, 48, 64)
    kernel_size: int = 5
    dropout: float = 0.3
    separable: bool = False

    def to_json(self) -> str:
        d = asdict(self)
        if not self.separable:  # cache keys hash this text: a standard config keeps its old bytes
            del d["separable"]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "CNNConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        return cls(**d)  # a config saved before `separable` existed loads as a standard one


class CompactCNN1d(nn.Sequential):
    """With `seed`, weight initialisation draws from its own generator state (the global one is
    restored afterwards), so the same seed gives the same initial weights whatever ran before."""

    def __init__(self, cfg: CNNConfig, seed: int | None = None):
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            layers = self._layers(cfg)
        super().__init__(*layers)
        self.config = cfg

    @staticmethod
    def _layers(cfg: CNNConfig) -> list[nn.Module]:
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        k = cfg.kernel_size
        for i, width in enumerate(cfg.widths):
            if cfg.separable and i > 0:
                layers += [nn.Conv1d(c_in, c_in, k, padding=k // 2, groups=c_in, bias=False),
                           nn.BatchNorm1d(c_in), nn.ReLU(), nn.Conv1d(c_in, width, 1, bias=False)]
            else:
                layers.append(nn.Conv1d(c_in, width, k, padding=k // 2, bias=False))
            layers += [nn.BatchNorm1d(width), nn.ReLU()]
            if i < len(cfg.widths) - 1:
                layers.append(nn.MaxPool1d(2))
            c_in = width
        layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(c_in, cfg.n_classes)]
        return layers


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def predict_logits(model: nn.Module, x, batch_size: int = 1024) -> "torch.Tensor":
    """Eval-mode, no-grad logits for a float32 array/tensor (N, C, T)."""
    model.eval()
    x = torch.as_tensor(x)
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
