"""`hybrid.run --executor ray` on a local 2-CPU Ray cluster and `--workers 2` give the local executor's
summary.csv and seeds.csv (every non-volatile column), with seeds as a sweep axis; two variants that share
their first stages race on those cache entries and leave one valid entry each."""
from __future__ import annotations

import csv
import json

import pytest

from hybrid import run
from hybrid.report import SUMMARY_COLUMNS, VOLATILE_COLUMNS, ci95

pytestmark = pytest.mark.slow
# hybrid and model-all share their prune and quantize stages (their tasks race on those entries); pca and
# sparse make their choices with numpy/scikit-learn (BLAS threads) and among several candidates
VARIANTS = "hybrid,model-all,pca,sparse"


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _run(base, name, data_dir, *extra):
    out, cache = base / name, base / f"cache-{name}"
    assert run.main(["--quick", "--out", str(out), "--cache-dir", str(cache), "--data-dir", str(data_dir),
                     "--threads", "1", "--no-progress", "--no-flamegraphs", "--no-firmware", "--variants",
                     VARIANTS, "--seeds", "0,1", *extra]) == 0
    return out, cache


@pytest.fixture(scope="module")
def local_run(data_dir, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("executors"), "local", data_dir)


def _stable(rows):
    keep = [c for c in SUMMARY_COLUMNS if c not in VOLATILE_COLUMNS]
    return [{c: r[c] for c in keep} for r in rows]


@pytest.mark.parametrize("executor", [("--executor", "ray", "--workers", "2"), ("--workers", "2")],
                         ids=["ray", "pool"])
def test_parallel_executors_give_the_local_tables(local_run, data_dir, tmp_path, executor):
    local_out, _ = local_run
    out, cache = _run(tmp_path, "parallel", data_dir, *executor)
    assert _stable(_rows(out / "summary.csv")) == _stable(_rows(local_out / "summary.csv"))
    assert _rows(out / "seeds.csv") == _rows(local_out / "seeds.csv")
    assert _rows(out / "folds.csv") == _rows(local_out / "folds.csv")
    meta, local_meta = (json.loads((d / "run.json").read_text()) for d in (out, local_out))
    assert meta["choices_on_validation_users"] == local_meta["choices_on_validation_users"]
    tasks = meta["executor_tasks"]
    assert tasks["baselines"]["tasks"] == 2 and tasks["variants"]["tasks"] == 2 * 4  # per seed: fold 0's, each variant
    assert tasks["variants"]["measuring_cache_misses"] == 0  # the workers built exactly what the driver reads
    for stage in (cache / "stages").iterdir():  # raced or not: every entry finished, none torn
        assert json.loads((stage / "stage.json").read_text()) is not None
        assert not [p for p in stage.iterdir() if p.name.endswith(".tmp")]


def test_seeds_are_an_axis_with_a_mean_and_interval_over_seeds_and_folds(local_run, data_dir, tmp_path):
    out, _ = local_run
    summary, seeds = _rows(out / "summary.csv"), _rows(out / "seeds.csv")
    assert [(r["variant"], r["seed"], r["fold"]) for r in seeds] == [(v, "1", "0") for v in VARIANTS.split(",")]
    for r in summary:
        accs = [float(r["accuracy"])] + [float(s["accuracy"]) for s in seeds if s["variant"] == r["variant"]]
        assert r["n_seeds"] == "2" and len(accs) == 2
        m, lo, hi = ci95(accs)
        assert [float(r[c]) for c in ("accuracy_seeds_folds_mean", "accuracy_ci95_low", "accuracy_ci95_high")
                ] == pytest.approx([m, lo, hi])
    # seed 1's score is what a run with --seed 1 measures: the axis re-runs the whole protocol per seed
    one, _ = _run(tmp_path, "seed1", data_dir, "--seeds", "1")
    assert {r["variant"]: r["accuracy"] for r in _rows(one / "summary.csv")} == {
        s["variant"]: s["accuracy"] for s in seeds}
