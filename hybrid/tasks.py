"""The trainings of a `hybrid.run` as executor tasks (`hybrid.executor`), and the seeds axis.

Steps (only when the executor is not the inline default):
1. `pretrain_baselines(runner)`, one task per (fold, seed): the fold's baseline CNN
   (`hybrid.baseline.ensure_fold`), before the runner loads them.
2. `pretrain(runner)`, one task per (variant, fold, seed): the variant's `Pipeline.build` from that
   baseline.
Every task trains into the shared stage cache and returns only what it chose and how long it took; the
runner then builds and measures every variant in its own process exactly as without an executor, now from
cache hits, so the tables are the same bytes whichever executor trained them (`hybrid.executor`).
`pretrain_points(runner, points, fold)` does the same for a budget search's grid points: one task per
distinct widths' baseline, then one per point.
`seed_rows(runner)` is the seeds axis (`--seeds`): for every seed after the first, every variant on every
fold is built (a cache hit after `pretrain`) and scored on that seed's test users (accuracy only); a seed
re-draws the user split (a repeated subject-wise cross-validation); initialisation and training seeds are
seed + fold index, so seed s's fold k + 1 and seed s + 1's fold k share those seeds, not their users.
`hybrid.report.ci95` turns the scores into a mean and a t interval.
Worker side: `train_task(task, settings)` rebuilds a `Runner` from the JSON settings once per process and
seed (`worker_runner`); its outputs go to a private temporary directory (lazy weight files of system
steps), never into the run's output directory, which only the caller writes.
"""
from __future__ import annotations

import tempfile
from dataclasses import fields, replace
from pathlib import Path

from hybrid.executor import ExecutorConfig, Task, raise_failures, run_tasks
from hybrid.pipeline import Pipeline, PipelineConfig
from hybrid.runner import Runner, RunSettings

_RUNNERS: dict[tuple, Runner] = {}


def settings_from_dict(d: dict) -> RunSettings:
    """`RunSettings.to_dict()` back (paths and tuples restored)."""
    names = {f.name for f in fields(RunSettings)}
    d = {k: v for k, v in d.items() if k in names}
    for k in ("out", "cache_dir"):
        if d.get(k) is not None:
            d[k] = Path(d[k])
    for k in ("variants", "seeds", "budget_folds"):
        if d.get(k) is not None:
            d[k] = tuple(d[k])
    return RunSettings(**d)


def executor_config(settings: RunSettings) -> ExecutorConfig:
    return ExecutorConfig(settings.executor, settings.workers, settings.ray_address)


def _inline(s: RunSettings, seed: int, prefix: str) -> RunSettings:
    """`s` for one seed, training in its own process, writing its lazy weight files to a private temp dir."""
    return replace(s, seed=seed, seeds=(), progress=False, executor="local", workers=1, ray_address=None,
                   out=Path(tempfile.mkdtemp(prefix=prefix)))


def worker_runner(settings: dict, seed: int) -> Runner:
    """A Runner for `seed` with the data loaded and the baselines' spec set; one per process and seed."""
    key = (tuple(sorted((k, str(v)) for k, v in settings.items())), seed)
    if key not in _RUNNERS:
        r = Runner(_inline(settings_from_dict(settings), seed, "har-task-"))
        r.load()
        _RUNNERS[key] = r
    return _RUNNERS[key]


def train_task(task: Task, settings: dict) -> dict:
    """Runs in a worker: train what `task` names into the stage cache (module docstring), at the serial
    run's torch and BLAS thread counts (float sums in the same order: the same weights)."""
    from threadpoolctl import threadpool_limits
    settings = dict(settings)
    with threadpool_limits(limits=settings.pop(BLAS_KEY, None), user_api="blas"):
        return _train(task, settings)


def _train(task: Task, settings: dict) -> dict:
    from har.training import bound_threads
    from hybrid.budget import widths_context
    r = worker_runner(settings, task.seed)
    bound_threads(r.s.threads)
    widths = task.payload.get("widths")
    if task.kind == "baseline":
        if widths is None:
            r.baseline(task.fold)
        else:
            widths_context(r, tuple(widths), task.fold)
        return {"cache_misses": r.cache.misses}
    if task.kind == "variant":
        ctx, cfg = r.context(task.fold), r.configs[task.name]
    elif task.kind == "grid-point":
        ctx, cfg = widths_context(r, tuple(widths), task.fold), PipelineConfig.from_dict(task.payload["pipeline"])
    else:
        raise ValueError(f"unknown task kind {task.kind!r}")
    built = Pipeline(cfg).build(ctx, r.cache)
    built.close()
    return {"choices": built.choices, "cache_misses": r.cache.misses}


def _worker_settings(runner: Runner) -> dict:
    """The settings the workers rebuild their Runner from, with the data root and the cache resolved here:
    a worker on another node has neither this process's environment ($HAR_DATA_DIR) nor its project dir;
    and this process's BLAS thread count, which Ray's workers would otherwise run at 1 (OMP_NUM_THREADS)."""
    return {**runner.s.to_dict(), "data_dir": str(runner.data.root.resolve()),
            "cache_dir": str(Path(runner.cache.root).resolve()), BLAS_KEY: _blas_threads()}


BLAS_KEY = "_blas_threads"


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info
    return max([p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"] or [1])


def _waves(runner: Runner, waves: list[list[Task]], desc: str) -> list:
    """Each wave's tasks after the previous wave's (baselines before what starts from them), on one bar."""
    from tqdm.auto import tqdm
    out = []
    with tqdm(total=sum(map(len, waves)), desc=desc, disable=not runner.s.progress) as bar:
        for tasks in waves:
            results = run_tasks(train_task, tasks, executor_config(runner.s), _worker_settings(runner), bar=bar)
            raise_failures(results)
            out.extend(results)
    return out


def pretrain_baselines(runner: Runner) -> list:
    """Module docstring, step 1 (before anything else needs a baseline); nothing to do inline."""
    if executor_config(runner.s).inline:
        return []
    seeds = runner.s.all_seeds if runner.configs else (runner.s.seed,)  # a budget search alone: one seed
    return _waves(runner, [[Task("baseline", "baseline", k, s) for s in seeds for k in runner.data.fold_indices]],
                  "baseline tasks")


def pretrain(runner: Runner) -> list:
    """Module docstring, step 2 (the baselines are cached by then); nothing to do inline."""
    if executor_config(runner.s).inline:
        return []
    folds = runner.data.fold_indices
    tasks = [Task("variant", name, k, s) for s in runner.s.all_seeds for name in runner.configs for k in folds]
    return _waves(runner, [tasks], "training tasks")


def pretrain_points(runner: Runner, points: list[tuple[tuple[int, ...], PipelineConfig]], fold: int) -> list:
    """A budget search's fitting points as tasks (module docstring); nothing to do inline."""
    if executor_config(runner.s).inline or not points:
        return []
    widths = sorted({tuple(w) for w, _ in points})
    base = [Task("baseline", "w" + "-".join(map(str, w)), fold, runner.s.seed, {"widths": list(w)}) for w in widths]
    grid = [Task("grid-point", cfg.name, fold, runner.s.seed, {"widths": list(w), "pipeline": cfg.to_dict()})
            for w, cfg in points]
    return _waves(runner, [base, grid], "grid tasks")


def seed_rows(runner: Runner) -> list[dict]:
    """Module docstring: test accuracy of every variant, fold and seed after the first."""
    from har.measure import MeasureConfig, measure
    from hybrid.measuring import single_threaded
    rows = []
    for seed in runner.s.all_seeds[1:]:
        other = Runner(_inline(runner.s, seed, f"har-seed{seed}-"))
        other.load()
        for name, cfg in runner.configs.items():
            for k in other.data.fold_indices:
                built = Pipeline(cfg).build(other.context(k), runner.cache)
                try:
                    test = other.data.folds[k].test_idx
                    with single_threaded():
                        fp = measure(built.artifact, other.data.windows.x[test], other.data.windows.y[test],
                                     MeasureConfig.static_only())
                finally:
                    built.close()
                rows.append({"variant": name, "seed": seed, "fold": k, "accuracy": fp.accuracy})
    return rows
