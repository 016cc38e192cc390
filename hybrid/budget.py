"""Memory-budget search: the most accurate int8 static-pool variant whose model bytes fit N bytes.

Grid: CNN widths x structured-pruning ratio x {PTQ, QAT}; every point is the pipeline
[prune (if ratio > 0)] -> quantize (that one method) -> int8 static pool, the `hybrid` variant's recipe.
Steps of `search(config, runner, out)`:
1. Bytes first, from the architecture alone: for each (widths, ratio) an UNTRAINED network of the pruned
   widths (`model_opts.prune.target_widths`) is quantized (PTQ calibrated on a few training windows) and
   wrapped as an int8 static pool; `measure` gives its model bytes. Stored arrays and the arena plan
   depend on shapes only, never on weight values, so this is exact (and re-checked after building: a
   mismatch is reported in the row). PTQ and QAT give the same bytes.
2. No point fits: the result says so, naming the smallest point (not an error).
3. Otherwise only the fitting points are built, on fold 0 only (to keep the search bounded): the fp32
   network of those widths trained like the baseline (cached; the baseline's own widths reuse it), pruned,
   quantized, wrapped (`hybrid.pipeline.Pipeline`, stage-cached).
4. Rank by accuracy on fold 0's VALIDATION users (ties: fewer bytes); only then is the winner scored on
   fold 0's TEST users. No other point is ever scored on test users (`budget.csv`: validation accuracy
   for every trained point, test accuracy for the chosen one only).
Outputs: `budget.csv` (every grid point) and a dict (rows, winner, one-line verdict) for `run.json`/report.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from har.errors import BadOptionError
from har.measure.footprint import MeasureConfig, measure
from har.model import CNNConfig, CompactCNN1d
from har.paths import atomic_write_text
from har.training import bound_threads
from hybrid.baseline import ensure_fold
from hybrid.execute import FoldContext, val_accuracy
from hybrid.measuring import single_threaded
from hybrid.pipeline import Pipeline, PipelineConfig
from hybrid.steps import PruneStep, QuantStep, SystemStep

COLUMNS = ("widths", "ratio", "method", "pruned_widths", "model_bytes", "weight_bytes", "arena_bytes", "fits",
           "val_accuracy", "test_accuracy", "measured_model_bytes", "chosen")


@dataclass(frozen=True)
class BudgetConfig:
    budget_bytes: int
    widths: tuple[tuple[int, ...], ...] = ((16, 24, 32), (24, 32, 48), (32, 48, 64))
    ratios: tuple[float, ...] = (0.0, 0.5, 0.7)
    methods: tuple[str, ...] = ("ptq", "qat")
    fold: int = 0

    def __post_init__(self) -> None:
        if self.budget_bytes <= 0:
            raise BadOptionError(f"budget must be > 0 bytes, got {self.budget_bytes}")


def point_name(widths: tuple[int, ...], ratio: float, method: str) -> str:
    return f"w{'-'.join(map(str, widths))}_r{ratio:g}_{method}"


def point_pipeline(widths: tuple[int, ...], ratio: float, method: str, quick: bool) -> PipelineConfig:
    steps = ((PruneStep(ratio=ratio),) if ratio > 0 else ()) + (QuantStep(methods=(method,)),
                                                               SystemStep(static_pool=True))
    cfg = PipelineConfig(point_name(widths, ratio, method), steps, "hybrid",
                         f"widths {widths}, prune {ratio:g}, {method}, int8 static pool")
    return cfg.quick() if quick else cfg


def architecture_bytes(widths: tuple[int, ...], ctx: FoldContext) -> dict:
    """Footprint bytes of an int8 static pool of an untrained CompactCNN1d of `widths` (module step 1)."""
    from model_opts.quant import ptq
    from model_opts.quant.config import QuantConfig
    from system_opts import artifacts
    win = ctx.windows
    model = CompactCNN1d(CNNConfig(in_channels=win.config.n_channels, n_classes=len(win.classes), widths=widths),
                         seed=0).eval()
    int8 = ptq.apply(model, ctx.normalizer, win, ctx.fold, QuantConfig(calib_windows=64))
    step = SystemStep(static_pool=True)  # the recipe of `point_pipeline`
    art = artifacts.from_int8(int8, artifacts.SystemOptsConfig(static_pool=True, planner=step.planner,
                                                               int8_kernels=step.int8_kernels))
    fp = measure(art, np.ascontiguousarray(win.x[ctx.fold.train_idx[:4]]), None, MeasureConfig.static_only())
    return {"model_bytes": fp.model_bytes, "weight_bytes": fp.weight_bytes, "arena_bytes": fp.arena_bytes}


def widths_context(runner, widths: tuple[int, ...], k: int) -> FoldContext:
    """Fold `k`'s context with the baseline of `widths` (the run's own, or one trained and cached for them)."""
    if tuple(widths) == tuple(runner.run_cfg.model_widths):
        return runner.context(k)
    spec = replace(runner.spec, run=replace(runner.run_cfg, model_widths=tuple(widths)))
    bound_threads(runner.s.threads)
    d, saved, _ = ensure_fold(spec, runner.data.windows, runner.data.folds[k], runner.cache, runner.s.progress)
    return FoldContext(runner.data.windows, runner.data.folds[k], saved.model, saved.normalizer, d,
                       runner.out / "artifacts" / f"fold{k}", runner.s.seed, spec.key(), runner.data.raw_xyz,
                       spec.run.train.epochs)


def budget_csv(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """A search's grid as CSV: lists space-joined, None empty (also `hybrid.device_budget`'s)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([" ".join(map(str, r[c])) if isinstance(r.get(c), (list, tuple)) else
                    ("" if r.get(c) is None else r.get(c)) for c in columns])
    return buf.getvalue()


def score_on_test_users(runner, widths: tuple[int, ...], pipeline: PipelineConfig, k: int) -> float:
    """A chosen point's pipeline (re-loaded from the stage cache) scored on fold `k`'s test users."""
    ctx = widths_context(runner, tuple(widths), k)
    built = Pipeline(pipeline).build(ctx, runner.cache)
    try:
        test = ctx.fold.test_idx
        with single_threaded():
            return measure(built.artifact, ctx.windows.x[test], ctx.windows.y[test],
                           MeasureConfig.static_only()).accuracy
    finally:
        built.close()


def search(cfg: BudgetConfig, runner, out: Path) -> dict:
    from model_opts.prune import target_widths
    k = cfg.fold
    base_ctx = runner.context(k)
    rows = []
    for widths in cfg.widths:
        for ratio in cfg.ratios:
            pw = target_widths(tuple(widths), ratio)
            with single_threaded():
                size = architecture_bytes(pw, base_ctx) if min(pw) >= 1 else None
            for method in cfg.methods:
                rows.append({"widths": list(widths), "ratio": ratio, "method": method, "pruned_widths": list(pw),
                             **(size or {"model_bytes": None, "weight_bytes": None, "arena_bytes": None}),
                             "fits": size is not None and size["model_bytes"] <= cfg.budget_bytes,
                             "val_accuracy": None, "test_accuracy": None, "measured_model_bytes": None,
                             "chosen": False})
    fitting = [r for r in rows if r["fits"]]
    win = runner.data.windows
    getattr(runner, "pretrain_points", lambda points, fold: None)(  # executor tasks first (hybrid.tasks)
        [(tuple(r["widths"]), point_pipeline(tuple(r["widths"]), r["ratio"], r["method"], runner.s.quick))
         for r in fitting], k)
    for r in tqdm(fitting, desc="budget grid", disable=not runner.s.progress):
        ctx = widths_context(runner, tuple(r["widths"]), k)
        bound_threads(runner.s.threads)
        built = Pipeline(point_pipeline(tuple(r["widths"]), r["ratio"], r["method"], runner.s.quick)).build(
            ctx, runner.cache)
        try:
            val = ctx.fold.val_idx  # bytes do not depend on the windows; test users are not touched here
            with single_threaded():
                r["val_accuracy"] = val_accuracy(built.artifact, ctx)
                fp = measure(built.artifact, win.x[val], win.y[val], MeasureConfig.static_only())
            r["measured_model_bytes"] = fp.model_bytes
        finally:
            built.close()
    kib = cfg.budget_bytes / 1024
    protocol = (f"Protocol: fold {k} only (bounded search); grid widths {[tuple(w) for w in cfg.widths]} x prune "
                f"ratios {list(cfg.ratios)} x {list(cfg.methods)}, each an int8 static pool (the hybrid recipe). "
                "Bytes come from the architecture (exact: shapes only) and are re-measured after building; only "
                "fitting points are trained. Ranking by accuracy on the fold's validation users; only the "
                "winner is then scored on test users.")
    if not fitting:
        sized = [r for r in rows if r["model_bytes"] is not None]
        small = min(sized, key=lambda r: r["model_bytes"])
        line = (f"budget {kib:g} KiB ({cfg.budget_bytes:,} B): no variant fits; the smallest grid point, widths "
                f"{tuple(small['widths'])} pruned {small['ratio']:g} -> {tuple(small['pruned_widths'])}, needs "
                f"{small['model_bytes']:,} B")
        winner = None
    else:
        winner = max(fitting, key=lambda r: (r["val_accuracy"], -r["model_bytes"]))
        winner["chosen"] = True
        winner["test_accuracy"] = score_on_test_users(  # the one test score of the search
            runner, tuple(winner["widths"]), point_pipeline(tuple(winner["widths"]), winner["ratio"], winner["method"],
                                                            runner.s.quick), k)
        mismatch = [r for r in fitting if r["measured_model_bytes"] != r["model_bytes"]]
        line = (f"budget {kib:g} KiB ({cfg.budget_bytes:,} B): best = widths {tuple(winner['widths'])} pruned "
                f"{winner['ratio']:g} -> {tuple(winner['pruned_widths'])}, {winner['method'].upper()}, int8 static "
                f"pool: {winner['measured_model_bytes']:,} B model bytes (weights + arena), validation accuracy "
                f"{100 * winner['val_accuracy']:.2f} %, test accuracy {100 * winner['test_accuracy']:.2f} % "
                f"(fold {k}; {len(fitting)} of {len(rows)} grid points fit)")
        if mismatch:
            line += f"; WARNING: {len(mismatch)} point(s) measured other bytes than their architecture estimate"
    atomic_write_text(out / "budget.csv", budget_csv(rows))
    return {"budget_bytes": cfg.budget_bytes, "line": line, "protocol": protocol, "rows": rows,
            "winner": winner, "fold": k}
