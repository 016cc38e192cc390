import json

import numpy as np
import pytest

from har.train import main

FAST = ["--quick", "--epochs", "1", "--folds", "2", "--no-progress"]


def _err_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["--dataset", "mnist"], "unknown dataset"),
    (["--activities", "dancing"], "unknown activity set"),
    (["--channels", "polar"], "invalid choice"),
])
def test_bad_options_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = _err_line(capsys)
    assert needle in err and len(err.splitlines()) == 1


def test_missing_data_dir_names_the_expected_path(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = _err_line(capsys)
    assert str(tmp_path / "nowhere" / "wisdm2019" / "phone_accel") in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(data_dir, tmp_path):
    for name in ("a", "b"):
        assert main(FAST + ["--data-dir", str(data_dir), "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    assert a == b
    assert a["split"] == "subject" and not a["leaky"] and a["dataset"] == "wisdm2019"
    assert set(a["models"]) == {"cnn", "rf", "rf-raw"}  # the forest on the CNN's channels, and on raw axes
    for key in ("accuracy_mean", "macro_f1_mean", "accuracy_per_fold"):
        assert key in a["models"]["cnn"] and key in a["models"]["rf"] and key in a["models"]["rf-raw"]
    assert a["models"]["rf"] != a["models"]["rf-raw"]
    assert a["val_users"] == 4 and a["window"]["channels"] != "raw"
    md = (tmp_path / "a" / "results.md").read_text()
    assert "python -m har.train " in md and " --quick" in md and "--epochs 1" in md  # the command that reruns it
    assert "commit" in md and "RandomForest" in md
    assert a["models"]["cnn"]["param_count"] > 0
    assert (tmp_path / "a" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "a" / "fold1" / "model.safetensors").is_file()
    users = [set(u) for u in a["fold_test_users"]]
    assert not (users[0] & users[1])


@pytest.mark.slow
def test_random_split_is_labelled_leaky(data_dir, tmp_path, capsys):
    assert main(FAST + ["--split", "random", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["split"] == "random" and m["leaky"] is True
    assert "leaky" in capsys.readouterr().out


def test_features_dataset_trains_mlp_and_rf(data_dir, tmp_path):
    assert main(FAST + ["--dataset", "wisdm-features", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["models"]) == {"mlp", "rf"} and m["n_windows"] == 5418
    assert m["models"]["rf"]["accuracy_mean"] > 0.5  # 6 classes: chance is ~0.38 (walking share)


def test_v11_raw_dataset_runs_on_an_exact_format_fixture(tmp_path):
    rng = np.random.default_rng(0)
    lines, t = [], 1_000_000_000
    for user in (3, 7, 11, 20):
        for act, offset in (("Walking", 0.0), ("Jogging", 3.0), ("Sitting", -6.0)):
            for _ in range(120):
                x, y, z = rng.normal(size=3) + offset
                lines.append(f"{user},{act},{t},{x:.6f},{y + 9.8:.6f},{z:.6f};")
                t += 50_000_000
    lines.insert(5, "3,Walking,123,,1.0,2.0;")  # one broken record, counted
    (tmp_path / "wisdm").mkdir()
    (tmp_path / "wisdm" / "WISDM_ar_v1.1_raw.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(FAST + ["--dataset", "wisdm", "--data-dir", str(tmp_path), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["rejected_records"] == {"empty_field": 1}
    assert m["classes"][:2] == ["Walking", "Jogging"]


@pytest.mark.slow
def test_watch_dataset_trains_on_its_46_subjects(data_dir, tmp_path):
    assert main(FAST + ["--dataset", "wisdm2019-watch", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["dataset"] == "wisdm2019-watch" and m["classes"][:2] == ["walking", "jogging"]
    assert sum(len(u) for u in m["fold_test_users"]) == 46
    assert m["models"]["cnn"]["accuracy_mean"] > 0.3  # 1 epoch, 2 folds: a smoke test
