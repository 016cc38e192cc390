"""`python -m har.measure` on a saved fold of the shared trained CNN, WISDM-2019 locomotion, real data."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from har import model_io
from har.evaluate import score
from har.measure.__main__ import main
from har.measure.footprint import FIELDS
from har.model import predict_logits

pytest.importorskip("onnxruntime")

ARTIFACTS = ("torch-eager", "ort-fp32", "ort-int8")


@pytest.fixture(scope="module")
def run_dir(trained, tmp_path_factory):
    """A har.train-like output directory holding fold0/ saved from the shared trained model."""
    root = tmp_path_factory.mktemp("train_out")
    model_io.save(root / "fold0", trained.model, trained.normalizer, trained.windows.config, trained.windows.classes,
                  extra={"fold": 0, "test_users": list(trained.fold.test_users),
                         "val_users": list(trained.fold.val_users), "split": "subject", "seed": 0})
    (root / "metrics.json").write_text(json.dumps({"dataset": "wisdm2019"}))
    return root


@pytest.fixture(scope="module")
def measured(run_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("measure_out")
    threads = torch.get_num_threads()
    rc = main(["--model", str(run_dir), "--out", str(out), "--data-dir", str(data_dir), "--quick"])
    assert torch.get_num_threads() == threads  # restored for the rest of the session
    return rc, out


@pytest.mark.slow
def test_every_field_is_filled_for_the_baseline_and_both_peers(measured, trained):
    rc, out = measured
    assert rc == 0
    fps = json.loads((out / "footprint.json").read_text())
    assert tuple(fps) == ARTIFACTS
    for name, fp in fps.items():
        assert list(fp) == list(FIELDS)
        device = ("flash_bytes", "ram_bytes", "instructions_per_inference")  # firmware only (fp32 / ORT: none)
        missing = [f for f in FIELDS if fp[f] is None and f != "arena_bytes" and f not in device]
        assert missing == [], f"{name}: {missing}"
        assert all(fp[f] is None for f in device)
        # no artifact here has an arena plan: the rule then adds the activation peak
        assert fp["arena_bytes"] is None
        assert fp["model_bytes"] == fp["weight_bytes"] + fp["activation_bytes_peak"]
        assert fp["activation_bytes_peak"] <= fp["activation_bytes_naive"]
        assert fp["latency_ms_p50"] <= fp["latency_ms_p95"] and fp["latency_ms_iqr"] >= 0
        assert fp["n_eval_windows"] == len(trained.fold.test_idx)
    # the CLI rebuilt the same test windows: torch accuracy equals the fixture's own scoring
    want = score(trained.y_test, predict_logits(trained.model, trained.normalizer(trained.x_test)).argmax(1).numpy(), 5)
    assert fps["torch-eager"]["accuracy"] == pytest.approx(want.accuracy, abs=1e-12)
    assert abs(fps["ort-fp32"]["accuracy"] - want.accuracy) < 0.002
    assert fps["ort-int8"]["weight_bytes"] < fps["ort-fp32"]["weight_bytes"]
    assert len({fp["macs"] for fp in fps.values()}) == 1


@pytest.mark.slow
def test_csv_context_and_onnx_files_are_written(measured, trained):
    _, out = measured
    rows = list(csv.DictReader((out / "footprint.csv").open()))
    assert [r["name"] for r in rows] == list(ARTIFACTS) and list(rows[0]) == list(FIELDS)
    assert all(r["arena_bytes"] == "" and float(r["weight_bytes"]) > 0 for r in rows)
    ctx = json.loads((out / "footprint_context.json").read_text())
    assert ctx["test_users"] == list(trained.fold.test_users) and ctx["dataset"] == "wisdm2019"
    assert ctx["n_windows"]["test"] == len(trained.fold.test_idx)
    assert ctx["n_windows"]["train"] == len(trained.fold.train_idx)  # calibration pool = training users only
    for name in ("ort-fp32", "ort-int8"):
        assert (out / f"{name}.onnx").stat().st_size > 1000
    assert not list(out.glob(".*.tmp"))


def test_missing_model_dir_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "o").exists()


def test_dir_without_a_model_and_leaky_fold_are_refused(tmp_path, trained, capsys):
    assert main(["--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no saved model" in capsys.readouterr().err
    model_io.save(tmp_path / "leaky", trained.model, trained.normalizer, trained.windows.config,
                  trained.windows.classes, extra={"split": "random", "test_users": []})
    assert main(["--model", str(tmp_path / "leaky"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "names no test users" in err and err.count("\n") == 1


def test_calibration_never_sees_test_users(run_dir, data_dir):
    from har.measure.fold_data import load_fold
    fd = load_fold(run_dir, 0, data_dir)
    users_train = set(np.unique(fd.windows.user[fd.train_idx]).tolist())
    assert users_train.isdisjoint(fd.test_users) and users_train.isdisjoint(fd.val_users)
    assert len(fd.train_idx) + len(fd.val_idx) + len(fd.test_idx) == len(fd.windows)
