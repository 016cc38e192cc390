"""Dataset registry: names users type on the command line -> loaders and activity sets.

Raw-signal datasets return a `Recording` (`wisdm2019`: the phone accelerometer, 22 subjects here;
`wisdm2019-watch`: the wrist-watch accelerometer of the same study, 46 subjects here); `wisdm-features` is a feature table (see `har.datasets.arff`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from har.datasets.base import Recording
from har.errors import BadOptionError

RAW_DATASETS = ("wisdm2019", "wisdm2019-watch", "wisdm")
# WISDM-2019 recordings by device (the same study, the same activity codes): dataset name -> device
WISDM2019_DEVICES = {"wisdm2019": "phone", "wisdm2019-watch": "watch"}
DATASETS = RAW_DATASETS + ("wisdm-features",)
ACTIVITY_SETS = ("locomotion", "all")
DEFAULT_DATASET = "wisdm2019"
DEFAULT_ACTIVITIES = "locomotion"


def check_names(dataset: str, activities: str) -> None:
    if dataset not in DATASETS:
        raise BadOptionError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if activities not in ACTIVITY_SETS:
        raise BadOptionError(f"unknown activity set {activities!r}; choose one of {', '.join(ACTIVITY_SETS)}")


def load_recording(dataset: str, root: Path) -> Recording:
    """Load a raw-signal dataset from the data root (raises DataNotFoundError naming the expected path)."""
    check_names(dataset, "all")
    if dataset in WISDM2019_DEVICES:
        from har.datasets import wisdm2019
        return wisdm2019.load(root, device=WISDM2019_DEVICES[dataset])
    if dataset == "wisdm":
        from har.datasets import wisdm_v11
        return wisdm_v11.load(wisdm_v11.find_raw_file(root))
    raise BadOptionError(f"{dataset} is a feature table, not a raw-signal dataset")


def activity_labels(dataset: str, activities: str, all_classes: tuple[str, ...]) -> np.ndarray:
    """Label indices of an activity set. `locomotion` = walking, jogging, stairs, sitting, standing."""
    check_names(dataset, activities)
    if activities == "all" or dataset not in WISDM2019_DEVICES:
        return np.arange(len(all_classes))  # WISDM v1.1 has only the six locomotion activities
    return np.arange(5)  # codes A..E
