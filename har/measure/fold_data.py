"""Rebuild the evaluation data of one saved `har.train` fold: its model, windows and user split.

Steps of `load_fold(model_dir, fold, data_root)`:
1. `model_dir` is either one fold folder (holding `model.safetensors` + `model.json`) or a `har.train`
   output directory holding `fold0/ ... foldK/`; the dataset name is read from its `metrics.json`
   when present (else `wisdm2019`, or what the caller passes).
2. Load the model with `har.model_io.load`; its `extra` must name the fold's test users (and validation
   users): a fold saved from the leaky random split has none and is refused.
3. Load the recording, pick the activity set whose class names equal the saved ones, and cut windows
   with the saved `WindowConfig` (`har.windows.make_windows`), exactly as training did.
4. Split windows by user: test = the saved test users, validation = the saved validation users,
   train = everyone else. Test windows score the artifacts; only train windows may calibrate them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from har import datasets, model_io
from har.errors import BadDataError, DataNotFoundError
from har.model_io import SavedModel
from har.windows import Windows, make_windows


@dataclass(frozen=True)
class FoldData:
    fold_dir: Path
    dataset: str
    saved: SavedModel
    windows: Windows
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def test_users(self) -> tuple[int, ...]:
        return tuple(int(u) for u in self.saved.extra["test_users"])

    @property
    def val_users(self) -> tuple[int, ...]:
        return tuple(int(u) for u in self.saved.extra.get("val_users", ()))


def resolve_fold_dir(model_dir: Path, fold: int) -> Path:
    """The folder holding the fold's saved model (see the module docstring, step 1)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DataNotFoundError(f"model directory {model_dir} does not exist")
    for candidate in (model_dir, model_dir / f"fold{fold}"):
        if (candidate / model_io.WEIGHTS_FILE).is_file() and (candidate / model_io.META_FILE).is_file():
            return candidate
    raise DataNotFoundError(f"no saved model in {model_dir} or {model_dir / f'fold{fold}'} (expected "
                            f"{model_io.WEIGHTS_FILE} and {model_io.META_FILE}, as written by python -m har.train)")


def dataset_of(model_dir: Path, fold_dir: Path, default: str = datasets.DEFAULT_DATASET) -> str:
    """Dataset named in the `metrics.json` next to the folds, else `default`."""
    for folder in (Path(model_dir), Path(fold_dir).parent):
        metrics = folder / "metrics.json"
        if metrics.is_file():
            try:
                return str(json.loads(metrics.read_text())["dataset"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BadDataError(f"{metrics} has no readable 'dataset' entry") from None
    return default


def _keep_labels(dataset: str, activities: tuple[str, ...], classes: tuple[str, ...]) -> np.ndarray:
    for activity_set in datasets.ACTIVITY_SETS:
        keep = datasets.activity_labels(dataset, activity_set, activities)
        if tuple(activities[i] for i in keep) == tuple(classes):
            return keep
    raise BadDataError(f"saved classes {list(classes)} match no activity set of {dataset}")


def load_fold(model_dir: str | Path, fold: int, data_root: Path, dataset: str | None = None) -> FoldData:
    fold_dir = resolve_fold_dir(Path(model_dir), fold)
    dataset = dataset or dataset_of(Path(model_dir), fold_dir)
    if dataset not in datasets.RAW_DATASETS:
        raise BadDataError(f"measure needs a raw-signal dataset ({', '.join(datasets.RAW_DATASETS)}), not {dataset}")
    saved = model_io.load(fold_dir)
    test_users = saved.extra.get("test_users") or []
    if not test_users:
        raise BadDataError(f"{fold_dir}/{model_io.META_FILE} names no test users (a leaky random-split fold?); "
                           "measure needs a subject-split fold")
    rec = datasets.load_recording(dataset, data_root)
    win = make_windows(rec, saved.window, keep_labels=_keep_labels(dataset, rec.activities, saved.classes))
    is_test = np.isin(win.user, test_users)
    is_val = np.isin(win.user, saved.extra.get("val_users") or [])
    train_idx, val_idx, test_idx = (np.flatnonzero(m) for m in (~is_test & ~is_val, is_val & ~is_test, is_test))
    if len(test_idx) == 0 or len(train_idx) == 0:
        raise BadDataError(f"fold in {fold_dir}: {len(train_idx)} training and {len(test_idx)} test windows "
                           f"in {dataset}; is this the dataset the model was trained on?")
    if saved.model.config.in_channels != win.config.n_channels:
        raise BadDataError(f"model expects {saved.model.config.in_channels} channels, "
                           f"windows have {win.config.n_channels}")
    return FoldData(fold_dir, dataset, saved, win, train_idx, val_idx, test_idx)
