"""The figures of the hybrid report, from `summary.csv` rows (PNG via `har.plots.save_figure`).

- `accuracy_vs_bytes`: accuracy against model bytes (log x), one point per variant coloured by
  family, the Pareto front (no other variant is both smaller and more accurate) as a step line, and the
  published anchors as hollow stars labelled with their own, different protocols.
- `memory_breakdown`: per variant, stacked horizontal bars of stored weights and working memory (the
  planned arena when the artifact has one, else the activation peak of the batch-1 graph, hatched).
- `latency`: batch-1 p50 latency bars with a whisker up to p95 (single thread), log x.
- `firmware_memory`: flash and RAM (two panels, never summed) of each int8 variant's Cortex-M4 / M0+
  firmware by ELF category, beside the published ST model zoo figures.
Anchor caveats: neither anchor is comparable to our numbers (other splits, class sets, or unstated);
they are drawn so a reader sees where published claims sit, not as a benchmark result.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from har.plots import save_figure  # noqa: E402

COLORS = {"baseline": "#444444", "peer": "#8c564b", "model": "#1f77b4", "system": "#ff7f0e", "hybrid": "#d62728"}
ANCHORS = (  # (label, model bytes, accuracy)
    ("STM32 model zoo IGN int8: 4.74 KiB, 85.6 %\n(4 classes, random split)", 4.74 * 1024, 0.856),
    ("seed 001 claim: \"0.08 MB\", 93.7 %\n(best accuracy, protocol unstated)", 0.08e6, 0.937),
)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by a smaller-or-equal, strictly more accurate one (sorted by size)."""
    front, best = [], -np.inf
    for size, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((size, acc))
            best = acc
    return front


def label_groups(names: list[str], points: list[tuple[float, float]], size_factor: float = 1.45
                 ) -> list[tuple[list[str], tuple[float, float]]]:
    """Variants drawn on (nearly) the same spot share one label: same accuracy to 0.05 pp and sizes within
    `size_factor` of the group's smallest (e.g. the baseline and its lossless system variants)."""
    groups: list[tuple[list[str], tuple[float, float]]] = []
    for name, (size, acc) in sorted(zip(names, points), key=lambda t: (round(t[1][1] * 2000), t[1][0])):
        if groups:
            g_names, (g_size, g_acc) = groups[-1]
            if round(g_acc * 2000) == round(acc * 2000) and size <= g_size * size_factor:
                g_names.append(name)
                continue
        groups.append(([name], (size, acc)))
    return groups


def accuracy_vs_bytes(rows: list[dict], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.6))
    pts = [(float(r["model_bytes"]), float(r["accuracy"])) for r in rows]
    for r, (size, acc) in zip(rows, pts):
        ax.scatter(size, 100 * acc, s=46, color=COLORS.get(r["family"], "k"), zorder=3)
    footnotes = []
    for names, (size, acc) in label_groups([r["variant"] for r in rows], pts):
        names = sorted(names, key=lambda n: n != "baseline")  # a cluster is named after the baseline if it holds it
        text = ", ".join(names)
        if len(names) > 2:  # a cluster: short label here, its members under the plot
            text = f"{names[0]} +{len(names) - 1}"
            footnotes.append(f"{text} = {', '.join(names)} (same accuracy, within 1.45x in bytes)")
        ax.annotate(text, (size, 100 * acc), textcoords="offset points", xytext=(4, 4), fontsize=7.5)
    if footnotes:
        fig.text(0.01, -0.01, "\n".join(footnotes), fontsize=7.5, va="top")
    front = pareto_front(pts)
    if front:
        xs = [p[0] for p in front]
        ys = [100 * p[1] for p in front]
        ax.step(xs + [4e5], ys + [ys[-1]], where="post", color="#2ca02c", lw=1.2, alpha=0.8,
                label="Pareto front (our variants)")
    for label, size, acc in ANCHORS:
        ax.scatter(size, 100 * acc, marker="*", s=160, facecolors="none", edgecolors="#9467bd", zorder=4)
        ax.annotate(label, (size, 100 * acc), textcoords="offset points", xytext=(7, 2), fontsize=7,
                    color="#9467bd", va="bottom")
    for fam, c in COLORS.items():
        if any(r["family"] == fam for r in rows):
            ax.scatter([], [], color=c, label=fam)
    ax.scatter([], [], marker="*", s=120, facecolors="none", edgecolors="#9467bd",
               label="published anchors (other protocols)")
    ax.set_xscale("log")
    ax.set_xlabel("model bytes (weights + arena or activation peak), log scale")
    ax.set_ylabel("accuracy on held-out test users (%)")
    accs = [100 * a for _, a in pts] + [100 * a for _, _, a in ANCHORS]
    ax.set_ylim(min(accs) - 1.0, max(accs) + 1.5)
    ax.set_xlim(3 * 1024, 4e5)
    for kib in (4, 8):
        ax.axvline(kib * 1024, color="grey", ls=":", lw=1)
        ax.text(kib * 1024, max(accs) + 1.4, f" {kib} KiB", fontsize=7, color="grey", va="top")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def memory_breakdown(rows: list[dict], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.4))
    names = [r["variant"] for r in rows]
    y = np.arange(len(rows))[::-1]
    weights = np.array([float(r["weight_bytes"]) for r in rows]) / 1024
    planned = [r["arena_bytes"] not in ("", None) for r in rows]
    work = np.array([float(r["arena_bytes"]) if p else float(r["activation_bytes_peak"])
                     for r, p in zip(rows, planned)]) / 1024
    ax.barh(y, weights, color="#1f77b4")
    for yi, w, a, p in zip(y, weights, work, planned):
        ax.barh(yi, a, left=w, color="#ff7f0e" if p else "#fdd0a2", hatch=None if p else "//",
                edgecolor="#b35806" if not p else None)
        ax.text(w + a, yi, f" {w + a:,.1f}", va="center", fontsize=7)
    handles = [Patch(color="#1f77b4", label="stored weights"),
               Patch(color="#ff7f0e", label="planned arena (static pool)"),
               Patch(facecolor="#fdd0a2", hatch="//", edgecolor="#b35806", label="activation peak (no plan)")]
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("KiB (1 KiB = 1024 bytes)")
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def latency(rows: list[dict], title: str, path: Path) -> Path:
    timed = [r for r in rows if r.get("latency_ms_p50") not in ("", None)]
    fig, ax = plt.subplots(figsize=(9, 0.42 * max(len(timed), 1) + 1.4))
    y = np.arange(len(timed))[::-1]
    p50 = np.array([float(r["latency_ms_p50"]) for r in timed])
    p95 = np.array([float(r["latency_ms_p95"]) for r in timed])
    colors = [COLORS.get(r["family"], "k") for r in timed]
    ax.barh(y, p50, color=colors, alpha=0.85)
    ax.errorbar(p50, y, xerr=[np.zeros_like(p50), np.maximum(p95 - p50, 0)], fmt="none", ecolor="k", capsize=3,
                lw=1)
    for yi, a, b in zip(y, p50, p95):
        ax.text(b * 1.08, yi, f"{a * 1000:,.0f} us (p95 {b * 1000:,.0f})", va="center", fontsize=7)
    ax.set_yticks(y, [r["variant"] for r in timed], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency per window, ms (bar p50, whisker to p95), single thread, log scale")
    ax.set_xlim(min(0.01, 0.5 * float(p50.min())) if len(p50) else 0.01, ax.get_xlim()[1] * 3)
    ax.grid(alpha=0.3, axis="x", which="both")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


FIRMWARE_ANCHOR = ("ST model zoo IGN wl24 int8, STM32U5\n(published; 4 classes, random split)",
                   {"ST: weights": 3.11 * 1024, "ST: runtime code": 33.4 * 1024},
                   {"ST: activations": 1.63 * 1024, "ST: runtime RAM": 2.75 * 1024})


def firmware_memory(rows: list[tuple[str, dict, dict]], title: str, path: Path) -> Path:
    """Flash (left) and RAM (right) of each (label, flash categories, RAM categories) firmware, stacked by
    category (bytes from the linked ELF; RAM includes the painted stack), linear x, with the published ST
    model zoo figures as a reference row. Flash and RAM stay in separate panels: they are not summed."""
    rows = [*rows, FIRMWARE_ANCHOR]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.55 * len(rows) + 2.6), sharey=True)
    cmap = plt.get_cmap("tab20")
    for ax, which, name in ((axes[0], 1, "flash"), (axes[1], 2, "RAM")):
        cats = list(dict.fromkeys(c for r in rows for c, v in r[which].items() if v))
        colors = {c: cmap(i % 20) for i, c in enumerate(cats)}
        for y, r in enumerate(rows):
            left = 0.0
            for c in cats:
                v = r[which].get(c, 0)
                if v:
                    ax.barh(y, v, left=left, color=colors[c], edgecolor="white", hatch="//" if r is rows[-1] else None)
                    left += v
            ax.text(left, y, f" {left:,.0f} B", va="center", fontsize=8)
        ax.set_xlim(0, 1.25 * max(sum(r[which].values()) for r in rows))
        ax.set_xlabel(f"{name} bytes")
        ax.set_title(name)
        ax.legend(handles=[Patch(color=colors[c], label=c) for c in cats], fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.18), ncol=4, frameon=False)
    axes[0].set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    return save_figure(fig, path)
