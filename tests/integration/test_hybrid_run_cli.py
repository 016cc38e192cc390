"""`python -m hybrid.run` from the command line without the quick run's cache: bad options and missing data
exit 2 with one line; the watch dataset runs with its own files and defaults. Apart from
`test_hybrid_run.py` so that a second test process runs these while the first builds the quick run."""
from __future__ import annotations

import json

import pytest

from hybrid import run
from tests.integration.test_hybrid_run import _args, _rows

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("extra, message", [
    (["--variants", "nope"], "unknown variant 'nope'"),
    (["--flash-kib", "6"], "give --flash-kib and --ram-kib together"),
    (["--flash-kib", "6", "--ram-kib", "0"], "must be > 0"),
    (["--budget-kib", "-1"], "--budget-kib must be > 0"),
    (["--dataset", "wisdm-features"], "raw-signal dataset"),
    (["--seed", "x"], "invalid int value"),
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--workers", "0"], "workers >= 1"),
    (["--seeds", "1,1"], "--seeds needs distinct integers"),
    (["--seeds", "0,a"], "--seeds takes comma-separated integers"),
    (["--seed", "3", "--seeds", "0,1"], "give --seed or --seeds"),
    (["--budget-folds", "0"], "--budget-folds applies to the firmware budget search"),
    (["--flash-kib", "6", "--ram-kib", "2", "--budget-folds", "0,0"], "distinct fold numbers"),
    (["--flash-kib", "6", "--ram-kib", "2", "--budget-folds", "0,x"], "comma-separated fold numbers"),
    (["--flash-kib", "6", "--ram-kib", "2", "--budget-folds", "0,3"], "--quick runs fold 0 only"),
])
def test_bad_options_exit_2_with_one_line(extra, message, tmp_path, data_dir, capsys):
    assert run.main(_args(tmp_path / "o", tmp_path / "c", data_dir, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_data_exits_2_with_one_line(tmp_path, capsys):
    assert run.main(["--quick", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "nothing"),
                     "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no WISDM-2019" in err[0]


def test_watch_dataset_runs_with_its_own_files_and_defaults(data_dir, tmp_path):
    out = tmp_path / "watch"
    assert run.main(_args(out, tmp_path / "c", data_dir, "--dataset", "wisdm2019-watch", "--variants",
                          "baseline,hybrid", "--no-flamegraphs")) == 0
    assert [r["variant"] for r in _rows(out / "summary.csv")] == ["baseline", "hybrid"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["data"]["dataset"] == "wisdm2019-watch" and len(meta["data"]["sha256"]) == 46
    assert all(name.endswith("_accel_watch.txt.xz") for name in meta["data"]["sha256"])
    assert "watch accelerometer" in (out / "report.md").read_text()
