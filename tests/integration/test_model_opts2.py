"""End to end: `python -m model_opts.report2` over a one-fold model dir, and the contrastive fold runner."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from har import model_io
from har.errors import BadOptionError
from har.measure.fold_data import load_fold
from har.windows import to_channels
from model_opts import report2
from model_opts.contrastive import HeadConfig, PretrainConfig
from model_opts.contrastive.experiment import ContrastiveRunConfig, run_fold

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    f = trained.fold
    model_io.save(d / "fold0", trained.model, trained.normalizer, trained.windows.config, trained.windows.classes,
                  extra={"fold": 0, "test_users": list(f.test_users), "val_users": list(f.val_users), "seed": 0})
    return d


def test_report2_cli_writes_pca_and_cascade_tables(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = report2.main(["--model", str(model_dir), "--out", str(out), "--quick", "--parts", "pca,features,cascade",
                       "--data-dir", str(data_dir), "--latency-windows", "20"])
    assert rc == 0
    res = json.loads((out / "report2.json").read_text())
    rows = res["pca_windows"][0]["rows"]
    assert [r["k"] for r in rows] == [4, 16, "full"]
    assert rows[0]["projection_bytes"] == (4 * 480 + 480) * 4 and rows[-1]["projection_bytes"] == 0
    assert all(0.2 < r["accuracy"] <= 1.0 for r in rows)
    assert len(res["pca_features"]) == 1 and res["pca_features_summary"]["full_accuracy"] > 0.4
    casc = res["cascade"][0]["rows"]
    assert casc[0]["threshold"] == 0.0 and casc[0]["test_stage2_fraction"] == 0.0
    assert casc[0]["peak_resident_weight_bytes"] < casc[-1]["peak_resident_weight_bytes"]
    assert casc[-1]["test_stage2_fraction"] == 1.0
    fracs = [r["test_stage2_fraction"] for r in casc]
    assert fracs == sorted(fracs)  # a higher threshold never sends fewer windows to stage 2
    chosen = res["cascade_summary"]["chosen"][0]
    assert chosen["threshold"] in report2.THRESHOLDS
    md = (out / "report2.md").read_text()
    assert "Smallest k within 2 pp" in md and "Threshold chosen on validation users" in md
    assert (out / "cascade" / "fold0" / "stage2.harw").is_file()


def test_report2_bad_part_exits_2(model_dir, tmp_path, capsys):
    assert report2.main(["--model", str(model_dir), "--out", str(tmp_path), "--parts", "nope"]) == 2
    assert "unknown part" in capsys.readouterr().err


def test_contrastive_fold_runner_rows(model_dir, data_dir, recording):
    fd = load_fold(model_dir, 0, data_dir)
    gather = fd.windows.start[:, None] + np.arange(fd.windows.config.length)[None, :]
    raw = to_channels(recording.xyz[gather], "raw")
    short = HeadConfig(mode="finetune", epochs=1, patience=1)
    cfg = ContrastiveRunConfig(pretrain=PretrainConfig(widths=(8, 12), epochs=1), fractions=(0.05, 1.0), label_draws=(2, 1), head=short,
                               full_head=short, linear=replace(short, mode="linear"), student_widths=(8,),
                               student_pretrain_epochs=1)
    res = run_fold(fd, raw, cfg, fold=0)
    arms = [(r["arm"], r["label_fraction"]) for r in res["rows"]]
    assert ("contrastive-finetune", 0.05) in arms and ("scratch", 0.05) in arms
    assert ("student-contrastive-distill", 1.0) in arms and ("student-distill", 1.0) in arms
    assert arms.count(("scratch", 0.05)) == 2 and arms.count(("scratch", 1.0)) == 1  # two label draws at 5 %
    n5 = next(r["n_labels"] for r in res["rows"] if r["label_fraction"] == 0.05)
    with pytest.raises(BadOptionError):
        replace(cfg, label_draws=(1,))
    assert n5 == round(0.05 * len(fd.train_idx))
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["weight_bytes"] > 0 for r in res["rows"])
    assert len(res["pretrain_history"]) == 1
