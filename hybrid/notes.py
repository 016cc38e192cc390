"""The prose of `report.md`: what was run on which data and split, the protocol, and what each column means.

`render(runner, rows, figures)` returns the markdown; every number in it comes from the summary rows,
the per-fold rows, the choices recorded while building, or the run's data/baseline facts.
"""
from __future__ import annotations

import time
from pathlib import Path

from har.measure.footprint import BYTE_FIELDS
from har.paths import atomic_write_text
from hybrid.report import (VOLATILE_COLUMNS, byte_equality, choices_lines, hybrid_checks, results_table)

GLOSSARY = {
    "model bytes": "host-side estimate of what the model itself needs, flash and RAM together: stored weight "
                   "bytes (every array the artifact needs: weights, biases, BN statistics, normaliser, int8 "
                   "scales, multipliers and zero points) + the planned arena for artifacts with a static memory "
                   "plan, or + the activation peak (most bytes of intermediate tensors live at once, batch 1) for "
                   "those without one. No code, no stack: for exportable int8 variants the firmware section gives "
                   "the real figures (flash and RAM from the linked Cortex-M ELF).",
    "flash / RAM": "of the firmware library in a linked Cortex-M ELF (arm-none-eabi-gcc 12, the app firmware: "
                   "init + push samples), per section category (firmware.elfsize); RAM includes the painted "
                   "stack high-water mark of the library calls. Never summed into one number.",
    "instructions": "executed Thumb instructions of one har_classify call (raw int16 samples -> class), counted "
                    "by unicorn block hooks on the same ELF (equal to QEMU's -d exec,nochain -singlestep counts), "
                    "mean over the counted windows; counted twice, the lists must be equal.",
    "arena": "the single preallocated activation buffer of a static-pool artifact, as planned "
             "(`system_opts.planner`, 16-byte aligned); empty for artifacts that allocate per op.",
    "heap": "memray's heap high watermark while streaming 1-window predictions (fold 0), after one untracked "
            "warm-up prediction; memory allocated before (loaded weights, one-off runtime set-up such as ONNX "
            "Runtime's arena or OpenBLAS's work buffer) is not in it.",
    "allocs / inference": "system-allocator calls (malloc, calloc, mmap, ...) per 1-window prediction after "
                          "warm-up, counted by memray (Python's own small-object allocator not traced).",
    "p50 / p95 ms": "batch-1 latency per window on this machine, one thread, median and 95th percentile.",
}


def _data_lines(runner) -> list[str]:
    s, d, spec = runner.s, runner.data, runner.spec
    w = d.windows.config
    run = spec.run
    used = ", ".join(str(k) for k in d.fold_indices)
    lines = [
        "## What was run", "",
        f"- **Data**: `{s.dataset}` ({_DEVICE.get(s.dataset, 'accelerometer')}, 20 Hz), activity set `{s.activities}`: "
        f"{', '.join(d.windows.classes)}; {d.n_samples:,} samples read from {len(d.checksums)} files "
        f"under `{d.root}` (sha256 of each in `run.json`), {len(d.windows):,} windows of {w.length} samples, "
        f"step {w.step}, channels `{w.channels}` ({w.n_channels}).",
        f"- **Split**: subject-independent {len(d.folds)}-fold (`har.splits.subject_kfold`, seed {run.seed}); "
        f"folds used: {used}. Per fold the test users are never seen by training, calibration or any choice; "
        f"{run.val_users} validation users (taken from the remaining users) early-stop training and make every "
        "choice (PTQ calibration and method, PCA's k, the cascade threshold, the budget ranking).",
        f"- **Defaults**: window, channels and epoch budget from `har/defaults.json`: "
        f"{_defaults(s.dataset, s.activities)}.",
        f"- **Baseline**: `CompactCNN1d` widths {tuple(run.model_widths)}, trained per fold as `python -m har.train` "
        f"does (`har.experiment.train_fold_cnn`, up to {run.train.epochs} epochs, patience {run.train.patience}, "
        f"{spec.train_threads} torch thread(s)); cached under key `{spec.key()}`.",
        f"- **Seed** {s.seed}; git commit `{_commit(runner)}`, {time.strftime('%Y-%m-%d')}; package versions in "
        "`run.json`.",
    ]
    if s.quick:
        lines.append("- **QUICK RUN**: fold 0 only, few epochs everywhere, `MeasureConfig.quick()` (fewer timing "
                     "repetitions). The numbers are a smoke test, not results; the `split` column says "
                     "`subject-fold0-quick`.")
    lines += ["", "| fold | test users | validation users | train / val / test windows | used |", "|---|---|---|---|---|"]
    for f in d.folds:
        lines.append(f"| {f.index} | {', '.join(map(str, f.test_users))} | {', '.join(map(str, f.val_users))} | "
                     f"{len(f.train_idx):,} / {len(f.val_idx):,} / {len(f.test_idx):,} | "
                     f"{'yes' if f.index in d.fold_indices else 'no'} |")
    return lines + [""]


def _prune_ratio() -> str:
    from hybrid.pipeline import PRESETS
    return f"{PRESETS['hybrid'].steps[0].ratio:g}"


_DEVICE = {"wisdm2019": "phone accelerometer", "wisdm2019-watch": "watch accelerometer",
           "wisdm": "WISDM v1.1 phone accelerometer"}


def _defaults(dataset: str, activities: str) -> str:
    from har.defaults import for_dataset
    return for_dataset(dataset, activities).source


def _commit(runner) -> str:
    from hybrid.provenance import git_commit
    return git_commit()


def _protocol_lines(runner) -> list[str]:
    n = len(runner.data.fold_indices)
    return [
        "## Protocol", "",
        f"- **accuracy, macro-F1**: mean over the {n} fold(s)' test users (± std over folds). Every variant is "
        "rebuilt per fold from that fold's baseline and training users only.",
        "- **Choices** (PTQ calibration, PTQ vs QAT, PCA's k, the cascade threshold) are made per fold on the "
        "validation users, never on test users (listed below). The pruning ratio "
        f"{_prune_ratio()} was fixed in advance from the byte budget "
        "(bytes depend on the architecture only), not tuned on any users.",
        "- **bytes, MACs, arena, heap, allocations, latency**: `har.measure.measure` on fold 0's artifact and "
        "fold 0's test windows, single-threaded (`torch.set_num_threads(1)`, threadpoolctl BLAS limit 1, "
        "ONNX Runtime 1 intra-op thread). Other folds are measured for bytes and accuracy only.",
        f"- **Volatile columns**: {', '.join(f'`{c}`' for c in VOLATILE_COLUMNS)} change from run to run (timing on "
        "a shared machine; memray's heap peak and allocation counts of artifacts that allocate, through torch's, "
        "ONNX Runtime's and numpy's caches: a zero-allocation artifact stays at 0); every other column of "
        "`summary.csv` is identical for the same seed and data.",
        "",
    ] + [f"- **{k}**: {v}" for k, v in GLOSSARY.items()] + [""]


def _budget_lines(budget: dict | None) -> list[str]:
    if not budget:
        return []
    lines = ["## Budget search", "", f"**{budget['line']}**", "", budget["protocol"], "",
             "| widths | ratio | method | pruned widths | model B | fits | val acc | test acc |",
             "|---|---|---|---|---|---|---|---|"]
    for r in budget["rows"]:
        va = "-" if r.get("val_accuracy") is None else f"{100 * r['val_accuracy']:.2f} %"
        te = "-" if r.get("test_accuracy") is None else f"{100 * r['test_accuracy']:.2f} %"
        lines.append(f"| {tuple(r['widths'])} | {r['ratio']:g} | {r['method']} | {tuple(r['pruned_widths'])} | "
                     f"{r['model_bytes']:,} | {'yes' if r['fits'] else 'no'} | {va} | {te} |")
    return lines + ["", "Full table: `budget.csv`.", ""]


def _device_budget_lines(budget: dict | None) -> list[str]:
    """The firmware budget search: each fold's winner, then the grid once with every fold's validation score
    (`*`: that fold's choice) and in how many folds it fits; per-fold trained bytes are in `device_budget.csv`."""
    if not budget:
        return []

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.2f} %"
    lines = ["## Firmware budget search (flash and RAM, Cortex-M4)", "", f"**{budget['line']}**", "",
             budget["protocol"], "", "| fold | winner (widths -> pruned, recipe) | flash B | RAM B | val acc | test acc "
             "| fp32 baseline test acc |", "|---|---|---|---|---|---|---|"]
    for c in budget["choices"]:
        w = c["winner"]
        lines.append(f"| {c['fold']} | no point fits | | | | | |" if w is None else
                     f"| {c['fold']} | {tuple(w['widths'])} -> {tuple(w['pruned_widths'])}, {w['recipe']} | "
                     f"{w['measured_flash_bytes']:,} | {w['measured_ram_bytes']:,} | {pct(w['val_accuracy'])} | "
                     f"{pct(w['test_accuracy'])} | {pct(c['baseline_test_accuracy'])} |")
    points: dict = {}
    for r in budget["rows"]:
        points.setdefault((tuple(r["widths"]), r["ratio"], r["recipe"]), []).append(r)
    folds = " · ".join(str(c["fold"]) for c in budget["choices"])
    lines += ["", f"| widths | ratio | recipe | pruned widths | flash B | RAM B | sized by | trained: flash / RAM B "
              f"(largest over folds) | fits (folds) | val acc, folds {folds} |", "|---" * 10 + "|"]

    def most(rs, key) -> str:
        values = [x[key] for x in rs if x.get(key) is not None]
        return format(max(values), ",") if values else "too large for the board"
    for (widths, ratio, recipe), rs in points.items():
        r = rs[0]
        trained = [x for x in rs if x.get("trained")]
        size = f"{most(trained, 'measured_flash_bytes')} / {most(trained, 'measured_ram_bytes')}" if trained else "-"
        vals = " · ".join(pct(x.get("val_accuracy")) + ("*" if x.get("chosen") else "") for x in rs)
        lines.append(f"| {widths} | {ratio:g} | {recipe} | {tuple(r['pruned_widths'])} | "
                     f"{'-' if r['flash_bytes'] is None else format(r['flash_bytes'], ',')} | "
                     f"{'-' if r['ram_bytes'] is None else format(r['ram_bytes'], ',')} | {r['sized_by']} | {size} | "
                     f"{sum(bool(x['fits']) for x in rs)} of {len(rs)} | {vals} |")
    return lines + ["", "Full table (every fold x point, test accuracy of the winners only): `device_budget.csv`.", ""]


def _reading_lines(rows: list[dict]) -> list[str]:
    names = {r["variant"] for r in rows}
    out = ["### Reading the table", ""]
    if {"model-all", "hybrid"} <= names:
        out.append("- **model-all vs hybrid**: the same int8 program per fold (same accuracy). model-all runs the numpy "
                   "integer reference, which has no memory plan: its model bytes add the logical activation peak "
                   "(int8 tensors and the float input) and leave out the conv halo rows and the kernel scratch "
                   "(int16 and int32 rows of the host's time-major convs) its C kernels need. The hybrid's planned "
                   "host arena includes them and runs with 0 heap allocations; what a device needs is the firmware "
                   "section's (the device plans its own arena: no float window, other loop orders).")
    if {"hybrid", "static-pool", "system-all"} <= names:
        by = {r["variant"]: r for r in rows}
        slow = float(by["system-all"]["latency_ms_p50"] or 0) / float(by["static-pool"]["latency_ms_p50"] or 1)
        out.append(f"- **hybrid without lazy weights**: a lazy weight file changes no model byte (stored weights "
                   f"count either way) and made the static pool {slow:.1f}x slower here (system-all vs static-pool), "
                   "so the hybrid keeps its int8 weights resident.")
    if "cascade" in names:
        out.append("- **cascade**: bytes and MACs are its worst case (both stages stored and run); stage 2 stays in "
                   "the lazily loaded weight file between uses. Two differently trained networks decide, so its "
                   "accuracy may exceed the baseline's.")
    if names & {"int8", "model-all"}:
        out.append("- **int8 / model-all latency** is that of the vectorised numpy reference (`model_opts.quant.intref`) "
                   "called on one window: a specification, not a runtime. The hybrid runs the same program, bit for bit, "
                   "through `system_opts`' C kernels (`system_opts/csrc/har_int8.c`, one call per window) in the "
                   "planned arena; the numpy int8 session (`system_opts.buffer_pool_int8`) stays as the readable "
                   "reference runtime.")
    if names & {"ort-fp32", "ort-int8"}:
        out.append("- **ONNX Runtime peers**: ORT plans memory internally and does not report the plan, so their "
                   "model bytes use the stored graph's activation peak; their heap includes ORT's own arena.")
    return out + [""]


def _seed_lines(runner, rows: list[dict]) -> list[str]:
    """Seeds x folds: mean and Student's t 95 % interval per variant (`hybrid.report.ci95`), and where the
    trainings ran."""
    seeds = runner.s.all_seeds
    lines = ["## Seeds x folds", "",
             f"Seeds {', '.join(map(str, seeds))} x {len(runner.data.fold_indices)} fold(s); each seed re-draws the "
             "user split (a repeated subject-wise cross-validation); initialisation and training seeds are seed + "
             "fold index. "
             "The first seed's run is the one measured in full above; the others are scored on their test users "
             "(`seeds.csv`). The interval is Student's t over all seed x fold scores, which share users: read it "
             "as a spread, not an exact coverage.", "",
             "| variant | seed x fold scores | mean | 95 % interval |", "|---|---|---|---|"]
    for r in rows:
        if r.get("accuracy_ci95_low") is None:
            continue
        n = sum(1 for f in runner.state.fold_rows if f["variant"] == r["variant"]) + sum(
            1 for f in runner.state.seed_rows if f["variant"] == r["variant"])
        lines.append(f"| {r['variant']} | {n} | {100 * r['accuracy_seeds_folds_mean']:.2f} % | "
                     f"{100 * r['accuracy_ci95_low']:.2f} – {100 * r['accuracy_ci95_high']:.2f} % |")
    tasks = getattr(runner.state, "tasks", {}) or {}
    for name, t in tasks.items():
        lines += ["", f"Trainings ({name}): {t['tasks']} tasks on the {t['executor']} executor with {t['workers']} "
                  f"worker(s), {t['task_seconds']:,} s of task time (`hybrid.executor`)."]
    return (lines + [""]) if len(seeds) > 1 or tasks else []


def _step_seconds(runner) -> float:
    """Seconds between two results while streaming: the window step over the dataset's sample rate."""
    return runner.data.windows.config.step / runner.data.sample_rate_hz


def render(runner, rows: list[dict], figures: list[str]) -> str:
    s = runner.s
    lines = ["# Hybrid: model-centric and system-level memory optimisations, alone and combined", "",
             "Produced by `python -m hybrid.run` (settings in `run.json`). Tables: `summary.csv` (one row per variant), "
             "`folds.csv` (per fold: accuracy and every byte field). Memory profiles: `flamegraphs/<variant>.html` "
             "(memray, fold 0).", ""]
    lines += _data_lines(runner) + _protocol_lines(runner)
    lines += _budget_lines(runner.state.budget)
    lines += _device_budget_lines(getattr(runner.state, "device_budget", None))
    if rows:
        lines += ["## Results", ""] + results_table(rows) + [""]
        checks = hybrid_checks(rows)
        if checks:
            lines += ["### The `hybrid` row against its targets", "", "| target | met | measured |", "|---|---|---|"]
            lines += [f"| {t} | {'yes' if ok else '**no**'} | {m} |" for t, ok, m in checks] + [""]
        lines += _reading_lines(rows) + _seed_lines(runner, rows)
        from hybrid.device import firmware_lines
        from hybrid.techniques import technique_lines
        lines += firmware_lines(runner)
        lines += technique_lines(rows, getattr(runner.state, "firmware", {}) or {}, _step_seconds(runner))
        from firmware.breakeven import lines as breakeven_lines
        lines += breakeven_lines(getattr(runner.state, "breakeven", None) or [])
        lines += ["## Plots", ""] + [f"![{f}]({f})" for f in figures] + [
            "", "Anchors on the first plot are published claims under other protocols (4 classes and a leaky random "
            "split for the STM32 model zoo; protocol unstated for seed 001's \"0.08 MB\", whose 93.7 % is a best "
            "accuracy): they mark where claims sit, they are not comparable results.", ""]
    lines += ["## Variants", "", "| variant | family | what it is | pipeline steps |", "|---|---|---|---|"]
    for name, cfg in runner.configs.items():
        steps = " -> ".join(st.kind for st in cfg.steps) or "(none)"
        lines.append(f"| {name} | {cfg.family} | {cfg.description} | {steps} |")
    lines += ["", "Full step configs of every variant are in `run.json` (`variants`).", ""]
    ch = choices_lines(runner.state.choices)
    if ch:
        lines += ["## Choices made on validation users", ""] + ch + [""]
    equal, differ, free = byte_equality(runner.state.fold_rows, runner.configs)
    if equal or differ or free:
        lines += ["## Byte fields across folds", "",
                  f"Fields compared: {', '.join(BYTE_FIELDS)} (`folds.csv`).", "",
                  f"- fixed-architecture variants with identical byte fields in every fold: {', '.join(equal) or 'none'}",
                  f"- fixed-architecture variants whose byte fields differ: {', '.join(differ) or 'none'}",
                  f"- variants whose architecture is chosen per fold: {', '.join(free) or 'none'}", ""]
    if s.flamegraphs and rows:
        lines += ["## Memory profiles", ""] + [f"- [{r['variant']}](flamegraphs/{r['variant']}.html)" for r in rows]
    return "\n".join(lines) + "\n"


def firmware_rows(runner) -> list[tuple[str, dict, dict]]:
    """(label, flash categories, RAM categories + stack) of fold 0's firmware per int8 variant and target;
    a variant whose firmware equals an earlier one's (model-all and hybrid) is drawn once."""
    out, seen = [], set()
    for name, per_fold in (getattr(runner.state, "firmware", {}) or {}).items():
        r0 = per_fold.get(min(per_fold)) if per_fold else None
        if r0 is None:
            continue
        for target, t in r0.targets.items():
            key = (target, t.elf_sha256)
            if key in seen:
                continue
            seen.add(key)
            lib = {k: v for k, v in t.flash.items() if k not in ("startup", "padding")}
            ram = {k: v for k, v in t.ram.items() if k not in ("startup", "padding")}
            out.append((f"{name} ({target})", lib, {**ram, "stack": t.stack_bytes}))
    return out


def write_report(runner) -> Path:
    from hybrid import plots
    out, rows, s = runner.out, runner.state.rows, runner.s
    split = rows[0]["split"] if rows else ""
    title = f"{s.dataset}/{s.activities}, {split}, seed {s.seed}"
    figs = []
    if rows:
        figs = [plots.accuracy_vs_bytes(rows, f"Accuracy vs model bytes ({title})", out / "accuracy_vs_bytes.png"),
                plots.memory_breakdown(rows, f"Memory per variant, fold 0 ({title})", out / "memory_breakdown.png"),
                plots.latency(rows, f"Batch-1 latency, fold 0, 1 thread ({title})", out / "latency.png")]
        fw = firmware_rows(runner)
        if fw:
            figs.append(plots.firmware_memory(fw, f"Firmware flash and RAM, fold 0 ({title})",
                                              out / "firmware_memory.png"))
    md = render(runner, rows, [f.name for f in figs])
    return atomic_write_text(out / "report.md", md)
