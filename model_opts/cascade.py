"""Dynamic (cascade) loading: a tiny always-resident stage 1, a large stage 2 loaded only when needed.

Steps of `apply(cfg, stage2_dir, directory, ...)`:
1. Train stage 1, a tiny `CompactCNN1d` (`stage1_widths`, default (8, 8)) with `har.training.fit` on the
   training users (early stopping on the validation users), with its own training-user normaliser.
2. Re-store stage 2 (a `har.train` fold model, read with `har.model_io.load`) as a verified, memory-mapped
   flat weight file (`har.weightfile`): its state tensors plus its input normaliser.
3. Write stage 1 (model_io format), the stage-2 file and `cascade.json` into `directory` and return
   `CascadeArtifact.load(directory)`.
Inference (`CascadeArtifact.predict`): stage 1 scores every window; windows whose confidence (max softmax
probability) is below `threshold` go to stage 2. Only then are stage 2's tensors acquired from the mapped
file and the network run straight over those read-only views (`torch.func.functional_call` on a
weightless "meta" skeleton: no copy into torch parameters), and released after the call (their pages
advised away, the lazy-release policy done here), so stage 2 is resident only while it runs. Returned
scores are softmax probabilities of whichever stage decided. threshold 0 never loads stage 2; threshold > 1 always does.
Counters (`stats()`) record windows seen, windows sent to stage 2, stage-2 loads and the high-water mark of
resident weight bytes (stage-1 arrays + materialised stage-2 tensors).
Known limits: `macs_per_window` and `tensor_lifetimes` describe the worst case (both stages run); the
expected MACs at a given stage-2 fraction come from `expected_macs`. The file is mapped (and verified) once
at open; every call that needs stage 2 re-acquires its tensors and releases them after (pages advised away,
refaulted from the OS page cache next time), so measured latencies include that re-load but not a read
from slow flash, which a device would pay. The mean resident figure assumes windows stream one at a time.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

from har import model_io, weightfile
from har.errors import BadDataError, BadOptionError, DataNotFoundError
from har.measure.artifact import TensorLife, TorchArtifact
from har.model import CNNConfig, CompactCNN1d
from har.paths import atomic_write_bytes, atomic_write_text
from har.training import TrainConfig, fit
from har.windows import Normalizer, WindowConfig

STAGE1_DIR = "stage1"
STAGE2_FILE = "stage2.harw"
META_FILE = "cascade.json"
FORMAT = "har-memopt/cascade-v1"
_NORM = "input_norm."


@dataclass(frozen=True)
class CascadeConfig:
    threshold: float = 0.9
    stage1_widths: tuple[int, ...] = (8, 8)
    stage1_kernel: int = 5
    epochs: int = 60
    patience: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold:
            raise BadOptionError(f"threshold must be >= 0 (got {self.threshold})")
        if not self.stage1_widths or min(self.stage1_widths) < 1:
            raise BadOptionError(f"stage1_widths must be positive (got {self.stage1_widths})")

    @classmethod
    def from_dict(cls, d: dict) -> "CascadeConfig":
        return cls(**{**d, "stage1_widths": tuple(d["stage1_widths"])})


@dataclass(frozen=True)
class CascadeStats:
    windows: int
    stage2_windows: int
    stage2_loads: int
    stage1_weight_bytes: int
    stage2_weight_bytes: int
    peak_resident_weight_bytes: int

    @property
    def stage2_fraction(self) -> float:
        return self.stage2_windows / self.windows if self.windows else 0.0

    @property
    def mean_resident_weight_bytes(self) -> float:
        """Per-window average when windows stream one at a time: stage 1 always, stage 2 when it ran."""
        return self.stage1_weight_bytes + self.stage2_fraction * self.stage2_weight_bytes


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


class CascadeArtifact:
    """Stage 1 always resident + lazily loaded stage 2; implements `InferenceArtifact`."""

    def __init__(self, config: CascadeConfig, stage1: TorchArtifact, stage2_path: Path,
                 classes: tuple[str, ...], window: WindowConfig):
        self.config = config
        self.stage1 = stage1
        self.stage2_path = Path(stage2_path)
        self.classes = tuple(classes)
        self.window = window
        self.name = f"cascade-t{config.threshold:g}"
        self._stage2_file = weightfile.WeightFile(self.stage2_path, verify=True)
        self._stage2_resident_bytes = 0  # materialised stage-2 tensors (only during a stage-2 call)
        meta = self._stage2_file.metadata
        try:
            self._stage2_cfg = CNNConfig.from_dict(meta["model"])
        except (KeyError, TypeError) as exc:
            raise BadDataError(f"{self.stage2_path}: no usable stage-2 model config ({exc})") from None
        with torch.device("meta"):  # structure only: the weights come from the mapped file at call time
            self._skeleton = CompactCNN1d(self._stage2_cfg).eval()
        self._state_names = [n for n in self._stage2_file.entries if not n.startswith(_NORM)]
        self._stage1_bytes = int(sum(a.nbytes for a in stage1.weight_arrays().values()))
        self.reset_stats()

    # -- counters --------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self._windows = self._stage2_windows = self._loads = 0
        self._peak_bytes = self._stage1_bytes

    def stats(self) -> CascadeStats:
        return CascadeStats(self._windows, self._stage2_windows, self._loads, self._stage1_bytes,
                            self._stage2_file.total_bytes, self._peak_bytes)

    @property
    def stage2_resident(self) -> bool:
        return self._stage2_resident_bytes > 0

    def with_threshold(self, threshold: float) -> "CascadeArtifact":
        """The same stages (stage 2 re-opened from its file) under another threshold, counters at zero."""
        return CascadeArtifact(replace(self.config, threshold=threshold), self.stage1, self.stage2_path,
                               self.classes, self.window)

    # -- inference -------------------------------------------------------------------------------
    def _stage2_logits(self, x: np.ndarray) -> np.ndarray:
        names = self._state_names + [_NORM + "mean", _NORM + "std"]
        arrays = {n: self._stage2_file.view(n) for n in names}
        self._loads += 1
        self._stage2_resident_bytes = int(sum(a.nbytes for a in arrays.values()))
        # inference only: inspection reads (weight_arrays) and verification are not counted
        self._peak_bytes = max(self._peak_bytes, self._stage1_bytes + self._stage2_resident_bytes)
        try:
            norm = Normalizer(arrays.pop(_NORM + "mean"), arrays.pop(_NORM + "std"))
            with warnings.catch_warnings():  # read-only mmap views; torch only reads them
                warnings.simplefilter("ignore", UserWarning)
                state = {k: torch.from_numpy(v) for k, v in arrays.items()}
            with torch.inference_mode():
                return functional_call(self._skeleton, state, (torch.from_numpy(norm(x)),), strict=False).numpy()
        finally:
            del arrays
            self._stage2_resident_bytes = 0
            for n in names:
                self._stage2_file.advise_away(n)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        probs = _softmax(self.stage1.predict(x))
        need = probs.max(axis=1) < self.config.threshold
        self._windows += len(x)
        if need.any():
            probs[need] = _softmax(self._stage2_logits(np.ascontiguousarray(x[need])))
            self._stage2_windows += int(need.sum())
        return probs

    def stage1_confidence(self, x: np.ndarray) -> np.ndarray:
        return _softmax(self.stage1.predict(np.asarray(x, dtype=np.float32))).max(axis=1)

    # -- InferenceArtifact -----------------------------------------------------------------------
    def weight_arrays(self) -> dict[str, np.ndarray]:
        """Everything the device stores (stage 1 resident, stage 2 in its file)."""
        out = {f"stage1.{k}": v for k, v in self.stage1.weight_arrays().items()}
        out.update({f"stage2.{k}": v for k, v in self._stage2_file.arrays().items()})
        return out

    def _stage2_artifact(self) -> TorchArtifact:
        arrays = self._stage2_file.arrays()
        model = CompactCNN1d(self._stage2_cfg)
        norm = Normalizer(arrays.pop(_NORM + "mean"), arrays.pop(_NORM + "std"))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=False)
        example = np.zeros((self.window.n_channels, self.window.length), dtype=np.float32)
        return TorchArtifact(model, norm, "stage2", example=example)

    def macs_per_window(self) -> int:
        """Worst case: both stages run."""
        return self.stage1.macs_per_window() + self._stage2_artifact().macs_per_window()

    def expected_macs(self, stage2_fraction: float) -> float:
        return self.stage1.macs_per_window() + stage2_fraction * self._stage2_artifact().macs_per_window()

    def tensor_lifetimes(self) -> list[TensorLife]:
        """Worst case: stage 1's chain, then stage 2's; the input stays live until stage 2 reads it."""
        s1 = self.stage1.tensor_lifetimes()
        s2 = self._stage2_artifact().tensor_lifetimes()
        n1 = max(t.last_op for t in s1) + 1
        out = [TensorLife("input", s1[0].size_bytes, 0, n1)]
        out += [TensorLife(f"stage1.{t.name}", t.size_bytes, t.first_op, t.last_op) for t in s1[1:]]
        out += [TensorLife(f"stage2.{t.name}", t.size_bytes, t.first_op + n1, t.last_op + n1) for t in s2[1:]]
        return out

    def arena_bytes(self) -> int | None:
        return None

    def close(self) -> None:
        self._stage2_file.close()

    # -- storage ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        model_io.save(directory / STAGE1_DIR, self.stage1.model, self.stage1.normalizer, self.window, self.classes)
        if (directory / STAGE2_FILE).resolve() != self.stage2_path.resolve():
            atomic_write_bytes(directory / STAGE2_FILE, self.stage2_path.read_bytes())
        meta = {"format": FORMAT, "config": asdict(self.config), "classes": list(self.classes),
                "window": self.window.to_dict()}
        atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "CascadeArtifact":
        directory = Path(directory)
        mpath = directory / META_FILE
        if not mpath.is_file() or not (directory / STAGE2_FILE).is_file():
            raise DataNotFoundError(f"no cascade in {directory} (expected {META_FILE}, {STAGE2_FILE}, {STAGE1_DIR}/)")
        try:
            meta = json.loads(mpath.read_text())
            if meta.get("format") != FORMAT:
                raise KeyError(f"format {meta.get('format')!r} is not {FORMAT}")
            cfg = CascadeConfig.from_dict(meta["config"])
            window = WindowConfig(**meta["window"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadDataError(f"unusable cascade in {directory}: {str(exc).splitlines()[0]}") from None
        s1 = model_io.load(directory / STAGE1_DIR)
        example = np.zeros((window.n_channels, window.length), dtype=np.float32)
        stage1 = TorchArtifact(s1.model, s1.normalizer, "stage1", example=example)
        return cls(cfg, stage1, directory / STAGE2_FILE, tuple(meta["classes"]), window)


def train_stage1(cfg: CascadeConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, n_classes: int) -> TorchArtifact:
    norm = Normalizer.fit(x_train)
    torch.manual_seed(cfg.seed)
    model = CompactCNN1d(CNNConfig(in_channels=x_train.shape[1], n_classes=n_classes, widths=cfg.stage1_widths,
                                   kernel_size=cfg.stage1_kernel))
    tcfg = TrainConfig(epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed)
    model, _ = fit(model, norm(x_train), y_train, norm(x_val), y_val, tcfg, desc="stage1", progress=False)
    return TorchArtifact(model, norm, "stage1", example=np.asarray(x_train[0], dtype=np.float32))


def write_stage2(stage2_dir: str | Path, path: str | Path) -> Path:
    """Re-store a `har.model_io` model as a flat weight file (state tensors + input normaliser)."""
    saved = model_io.load(stage2_dir)
    arrays = {k: v.detach().numpy() for k, v in saved.model.state_dict().items()
              if not k.endswith("num_batches_tracked")}  # a training counter: inference never reads it
    arrays[_NORM + "mean"] = saved.normalizer.mean
    arrays[_NORM + "std"] = saved.normalizer.std
    meta = {"model": json.loads(saved.model.config.to_json()), "source": "har.model_io"}
    return weightfile.save_weights(path, arrays, metadata=meta)


def apply(cfg: CascadeConfig, stage2_dir: str | Path, directory: str | Path, x_train: np.ndarray,
          y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, stage1: TorchArtifact | None = None
          ) -> CascadeArtifact:
    """Build the cascade in `directory` (stage 1 trained here unless given) and open it."""
    saved = model_io.load(stage2_dir)
    if x_train.shape[1:] != (saved.window.n_channels, saved.window.length):
        raise BadDataError(f"training windows {x_train.shape[1:]} do not match stage 2's input "
                           f"({saved.window.n_channels}, {saved.window.length})")
    if stage1 is None:
        stage1 = train_stage1(cfg, x_train, y_train, x_val, y_val, saved.model.config.n_classes)
    directory = Path(directory)
    write_stage2(stage2_dir, directory / STAGE2_FILE)
    model_io.save(directory / STAGE1_DIR, stage1.model, stage1.normalizer, saved.window, saved.classes)
    meta = {"format": FORMAT, "config": asdict(cfg), "classes": list(saved.classes), "window": saved.window.to_dict()}
    atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return CascadeArtifact.load(directory)
