"""Model-centric techniques for any module the graph path imports (the image CNNs): structured channel
pruning, unstructured magnitude sparsity, and weight clustering of the int8 graph. Each is a frozen config
plus one verb; training is the caller's (`har.image_cnn.train`), passed in as `finetune(model, after_step)`.

- `prune_channels(model, example, cfg)`: Torch-Pruning (`MetaPruner`, L1 magnitude importance, local ratio
  per layer, the classifier Linear ignored) removes whole output channels; its dependency graph keeps
  BatchNorms, depthwise groups and residual adds consistent (why a library: that coupling is exactly what
  it does). `steps` rounds of prune + `finetune`.
- `sparsify(model, cfg, finetune)`: gradual magnitude pruning (Zhu & Gupta: s_t = target (1 - (1 - t/n)^3))
  of every conv / linear weight, per layer, masks only growing; after each stage `finetune` with
  `after_step` re-applying the masks, so pruned weights stay exactly 0 (and round to int8 0).
- `cluster(graph, cfg)`: per conv / linear of a `QGraph`, k-means of its int8 values with one centroid
  pinned at 0 (`model_opts.cluster.cluster_values`, deterministic), each weight replaced by its rounded
  centroid: at most k distinct values per layer (what a 4-bit palette stores); no retraining.
Limits: pruning ratios are uniform per layer; sparsity is measured on the float weights before PTQ
(int8 rounding can only add zeros); clustering is post-training.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model_opts.cluster import cluster_values
from model_opts.graph.quantize import QGraph, QNode


@dataclass(frozen=True)
class ChannelPruneConfig:
    ratio: float = 0.5
    steps: int = 2

    def __post_init__(self):
        if not 0 <= self.ratio < 1 or self.steps < 1:
            raise ValueError(f"prune ratio must lie in [0, 1) and steps >= 1, got {self.ratio}, {self.steps}")


def prune_channels(model: nn.Module, example: torch.Tensor, cfg: ChannelPruneConfig, finetune=None) -> nn.Module:
    import torch_pruning as tp

    work = copy.deepcopy(model).eval()
    if cfg.ratio == 0:
        return work
    classifier = [m for m in work.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(work, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=cfg.ratio, iterative_steps=cfg.steps, ignored_layers=[classifier],
                                  global_pruning=False)
    for _ in range(cfg.steps):
        pruner.step()
        if finetune is not None:
            finetune(work, None)
    return work.eval()


@dataclass(frozen=True)
class SparsityConfig:
    target: float = 0.8
    stages: int = 3

    def __post_init__(self):
        if not 0 < self.target < 1 or self.stages < 1:
            raise ValueError(f"sparsity target must lie in (0, 1), stages >= 1; got {self.target}, {self.stages}")

    def schedule(self) -> list[float]:
        n = self.stages
        return [self.target * (1 - (1 - t / n) ** 3) for t in range(1, n + 1)]


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def masks(model: nn.Module, sparsity: float, previous: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Per weight: keep all but the ceil(sparsity * size) smallest |w|; previously pruned entries rank first."""
    out = []
    for i, w in enumerate(_weights(model)):
        score = w.detach().abs().flatten().clone()
        if previous is not None:
            score[~previous[i].flatten()] = -1.0
        n_zero = int(np.ceil(sparsity * score.numel()))
        order = torch.argsort(score, stable=True)
        keep = torch.ones(score.numel(), dtype=torch.bool)
        keep[order[:n_zero]] = False
        out.append(keep.view_as(w))
    return out


def apply_masks(model: nn.Module, ms: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for w, m in zip(_weights(model), ms):
            w.mul_(m)


def sparsify(model: nn.Module, cfg: SparsityConfig, finetune) -> tuple[nn.Module, float]:
    """Gradually pruned copy and its measured sparsity over all conv / linear weights."""
    work = copy.deepcopy(model)
    ms = None
    for s in cfg.schedule():
        ms = masks(work, s, ms)
        apply_masks(work, ms)
        finetune(work, lambda m, ms=ms: apply_masks(m, ms))
    ws = _weights(work)
    zeros = sum(int((w == 0).sum()) for w in ws)
    return work.eval(), zeros / sum(w.numel() for w in ws)


@dataclass(frozen=True)
class GraphClusterConfig:
    k: int = 16
    seed: int = 0

    def __post_init__(self):
        if not 2 <= self.k <= 256:
            raise ValueError(f"k must lie in [2, 256], got {self.k}")


def cluster(graph: QGraph, cfg: GraphClusterConfig = GraphClusterConfig()) -> QGraph:
    nodes = []
    for n in graph.nodes:
        if n.weight is not None:
            centroids, idx = cluster_values(n.weight.astype(np.float64).ravel(), cfg.k, seed=cfg.seed)
            w = np.clip(np.rint(centroids), -127, 127)[idx].reshape(n.weight.shape).astype(np.int8)
            n = QNode(**{**n.__dict__, "weight": w})
        nodes.append(n)
    return QGraph(tuple(nodes), graph.input_shape)


def distinct_values(graph: QGraph) -> int:
    return max((len(np.unique(n.weight)) for n in graph.nodes if n.weight is not None), default=0)
