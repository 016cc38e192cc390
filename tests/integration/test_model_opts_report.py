"""`python -m model_opts.report --quick` end to end on the shared `trained` fixture saved like har.train."""
import json

import pytest

from har import model_io
from model_opts import report
from model_opts.quant.artifact import load as load_int8


@pytest.fixture
def model_dir(trained, tmp_path):
    f = trained.fold
    model_io.save(tmp_path / "run" / "fold0", trained.model, trained.normalizer, trained.windows.config,
                  trained.windows.classes, extra={"fold": 0, "test_users": list(f.test_users),
                                                  "val_users": list(f.val_users), "split": "subject", "seed": 0})
    return tmp_path / "run"


@pytest.mark.slow
def test_quick_report_writes_tables_and_reloadable_artifacts(model_dir, tmp_path, trained, capsys):
    out = tmp_path / "out"
    assert report.main(["--model", str(model_dir), "--out", str(out), "--quick", "--no-peers"]) == 0
    doc = json.loads((out / "model_opts.json").read_text())
    rows = {r["name"]: r for r in doc["summary"]}
    ratio = report.ReportConfig().compose_ratio
    expected = {"fp32", "int8-ptq-minmax", "int8-ptq-percentile", "int8-qat", f"pruned-l1-{ratio:g}",
                f"pruned-random-{ratio:g}", f"pruned-l1-{ratio:g}+int8-qat"}
    assert expected <= set(rows)
    assert rows["int8-ptq-minmax"]["weight_bytes_vs_fp32"] <= 0.30
    assert rows["int8-ptq-minmax"]["agreement_min"] >= 0.995
    assert rows[f"pruned-l1-{ratio:g}"]["macs_vs_fp32"] <= 0.5
    composed = rows[f"pruned-l1-{ratio:g}+int8-ptq-percentile"]
    assert composed["weight_bytes_vs_fp32"] < rows["int8-ptq-percentile"]["weight_bytes_vs_fp32"]
    assert "| int8-qat |" in (out / "model_opts.md").read_text()
    art = load_int8(out / "fold0" / "int8-qat")
    acc = float((art.predict(trained.x_test).argmax(1) == trained.y_test).mean())
    assert acc == pytest.approx(rows["int8-qat"]["accuracy_mean"])
    assert model_io.load(out / "fold0" / f"pruned-l1-{ratio:g}").model.config.widths == (10, 15, 20)


def test_missing_model_dir_exits_2_with_one_line(tmp_path, capsys):
    assert report.main(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
