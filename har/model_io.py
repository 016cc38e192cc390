"""Save/load a trained CNN without pickle: `model.safetensors` (weights, BN buffers, normaliser) + `model.json`.

The JSON holds the model config, window config, class names and anything else the caller adds
(`extra`). Both files are written atomically. Loading rebuilds the module from the config and loads
tensors with `strict=True`, so a file from another architecture is refused instead of half-loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save

from har.errors import BadDataError, DataNotFoundError
from har.model import CNNConfig, CompactCNN1d
from har.paths import atomic_write_bytes, atomic_write_text
from har.windows import Normalizer, WindowConfig

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
_NORM_PREFIX = "__input_norm__."


@dataclass(frozen=True)
class SavedModel:
    model: CompactCNN1d
    normalizer: Normalizer
    window: WindowConfig
    classes: tuple[str, ...]
    extra: dict

    def logits(self, x_channels: np.ndarray) -> np.ndarray:
        """Logits for un-normalised channel windows (N, C, T)."""
        from har.model import predict_logits
        return predict_logits(self.model, self.normalizer(x_channels)).numpy()


def save(directory: str | Path, model: CompactCNN1d, normalizer: Normalizer, window: WindowConfig,
         classes: tuple[str, ...], extra: dict | None = None) -> Path:
    directory = Path(directory)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tensors[_NORM_PREFIX + "mean"] = torch.from_numpy(normalizer.mean.copy())
    tensors[_NORM_PREFIX + "std"] = torch.from_numpy(normalizer.std.copy())
    meta = {"format": "har-memopt/cnn-v1", "model": json.loads(model.config.to_json()),
            "window": window.to_dict(), "classes": list(classes), "extra": extra or {}}
    atomic_write_bytes(directory / WEIGHTS_FILE, st_save(tensors, metadata={"format": "har-memopt/cnn-v1"}))
    atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load(directory: str | Path) -> SavedModel:
    directory = Path(directory)
    wpath, mpath = directory / WEIGHTS_FILE, directory / META_FILE
    if not wpath.is_file() or not mpath.is_file():
        raise DataNotFoundError(f"no saved model in {directory} (expected {WEIGHTS_FILE} and {META_FILE})")
    try:
        meta = json.loads(mpath.read_text())
        tensors = st_load(wpath.read_bytes())
        model = CompactCNN1d(CNNConfig.from_dict(meta["model"]))
        norm = Normalizer(tensors.pop(_NORM_PREFIX + "mean").numpy(), tensors.pop(_NORM_PREFIX + "std").numpy())
        model.load_state_dict(tensors, strict=True)
    except (json.JSONDecodeError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise BadDataError(f"unusable saved model in {directory}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return SavedModel(model, norm, WindowConfig(**meta["window"]), tuple(meta["classes"]), meta.get("extra", {}))
