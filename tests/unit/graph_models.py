"""Small `nn.Module`s written for the graph-path tests: a residual block, depthwise and grouped convs,
every pooling kind, ReLU6, a flatten of a (C, H, W) map, and a 1-d model."""
from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.pw(torch.relu(self.bn(self.dw(x)))) + x)


class ProbeNet(nn.Module):
    """stem (stride 2, ReLU6) -> residual depthwise block -> max pool -> avg pool -> grouped conv ->
    global average pool -> dropout -> linear."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.block = Residual(8)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.grouped = nn.Conv2d(8, 16, 3, groups=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        x = self.pool(self.block(self.stem(x)))
        x = torch.relu(self.grouped(self.avg(x)))
        return self.fc(self.drop(torch.flatten(self.gap(x), 1)))


class FlattenNet(nn.Module):
    """A Linear over a flattened (C, H, W) map (torch's column order differs from channel-last)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(self.relu(self.pool(self.conv(x))).flatten(1))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics, so BN folding is tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()
