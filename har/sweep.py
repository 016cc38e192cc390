"""`python -m har.sweep`: choose a dataset's window length, channel set and epoch budget without test users.

Runs the nested selection of `har.select` on every outer subject fold (the same folds as `har.train`)
and writes `sweep.json` (every inner score, choice and vote) and `sweep.md` (the tables the README
quotes, with commit and date). Test accuracies appear only in columns labelled "not used for selection"
and in the nested estimate (each fold's own choice, scored once on its test users).
`--write-defaults` stores the vote in `har/defaults.json`, where `har.train` and `hybrid.run` read it
(refused for `--quick` runs and partial grids: shipped defaults come from the full procedure).
Example: `python -m har.sweep --dataset wisdm2019-watch --out reports/sweep-watch --write-defaults`.
Limits: one training per candidate and inner fold (no repeated seeds), so a score's noise is what the
inner folds show; about 15 min (phone) and 30 min (watch) on one core for the full grid.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from har import datasets
from har.cli import command_line, git_commit, parser, run_cli
from har.defaults import DEFAULTS_FILE, SWEPT_ACTIVITIES, load_all
from har.errors import BadOptionError
from har.experiment import RunConfig, make_folds
from har.paths import atomic_write_text, data_root
from har.select import SelectionConfig, candidate_name, nested_forests, select, stage1_epochs, vote
from har.training import TrainConfig, bound_threads
from har.windows import WindowConfig, make_windows


def main(argv: list[str] | None = None) -> int:
    return run_cli(_parser, _run, argv)


def _parser():
    p = parser("har.sweep", "Nested subject-wise choice of window length x channel set x epochs.")
    p.add_argument("--dataset", default=datasets.DEFAULT_DATASET, help="wisdm2019 (phone) | wisdm2019-watch | wisdm")
    p.add_argument("--activities", default=datasets.DEFAULT_ACTIVITIES)
    p.add_argument("--data-dir", default=None, help="data root (else $HAR_DATA_DIR, else ./data)")
    p.add_argument("--out", default="reports/sweep")
    p.add_argument("--lengths", default="40,80,200")
    p.add_argument("--channels", default="raw,robust,robust_tilt")
    p.add_argument("--epochs", default="6,12,20", help="epoch budgets of stage 2")
    p.add_argument("--inner-folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: epochs 3,6 and fold 0 only")
    p.add_argument("--no-test-scores", action="store_true",
                   help="skip the 'not used for selection' test column (fewer trainings)")
    p.add_argument("--no-forests", action="store_true", help="skip the nested RandomForest peers")
    p.add_argument("--write-defaults", action="store_true", help=f"store the vote in {DEFAULTS_FILE}")
    p.add_argument("--no-progress", action="store_true")
    return p


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadOptionError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise BadOptionError(f"{flag} needs at least one value, all >= 1 (got {text!r})")
    return values


def _config(args) -> tuple[SelectionConfig, RunConfig]:
    channels = tuple(c.strip() for c in args.channels.split(",") if c.strip())
    if not channels:
        raise BadOptionError(f"--channels needs at least one channel set, got {args.channels!r}")
    for c in channels:
        WindowConfig(channels=c)  # BadOptionError naming the choices
    lengths = _ints(args.lengths, "--lengths")
    for n in lengths:
        if n < 2:
            raise BadOptionError(f"--lengths: every window length must be >= 2 samples, got {n}")
    epochs = (3, 6) if args.quick else _ints(args.epochs, "--epochs")
    if args.inner_folds < 2:
        raise BadOptionError(f"--inner-folds must be >= 2, got {args.inner_folds}")
    cfg = SelectionConfig(lengths=lengths, channel_sets=channels, epochs=epochs,
                          inner_folds=args.inner_folds, test_scores=not args.no_test_scores)
    base = RunConfig(seed=args.seed)
    if args.quick:
        base = replace(base, train=replace(TrainConfig(), patience=3))
    return cfg, base


def _check_grid(windows_of, cfg: SelectionConfig, folds, users: np.ndarray) -> None:
    """Every window set must give every user windows, and every fold enough users for the inner split."""
    for n in cfg.lengths:
        for c in cfg.channel_sets:
            missing = np.setdiff1d(users, np.unique(windows_of(n, c).user))
            if len(missing):
                raise BadOptionError(f"--lengths {n}: users {', '.join(map(str, missing[:5]))} have no window "
                                     f"that long; choose shorter lengths")
    dev = min(len(users) - len(f.test_users) for f in folds)
    if cfg.inner_folds > dev:
        raise BadOptionError(f"--inner-folds {cfg.inner_folds} exceeds the {dev} development users of a fold")


def _run(args) -> int:
    datasets.check_names(args.dataset, args.activities)
    if args.dataset not in datasets.RAW_DATASETS:
        raise BadOptionError(f"har.sweep needs a raw-signal dataset ({', '.join(datasets.RAW_DATASETS)})")
    cfg, base = _config(args)
    if args.write_defaults and (args.quick or cfg != SelectionConfig(test_scores=cfg.test_scores)
                                or args.activities != SWEPT_ACTIVITIES or args.seed != 0):
        raise BadOptionError(f"--write-defaults needs the full default grid, activities {SWEPT_ACTIVITIES}, "
                             "seed 0 and no --quick")
    t0 = time.perf_counter()
    command = command_line("har.sweep", _parser, args)
    stamp = {"commit": git_commit(short=True), "date": time.strftime("%Y-%m-%d")}  # the code that runs, not HEAD later
    bound_threads(1)  # small CNNs: one thread is as fast and leaves the other core free
    rec = datasets.load_recording(args.dataset, data_root(args.data_dir))
    keep = datasets.activity_labels(args.dataset, args.activities, rec.activities)

    @lru_cache(maxsize=None)
    def windows_of(length: int, channels: str):
        return make_windows(rec, WindowConfig(length=length, step=max(1, length // 2), channels=channels), keep)

    reference = windows_of(WindowConfig.length, WindowConfig.channels)  # the folds: users only, any window set
    folds = make_folds(reference.user, base)
    folds = folds[:1] if args.quick else folds
    _check_grid(windows_of, cfg, folds, np.unique(reference.user))
    selections = select(windows_of, folds, np.unique(reference.user), cfg, base, progress=not args.no_progress)
    if not args.no_forests:
        nested_forests(windows_of, selections, base)
    decided = vote(selections)
    doc = {"dataset": args.dataset, "activities": args.activities, "selection": cfg.to_dict(),
           "command": command, "stage1_epochs": stage1_epochs(cfg), "base_recipe": base.train.to_dict(),
           "outer_folds": len(folds), "val_users": base.val_users,
           "quick": args.quick, "folds": [s.to_dict() for s in selections], "vote": decided,
           "nested_test_accuracy_mean": float(np.mean([s.test_accuracy for s in selections])),
           "nested_test_accuracy_per_fold": [s.test_accuracy for s in selections],
           "nested_forest_accuracy_mean": {k: float(np.mean([s.forest_test_accuracy[k] for s in selections]))
                                           for k in (selections[0].forest_test_accuracy if selections else {})},
           "wall_s": round(time.perf_counter() - t0, 1), **stamp}
    out = Path(args.out)
    atomic_write_text(out / "sweep.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "sweep.md", render(doc))
    print(render(doc))
    for s in selections:
        print(f"fold {s.index}: chose {candidate_name(**s.choice)} (inner validation "
              f"{_row(s.stage2, s.choice)['mean']:.3f}); test accuracy of the choice {s.test_accuracy:.3f}")
    print(f"{args.dataset}: default {decided['window']['length']}/{decided['window']['channels']}/"
          f"{decided['epochs']}ep ({decided['chosen_by']}); nested test accuracy "
          f"{doc['nested_test_accuracy_mean']:.4f} -> {out / 'sweep.md'} ({doc['wall_s']:.0f} s)")
    if args.write_defaults:
        entry = {**decided, "nested_test_accuracy": doc["nested_test_accuracy_mean"],
                 "command": command, **stamp}
        atomic_write_text(DEFAULTS_FILE, json.dumps({**load_all(), args.dataset: entry}, indent=2,
                                                    sort_keys=True) + "\n")
        print(f"defaults for {args.dataset} written to {DEFAULTS_FILE}")
    return 0


def _row(rows: list[dict], choice: dict) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in choice.items()))


def render(doc: dict) -> str:
    """sweep.md: stage-1 and stage-2 validation scores per outer fold, choices, nested estimate."""
    folds = doc["folds"]
    head = " | ".join(f"fold {f['fold']} val (± inner std)" for f in folds)
    lines = [f"# Nested selection: {doc['dataset']} / {doc['activities']}", "",
             f"`{doc['command']}` at commit {doc['commit']}, {doc['date']}"
             + (" (QUICK: not for defaults)" if doc["quick"] else "") + ".",
             f"{doc['outer_folds']} outer subject folds; inside each, {doc['selection']['inner_folds']}-fold by user "
             "over its training + validation users (every development user held out once). Scores are mean "
             "window accuracy on the inner held-out users; test users are scored only in the last column.", "",
             "## Stage 1: window length x channel set "
             f"({doc['stage1_epochs']} epochs: the middle of the stage-2 grid)", "",
             f"| window | channels | {head} | mean val | test acc (not used for selection), mean |",
             "|---:|---|" + "---:|" * (len(folds) + 2)]
    for i, r in enumerate(folds[0]["stage1"]):
        cells = [f"{f['stage1'][i]['mean']:.3f} ± {f['stage1'][i]['std']:.3f}" for f in folds]
        mean = np.mean([f["stage1"][i]["mean"] for f in folds])
        name = candidate_name(r["length"], r["channels"], r["epochs"])
        test = [f["test_accuracy_not_used_for_selection"].get(name) for f in folds]
        test_cell = f"{np.mean(test):.3f}" if all(t is not None for t in test) else "–"
        lines.append(f"| {r['length']} | {r['channels']} | {' | '.join(cells)} | {mean:.3f} | {test_cell} |")
    lines += ["", "## Stage 2: epoch budget at each fold's stage-1 winner", "",
              "| fold | window | " + " | ".join(f"{r['epochs']} ep val" for r in folds[0]["stage2"])
              + " | chosen | test acc of choice | test acc of other budgets (not used for selection) |",
              "|---:|---|" + "---:|" * len(folds[0]["stage2"]) + "---|---:|---|"]
    for f in folds:
        c = f["choice"]
        others = [f"{r['epochs']} ep {f['test_accuracy_not_used_for_selection'][n]:.3f}" for r in f["stage2"]
                  if (n := candidate_name(r["length"], r["channels"], r["epochs"])) in
                  f["test_accuracy_not_used_for_selection"] and r["epochs"] != c["epochs"]]
        lines.append(f"| {f['fold']} | {c['length']}/{c['channels']} | "
                     + " | ".join(f"{r['mean']:.3f} ± {r['std']:.3f}" for r in f["stage2"])
                     + f" | {candidate_name(**c)} | {f['test_accuracy_of_choice']:.4f} | {', '.join(others) or '–'} |")
    v = doc["vote"]
    lines += ["", f"**Default**: window {v['window']['length']} (step {v['window']['step']}), "
              f"`{v['window']['channels']}`, {v['epochs']} epochs — {v['chosen_by']}.",
              f"**Nested estimate** (each fold's own choice, trained on its training users, scored once on its "
              f"test users): mean accuracy {doc['nested_test_accuracy_mean']:.4f} (per fold "
              + " / ".join(f"{a:.3f}" for a in doc["nested_test_accuracy_per_fold"]) + ").",
              _forest_line(doc),
              f"Noise: the median inner-fold std of a stage-1 score is "
              f"{np.median([r['std'] for f in folds for r in f['stage1']]):.3f}; a choice whose margin over the "
              "runner-up is below that is a coin toss between the two.", ""]
    return "\n".join(lines)


def _forest_line(doc: dict) -> str:
    rf = doc.get("nested_forest_accuracy_mean") or {}
    if not rf:
        return "RandomForest peers: not run (`--no-forests`)."
    per = {k: " / ".join(f"{f['forest_test_accuracy'][k]:.3f}" for f in doc["folds"]) for k in rf}
    return ("**RandomForest peers in the same procedure** (each fold's chosen window, fit on its training + "
            "validation users, scored once on its test users): "
            + "; ".join(f"`{k}` {v:.4f} ({per[k]})" for k, v in rf.items())
            + f"; CNN minus the better forest: {100 * (doc['nested_test_accuracy_mean'] - max(rf.values())):+.2f} pp.")


if __name__ == "__main__":
    raise SystemExit(main())
