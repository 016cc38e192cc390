"""Figures a person would rather look at than read. Headless (Agg); PNGs written atomically."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from har.paths import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    # fixed metadata keeps PNG bytes identical across runs
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def confusion_png(confusion: np.ndarray, classes: tuple[str, ...], title: str, path: str | Path) -> Path:
    """Row-normalised confusion matrix (recall per true class) with the raw counts annotated."""
    cm = np.asarray(confusion, dtype=float)
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    frac = cm / rows
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.8 + 0.7 * len(classes)))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{frac[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
