"""What `measure` needs from any inference artifact (fp32 torch, int8 model, flat executor, ORT peer).

An artifact takes channel windows exactly as `har.windows.make_windows` produces them (float32
(N, C, T), NOT normalised: each artifact carries its own preprocessing, as a device would) and returns
class scores (N, K). It reports the storage a device would hold (`weight_arrays`: real arrays, whose
`nbytes` are summed by `measure`), its multiply-accumulates per window, and the lifetimes of the
intermediate tensors of one batch-1 inference (op indices in execution order), from which `measure`
derives the naive activation sum and the most bytes live at once. Techniques never compute these
totals themselves: they expose arrays and lifetimes, and `Footprint` is filled in one place.

`TorchArtifact` adapts a saved `CompactCNN1d` (or any `nn.Sequential` of supported leaf modules):
lifetimes and MACs come from forward hooks on one batch-1 pass. Limits: MACs count Conv1d and Linear
only (BatchNorm, pooling and ReLU are cheap elementwise work and are left out, as in most MAC
reports); a Sequential is assumed to be a chain, so tensor k lives from op k to op k+1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from har.windows import Normalizer


@dataclass(frozen=True)
class TensorLife:
    """One intermediate tensor of a batch-1 inference: produced by op `first_op`, last read by `last_op`."""

    name: str
    size_bytes: int
    first_op: int
    last_op: int


@runtime_checkable
class InferenceArtifact(Protocol):
    name: str

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, C, T) float32 un-normalised channel windows -> (N, K) float32 scores."""

    def weight_arrays(self) -> Mapping[str, np.ndarray]:
        """Every array a device must store to run this artifact (weights, biases, scales, zero points...)."""

    def macs_per_window(self) -> int: ...

    def tensor_lifetimes(self) -> list[TensorLife]:
        """Input, intermediates and output of one batch-1 inference, in execution order."""

    def arena_bytes(self) -> int | None:
        """Size of a planned activation arena, or None when the artifact has no memory plan."""


def chain_lifetimes(names: list[str], sizes_bytes: list[int]) -> list[TensorLife]:
    """Lifetimes of a pure chain: tensor 0 is the input (read by op 0); tensor k>0 is op k-1's output,
    read by op k (the last one, the output, lives to the end)."""
    n_ops = len(sizes_bytes) - 1
    return [TensorLife(name, size, max(0, k - 1), min(k, n_ops - 1))
            for k, (name, size) in enumerate(zip(names, sizes_bytes))]


class TracedChainArtifact:
    """Base for artifacts whose MACs and lifetimes come from one traced batch-1 pass over a chain:
    subclasses implement `_trace() -> (tensor names, tensor bytes, macs)`; no memory plan."""

    def _trace(self) -> tuple[list[str], list[int], int]:
        raise NotImplementedError

    def macs_per_window(self) -> int:
        return self._trace()[2]

    def tensor_lifetimes(self) -> list[TensorLife]:
        names, sizes, _ = self._trace()
        return chain_lifetimes(names, sizes)

    def arena_bytes(self) -> int | None:
        return None


class TorchArtifact(TracedChainArtifact):
    """fp32 torch eager inference of an `nn.Sequential` with its input normaliser (the baseline)."""

    def __init__(self, model: nn.Sequential, normalizer: Normalizer, name: str = "torch-eager",
                 example: np.ndarray | None = None):
        self.model = model.eval()
        self.normalizer = normalizer
        self.name = name
        self._example = example

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(self.normalizer(x))).numpy()

    def weight_arrays(self) -> dict[str, np.ndarray]:
        # num_batches_tracked is a training counter, not something inference reads
        arrays = {k: v.detach().numpy() for k, v in self.model.state_dict().items()
                  if not k.endswith("num_batches_tracked")}
        arrays["input_norm.mean"] = self.normalizer.mean
        arrays["input_norm.std"] = self.normalizer.std
        return arrays

    def _trace(self) -> tuple[list[str], list[int], int]:
        if self._example is None:
            first = next(m for m in self.model.modules() if isinstance(m, (nn.Conv1d, nn.Linear)))
            raise ValueError(f"{self.name}: pass example=(C, T) window to trace shapes ({type(first).__name__} first)")
        x = torch.from_numpy(self.normalizer(self._example[None].astype(np.float32)))
        names, sizes, macs = ["input"], [x.numel() * 4], 0
        with torch.inference_mode():
            for i, layer in enumerate(self.model):
                y = layer(x)
                if isinstance(layer, nn.Conv1d):
                    macs += y.numel() * (layer.in_channels // layer.groups) * layer.kernel_size[0]
                elif isinstance(layer, nn.Linear):
                    macs += layer.in_features * layer.out_features
                names.append(f"{i}.{type(layer).__name__}")
                sizes.append(y.numel() * y.element_size())
                x = y
        return names, sizes, macs
