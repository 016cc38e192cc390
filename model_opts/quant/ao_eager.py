"""Peer: torch.ao eager-mode post-training static int8 of the same fp32 model (for comparison only).

Steps of `build(model, normalizer, x_train, ...)`:
1. Copy the model, wrap it as QuantStub -> model -> DeQuantStub, fuse every Conv1d-BatchNorm1d-ReLU.
2. qconfig = `get_default_qconfig("x86")` (per-channel symmetric int8 weights, histogram-observed uint8
   activations with reduce_range), `prepare`, run the calibration windows (seeded training subset,
   normalised), `convert`.
3. Wrap in `AoEagerArtifact`. `weight_arrays` are the arrays the converted modules hold, in torch's own
   dtypes (int8 weights, float64 per-channel scales and int64 zero points, float32 biases) plus the
   Normalizer statistics; MACs count Conv1d/Linear like `TorchArtifact`; lifetimes follow one batch-1
   pass through the quantized chain (the fused-away Identity modules are skipped).
torch.ao.quantization is deprecated in recent torch and warns at import and use. Those warnings are
recorded (not shown) and the first line of each distinct deprecation notice is returned as a note;
if any step raises, `build` returns None and the exception's first line instead of a fake result.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import torch
from torch import nn

from har.measure.artifact import TracedChainArtifact
from har.windows import Normalizer


@contextlib.contextmanager
def _nondeterministic_ok():
    # har.training.fit turns on deterministic-algorithm checks (warn only); the quantized kernels have no
    # flagged deterministic variant and would print a C++ warning on every call. Restored on exit.
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class _Wrapped(nn.Module):
    def __init__(self, model: nn.Sequential, quant_stub: nn.Module, dequant_stub: nn.Module):
        super().__init__()
        self.quant, self.model, self.dequant = quant_stub, model, dequant_stub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.model(self.quant(x)))


class AoEagerArtifact(TracedChainArtifact):
    def __init__(self, wrapped: nn.Module, normalizer: Normalizer, example: np.ndarray, name: str = "torch-ao-int8"):
        self.wrapped = wrapped.eval()
        self.normalizer = normalizer
        self.example = example
        self.name = name

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), _nondeterministic_ok():
            return self.wrapped(torch.from_numpy(self.normalizer(x))).numpy()

    def weight_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"input_norm.mean": self.normalizer.mean, "input_norm.std": self.normalizer.std,
                  "quant.scale": self.wrapped.quant.scale.numpy(), "quant.zero_point": self.wrapped.quant.zero_point.numpy()}
        for name, m in self.wrapped.model.named_children():
            if not hasattr(m, "weight") or not callable(m.weight):
                continue
            w = m.weight()
            arrays[f"{name}.weight"] = w.int_repr().numpy()
            arrays[f"{name}.weight_scales"] = w.q_per_channel_scales().numpy()
            arrays[f"{name}.weight_zero_points"] = w.q_per_channel_zero_points().numpy()
            if m.bias() is not None:
                arrays[f"{name}.bias"] = m.bias().detach().numpy()
            arrays[f"{name}.out_scale_zp"] = np.array([m.scale, m.zero_point], dtype=np.float64)
        return arrays

    def _trace(self) -> tuple[list[str], list[int], int]:
        x = torch.from_numpy(self.normalizer(self.example[None].astype(np.float32)))
        names, sizes, macs = ["input"], [x.numel() * 4], 0
        with torch.inference_mode():
            x = self.wrapped.quant(x)
            names.append("quant")
            sizes.append(x.numel() * x.element_size())
            for name, m in self.wrapped.model.named_children():
                if isinstance(m, nn.Identity):
                    continue
                y = m(x)
                if hasattr(m, "weight") and callable(m.weight):
                    w = m.weight()
                    macs += (y.numel() * int(np.prod(w.shape[1:]))) if w.ndim == 3 else int(np.prod(w.shape))
                if y.data_ptr() != x.data_ptr():  # Flatten/Dropout return views, not new tensors
                    names.append(f"{name}.{type(m).__name__}")
                    sizes.append(y.numel() * y.element_size())
                x = y
            y = self.wrapped.dequant(x)
            names.append("dequant")
            sizes.append(y.numel() * y.element_size())
        return names, sizes, macs


def _fuse_groups(model: nn.Sequential) -> list[list[str]]:
    layers = list(model.named_children())
    groups = []
    for i, (name, m) in enumerate(layers):
        if isinstance(m, nn.Conv1d):
            group, j = [name], i + 1
            for kind in (nn.BatchNorm1d, nn.ReLU):
                if j < len(layers) and isinstance(layers[j][1], kind):
                    group.append(layers[j][0])
                    j += 1
            groups.append(group)
    return groups


def build(model: nn.Sequential, normalizer: Normalizer, x_calibration: np.ndarray, n_calibration: int = 512,
          seed: int = 0, backend: str = "x86") -> tuple[AoEagerArtifact | None, list[str]]:
    """torch.ao eager int8 of `model` calibrated on training windows, or (None, [error line])."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught, _nondeterministic_ok():
        warnings.simplefilter("always")
        try:
            import torch.ao.quantization as tq
            torch.backends.quantized.engine = backend
            work = copy.deepcopy(model).eval()
            tq.fuse_modules(work, _fuse_groups(work), inplace=True)
            wrapped = _Wrapped(work, tq.QuantStub(), tq.DeQuantStub()).eval()
            wrapped.qconfig = tq.get_default_qconfig(backend)
            tq.prepare(wrapped, inplace=True)
            n = min(n_calibration, len(x_calibration))
            idx = np.sort(np.random.default_rng(seed).choice(len(x_calibration), n, replace=False))
            with torch.inference_mode():
                for i in range(0, n, 128):
                    wrapped(torch.from_numpy(normalizer(x_calibration[idx[i:i + 128]])))
            tq.convert(wrapped, inplace=True)
            art = AoEagerArtifact(wrapped, normalizer, np.ascontiguousarray(x_calibration[0]))
        except Exception as exc:  # any failure of the deprecated API is reported, never faked
            art = None
            notes.append(f"torch.ao eager failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    seen = []
    for w in caught:
        line = f"{w.category.__name__}: {' '.join(str(w.message).strip().splitlines()[0].split())}"
        if (w.category is DeprecationWarning or "deprecat" in line.lower()) and line not in seen:
            seen.append(line)
    notes += [f"warning filtered: {s}" for s in seen]
    return art, notes
