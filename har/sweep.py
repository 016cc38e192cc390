"""`python -m har.sweep`: the window length x channel-set table behind the README's default choice.

For every (length, channels) pair it runs the same subject 4-fold CNN/RF evaluation as `har.train`
(step = length / 2) and writes `sweep.json` and `sweep.md` (mean accuracy, macro-F1 and the
sitting/standing recalls, the pair that orientation handling makes or breaks).
"""
from __future__ import annotations

import json
from pathlib import Path

from har import datasets
from har.cli import parser, run_cli
from har.experiment import RunConfig, run_windows, windows_for
from har.paths import atomic_write_text, data_root
from har.training import bound_threads
from har.windows import WindowConfig


def main(argv: list[str] | None = None) -> int:
    return run_cli(_parser, _run, argv)


def _parser():
    p = parser("har.sweep", "Window length x channel set sweep (subject 4-fold).")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="reports/sweep")
    p.add_argument("--lengths", default="40,80,200")
    p.add_argument("--channels", default="raw,robust,robust_tilt")
    p.add_argument("--quick", action="store_true")
    return p


def _run(args) -> int:
    bound_threads()
    rec = datasets.load_recording("wisdm2019", data_root(args.data_dir))
    keep = datasets.activity_labels("wisdm2019", "locomotion", rec.activities)
    rows = []
    for length in [int(v) for v in args.lengths.split(",")]:
        for channels in args.channels.split(","):
            window = WindowConfig(length=length, step=length // 2, channels=channels)
            cfg = RunConfig(window=window)
            cfg = cfg.quick() if args.quick else cfg
            win, raw = windows_for(rec, window, keep)
            results, _ = run_windows(win, raw, cfg, out=None, progress=False)
            cnn, rf = results["cnn"].summary(), results["rf"].summary()
            row = {"length": length, "channels": channels, "windows": len(win),
                   "cnn_accuracy": cnn["accuracy_mean"], "cnn_macro_f1": cnn["macro_f1_mean"],
                   "cnn_accuracy_per_fold": cnn["accuracy_per_fold"],
                   "sitting_recall": cnn["recall_per_class_mean"][3],
                   "standing_recall": cnn["recall_per_class_mean"][4], "rf_accuracy": rf["accuracy_mean"]}
            rows.append(row)
            print(f"{length:4d} {channels:12s} cnn {row['cnn_accuracy']:.3f} f1 {row['cnn_macro_f1']:.3f} "
                  f"sit {row['sitting_recall']:.2f} stand {row['standing_recall']:.2f} rf {row['rf_accuracy']:.3f}",
                  flush=True)
    out = Path(args.out)
    atomic_write_text(out / "sweep.json", json.dumps(rows, indent=2) + "\n")
    lines = ["| window (samples @20 Hz) | channels | CNN acc | CNN macro-F1 | sitting recall | standing recall | RF acc |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['length']} | {r['channels']} | {r['cnn_accuracy']:.3f} | {r['cnn_macro_f1']:.3f} | "
              f"{r['sitting_recall']:.2f} | {r['standing_recall']:.2f} | {r['rf_accuracy']:.3f} |" for r in rows]
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
