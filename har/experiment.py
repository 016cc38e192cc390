"""Cross-validated CNN vs RandomForest on one dataset: the work behind `python -m har.train`.

Steps of `run_windows`: window the recording, build folds (subject k-fold unless the leaky random split
is asked for), then per fold: fit the normaliser on training windows, train the CNN with early stopping on
the validation users, train the RandomForest peer on window statistics of the training and validation
users (it has no early stopping, so validation users are just more training data for it), score both on
the test users, and save the fold's CNN. The forest sees statistics of the SAME channels as the CNN
(`rf`); a second forest on raw device-axis statistics (`rf-raw`) shows what the channels buy it.
`RunConfig.for_dataset` takes the window, channel set and epoch budget that `har.sweep` chose for a
dataset (`har.defaults`); `val_users` validation users per fold early-stop the CNN and make every
validation-user choice downstream (4, not 2: with 2 users a choice rests on two people's habits).
`run_features` does the same for the ARFF feature table with a
small MLP instead of the CNN.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from torch import nn
from tqdm.auto import tqdm

from har import model_io
from har.evaluate import Scores, score
from har.features import window_stats
from har.model import CNNConfig, CompactCNN1d, param_count, predict_logits
from har.splits import Fold, random_kfold, subject_kfold
from har.training import TrainConfig, fit, seed_everything
from har.windows import Normalizer, WindowConfig, Windows, make_windows, to_channels


@dataclass(frozen=True)
class RunConfig:
    window: WindowConfig = WindowConfig()
    model_widths: tuple[int, ...] = (32, 48, 64)
    train: TrainConfig = TrainConfig()
    folds: int = 4
    split: str = "subject"
    seed: int = 0
    rf_trees: int = 300
    val_users: int = 4

    @classmethod
    def for_dataset(cls, dataset: str, activities: str = "locomotion", **overrides) -> "RunConfig":
        """The defaults `har.sweep --write-defaults` chose for `dataset` (window, channels, epochs)."""
        from har.defaults import for_dataset
        d = for_dataset(dataset, activities)
        cfg = cls(window=d.window, train=replace(TrainConfig(), epochs=d.epochs))
        return replace(cfg, **overrides)

    def quick(self) -> "RunConfig":
        return replace(self, train=replace(self.train, epochs=6, patience=3), rf_trees=60)


@dataclass
class ModelResult:
    name: str
    folds: list[Scores] = field(default_factory=list)
    param_count: int | None = None

    def summary(self) -> dict:
        acc = [s.accuracy for s in self.folds]
        f1 = [s.macro_f1 for s in self.folds]
        out = {"accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
               "macro_f1_mean": float(np.mean(f1)), "accuracy_per_fold": acc, "macro_f1_per_fold": f1,
               "recall_per_class_mean": np.mean([s.recall_per_class for s in self.folds], axis=0).tolist(),
               "confusion": np.sum([np.array(s.confusion) for s in self.folds], axis=0).tolist()}
        if self.param_count is not None:
            out["param_count"] = self.param_count
        return out


def make_folds(users: np.ndarray, cfg: RunConfig) -> list[Fold]:
    if cfg.split == "random":
        return random_kfold(len(users), cfg.folds, seed=cfg.seed)
    return subject_kfold(users, cfg.folds, n_val_users=cfg.val_users, seed=cfg.seed)


def train_fold_cnn(win: Windows, fold: Fold, cfg: RunConfig, progress: bool = True
                   ) -> tuple[CompactCNN1d, Normalizer]:
    norm = Normalizer.fit(win.x[fold.train_idx])
    model = CompactCNN1d(CNNConfig(in_channels=win.config.n_channels, n_classes=len(win.classes),
                                   widths=cfg.model_widths), seed=cfg.seed + fold.index)
    train_cfg = replace(cfg.train, seed=cfg.seed + fold.index, axis_flips=win.config.channels == "raw")
    model, _ = fit(model, norm(win.x[fold.train_idx]), win.y[fold.train_idx], norm(win.x[fold.val_idx]),
                   win.y[fold.val_idx], train_cfg, desc=f"cnn fold {fold.index}", progress=progress)
    return model, norm


def run_windows(win: Windows, raw_xyz: np.ndarray, cfg: RunConfig, out: Path | None,
                progress: bool = True) -> tuple[dict[str, ModelResult], list[Fold]]:
    """CNN and RFs over the folds; `raw_xyz` (N, 3, T) are the same windows on device axes (`rf-raw`)."""
    folds = make_folds(win.user, cfg)
    cnn = ModelResult("cnn")
    forests = {"rf": (ModelResult("rf"), window_stats(win.x, win.config.channels))}
    if win.config.channels != "raw":
        forests["rf-raw"] = (ModelResult("rf-raw"), window_stats(raw_xyz, "raw"))
    k = len(win.classes)
    for fold in tqdm(folds, desc="folds", disable=not progress):
        model, norm = train_fold_cnn(win, fold, cfg, progress)
        pred = predict_logits(model, norm(win.x[fold.test_idx])).argmax(1).numpy()
        cnn.folds.append(score(win.y[fold.test_idx], pred, k))
        cnn.param_count = param_count(model)
        if out is not None:
            model_io.save(out / f"fold{fold.index}", model, norm, win.config, win.classes,
                          extra={"fold": fold.index, "test_users": list(fold.test_users),
                                 "val_users": list(fold.val_users), "split": cfg.split, "seed": cfg.seed})
        fit_idx = np.concatenate([fold.train_idx, fold.val_idx])
        for result, stats in forests.values():
            pred = forest_predict(stats[fit_idx], win.y[fit_idx], stats[fold.test_idx], cfg)
            result.folds.append(score(win.y[fold.test_idx], pred, k))
    return {"cnn": cnn, **{name: r for name, (r, _) in forests.items()}}, folds


def forest_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, cfg: RunConfig) -> np.ndarray:
    """Fit the RF peer on two threads, predict on one.

    Fitting in parallel is reproducible (every tree's seed is drawn up front), but sklearn's threaded
    `predict_proba` adds the trees' votes into one array in whatever order the threads finish; float
    addition is not associative, so a window whose two best classes tie can flip between runs.
    """
    forest = RandomForestClassifier(cfg.rf_trees, n_jobs=2, random_state=cfg.seed, min_samples_leaf=2)
    forest.fit(x_fit, y_fit)
    return forest.set_params(n_jobs=1).predict(x_test)


def windows_for(rec, window: WindowConfig, keep: np.ndarray) -> tuple[Windows, np.ndarray]:
    """Windows in the configured channels plus the same windows on raw device axes."""
    win = make_windows(rec, window, keep_labels=keep)
    gather = win.start[:, None] + np.arange(window.length)[None, :]
    return win, to_channels(rec.xyz[gather], "raw")


def run_features(table, cfg: RunConfig, progress: bool = True) -> tuple[dict[str, ModelResult], list[Fold]]:
    """MLP and RF on the WISDM v1.1 transformed features (NaN imputed with training medians)."""
    folds = make_folds(table.user, cfg)
    mlp, rf = ModelResult("mlp"), ModelResult("rf")
    k = len(table.classes)
    for fold in tqdm(folds, desc="folds", disable=not progress):
        imp = SimpleImputer(strategy="median").fit(table.features[fold.train_idx])
        x = imp.transform(table.features).astype(np.float32)
        mu, sd = x[fold.train_idx].mean(0), x[fold.train_idx].std(0) + 1e-6
        x = (x - mu) / sd
        seed_everything(cfg.seed + fold.index)
        net = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, k))
        tcfg = replace(cfg.train, seed=cfg.seed + fold.index, scale_aug=0.0, jitter_aug=0.0, axis_flips=False)
        net, _ = fit(net, x[fold.train_idx], table.label[fold.train_idx].astype(np.int64), x[fold.val_idx],
                     table.label[fold.val_idx].astype(np.int64), tcfg, desc=f"mlp fold {fold.index}",
                     progress=progress)
        pred = predict_logits(net, x[fold.test_idx]).argmax(1).numpy()
        mlp.folds.append(score(table.label[fold.test_idx], pred, k))
        mlp.param_count = param_count(net)
        fit_idx = np.concatenate([fold.train_idx, fold.val_idx])
        pred = forest_predict(x[fit_idx], table.label[fit_idx], x[fold.test_idx], cfg)
        rf.folds.append(score(table.label[fold.test_idx], pred, k))
    return {"mlp": mlp, "rf": rf}, folds
