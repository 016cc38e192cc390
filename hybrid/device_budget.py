"""Budget search over the firmware's flash and RAM: the most accurate recipe whose Cortex-M4 library fits
`--flash-kib F` and `--ram-kib R` (ELF figures, RAM including the painted stack).

Grid: CNN widths x structured-pruning ratio x recipe, where a recipe combines the model-centric techniques
(`RECIPES`): PTQ or QAT, QAT + Huffman-coded weights, weight clustering (k = 16, palette storage decoded
into the arena, or read directly by the palette gemm), 90 %
unstructured sparsity (CSR storage and the sparse gemm), and knowledge distillation in place of pruning
(the same student widths, trained against the fold's baseline) with QAT or clustering.
Steps of `search(cfg, runner, out)`:
1. Bytes first, on the firmware: for each (widths, ratio, storage) an UNTRAINED network of the pruned
   widths is quantized (PTQ on a few training windows), given the recipe's integer structure (16 shared
   values per layer for a palette, 90 % of each layer's weights zeroed by magnitude for CSR: what the
   trained model will have, since bytes depend on shapes, value counts and nonzero counts only; a trained
   sparse model may share its zeros out by a global or ERK scope instead, with about the same total, and
   is re-measured in step 2 anyway) and built
   as the Cortex-M4 firmware library (`firmware.measure` with one window: ELF accounting + painted stack).
   Huffman's bytes depend on the trained values, so its point is sized on the untrained network and
   flagged `estimate`; every trained point is re-measured (step 2) and the re-measured figures decide.
   The estimate is not a bound: a Huffman point whose untrained size misses the budget is not trained,
   though its trained size might have fitted.
2. Per fold (`folds`: every fold of the run by default, a nested selection): only points whose step-1
   figures fit are trained on the fold's training users (`hybrid.pipeline.Pipeline`, stage-cached),
   measured again on the firmware, and ranked by accuracy on THAT fold's validation users (ties: fewer
   flash bytes). Only each fold's winner is scored, on that fold's TEST users. Validation users of one fold
   are test users of another, so folds never pool their validation scores: each fold chooses alone, and
   the search's accuracy is the mean of the per-fold winners' test scores (the recipes may differ by fold).
3. The winners' test accuracy (mean over the folds that have one) is set beside the fp32 baseline's mean
   on the same test users (the target: within `ACCURACY_TOLERANCE_PP`, and "met" only when every fold has a
   winner); both are reported, neither chooses. No fold has a fitting trained point: the result says so and
   lists the closest points of the first fold searched (smallest total overshoot of the two budgets; step 1's
   sizes are the same in every fold, re-measured sizes are that fold's), honestly, with their figures.
Outputs: `device_budget.csv` (one row per fold x grid point) and a dict (rows, per-fold winners, verdict)
for `run.json` and the report.
Step 1 quantizes with the first searched fold's normaliser and training windows; the bytes depend on shapes,
value counts and nonzero counts only (per-channel symmetric int8: calibration moves scales, not sizes), so
those users shape no size. Limits: the M4 figures only (M0+ is larger in flash); distillation's teacher is
the grid point's own fp32 network of `widths` (the one pruning starts from); every fitting point trains in
every fold (56 of 81 per fold at 6 KiB / 2 KiB on the phone); the executor gets one wave of tasks per fold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from har.errors import BadOptionError
from har.paths import atomic_write_text
from hybrid.pipeline import Pipeline, PipelineConfig
from hybrid.steps import (ClusterStep, DistillStep, EncodeStep, PruneStep, QuantStep, SparseStep, Step,
                          SystemStep)

# recipe -> (storage format, steps after the architecture step); "kd" recipes distil instead of pruning
RECIPES: dict[str, tuple[str, tuple[Step, ...]]] = {
    "ptq": ("dense", (QuantStep(methods=("ptq",)),)),
    "qat": ("dense", (QuantStep(methods=("qat",)),)),
    "qat+huffman": ("huffman", (QuantStep(methods=("qat",)), EncodeStep("huffman"))),
    "cluster16": ("palette", (ClusterStep(k=16), EncodeStep("palette"))),
    "cluster16-direct": ("palette-direct", (ClusterStep(k=16), EncodeStep("palette-direct"))),
    "sparse90": ("csr", (SparseStep(target=0.9), EncodeStep("csr"))),
    "kd+qat": ("dense", (QuantStep(methods=("qat",)),)),
    "kd+cluster16": ("palette", (ClusterStep(k=16), EncodeStep("palette"))),
    "kd+cluster16-direct": ("palette-direct", (ClusterStep(k=16), EncodeStep("palette-direct"))),
}
ACCURACY_TOLERANCE_PP = 1.0  # the issue's target: the winners' mean within 1 pp of the fp32 baseline's (test users)
COLUMNS = ("fold", "widths", "ratio", "recipe", "storage", "pruned_widths", "flash_bytes", "ram_bytes", "sized_by",
           "fits", "trained", "measured_flash_bytes", "measured_ram_bytes", "val_accuracy", "test_accuracy",
           "chosen")


@dataclass(frozen=True)
class DeviceBudgetConfig:
    flash_bytes: int
    ram_bytes: int
    widths: tuple[tuple[int, ...], ...] = ((16, 24, 32), (24, 32, 48), (32, 48, 64))
    ratios: tuple[float, ...] = (0.5, 0.7, 0.8)
    recipes: tuple[str, ...] = tuple(RECIPES)
    folds: tuple[int, ...] | None = None  # None: every fold of the run; each ranks on its own validation users

    def __post_init__(self) -> None:
        if self.folds is not None and (not self.folds or min(self.folds) < 0 or len(set(self.folds)) != len(self.folds)):
            raise BadOptionError(f"budget folds must be distinct integers >= 0, got {self.folds}")
        if self.flash_bytes <= 0 or self.ram_bytes <= 0:
            raise BadOptionError(f"flash and RAM budgets must be > 0 bytes, got {self.flash_bytes}, {self.ram_bytes}")
        bad = [r for r in self.recipes if r not in RECIPES]
        if bad or not self.recipes:
            raise BadOptionError(f"unknown budget recipe(s) {bad}; choose from {', '.join(RECIPES)}")

    def quick(self) -> "DeviceBudgetConfig":
        from dataclasses import replace
        return replace(self, widths=self.widths[:1], ratios=self.ratios[-1:])


def recipe_pipeline(widths: tuple[int, ...], ratio: float, recipe: str, quick: bool) -> PipelineConfig:
    storage, tail = RECIPES[recipe]
    head = DistillStep(ratio=ratio) if recipe.startswith("kd") else PruneStep(ratio=ratio)
    cfg = PipelineConfig(f"w{'-'.join(map(str, widths))}_r{ratio:g}_{recipe}", (head, *tail,
                         SystemStep(static_pool=True)), "hybrid", f"widths {widths}, {ratio:g}, {recipe}")
    return cfg.quick() if quick else cfg


def _structured(prog, storage: str):
    """The untrained program with the integer structure the recipe's training leaves (module step 1)."""
    from dataclasses import replace
    from firmware.breakeven import sparsify_weight
    from model_opts.quant.intref import Conv1dInt8, LinearInt8
    ops = []
    for op in prog.ops:
        if isinstance(op, (Conv1dInt8, LinearInt8)):
            w = op.weight.astype(np.int32)
            if storage.startswith("palette"):  # 16 levels, 0 among them: the palette's 4 bits whatever the values
                w = np.clip(np.round(w / 17.0), -7, 8) * 15
            elif storage == "csr":  # the 90 % smallest magnitudes of the layer zeroed, as sparsity leaves them
                w = sparsify_weight(op.weight, 0.9).astype(np.int32)
            op = replace(op, weight=w.astype(np.int8))
        ops.append(op)
    return replace(prog, ops=tuple(ops))


def _firmware(prog, runner, storage: str, out: Path, k: int) -> tuple[int | None, int | None]:
    """(library flash, RAM incl. stack) of the Cortex-M4 firmware of `prog` stored as `storage`; (None, None)
    when it does not fit the board at all (then it fits no budget either)."""
    from firmware.measure import FirmwareConfig, measure_firmware
    from firmware.preprocess import to_counts
    from firmware.storage import WeightStorage
    counts = to_counts(runner.data.raw_xyz[runner.data.folds[k].train_idx[:1]])  # any training window: sizes only
    cfg = FirmwareConfig(targets=("cortex-m4",), n_count_windows=1, n_stream_windows=0, tflm=False,
                         storage=WeightStorage(storage))
    m4 = measure_firmware(prog, runner.data.windows.config, counts, None, out, cfg).targets.get("cortex-m4")
    return (None, None) if m4 is None else (m4.library_flash_bytes, m4.ram_with_stack_bytes)


def _sizes(widths, ratio, storage, ctx, runner, out: Path, k: int) -> tuple[int, int]:
    from model_opts.prune import target_widths
    from model_opts.quant import ptq
    from model_opts.quant.config import QuantConfig
    from har.model import CNNConfig, CompactCNN1d
    win = ctx.windows
    pw = target_widths(tuple(widths), ratio)
    model = CompactCNN1d(CNNConfig(in_channels=win.config.n_channels, n_classes=len(win.classes), widths=pw),
                         seed=0).eval()
    int8 = ptq.apply(model, ctx.normalizer, win, ctx.fold, QuantConfig(calib_windows=64))
    return _firmware(_structured(int8.program, storage), runner, storage, out, k)


def _fits(r: dict, cfg: DeviceBudgetConfig, measured: bool = False) -> bool:
    f, m = (r["measured_flash_bytes"], r["measured_ram_bytes"]) if measured else (r["flash_bytes"], r["ram_bytes"])
    return f is not None and m is not None and f <= cfg.flash_bytes and m <= cfg.ram_bytes


def search(cfg: DeviceBudgetConfig, runner, out: Path) -> dict:
    """Module docstring, steps 1-3."""
    ran = tuple(runner.data.fold_indices)  # --quick: fold 0 only
    folds = ran if cfg.folds is None else cfg.folds
    if set(folds) - set(ran):
        raise BadOptionError(f"budget fold(s) {sorted(set(folds) - set(ran))} not among this run's folds {list(ran)}")
    grid = _sized_grid(cfg, runner, folds[0], out / "device_budget")
    rows, choices = [], []
    for k in folds:
        fold_rows = [dict(r, fold=k) for r in grid]
        _train_fitting(cfg, fold_rows, runner, k, out / "device_budget")
        choices.append(_choose(fold_rows, runner, k))
        rows += fold_rows
    return _verdict(cfg, rows, choices, out)


def _sized_grid(cfg: DeviceBudgetConfig, runner, k: int, work: Path) -> list[dict]:
    """Step 1: every grid point sized on the firmware from an untrained network, quantized with fold `k`'s
    normaliser and training windows (the bytes do not depend on them: module docstring)."""
    from hybrid.measuring import single_threaded
    from model_opts.prune import target_widths
    base = runner.context(k)
    sizes: dict = {}
    rows = []
    for widths in cfg.widths:
        for ratio in cfg.ratios:
            pw = target_widths(tuple(widths), ratio)
            for recipe in cfg.recipes:
                storage = RECIPES[recipe][0]
                key = (tuple(pw), storage)
                if key not in sizes and min(pw) >= 1:
                    with single_threaded():
                        sizes[key] = _sizes(widths, ratio, storage, base, runner,
                                            work / f"size_{'-'.join(map(str, pw))}_{storage}", k)
                flash, ram = sizes.get(key, (None, None))
                row = {"widths": list(widths), "ratio": ratio, "recipe": recipe, "storage": storage,
                       "pruned_widths": list(pw), "flash_bytes": flash, "ram_bytes": ram,
                       "sized_by": "estimate (untrained values)" if storage == "huffman" else "architecture",
                       "fits": False, "trained": False, "measured_flash_bytes": None,
                       "measured_ram_bytes": None, "val_accuracy": None, "test_accuracy": None, "chosen": False}
                row["fits"] = _fits(row, cfg)
                rows.append(row)
    return rows


def _train_fitting(cfg: DeviceBudgetConfig, rows: list[dict], runner, k: int, work: Path) -> None:
    """Step 2 for fold `k`: train the fitting points, score them on its validation users, re-measure."""
    from hybrid.budget import widths_context
    from hybrid.device import int8_program_of
    from hybrid.execute import val_accuracy
    from hybrid.measuring import single_threaded
    getattr(runner, "pretrain_points", lambda points, fold: None)(  # executor tasks first (hybrid.tasks)
        [(tuple(r["widths"]), recipe_pipeline(tuple(r["widths"]), r["ratio"], r["recipe"], runner.s.quick))
         for r in rows if r["fits"]], k)
    for r in tqdm([r for r in rows if r["fits"]], desc=f"device budget grid, fold {k}", disable=not runner.s.progress):
        ctx = widths_context(runner, tuple(r["widths"]), k)
        built = Pipeline(recipe_pipeline(tuple(r["widths"]), r["ratio"], r["recipe"], runner.s.quick)).build(
            ctx, runner.cache)
        try:
            with single_threaded():
                r["val_accuracy"] = val_accuracy(built.artifact, ctx)  # test users are not touched here
                prog = int8_program_of(built.artifact)
                name = f"{'-'.join(map(str, r['pruned_widths']))}_{r['recipe']}"
                r["measured_flash_bytes"], r["measured_ram_bytes"] = _firmware(prog, runner, r["storage"],
                                                                               work / f"fold{k}" / f"trained_{name}", k)
            r["trained"] = True
            r["fits"] = _fits(r, cfg, measured=True)
        finally:
            built.close()


def _choose(rows: list[dict], runner, k: int) -> dict:
    """Fold `k`'s winner on its validation users, then its and the fp32 baseline's test accuracy there."""
    from hybrid.budget import score_on_test_users
    from hybrid.pipeline import preset
    fitting = [r for r in rows if r["fits"] and r["trained"]]
    if not fitting:
        return {"fold": k, "winner": None, "baseline_test_accuracy": None, "n_fitting": 0}
    winner = max(fitting, key=lambda r: (r["val_accuracy"], -r["measured_flash_bytes"]))
    winner["chosen"] = True
    winner["test_accuracy"] = score_on_test_users(runner, tuple(winner["widths"]), recipe_pipeline(
        tuple(winner["widths"]), winner["ratio"], winner["recipe"], runner.s.quick), k)
    # the accuracy target: the fp32 baseline on the same test users, minus 1 pp (reported, not a choice)
    baseline = score_on_test_users(runner, tuple(runner.run_cfg.model_widths), preset("baseline"), k)
    return {"fold": k, "winner": winner, "baseline_test_accuracy": baseline, "n_fitting": len(fitting)}


def _verdict(cfg: DeviceBudgetConfig, rows: list[dict], choices: list[dict], out: Path) -> dict:
    from hybrid.budget import budget_csv
    budget = f"flash <= {cfg.flash_bytes:,} B and RAM <= {cfg.ram_bytes:,} B (Cortex-M4 library, RAM incl. stack)"
    folds = [c["fold"] for c in choices]
    protocol = (f"Protocol: folds {folds}, each choosing alone on its own validation users (nested); grid widths "
                f"{[tuple(w) for w in cfg.widths]} x ratios {list(cfg.ratios)} x recipes {list(cfg.recipes)}. "
                "Flash/RAM from the linked Cortex-M4 ELF (`firmware.elfsize`) and the painted stack in QEMU, first "
                "of an untrained network with the recipe's integer structure, then re-measured after training; "
                "only each fold's winner is scored on that fold's test users.")
    won = [c for c in choices if c["winner"] is not None]
    summary = None
    if won:
        per_fold = "; ".join(
            f"fold {c['fold']}: {tuple(c['winner']['widths'])} -> {tuple(c['winner']['pruned_widths'])} "
            f"{c['winner']['recipe']}, {c['winner']['measured_flash_bytes']:,} B flash / "
            f"{c['winner']['measured_ram_bytes']:,} B RAM, validation {100 * c['winner']['val_accuracy']:.2f} %, "
            f"test {100 * c['winner']['test_accuracy']:.2f} % (baseline {100 * c['baseline_test_accuracy']:.2f} %, "
            f"{c['n_fitting']} of {len(cfg.widths) * len(cfg.ratios) * len(cfg.recipes)} points fit)" for c in won)
        test = float(np.mean([c["winner"]["test_accuracy"] for c in won]))
        base = float(np.mean([c["baseline_test_accuracy"] for c in won]))
        met = len(won) == len(choices) and test >= base - ACCURACY_TOLERANCE_PP / 100
        summary = {"test_accuracy_mean": test, "baseline_test_accuracy_mean": base, "met": met,
                   "max_flash_bytes": max(c["winner"]["measured_flash_bytes"] for c in won),
                   "max_ram_bytes": max(c["winner"]["measured_ram_bytes"] for c in won)}
        missing = [c["fold"] for c in choices if c["winner"] is None]
        line = (f"{budget}: the winners (each fold's best on its validation users) score {100 * test:.2f} % mean "
                f"on their test users over {len(won)} fold(s); the fp32 baseline scores {100 * base:.2f} % on the "
                f"same test users: accuracy >= baseline - {ACCURACY_TOLERANCE_PP:g} pp {'met' if met else 'NOT met'}"
                f"{f' (no point fits in folds {missing})' if missing else ''}; largest winner "
                f"{summary['max_flash_bytes']:,} B flash, {summary['max_ram_bytes']:,} B RAM. Per fold: {per_fold}")
    else:
        first = [r for r in rows if r["fold"] == folds[0] and r["flash_bytes"] is not None]
        over = sorted(first, key=lambda r: max(0, (r["measured_flash_bytes"] or r["flash_bytes"]) - cfg.flash_bytes)
                      + max(0, (r["measured_ram_bytes"] or r["ram_bytes"]) - cfg.ram_bytes))[:3]
        line = f"{budget}: no grid point fits; closest: " + "; ".join(
            f"{tuple(r['pruned_widths'])} {r['recipe']} {r['measured_flash_bytes'] or r['flash_bytes']:,} B flash / "
            f"{r['measured_ram_bytes'] or r['ram_bytes']:,} B RAM" for r in over)
    atomic_write_text(out / "device_budget.csv", budget_csv(rows, COLUMNS))
    return {"flash_bytes": cfg.flash_bytes, "ram_bytes": cfg.ram_bytes, "line": line, "protocol": protocol,
            "rows": rows, "choices": choices, "folds": folds, "summary": summary}
