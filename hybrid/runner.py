"""The work behind `python -m hybrid.run`: baseline, every variant per fold, measurement, outputs.

Steps of `run(settings)`:
1. Data: checksum the files the loader reads (`hybrid.provenance`), load the recording, cut the default
   windows (`har.experiment.windows_for`) and the subject folds (`har.experiment.make_folds`); `--quick`
   uses fold 0 only.
2. Baseline: per fold, reuse the cached `har.train`-equivalent CNN or train it (`hybrid.baseline`).
3. Budget searches (`--budget-kib`, `hybrid.budget`; `--flash-kib F --ram-kib R`, `hybrid.device_budget`),
   reported first.
4. Variants, one at a time, each over every fold: build it with its `Pipeline` from that fold's baseline
   and training users (choices on validation users), then `measure` it on the fold's test users
   (`hybrid.measuring`: fold 0 with every field + a memray flame graph, other folds bytes and accuracy).
   After each variant, `summary.csv`, `folds.csv` and `run.json` are rewritten (atomically), so a failure
   later keeps every finished row; finished stages are in the stage cache, so a rerun resumes.
5. Firmware (`hybrid.device`, unless --no-firmware): during step 4 every int8 variant's firmware per fold;
   after it, in full runs, the break-even sparsity sweep (`firmware.breakeven`, with the sparse variant) and
   the RandomForest firmware peer on fold 0 (with the hybrid).
6. Plots and `report.md` (`hybrid.report`, `hybrid.plots`).
Executors (`--executor`, `--workers`; `hybrid.executor`, `hybrid.tasks`): with anything but the default
(local, one worker) the baselines (step 2), the variants (step 4) and a budget search's fitting points are
first trained as tasks, in parallel, into the stage cache; the steps above then find every stage cached
and measure in this process as they would have. `--seeds`: after step 4, every variant on every fold of
each further seed, scored on that seed's test users (`seeds.csv`, an interval in `summary.csv`).
Training uses `threads` torch threads; measuring always runs single-threaded.
A failing stage raises `StageError` (exit 2 via `har.cli`) naming the variant and fold; its traceback is
written to `error.log` in the output directory.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from har import datasets
from har.errors import BadOptionError, HarError
from har.experiment import RunConfig, make_folds, windows_for
from har.measure.footprint import BYTE_FIELDS, Footprint
from har.paths import atomic_write_text, data_root
from har.training import bound_threads
from hybrid import provenance
from hybrid.baseline import BaselineSpec, ensure_fold
from hybrid.cache import StageCache
from hybrid.execute import FoldContext
from hybrid.measuring import TIMED_FOLD, measure_config, measure_variant
from hybrid.pipeline import VARIANTS, Pipeline, PipelineConfig, preset
from hybrid.report import dict_csv, folds_csv, summary_csv, summary_row, with_seed_interval


class StageError(HarError):
    """A stage of the run failed; the message names it, `error.log` holds the traceback."""


@dataclass(frozen=True)
class RunSettings:
    out: Path
    dataset: str = datasets.DEFAULT_DATASET
    activities: str = datasets.DEFAULT_ACTIVITIES
    data_dir: str | None = None
    quick: bool = False
    seed: int = 0
    variants: tuple[str, ...] = VARIANTS
    budget_kib: float | None = None
    flash_kib: float | None = None  # with ram_kib: the firmware budget search (hybrid.device_budget)
    ram_kib: float | None = None
    budget_folds: tuple[int, ...] | None = None  # the firmware budget search's folds (None: every fold)
    threads: int = 1
    cache_dir: Path | None = None
    progress: bool = True
    flamegraphs: bool = True
    firmware: bool = True  # export int8 variants and run them on emulated Cortex-M (hybrid.device)
    executor: str = "local"  # where trainings run (hybrid.executor): local | ray
    workers: int = 1  # local: processes (1 = in this process); ray without an address: CPUs of a local Ray
    ray_address: str | None = None
    seeds: tuple[int, ...] = ()  # the seeds axis (the trainer's seed_rows); empty: just `seed`

    @property
    def all_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass
class Data:
    windows: object
    raw_xyz: np.ndarray
    folds: list
    fold_indices: list[int]
    checksums: dict[str, str]
    root: Path
    n_samples: int
    rejects: dict
    sample_rate_hz: float  # the recording's (the firmware's streaming period is step / rate)


@dataclass
class RunState:
    rows: list[dict] = field(default_factory=list)
    fold_rows: list[dict] = field(default_factory=list)
    choices: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    budget: dict | None = None
    device_budget: dict | None = None
    breakeven: list = field(default_factory=list)  # firmware.breakeven.sweep rows (full runs)
    footprints: dict = field(default_factory=dict)  # variant -> fold -> Footprint
    seed_rows: list = field(default_factory=list)  # hybrid.tasks.seed_rows: seeds after the first
    tasks: dict = field(default_factory=dict)  # executor waves: task count, task seconds (hybrid.tasks)
    firmware: dict = field(default_factory=dict)  # variant -> fold -> firmware.measure.FirmwareResult
    forest: dict | None = None  # the RandomForest firmware peer (hybrid.device.forest_peer)


def split_label(quick: bool, n_folds: int) -> str:
    return "subject-fold0-quick" if quick else f"subject-{n_folds}fold"


def load_data(s: RunSettings, run_cfg: RunConfig, cache: StageCache) -> Data:
    datasets.check_names(s.dataset, s.activities)
    root = data_root(s.data_dir)
    sums = provenance.checksums(provenance.data_files(s.dataset, root), cache.root / "checksums.json")
    rec = datasets.load_recording(s.dataset, root)
    keep = datasets.activity_labels(s.dataset, s.activities, rec.activities)
    win, raw = windows_for(rec, run_cfg.window, keep)
    folds = make_folds(win.user, run_cfg)
    return Data(win, raw, folds, [0] if s.quick else [f.index for f in folds], sums, root, rec.n_samples,
                dict(rec.rejects), float(rec.sample_rate_hz))


class Runner:
    def __init__(self, settings: RunSettings, trainer=None):
        """`trainer`: what runs trainings as executor tasks and the seeds axis (the `hybrid.tasks` module,
        passed in by `hybrid.run`: tasks builds Runners in its workers, so the runner cannot import it)."""
        from hybrid.executor import ExecutorConfig
        if trainer is None and (not ExecutorConfig(settings.executor, settings.workers, settings.ray_address).inline
                                or len(settings.all_seeds) > 1):
            raise BadOptionError("an executor or several seeds need the task trainer: run through hybrid.run")
        self.trainer = trainer
        self.s = settings
        self.out = Path(settings.out)
        self.cache = StageCache(settings.cache_dir)
        run_cfg = RunConfig.for_dataset(settings.dataset, settings.activities, seed=settings.seed)  # har.sweep's choice
        self.run_cfg = run_cfg.quick() if settings.quick else run_cfg
        self.state = RunState()
        self.t0 = time.perf_counter()
        self.configs = {v: (preset(v).quick() if settings.quick else preset(v)) for v in settings.variants}
        self.data: Data | None = None
        self.spec: BaselineSpec | None = None
        self._baselines: dict[int, tuple[Path, object]] = {}
        self._firmware_memo: dict = {}

    # -- stages -------------------------------------------------------------------------------------
    def load(self) -> None:
        """Data, folds and the baselines' spec; nothing written (executor workers start here too)."""
        with self._stage("data"):
            self.data = load_data(self.s, self.run_cfg, self.cache)
        self.spec = BaselineSpec(self.s.dataset, self.s.activities, self.run_cfg,
                                 provenance.data_digest(self.data.checksums), self.s.threads)

    def prepare(self) -> None:
        self.load()
        self.write_run_json("running")
        if self.trainer is not None:
            with self._stage("baseline-tasks"):
                self._record_tasks("baselines", self.trainer.pretrain_baselines(self))
        with self._stage("baseline"):
            bar = tqdm(self.data.fold_indices, desc="baseline folds", disable=not self.s.progress)
            for k in bar:
                self.baseline(k)

    def baseline(self, k: int):
        if k not in self._baselines:
            bound_threads(self.s.threads)
            d, saved, _ = ensure_fold(self.spec, self.data.windows, self.data.folds[k], self.cache, self.s.progress)
            self._baselines[k] = (d, saved)
        return self._baselines[k]

    def context(self, k: int) -> FoldContext:
        d, saved = self.baseline(k)
        return FoldContext(self.data.windows, self.data.folds[k], saved.model, saved.normalizer, d,
                           self.out / "artifacts" / f"fold{k}", self.s.seed, self.spec.key(), self.data.raw_xyz,
                           self.spec.run.train.epochs)

    def variant(self, name: str, cfg: PipelineConfig, bar) -> None:
        win = self.data.windows
        fps: dict[int, Footprint] = {}
        self.state.choices[name] = {}
        for k in self.data.fold_indices:
            bar.set_postfix_str(f"{name} fold {k}")
            try:
                ctx = self.context(k)
                bound_threads(self.s.threads)
                built = Pipeline(cfg).build(ctx, self.cache)
                try:
                    flame = self.out / "flamegraphs" / f"{name}.html" if self.s.flamegraphs else None
                    test = self.data.folds[k].test_idx
                    device = None
                    if self.s.firmware:
                        from hybrid.device import firmware_fold
                        result, device = firmware_fold(built.artifact, win.config, self.data.raw_xyz[test],
                                                       win.y[test], self.out / "firmware" / name / f"fold{k}",
                                                       self._firmware_memo)
                        if result is not None:
                            self.state.firmware.setdefault(name, {})[k] = result
                    fps[k] = measure_variant(built.artifact, win.x[test], win.y[test], k, self.s.quick, flame,
                                             device=device)
                finally:
                    built.close()
            except Exception as exc:  # noqa: BLE001 -- any failure of a stage: one line out, traceback to a file
                self._log_error(name, k)
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StageError(f"variant {name}, fold {k} failed: {msg} (traceback in "
                                 f"{self.out / 'error.log'}; finished rows kept in {self.out / 'summary.csv'})"
                                 ) from None
            self.state.choices[name][str(k)] = built.choices
            bar.update(1)
        ordered = [fps[k] for k in self.data.fold_indices]
        self.state.footprints[name] = dict(fps)
        self.state.rows.append(summary_row(name, cfg, ordered, split_label(self.s.quick, len(self.data.folds))))
        for k in self.data.fold_indices:
            f = self.data.folds[k]
            self.state.fold_rows.append({"variant": name, "fold": k, "test_users": " ".join(map(str, f.test_users)),
                                         "val_users": " ".join(map(str, f.val_users)), **_static(fps[k])})
        self.write_tables()

    def variants(self) -> None:
        if not self.configs:
            return  # a budget search alone
        if self.trainer is not None:
            with self._stage("training-tasks"):
                self._record_tasks("variants", self.trainer.pretrain(self))
        total = len(self.configs) * len(self.data.fold_indices)
        misses = self.cache.misses
        with tqdm(total=total, desc="variants x folds", disable=not self.s.progress) as bar:
            for name, cfg in self.configs.items():
                with self._stage(f"variant:{name}"):
                    self.variant(name, cfg, bar)
        if "variants" in self.state.tasks:  # 0 when the workers built exactly the entries this process reads
            self.state.tasks["variants"]["measuring_cache_misses"] = self.cache.misses - misses
        if len(self.s.all_seeds) > 1:
            with self._stage("seeds"):
                self.state.seed_rows = self.trainer.seed_rows(self)
            atomic_write_text(self.out / "seeds.csv", dict_csv(self.state.seed_rows))
        self.state.rows = [with_seed_interval(r, self.state.fold_rows, self.state.seed_rows, self.s.all_seeds)
                           for r in self.state.rows]
        self.write_tables()

    def pretrain_points(self, points: list, fold: int) -> None:
        """A budget search's fitting points trained as executor tasks first (`hybrid.tasks`)."""
        if self.trainer is not None:
            self._record_tasks("grid", self.trainer.pretrain_points(self, points, fold))

    def _record_tasks(self, name: str, results: list) -> None:
        if results:  # summed over calls (the firmware budget search's folds, and both searches under "grid")
            prev = self.state.tasks.get(name, {"tasks": 0, "task_seconds": 0.0})
            self.state.tasks[name] = {"executor": self.s.executor, "workers": self.s.workers,
                                      "tasks": prev["tasks"] + len(results),
                                      "task_seconds": round(prev["task_seconds"] + sum(r.seconds for r in results), 1)}

    def budget(self) -> None:
        if self.s.budget_kib is None:
            return
        from hybrid.budget import BudgetConfig, search
        with self._stage("budget"):
            result = search(BudgetConfig(budget_bytes=int(round(self.s.budget_kib * 1024))), self, self.out)
        self.state.budget = result
        print(result["line"], flush=True)
        self.write_run_json("running")

    def device_budget(self) -> None:
        if self.s.flash_kib is None:
            return
        from firmware import toolchain
        from hybrid.device_budget import DeviceBudgetConfig, search
        missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if not toolchain.have(t)]
        if missing:  # its figures are the firmware's: nothing to rank without the toolchain
            raise BadOptionError(f"--flash-kib/--ram-kib need {', '.join(missing)} ({toolchain.INSTALL_HINT})")
        cfg = DeviceBudgetConfig(int(round(self.s.flash_kib * 1024)), int(round(self.s.ram_kib * 1024)),
                                 folds=self.s.budget_folds)
        with self._stage("device-budget"):
            result = search(cfg.quick() if self.s.quick else cfg, self, self.out)
        self.state.device_budget = result
        print(result["line"], flush=True)
        self.write_run_json("running")

    def breakeven(self) -> None:
        """Full runs: the break-even sparsity of sparse storage on the firmware (`firmware.breakeven`), on
        fold 0's int8 program (the int8 variant's, re-loaded from the stage cache)."""
        if not self.s.firmware or self.s.quick or not {"int8", "sparse"} <= set(self.configs):
            return  # the sparse variant's context: a run that has it
        from firmware import breakeven, toolchain
        from firmware.preprocess import to_counts
        from hybrid.device import int8_program_of
        if not all(toolchain.have(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm")):
            return
        with self._stage("breakeven"):
            built = Pipeline(self.configs["int8"]).build(self.context(0), self.cache)
            try:
                fold = self.data.folds[0]
                counts = to_counts(self.data.raw_xyz[fold.train_idx[:2]])  # sizes and counts: any windows
                rows = breakeven.sweep(int8_program_of(built.artifact), self.data.windows.config, counts,
                                       self.out / "breakeven", progress=self.s.progress)
            finally:
                built.close()
        self.state.breakeven = rows
        atomic_write_text(self.out / "breakeven.csv", dict_csv(rows))
        self.write_run_json("running")

    def forest(self) -> None:
        if not self.s.firmware or self.s.quick or "hybrid" not in self.configs:
            return  # the hybrid's classical peer: runs that measure the hybrid
        from hybrid.device import forest_peer
        with self._stage("forest-firmware"):
            self.state.forest = forest_peer(self)
        self.write_run_json("running")

    def finish(self) -> Path:
        from hybrid.notes import write_report
        with self._stage("report"):
            path = write_report(self)
        self.write_run_json("done")
        return path

    # -- outputs ------------------------------------------------------------------------------------
    def write_tables(self) -> None:
        atomic_write_text(self.out / "summary.csv", summary_csv(self.state.rows))
        atomic_write_text(self.out / "folds.csv", folds_csv(self.state.fold_rows))
        self.write_run_json("running")

    def write_run_json(self, status: str) -> None:
        d = self.data
        doc = {
            "status": status, "python": sys.executable,
            "settings": self.s.to_dict(), "seed": self.s.seed, "quick": self.s.quick,
            "wall_s": round(time.perf_counter() - self.t0, 1), "stage_seconds": self.state.seconds,
            "git_commit": provenance.git_commit(), "versions": provenance.versions(),
            "cache_dir": str(self.cache.root),
            "baseline": self.spec.to_dict() if self.spec else None,
            "measure_config": measure_config(self.s.quick).to_dict(),
            "measure_note": f"fold {TIMED_FOLD}: every field; other folds: MeasureConfig.static_only(); "
                            "torch.set_num_threads(1) and threadpoolctl limit 1 while measuring",
            "variants": {n: c.to_dict() for n, c in self.configs.items()},
            "choices_on_validation_users": self.state.choices, "budget": self.state.budget,
            "device_budget": self.state.device_budget, "breakeven": self.state.breakeven,
            "firmware": {n: {str(k): r.to_dict() for k, r in per.items()} for n, per in self.state.firmware.items()},
            "forest_firmware": self.state.forest, "executor_tasks": self.state.tasks,
        }
        if d is not None:
            doc["data"] = {"dataset": self.s.dataset, "activities": self.s.activities, "root": str(d.root),
                           "sha256": d.checksums, "n_samples": d.n_samples, "rejected_records": d.rejects,
                           "n_windows": len(d.windows), "classes": list(d.windows.classes),
                           "window": d.windows.config.to_dict()}
            doc["folds"] = [{"index": f.index, "test_users": list(f.test_users), "val_users": list(f.val_users),
                             "n_train": len(f.train_idx), "n_val": len(f.val_idx), "n_test": len(f.test_idx),
                             "used": f.index in d.fold_indices} for f in d.folds]
        atomic_write_text(self.out / "run.json", json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")

    def _log_error(self, name: str, k: int) -> None:
        atomic_write_text(self.out / "error.log", f"variant {name}, fold {k}\n{traceback.format_exc()}")

    class _Timer:
        def __init__(self, runner: "Runner", name: str):
            self.runner, self.name = runner, name

        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            self.runner.state.seconds[self.name] = round(time.perf_counter() - self.t, 1)
            return False

    def _stage(self, name: str) -> "_Timer":
        return Runner._Timer(self, name)


def _static(fp: Footprint) -> dict:
    return {"accuracy": fp.accuracy, "macro_f1": fp.macro_f1, "n_eval_windows": fp.n_eval_windows,
            **{f: getattr(fp, f) for f in BYTE_FIELDS}}


def run(settings: RunSettings, trainer=None) -> Runner:
    runner = Runner(settings, trainer)
    runner.prepare()
    runner.budget()
    runner.device_budget()
    runner.variants()
    runner.breakeven()
    runner.forest()
    runner.finish()
    return runner


__all__ = ["RunSettings", "Runner", "StageError", "run", "split_label"]
