"""The baseline every variant starts from: `har.train`'s cross-validated CNN, trained once and cached.

Steps of `ensure_baseline(spec, windows, folds, cache)`:
1. Key = hash of the dataset, activity set, `har.experiment.RunConfig` (windows, widths, training recipe,
   folds, split, seed), the data files' sha256 digest and the torch thread count used for training (float
   sums may be ordered differently with another count).
2. Per fold, if the stage cache holds a finished entry for (key, fold), reuse it; otherwise train exactly as
   `har.experiment.run_windows` does (`train_fold_cnn`: normaliser fitted on training users, early stopping
   on validation users, seeded init) and save it with `har.model_io` together with the fold's user split.
The RandomForest peer of `har.train` is not trained: no variant here uses it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from har import model_io
from har.experiment import RunConfig, train_fold_cnn
from har.model_io import SavedModel
from har.splits import Fold
from har.windows import Windows
from hybrid.cache import StageCache
from hybrid.codehash import baseline_digest


@dataclass(frozen=True)
class BaselineSpec:
    dataset: str
    activities: str
    run: RunConfig
    data_digest: str
    train_threads: int

    def key(self) -> str:
        doc = {"dataset": self.dataset, "activities": self.activities, "run": asdict(self.run),
               "data": self.data_digest, "threads": self.train_threads, "code": baseline_digest(),
               "format": "hybrid-baseline-v1"}
        return "baseline-" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "activities": self.activities, "run": asdict(self.run),
                "data_digest": self.data_digest, "train_threads": self.train_threads, "code_digest": baseline_digest(),
                "key": self.key()}


def fold_dir(spec: BaselineSpec, fold: int, cache: StageCache) -> Path:
    return cache.dir(f"{spec.key()}-fold{fold}")


def ensure_fold(spec: BaselineSpec, win: Windows, fold: Fold, cache: StageCache, progress: bool = False
                ) -> tuple[Path, SavedModel, bool]:
    """(saved fold directory, the loaded model, whether it was trained now)."""
    key = f"{spec.key()}-fold{fold.index}"
    with cache.claim(key):  # concurrent workers (hybrid.executor): one trains, the others load
        d = cache.dir(key)
        trained = cache.done(key) is None
        if trained:
            model, norm = train_fold_cnn(win, fold, spec.run, progress)
            model_io.save(d, model, norm, win.config, win.classes,
                          extra={"fold": fold.index, "test_users": list(fold.test_users),
                                 "val_users": list(fold.val_users), "split": spec.run.split, "seed": spec.run.seed})
            cache.finish(key, {"baseline": spec.to_dict(), "fold": fold.index})
        return d, model_io.load(d), trained
