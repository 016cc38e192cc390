"""Outputs of the hybrid run: `summary.csv`, `folds.csv` and `report.md` with its three plots.

`summary_row` turns one variant's per-fold `Footprint`s into a row: accuracy and macro-F1 are means over
the folds' test users (std over folds alongside); every byte, MAC, heap, allocation and latency column is
fold 0's measurement (`hybrid.measuring`). `VOLATILE_COLUMNS` are those that change between two runs with
the same seed (timing; see the report's notes); every other column is reproducible.
`hybrid.notes.write_report(runner)` renders the plots and the markdown from these rows.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from har.measure.footprint import BYTE_FIELDS, Footprint

SUMMARY_COLUMNS = ("variant", "family", "accuracy", "accuracy_std", "macro_f1", "weight_bytes", "arena_bytes",
                   "model_bytes", "flash_bytes", "ram_bytes", "instructions_per_inference", "activation_bytes_peak", "param_count", "macs", "peak_heap_bytes",
                   "allocations_per_inference", "allocated_bytes_per_inference", "latency_ms_p50", "latency_ms_p95",
                   "throughput_windows_per_s", "split", "n_folds", "accuracy_per_fold", "n_seeds",
                   "accuracy_seeds_folds_mean", "accuracy_ci95_low", "accuracy_ci95_high")
# measured to vary between two runs with the same seed on the same machine: timing, and memray's heap
# figures of artifacts that allocate (torch, ONNX Runtime and numpy caches; a zero-allocation artifact stays 0)
VOLATILE_COLUMNS = ("peak_heap_bytes", "allocations_per_inference", "allocated_bytes_per_inference",
                    "latency_ms_p50", "latency_ms_p95", "throughput_windows_per_s")
FOLD_COLUMNS = ("variant", "fold", "test_users", "val_users", "accuracy", "macro_f1", "n_eval_windows", *BYTE_FIELDS)
TARGET_BYTES, GOAL_BYTES = 8 * 1024, 4 * 1024


def summary_row(name: str, cfg, fps: list[Footprint], split: str) -> dict:
    f0 = fps[0]
    acc = [fp.accuracy for fp in fps]
    return {"variant": name, "family": cfg.family, "accuracy": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
            "macro_f1": float(np.mean([fp.macro_f1 for fp in fps])),
            **{c: getattr(f0, c) for c in SUMMARY_COLUMNS if hasattr(f0, c) and c not in ("accuracy", "macro_f1")},
            "split": split, "n_folds": len(fps), "accuracy_per_fold": " ".join(f"{a:.4f}" for a in acc)}


def ci95(values) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean, mean +- t(0.975, n - 1) * sd / sqrt(n).
    Seeds x folds share users and data, so the scores are not independent: the interval is a guide to
    the spread, narrower than the truth. n = 1: the interval is the point."""
    from scipy import stats
    v = np.asarray(list(values), dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - half, m + half


def with_seed_interval(row: dict, fold_rows: list[dict], seed_rows: list[dict], seeds: tuple[int, ...]) -> dict:
    """The summary row with the mean and 95 % interval over every (seed, fold) test accuracy."""
    acc = [float(r["accuracy"]) for r in fold_rows if r["variant"] == row["variant"]]
    acc += [float(r["accuracy"]) for r in seed_rows if r["variant"] == row["variant"]]
    m, lo, hi = ci95(acc)
    return {**row, "n_seeds": len(seeds), "accuracy_seeds_folds_mean": m, "accuracy_ci95_low": lo,
            "accuracy_ci95_high": hi}


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return buf.getvalue()


def summary_csv(rows: list[dict]) -> str:
    return _csv(rows, SUMMARY_COLUMNS)


def folds_csv(rows: list[dict]) -> str:
    return _csv(rows, FOLD_COLUMNS)


def dict_csv(rows: list[dict]) -> str:
    """Rows of one shape as CSV, the first row's keys as the header (nothing for no rows)."""
    return _csv(rows, tuple(rows[0])) if rows else ""


def read_summary(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- markdown --------------------------------------------------------------------------------------------

def _kib(v) -> str:
    return "-" if v in (None, "") else f"{float(v) / 1024:,.2f}"


def _num(v, fmt: str) -> str:
    return "-" if v in (None, "") else fmt.format(float(v))


def results_table(rows: list[dict]) -> list[str]:
    head = ("variant", "accuracy (mean ± std)", "macro-F1", "weights KiB", "arena KiB", "model KiB",
            "M4 flash KiB", "M4 RAM KiB", "M4 instr.", "heap KiB", "allocs / inference", "p50 ms", "p95 ms", "MACs")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append(f"| {r['variant']} | {100 * r['accuracy']:.2f} % ± {100 * r['accuracy_std']:.2f} | "
                   f"{r['macro_f1']:.4f} | {_kib(r['weight_bytes'])} | {_kib(r['arena_bytes'])} | "
                   f"{_kib(r['model_bytes'])} | {_kib(r.get('flash_bytes'))} | {_kib(r.get('ram_bytes'))} | "
                   f"{_num(r.get('instructions_per_inference'), '{:,.0f}')} | {_kib(r['peak_heap_bytes'])} | "
                   f"{_num(r['allocations_per_inference'], '{:.1f}')} | {_num(r['latency_ms_p50'], '{:.4f}')} | "
                   f"{_num(r['latency_ms_p95'], '{:.4f}')} | {int(r['macs']):,} |")
    return out


def hybrid_checks(rows: list[dict]) -> list[tuple[str, bool, str]]:
    by = {r["variant"]: r for r in rows}
    if "hybrid" not in by or "baseline" not in by:
        return []
    h, b = by["hybrid"], by["baseline"]
    d_pp = 100 * (h["accuracy"] - b["accuracy"])
    speedup = (b["latency_ms_p50"] / h["latency_ms_p50"]) if h["latency_ms_p50"] and b["latency_ms_p50"] else None
    return [
        ("model bytes (weights + arena, host estimate) <= 8 KiB (goal 4 KiB)", h["model_bytes"] <= TARGET_BYTES,
         f"{h['model_bytes']:,} B = {h['model_bytes'] / 1024:.2f} KiB "
         f"({'within' if h['model_bytes'] <= GOAL_BYTES else 'above'} the 4 KiB goal)"),
        ("accuracy >= baseline - 1.5 pp", d_pp >= -1.5, f"{100 * h['accuracy']:.2f} % vs {100 * b['accuracy']:.2f} % "
                                                        f"({d_pp:+.2f} pp)"),
        ("0 heap allocations per inference", h["allocations_per_inference"] == 0,
         f"{h['allocations_per_inference']} (memray, system allocator)"),
        ("p50 latency >= 3x better than baseline", speedup is not None and speedup >= 3,
         "not timed" if speedup is None else f"{h['latency_ms_p50'] * 1000:.1f} us vs {b['latency_ms_p50'] * 1000:.1f} us "
                                             f"= {speedup:.2f}x"),
    ]


def _choice_text(kind: str, c: dict) -> str:
    if kind == "quantize":
        calib = c.get("calibration_val_accuracy", {})
        return (f"{c['method'].upper()} (val acc " + ", ".join(f"{m} {v:.3f}" for m, v in c["val_accuracy"].items())
                + ")" + (f", calibration {c['calibration']} (val acc PTQ " +
                         ", ".join(f"{k} {v:.3f}" for k, v in calib.items()) + ")" if calib else ""))
    if kind == "pca":
        return f"k={c['k']} (val acc " + ", ".join(f"k{k} {v:.3f}" for k, v in c["val_accuracy"].items()) + ")"
    if kind == "cascade":
        return (f"threshold {c['threshold']:g}: val acc {c['val_accuracy']:.3f} vs stage 2 alone "
                f"{c['stage2_alone_val_accuracy']:.3f}, {100 * c['val_stage2_fraction']:.1f} % of windows to stage 2")
    if kind == "prune":
        return f"widths {tuple(c['widths'])}"
    return ""


def choices_lines(choices: dict) -> list[str]:
    out = []
    for variant, per_fold in choices.items():
        parts = []
        for fold, kinds in per_fold.items():
            texts = [f"{kind}: {_choice_text(kind, c)}" for kind, c in kinds.items() if _choice_text(kind, c)]
            if texts:
                parts.append(f"fold {fold}: " + "; ".join(texts))
        if parts:
            out.append(f"- **{variant}** — " + " | ".join(parts))
    return out


def byte_equality(fold_rows: list[dict], configs: dict) -> tuple[list[str], list[str], list[str]]:
    """(fixed-architecture variants with equal byte fields across folds, those that differ, the free ones)."""
    equal, differ, free = [], [], []
    for name, cfg in configs.items():
        rows = [r for r in fold_rows if r["variant"] == name]
        if len(rows) < 2:
            continue
        same = all(all(r.get(f) == rows[0].get(f) for f in BYTE_FIELDS) for r in rows)
        if not cfg.fixed_architecture:
            free.append(f"{name} ({'equal' if same else 'differ'})")
        else:
            (equal if same else differ).append(name)
    return equal, differ, free
