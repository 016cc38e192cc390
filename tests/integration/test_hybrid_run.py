"""End to end: `python -m hybrid.run --quick` on the real data, its outputs, a same-seed rerun, failures, the
budget searches and the export CLI on its cache (the CLI checks that need no cache: `test_hybrid_run_cli.py`)."""
from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import pytest

from firmware import toolchain
from hybrid import device_budget, execute, run
from hybrid import export as hybrid_export
from hybrid.pipeline import VARIANTS
from hybrid.report import SUMMARY_COLUMNS, VOLATILE_COLUMNS

pytestmark = pytest.mark.slow

REQUIRED_COLUMNS = ("variant", "accuracy", "macro_f1", "weight_bytes", "arena_bytes", "model_bytes",
                    "peak_heap_bytes", "allocations_per_inference", "latency_ms_p50", "macs", "split")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _args(out, cache, data_dir, *extra):
    return ["--quick", "--out", str(out), "--cache-dir", str(cache), "--data-dir", str(data_dir), "--threads", "1",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def quick_run(data_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("hybrid")
    cache, out = base / "cache", base / "run1"
    assert run.main(_args(out, cache, data_dir)) == 0
    return base, cache, out


def test_quick_run_writes_every_output(quick_run, data_dir):
    _, _, out = quick_run
    rows = _rows(out / "summary.csv")
    assert [r["variant"] for r in rows] == list(VARIANTS)
    assert set(REQUIRED_COLUMNS) <= set(rows[0]) and tuple(rows[0]) == SUMMARY_COLUMNS
    assert {r["split"] for r in rows} == {"subject-fold0-quick"} and {r["n_folds"] for r in rows} == {"1"}
    by = {r["variant"]: r for r in rows}
    h, b = by["hybrid"], by["baseline"]
    assert int(h["model_bytes"]) <= 8 * 1024 and float(h["allocations_per_inference"]) == 0
    assert int(h["model_bytes"]) == int(h["weight_bytes"]) + int(h["arena_bytes"])
    assert b["arena_bytes"] == "" and int(b["model_bytes"]) > 10 * int(h["model_bytes"])
    assert by["model-all"]["accuracy"] == h["accuracy"]  # same int8 program, executors bit-exact
    for name in ("flat", "static-pool", "lazy-weights", "system-all", "ort-fp32"):
        assert abs(float(by[name]["accuracy"]) - float(b["accuracy"])) < 0.002, name
    assert all(0.2 < float(r["accuracy"]) <= 1 and r["latency_ms_p50"] for r in rows)
    md = (out / "report.md").read_text()
    assert "QUICK RUN" in md and "## Protocol" in md and "Choices made on validation users" in md
    for png in ("accuracy_vs_bytes.png", "memory_breakdown.png", "latency.png"):
        assert f"]({png})" in md
        img = mpimg.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    for name in VARIANTS:
        assert (out / "flamegraphs" / f"{name}.html").stat().st_size > 100_000
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and meta["seed"] == 0 and meta["git_commit"]
    assert meta["versions"]["onnxruntime"] and meta["versions"]["torch"]
    assert len(meta["data"]["sha256"]) == 22 and all(len(v) == 64 for v in meta["data"]["sha256"].values())
    choices = meta["choices_on_validation_users"]
    assert choices["int8"]["0"]["quantize"]["method"] in ("ptq", "qat")
    assert 0 <= choices["cascade"]["0"]["cascade"]["threshold"] <= 1.01
    assert set(meta["variants"]) == set(VARIANTS)
    assert [r["variant"] for r in _rows(out / "folds.csv")] == list(VARIANTS)


def test_quick_run_measures_every_int8_variant_as_firmware(quick_run):
    """Every int8 variant gets Cortex-M4 flash / RAM / instructions from its ELF and emulator, bit-exact."""
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        toolchain.require(tool)
    _, _, out = quick_run
    by = {r["variant"]: r for r in _rows(out / "summary.csv")}
    for name in ("int8", "model-all", "hybrid"):
        assert int(by[name]["flash_bytes"]) > int(by[name]["weight_bytes"]) and int(by[name]["ram_bytes"]) > 0
        assert float(by[name]["instructions_per_inference"]) > int(by[name]["macs"])
    assert by["baseline"]["flash_bytes"] == "" and by["pca"]["instructions_per_inference"] == ""
    fw = json.loads((out / "firmware" / "hybrid" / "fold0" / "firmware.json").read_text())
    assert fw["host_mismatched_windows"] == 0 and fw["tflm"]["mismatched_windows"] == 0
    assert {t: v["mismatched_windows"] for t, v in fw["targets"].items()} == {"cortex-m4": 0, "cortex-m0plus": 0}
    md = (out / "report.md").read_text()
    assert "## Firmware (Cortex-M4F and Cortex-M0+, emulated)" in md and "| firmware target | met |" in md
    img = mpimg.imread(out / "firmware_memory.png")
    assert "](firmware_memory.png)" in md and img.shape[0] > 300


def test_rerun_with_the_same_seed_reproduces_every_non_volatile_column(quick_run, data_dir):
    base, cache, out = quick_run
    out2 = base / "run2"
    assert run.main(_args(out2, cache, data_dir, "--no-flamegraphs")) == 0
    first, second = _rows(out / "summary.csv"), _rows(out2 / "summary.csv")
    stable = [c for c in SUMMARY_COLUMNS if c not in VOLATILE_COLUMNS]
    assert [{c: r[c] for c in stable} for r in first] == [{c: r[c] for c in stable} for r in second]
    for rows in (first, second):  # volatile for allocating artifacts only: a zero-allocation one stays 0
        zero = {r["variant"]: float(r["allocations_per_inference"]) for r in rows}
        assert zero["static-pool"] == zero["system-all"] == zero["hybrid"] == 0
    assert not (out2 / "flamegraphs").exists()


def test_failing_stage_exits_2_with_one_line_and_keeps_finished_rows(quick_run, data_dir, monkeypatch, capsys):
    base, cache, _ = quick_run

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure\nsecond line")
    monkeypatch.setitem(execute._RUNNERS, "pca", boom)
    out = base / "fail"
    assert run.main(_args(out, cache, data_dir, "--variants", "baseline,pca")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "variant pca, fold 0 failed: simulated failure" in err[0]
    assert [r["variant"] for r in _rows(out / "summary.csv")] == ["baseline"]
    assert "RuntimeError" in (out / "error.log").read_text()
    assert json.loads((out / "run.json").read_text())["status"] == "running"


def test_budget_that_nothing_fits_says_so_and_exits_0(quick_run, data_dir, capsys):
    base, cache, _ = quick_run
    out = base / "budget"
    assert run.main(_args(out, cache, data_dir, "--budget-kib", "1")) == 0
    printed = capsys.readouterr().out
    assert "budget 1 KiB (1,024 B): no variant fits" in printed
    rows = _rows(out / "budget.csv")
    assert len(rows) == 18 and not any(r["fits"] == "True" for r in rows)
    assert not (out / "summary.csv").exists()  # --budget-kib alone runs no variant


def test_firmware_budget_trains_fitting_points_and_scores_only_the_winner_on_test_users(quick_run, data_dir):
    from firmware import toolchain
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        toolchain.require(tool)
    base, cache, _ = quick_run
    out = base / "device-budget"
    assert run.main(_args(out, cache, data_dir, "--flash-kib", "8", "--ram-kib", "4", "--no-flamegraphs")) == 0
    rows = _rows(out / "device_budget.csv")
    assert {r["recipe"] for r in rows} == set(device_budget.RECIPES)
    trained = [r for r in rows if r["trained"] == "True"]
    assert trained and all(r["measured_flash_bytes"] and r["val_accuracy"] for r in trained)
    fitting = [r for r in trained if r["fits"] == "True"]
    assert all(int(r["measured_flash_bytes"]) <= 8 * 1024 and int(r["measured_ram_bytes"]) <= 4 * 1024 for r in fitting)
    chosen = [r for r in rows if r["chosen"] == "True"]
    assert len(chosen) == 1 and [r for r in rows if r["test_accuracy"]] == chosen  # one test score
    assert float(chosen[0]["val_accuracy"]) == max(float(r["val_accuracy"]) for r in fitting)
    by = {r["recipe"]: r for r in rows}  # one architecture: its size depends on the storage only
    assert by["ptq"]["flash_bytes"] == by["qat"]["flash_bytes"] == by["kd+qat"]["flash_bytes"]
    assert by["cluster16"]["flash_bytes"] == by["kd+cluster16"]["flash_bytes"] != by["ptq"]["flash_bytes"]
    assert int(by["cluster16-direct"]["ram_bytes"]) < int(by["cluster16"]["ram_bytes"])  # no decoded-layer slot
    for r in trained:  # sized before training, re-measured after: dense bytes are the architecture's
        if r["storage"] == "dense":
            assert (r["measured_flash_bytes"], r["measured_ram_bytes"]) == (r["flash_bytes"], r["ram_bytes"])
    assert {r["fold"] for r in rows} == {"0"}  # --quick: the run's one fold
    meta = json.loads((out / "run.json").read_text())
    (choice,) = meta["device_budget"]["choices"]
    assert choice["winner"]["recipe"] == chosen[0]["recipe"] and choice["fold"] == 0
    assert 0 < choice["baseline_test_accuracy"] <= 1 and "the fp32 baseline scores" in meta["device_budget"]["line"]
    summary = meta["device_budget"]["summary"]
    assert summary["test_accuracy_mean"] == choice["winner"]["test_accuracy"]
    assert summary["met"] == (summary["test_accuracy_mean"] >= summary["baseline_test_accuracy_mean"] - 0.01)
    assert "Firmware budget search" in (out / "report.md").read_text()


def test_export_cli_writes_the_variants_own_storage_or_the_one_asked_for(quick_run, data_dir, tmp_path, capsys):
    _, cache, _ = quick_run
    common = ["--quick", "--cache-dir", str(cache), "--data-dir", str(data_dir), "--target", "host", "--no-progress"]
    for variant, storage, expected in (("clustered", None, "palette"), ("sparse", None, "csr"),
                                       ("clustered", "dense", "dense"), ("hybrid", None, "dense")):
        out = tmp_path / f"{variant}-{storage}"
        extra = ["--storage", storage] if storage else []
        assert hybrid_export.main(["--variant", variant, "--out", str(out), *common, *extra]) == 0
        manifest = json.loads((out / "export.json").read_text())
        assert manifest["storage"] == expected and {v["format"] for v in manifest["layers"].values()} == {expected}
    for bad, message in ((["--variant", "baseline"], "does not end on an int8 program"),
                         (["--variant", "hybrid", "--storage", "zip"], "unknown weight storage")):
        assert hybrid_export.main([*bad, "--out", str(tmp_path / "bad"), *common]) == 2
        assert message in capsys.readouterr().err
