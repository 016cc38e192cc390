"""Per-dataset defaults (window length, step, channel set, training epochs), as chosen by `har.sweep`.

The values live in `har/defaults.json`, written only by `python -m har.sweep --dataset D --write-defaults`
(a full, non-quick nested sweep): each entry records the majority vote of the outer folds' choices, the
validation scores behind them, the command, the git commit and the date. Nothing here is typed by hand,
and no test user's score enters it (`har.select`). A dataset without an entry falls back to the built-in
`WindowConfig()` / `TrainConfig()` values, and `for_dataset(...).selected` says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from har.windows import WindowConfig

DEFAULTS_FILE = Path(__file__).with_name("defaults.json")


@dataclass(frozen=True)
class DatasetDefaults:
    window: WindowConfig
    epochs: int
    selected: bool  # False: no sweep has chosen these for this dataset yet (built-in fallback)
    source: str  # how they were chosen, one line


def load_all(path: Path = DEFAULTS_FILE) -> dict:
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def for_dataset(dataset: str, path: Path = DEFAULTS_FILE) -> DatasetDefaults:
    from har.training import TrainConfig
    entry = load_all(path).get(dataset)
    if entry is None:
        return DatasetDefaults(WindowConfig(), TrainConfig().epochs, False,
                               f"built-in fallback: no `python -m har.sweep --dataset {dataset} --write-defaults` yet")
    w = entry["window"]
    window = WindowConfig(length=int(w["length"]), step=int(w["step"]), channels=str(w["channels"]))
    return DatasetDefaults(window, int(entry["epochs"]), True,
                           f"{entry['chosen_by']} ({entry['command']}, commit {entry['commit']}, {entry['date']})")
