"""Classification metrics of one fold: accuracy, macro-F1, per-class recall and the confusion matrix."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    recall_per_class: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows = true class, columns = predicted

    def to_dict(self) -> dict:
        return asdict(self)


def score(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> Scores:
    labels = np.arange(n_classes)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(n_classes), where=support > 0)
    return Scores(accuracy=float((y_true == y_pred).mean()),
                  macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
                  recall_per_class=tuple(round(float(r), 6) for r in recall),
                  confusion=tuple(tuple(int(v) for v in row) for row in cm))
