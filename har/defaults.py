"""Per-dataset defaults (window length, step, channel set, training epochs), as chosen by `har.sweep`.

The values live in `har/defaults.json`, written only by `python -m har.sweep --dataset D --write-defaults`
(a full, non-quick nested sweep): each entry records the majority vote of the outer folds' choices, the
validation scores behind them, the command, the git commit and the date. Nothing here is typed by hand,
and no test user's score enters it (`har.select`). A dataset without an entry falls back to the built-in
`WindowConfig()` / `TrainConfig()` values, and `for_dataset(...).selected` says so.
Limits: entries are for the `locomotion` activity set and seed 0 (`har.sweep` refuses to write others);
another activity set gets the fallback. The fallback (80 samples, `robust_tilt`, 12 epochs) is the
pre-sweep default of earlier sessions, which was picked on test-user means: it is only used where no
sweep has run, and every output that uses it says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from har.errors import BadDataError
from har.windows import WindowConfig

DEFAULTS_FILE = Path(__file__).with_name("defaults.json")


@dataclass(frozen=True)
class DatasetDefaults:
    window: WindowConfig
    epochs: int
    selected: bool  # False: no sweep has chosen these for this dataset yet (built-in fallback)
    source: str  # how they were chosen, one line


SWEPT_ACTIVITIES = "locomotion"


def load_all(path: Path = DEFAULTS_FILE) -> dict:
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadDataError(f"{path} is not readable JSON ({exc}); rerun `python -m har.sweep --dataset D "
                           "--write-defaults` or restore it from git") from None
    if not isinstance(doc, dict):
        raise BadDataError(f"{path} must hold a JSON object of dataset entries")
    return doc


def for_dataset(dataset: str, activities: str = SWEPT_ACTIVITIES, path: Path = DEFAULTS_FILE) -> DatasetDefaults:
    from har.training import TrainConfig
    entry = load_all(path).get(dataset) if activities == SWEPT_ACTIVITIES else None
    if entry is None:
        return DatasetDefaults(WindowConfig(), TrainConfig().epochs, False,
                               f"built-in fallback (pre-sweep default, picked on test users by an earlier session): "
                               f"no `python -m har.sweep --dataset {dataset} --write-defaults` for {activities}")
    try:
        w = entry["window"]
        window = WindowConfig(length=int(w["length"]), step=int(w["step"]), channels=str(w["channels"]))
        return DatasetDefaults(window, int(entry["epochs"]), True,
                               f"{entry['chosen_by']} ({entry['command']}, commit {entry['commit']}, {entry['date']})")
    except (KeyError, TypeError, ValueError) as exc:
        raise BadDataError(f"{path}: entry {dataset!r} is malformed ({exc}); rerun `python -m har.sweep "
                           f"--dataset {dataset} --write-defaults`") from None
