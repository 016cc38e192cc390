"""PCA front-end + small MLP: trade input dimensionality (and model bytes) for accuracy.

Two inputs, one artifact class:
- `windows`: channel windows (N, C, T) as `make_windows` yields them.
- `features`: rows of the WISDM v1.1 transformed-feature table (N, 43), NaN where the file has '?'.
  The artifact takes them as (N, 43, 1) -- a "window" of one time step -- so that `har.measure.measure`,
  which accepts (N, C, T) float32, can measure it; plain (N, 43) rows are accepted too.

Steps of `apply` (everything fitted on the training rows only; validation rows only early-stop the MLP):
1. Preprocess. windows: per-channel standardisation (`Normalizer`), then flatten to C*T.
   features: median imputation, then per-feature standardisation.
2. Project. scikit-learn `PCA(k, svd_solver="covariance_eigh", whiten=True)`; the whitening scale
   1/sqrt(explained variance) is folded into the stored components, so the device keeps only
   `pca.components` (k, D) and `pca.mean` (D,) and computes (x - mean) @ components.T.
   `n_components=None` skips the projection: the "full input" reference with the same head.
3. Classify. MLP Linear(k, hidden) -> ReLU -> Dropout -> Linear(hidden, K), trained with
   `har.training.fit` (early stopping on validation users; no input augmentation, because the
   projected coordinates have no physical meaning a jitter/scale could respect).
The artifact's `weight_arrays` holds preprocessing, projection and MLP arrays, so `measure` counts the
projection matrix in `weight_bytes`.

Known limits: PCA on flattened windows is not shift-invariant (a step displaced by a few samples loads
on different components), so accuracy drops faster with k than a convolutional model would suggest;
the projection matrix for windows (k x C*T floats) can outweigh the MLP it feeds.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as st_load, save as st_save
from sklearn.decomposition import PCA
from torch import nn

from har.errors import BadDataError, BadOptionError, DataNotFoundError
from har.measure.artifact import TensorLife, chain_lifetimes
from har.paths import atomic_write_bytes, atomic_write_text
from har.training import TrainConfig, fit
from har.windows import Normalizer

INPUTS = ("windows", "features")
WEIGHTS_FILE = "pca.safetensors"
META_FILE = "pca.json"
FORMAT = "har-memopt/pca-mlp-v1"


@dataclass(frozen=True)
class PCAConfig:
    n_components: int | None = 16  # None = no projection (full-input reference)
    input: str = "windows"
    hidden: int = 64
    dropout: float = 0.2
    epochs: int = 60
    patience: int = 12
    lr: float = 3e-3
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise BadOptionError(f"unknown PCA input {self.input!r}; choose one of {', '.join(INPUTS)}")
        if self.n_components is not None and self.n_components < 1:
            raise BadOptionError(f"n_components must be >= 1 or None (got {self.n_components})")
        if self.hidden < 1:
            raise BadOptionError(f"hidden must be >= 1 (got {self.hidden})")


def _mlp(d_in: int, hidden: int, n_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))


class PCAArtifact:
    """Preprocessing + optional PCA projection + MLP; implements `InferenceArtifact`.

    `predict` takes (N, C, T) windows, or feature rows as (N, F, 1) (or (N, F))."""

    def __init__(self, config: PCAConfig, arrays: dict[str, np.ndarray], mlp: nn.Sequential,
                 input_shape: tuple[int, ...], classes: tuple[str, ...], fit_users: tuple[int, ...],
                 fit_n_samples: int):
        self.config = config
        self.arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
        self.mlp = mlp.eval()
        self.input_shape = tuple(input_shape)
        self.classes = tuple(classes)
        self.fit_users = tuple(fit_users)  # users whose rows fitted preprocessing and PCA
        self.fit_n_samples = int(fit_n_samples)
        k = config.n_components
        self.name = f"pca-{config.input}-k{k}" if k is not None else f"mlp-{config.input}-full"

    # -- inference -------------------------------------------------------------------------------
    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed, flattened rows (N, D) before the projection."""
        x = np.asarray(x, dtype=np.float32)
        if self.config.input == "features" and x.ndim == 2:
            x = x[:, :, None]
        if x.shape[1:] != self.input_shape:
            raise BadDataError(f"{self.name}: input rows of shape {x.shape[1:]}, expected {self.input_shape}")
        a = self.arrays
        if self.config.input == "windows":
            x = Normalizer(a["input_norm.mean"], a["input_norm.std"])(x)
            return x.reshape(len(x), -1)
        x = x.reshape(len(x), -1)
        x = np.where(np.isnan(x), a["impute.median"][None, :], x)
        return ((x - a["standardize.mean"]) / a["standardize.std"]).astype(np.float32)

    def project(self, x: np.ndarray) -> np.ndarray:
        z = self.preprocess(x)
        if "pca.components" in self.arrays:
            z = (z - self.arrays["pca.mean"]) @ self.arrays["pca.components"].T
        return np.ascontiguousarray(z, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.mlp(torch.from_numpy(self.project(x))).numpy()

    # -- InferenceArtifact -----------------------------------------------------------------------
    def weight_arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.arrays)
        out.update({f"mlp.{k}": v.detach().numpy() for k, v in self.mlp.state_dict().items()})
        return out

    def _dims(self) -> tuple[int, int, int, int]:
        d = int(np.prod(self.input_shape))
        lin1, lin2 = self.mlp[0], self.mlp[3]
        return d, lin1.in_features, lin1.out_features, lin2.out_features

    def macs_per_window(self) -> int:
        d, k, h, n_cls = self._dims()
        proj = d * k if "pca.components" in self.arrays else 0
        return proj + k * h + h * n_cls

    def tensor_lifetimes(self) -> list[TensorLife]:
        d, k, h, n_cls = self._dims()
        names = ["input", "preprocessed"]
        sizes = [d * 4, d * 4]
        if "pca.components" in self.arrays:
            names.append("projected")
            sizes.append(k * 4)
        names += ["hidden", "relu", "logits"]  # dropout is identity at inference: no tensor of its own
        sizes += [h * 4, h * 4, n_cls * 4]
        return chain_lifetimes(names, sizes)

    def arena_bytes(self) -> int | None:
        return None

    # -- storage ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        arrays = {k: np.ascontiguousarray(v) for k, v in self.weight_arrays().items()}
        meta = {"format": FORMAT, "config": asdict(self.config), "input_shape": list(self.input_shape),
                "classes": list(self.classes), "fit_users": list(self.fit_users),
                "fit_n_samples": self.fit_n_samples, "mlp_dims": list(self._dims()[1:])}
        atomic_write_bytes(directory / WEIGHTS_FILE, st_save(arrays, metadata={"format": FORMAT}))
        atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PCAArtifact":
        directory = Path(directory)
        wpath, mpath = directory / WEIGHTS_FILE, directory / META_FILE
        if not wpath.is_file() or not mpath.is_file():
            raise DataNotFoundError(f"no PCA artifact in {directory} (expected {WEIGHTS_FILE} and {META_FILE})")
        try:
            meta = json.loads(mpath.read_text())
            if meta.get("format") != FORMAT:
                raise KeyError(f"format {meta.get('format')!r} is not {FORMAT}")
            arrays = st_load(wpath.read_bytes())
            cfg = PCAConfig(**meta["config"])
            k, h, n_cls = meta["mlp_dims"]
            mlp = _mlp(k, h, n_cls, cfg.dropout)
            state = {k_[4:]: torch.from_numpy(arrays.pop(k_)) for k_ in list(arrays) if k_.startswith("mlp.")}
            mlp.load_state_dict(state, strict=True)
            return cls(cfg, arrays, mlp, tuple(meta["input_shape"]), tuple(meta["classes"]),
                       tuple(meta["fit_users"]), meta["fit_n_samples"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as exc:
            raise BadDataError(f"unusable PCA artifact in {directory}: {str(exc).splitlines()[0]}") from None


def _fit_preprocessing(cfg: PCAConfig, x_train: np.ndarray) -> dict[str, np.ndarray]:
    if cfg.input == "windows":
        if x_train.ndim != 3:
            raise BadDataError(f"PCA on windows needs (N, C, T) input, got shape {x_train.shape}")
        norm = Normalizer.fit(x_train)
        return {"input_norm.mean": norm.mean, "input_norm.std": norm.std}
    if x_train.ndim != 3 or x_train.shape[2] != 1:
        raise BadDataError(f"PCA on features needs (N, F) or (N, F, 1) input, got shape {x_train.shape}")
    x_train = x_train[:, :, 0]
    median = np.nanmedian(x_train, axis=0)
    if np.isnan(median).any():
        raise BadDataError("a feature column has no value at all in the training rows")
    filled = np.where(np.isnan(x_train), median[None, :], x_train)
    return {"impute.median": median, "standardize.mean": filled.mean(0, dtype=np.float64),
            "standardize.std": filled.std(0, dtype=np.float64) + 1e-6}


def apply(cfg: PCAConfig, x_train: np.ndarray, y_train: np.ndarray, users_train: np.ndarray,
          x_val: np.ndarray, y_val: np.ndarray, classes: tuple[str, ...]) -> PCAArtifact:
    """Fit preprocessing + PCA on the training rows, train the MLP (early stop on validation rows)."""
    x_train = np.asarray(x_train, dtype=np.float32)
    if cfg.input == "features" and x_train.ndim == 2:
        x_train = x_train[:, :, None]
    if len(x_train) != len(y_train) or len(x_train) != len(users_train):
        raise BadDataError(f"x_train ({len(x_train)}), y_train ({len(y_train)}) and users_train "
                           f"({len(users_train)}) differ in length")
    arrays = _fit_preprocessing(cfg, x_train)
    fitted = PCAArtifact(cfg, arrays, _mlp(1, 1, 1, 0.0), x_train.shape[1:], classes, (), 0)
    z_train = fitted.preprocess(x_train)
    if cfg.n_components is not None:
        if cfg.n_components > min(z_train.shape):
            raise BadOptionError(f"n_components={cfg.n_components} exceeds min(rows, dims) = {min(z_train.shape)}")
        # covariance eigendecomposition: D x D (480 at most) instead of an SVD of the N x D data
        pca = PCA(cfg.n_components, whiten=True, svd_solver="covariance_eigh").fit(z_train.astype(np.float64))
        # whitening folded into the components: one (k, D) matrix on the device, not two arrays
        arrays["pca.components"] = pca.components_ / np.sqrt(pca.explained_variance_)[:, None]
        arrays["pca.mean"] = pca.mean_
    probe = PCAArtifact(cfg, arrays, _mlp(1, 1, 1, 0.0), x_train.shape[1:], classes, (), 0)
    p_train, p_val = probe.project(x_train), probe.project(x_val)
    torch.manual_seed(cfg.seed)
    mlp = _mlp(p_train.shape[1], cfg.hidden, len(classes), cfg.dropout)
    tcfg = TrainConfig(epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr, batch_size=cfg.batch_size,
                       scale_aug=0.0, jitter_aug=0.0, seed=cfg.seed)
    y_tr, y_va = np.asarray(y_train, dtype=np.int64), np.asarray(y_val, dtype=np.int64)
    mlp, _ = fit(mlp, p_train, y_tr, p_val, y_va, tcfg, desc=f"pca k={cfg.n_components}", progress=False)
    return PCAArtifact(cfg, arrays, mlp, x_train.shape[1:], classes,
                       tuple(int(u) for u in np.unique(users_train)), len(x_train))
