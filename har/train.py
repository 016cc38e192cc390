"""`python -m har.train`: subject-wise cross-validated CNN and RandomForest peer; writes metrics.json + PNG.

Example: `python -m har.train --dataset wisdm2019 --activities locomotion --out reports/train --quick`.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from har import datasets, defaults
from har.cli import command_line, git_commit, parser, run_cli, versions
from har.experiment import RunConfig, run_features, run_windows, windows_for
from har.paths import atomic_write_text, data_root
from har.plots import confusion_png
from har.training import TrainConfig, bound_threads
from har.windows import CHANNEL_SETS, WindowConfig


def build_parser():
    p = parser("har.train", "Train and evaluate the compact CNN and a RandomForest peer.")
    p.add_argument("--dataset", default=datasets.DEFAULT_DATASET, help=f"one of {', '.join(datasets.DATASETS)}")
    p.add_argument("--activities", default=datasets.DEFAULT_ACTIVITIES, help="locomotion | all")
    p.add_argument("--data-dir", default=None, help="data root (else $HAR_DATA_DIR, else ./data)")
    p.add_argument("--out", default="reports/train", help="output directory")
    p.add_argument("--quick", action="store_true", help="few epochs and trees: a smoke run under a minute")
    p.add_argument("--split", default="subject", choices=["subject", "random"],
                   help="subject-independent k-fold (default) or a LEAKY random-window split")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=None,
                   help="window length in samples (default: the dataset's, chosen by `har.sweep`)")
    p.add_argument("--step", type=int, default=None, help="window step in samples (default: half the window)")
    p.add_argument("--channels", default=None, choices=sorted(CHANNEL_SETS),
                   help="channel set (default: the dataset's, chosen by `har.sweep`)")
    p.add_argument("--epochs", type=int, default=None, help="max epochs (default: the dataset's, chosen by `har.sweep`)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser, _run, argv)


def _run(args) -> int:
    datasets.check_names(args.dataset, args.activities)
    t0 = time.perf_counter()
    bound_threads()
    root = data_root(args.data_dir)
    chosen = defaults.for_dataset(args.dataset, args.activities)
    length = args.window or chosen.window.length
    step = args.step or (chosen.window.step if args.window is None else max(1, length // 2))
    window = WindowConfig(length=length, step=step, channels=args.channels or chosen.window.channels)
    cfg = RunConfig(window=window, train=replace(TrainConfig(), epochs=chosen.epochs), folds=args.folds,
                    split=args.split, seed=args.seed)
    cfg = cfg.quick() if args.quick else cfg
    if args.epochs:
        cfg = replace(cfg, train=replace(cfg.train, epochs=args.epochs))
    out = Path(args.out)
    progress = not args.no_progress
    split_label = "random (leaky)" if args.split == "random" else "subject"
    if args.dataset == "wisdm-features":
        from har.datasets import arff
        table = arff.load(arff.find_features_file(root))
        results, folds = run_features(table, cfg, progress)
        classes, rejects, n_items = table.classes, {}, len(table.label)
    else:
        rec = datasets.load_recording(args.dataset, root)
        keep = datasets.activity_labels(args.dataset, args.activities, rec.activities)
        win, raw = windows_for(rec, window, keep)
        results, folds = run_windows(win, raw, cfg, out, progress)
        classes, rejects, n_items = win.classes, rec.rejects, len(win)
    metrics = {
        "dataset": args.dataset, "activities": args.activities, "classes": list(classes),
        "split": args.split, "leaky": args.split == "random", "folds": args.folds,
        "fold_test_users": [list(f.test_users) for f in folds], "window": window.to_dict(),
        "n_windows": n_items, "rejected_records": rejects, "seed": args.seed, "quick": args.quick,
        "train": cfg.train.to_dict(), "versions": versions(), "val_users": cfg.val_users,
        "defaults_source": chosen.source,
        "models": {name: r.summary() for name, r in results.items()},
    }
    main_model = "cnn" if "cnn" in results else "mlp"
    conf = np.array(metrics["models"][main_model]["confusion"])
    title = f"{main_model.upper()} {args.dataset}/{args.activities}, split: {split_label}, {args.folds} folds"
    confusion_png(conf, classes, title, out / "confusion.png")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "results.md", results_md(metrics, command_line("har.train", build_parser, args)))
    line = "  ".join(f"{n}: acc {m['accuracy_mean']:.3f} f1 {m['macro_f1_mean']:.3f}"
                     for n, m in metrics["models"].items())
    print(f"{args.dataset}/{args.activities} split={split_label} windows={n_items}  {line}  "
          f"-> {out / 'metrics.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0


_ROW_NAMES = {"cnn": "CompactCNN1d", "mlp": "MLP on the ARFF features",
              "rf": "RandomForest on statistics of the CNN's channels", "rf-raw": "RandomForest on raw-axis statistics"}


def results_md(m: dict, command: str) -> str:
    """The README's table for one dataset: accuracy per model, mean and per fold, stamped."""
    w = m["window"]
    lines = [f"`{command}` at commit {git_commit(short=True)}, {time.strftime('%Y-%m-%d')}: {m['dataset']} / "
             f"{m['activities']}, split {m['split']}{' (LEAKY)' if m['leaky'] else ''}, {m['folds']} folds, "
             f"{m['n_windows']:,} windows of {w['length']} samples (step {w['step']}, `{w['channels']}`), "
             f"{m['train']['epochs']} max epochs; defaults: {m['defaults_source']}.", "",
             "| model | mean accuracy | ± std | macro-F1 | per fold | parameters |", "|---|---:|---:|---:|---|---:|"]
    for name, r in m["models"].items():
        lines.append(f"| {_ROW_NAMES.get(name, name)} | {r['accuracy_mean']:.4f} | {r['accuracy_std']:.4f} | "
                     f"{r['macro_f1_mean']:.4f} | {' / '.join(f'{a:.3f}' for a in r['accuracy_per_fold'])} | "
                     f"{r.get('param_count', '–')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
