"""hybrid's outputs without a run: summary rows, CSV, Pareto front, target checks, plots, checksums."""
from __future__ import annotations

import csv
import hashlib
import io
import os

import matplotlib.image as mpimg
import pytest

from har.measure.footprint import FIELDS, Footprint
from hybrid import plots, preset, provenance
from hybrid.report import (SUMMARY_COLUMNS, VOLATILE_COLUMNS, byte_equality, dict_csv, hybrid_checks, summary_csv,
                           summary_row)


def fp(name="x", acc=0.8, weight=1000, arena=None, peak=200, p50=0.1, allocs=3.0, **kw) -> Footprint:
    d = dict.fromkeys(FIELDS)
    d.update(name=name, param_count=weight // 4, weight_bytes=weight, macs=500, activation_bytes_naive=2 * peak,
             activation_bytes_peak=peak, arena_bytes=arena, model_bytes=weight + (arena or peak),
             peak_heap_bytes=50, allocations_per_inference=allocs, latency_ms_p50=p50, latency_ms_p95=2 * p50,
             accuracy=acc, macro_f1=acc - 0.01, notes="")
    d.update(kw)
    return Footprint(**d)


def test_summary_row_means_accuracy_over_folds_and_takes_bytes_from_fold0():
    row = summary_row("hybrid", preset("hybrid"), [fp(acc=0.8, arena=500), fp(acc=0.9, weight=7, p50=9.0)], "s")
    assert row["accuracy"] == pytest.approx(0.85) and row["accuracy_std"] == pytest.approx(0.05)
    assert row["weight_bytes"] == 1000 and row["arena_bytes"] == 500 and row["latency_ms_p50"] == 0.1
    assert row["family"] == "hybrid" and row["n_folds"] == 2 and row["accuracy_per_fold"] == "0.8000 0.9000"
    parsed = list(csv.DictReader(io.StringIO(summary_csv([row]))))
    assert tuple(parsed[0]) == SUMMARY_COLUMNS and parsed[0]["model_bytes"] == "1500"
    assert set(VOLATILE_COLUMNS) < set(SUMMARY_COLUMNS) and "model_bytes" not in VOLATILE_COLUMNS


def test_pareto_front_keeps_only_undominated_points():
    pts = [(100, 0.8), (50, 0.7), (200, 0.75), (50, 0.72), (400, 0.9), (300, 0.9)]
    assert plots.pareto_front(pts) == [(50, 0.72), (100, 0.8), (300, 0.9)]


def test_label_groups_merge_points_drawn_on_the_same_spot():
    groups = plots.label_groups(["a", "b", "c", "d"], [(100, 0.8), (110, 0.8), (500, 0.8), (100, 0.7)])
    assert [g[0] for g in groups] == [["d"], ["a", "b"], ["c"]]


def _row(name, acc, dep, allocs, p50):
    return {"variant": name, "accuracy": acc, "model_bytes": dep, "allocations_per_inference": allocs,
            "latency_ms_p50": p50}


def test_hybrid_checks_report_each_target_honestly():
    rows = [_row("baseline", 0.88, 120_000, 200, 0.15), _row("hybrid", 0.87, 6964, 0.0, 0.04)]
    checks = {t: ok for t, ok, _ in hybrid_checks(rows)}
    assert all(checks.values()) and len(checks) == 4
    rows[1].update(accuracy=0.86, model_bytes=9000, allocations_per_inference=0.5, latency_ms_p50=0.06)
    assert not any(ok for _, ok, _ in hybrid_checks(rows))
    assert hybrid_checks(rows[:1]) == []


def test_byte_equality_separates_fixed_and_free_architectures():
    def r(v, k, w):
        return {"variant": v, "fold": k, **{f: w for f in ("param_count", "weight_bytes", "macs",
                                                        "activation_bytes_naive", "activation_bytes_peak",
                                                        "arena_bytes", "model_bytes")}}
    rows = [r("hybrid", 0, 5), r("hybrid", 1, 5), r("int8", 0, 5), r("int8", 1, 6), r("pca", 0, 1), r("pca", 1, 2)]
    configs = {n: preset(n) for n in ("hybrid", "int8", "pca")}
    assert byte_equality(rows, configs) == (["hybrid"], ["int8"], ["pca (differ)"])


def test_plots_render_from_csv_rows(tmp_path):
    rows = [summary_row(n, preset(n), [fp(n, acc=a, weight=w, arena=ar, p50=p)], "subject-4fold")
            for n, a, w, ar, p in (("baseline", 0.88, 99_000, None, 0.15), ("hybrid", 0.87, 2800, 4100, 0.05),
                                   ("static-pool", 0.88, 98_000, 29_000, 0.03))]
    text = list(csv.DictReader(io.StringIO(summary_csv(rows))))  # plots take CSV strings too
    for fn in (plots.accuracy_vs_bytes, plots.memory_breakdown, plots.latency):
        a, b = fn(rows, "t", tmp_path / f"{fn.__name__}.png"), fn(text, "t", tmp_path / f"{fn.__name__}2.png")
        assert a.read_bytes() == b.read_bytes()  # deterministic PNG bytes
        assert mpimg.imread(a).shape[0] > 200


def test_checksums_are_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "data_1600_accel_phone.txt"
    f.write_bytes(b"1600,A,1,0.1,0.2,0.3;\n")
    cache = tmp_path / "sums.json"
    first = provenance.checksums([f], cache)
    assert first == {f.name: hashlib.sha256(f.read_bytes()).hexdigest()}
    # a cached digest is reused while size and mtime match: prove it by faking one in the cache
    doc = cache.read_text().replace(first[f.name], "0" * 64)
    cache.write_text(doc)
    assert provenance.checksums([f], cache)[f.name] == "0" * 64
    f.write_bytes(b"1600,A,1,0.1,0.2,0.4;\n")
    os.utime(f, ns=(1, 1))
    assert provenance.checksums([f], cache)[f.name] not in ("0" * 64, first[f.name])
    assert provenance.git_commit() != ""


def test_ci95_is_students_t_interval_of_the_mean():
    from hybrid.report import ci95
    m, lo, hi = ci95([0.80, 0.84, 0.88, 0.92])
    # t(0.975, 3) = 3.182446; sd (ddof 1) = 0.0516398; sqrt(4) = 2
    assert m == pytest.approx(0.86)
    assert hi - m == pytest.approx(m - lo) == pytest.approx(3.182446 * 0.0516398 / 2, rel=1e-5)
    assert ci95([0.9]) == (0.9, 0.9, 0.9)  # one score: no spread to speak of


def test_seed_interval_pools_the_first_seeds_folds_and_the_other_seeds():
    from hybrid.report import ci95, with_seed_interval
    folds = [{"variant": "a", "accuracy": 0.8}, {"variant": "a", "accuracy": 0.9}, {"variant": "b", "accuracy": 0.1}]
    seeds = [{"variant": "a", "seed": 1, "fold": 0, "accuracy": 0.85}, {"variant": "b", "seed": 1, "fold": 0,
                                                                       "accuracy": 0.2}]
    row = with_seed_interval({"variant": "a", "accuracy": 0.85}, folds, seeds, (0, 1))
    m, lo, hi = ci95([0.8, 0.9, 0.85])
    assert (row["n_seeds"], row["accuracy_seeds_folds_mean"], row["accuracy_ci95_low"], row["accuracy_ci95_high"]
            ) == (2, m, lo, hi)
    assert row["accuracy"] == 0.85  # the first seed's columns are left as measured


def test_dict_csv_writes_the_first_rows_keys_and_none_as_empty():
    text = dict_csv([{"seed": 1, "accuracy": 0.5, "note": None}, {"seed": 2, "accuracy": 0.25, "note": "x"}])
    assert list(csv.DictReader(io.StringIO(text))) == [{"seed": "1", "accuracy": "0.5", "note": ""},
                                                       {"seed": "2", "accuracy": "0.25", "note": "x"}]
    assert dict_csv([]) == ""
