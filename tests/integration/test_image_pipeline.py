"""`python -m hybrid.run --dataset mnist --quick` end to end: every measured int8 variant bit-exact on
Cortex-M4 and M0+ (QEMU), TFLM and aarch64 Linux (qemu-aarch64); `hybrid.export --dataset mnist` reuses
the run's cache and writes the same library; the published test images choose nothing."""
from __future__ import annotations

import csv
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from firmware import graph_linux, toolchain
from har.datasets.images import ImageSet
from hybrid import export as export_cli, run as run_cli
from hybrid.images import ImageRunner, ImageRunSettings, load_data

DATA = Path(os.environ.get("HAR_DATA_DIR", "data"))
pytestmark = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason="MNIST not under the data root")


@pytest.fixture(scope="module")
def tools():
    for tool in toolchain.TOOLS:
        toolchain.require(tool)
    if not graph_linux.have_tools():
        if os.environ.get("CI"):
            pytest.fail(f"aarch64 tools missing: {graph_linux.INSTALL_HINT}")
        pytest.skip(f"aarch64 tools missing: {graph_linux.INSTALL_HINT}")


@pytest.fixture(scope="module")
def quick_run(tools, tmp_path_factory):
    out = tmp_path_factory.mktemp("img")
    args = ["--dataset", "mnist", "--quick", "--variants", "int8,pruned,sparse,clustered,distilled,hybrid", "--out",
            str(out / "run"), "--cache-dir", str(out / "cache"), "--data-dir", str(DATA), "--no-progress"]
    assert run_cli.main(args) == 0
    return out


def test_every_int8_variant_is_bit_exact_on_every_runtime(quick_run):
    rows = list(csv.DictReader(open(quick_run / "run" / "summary.csv")))
    assert [r["variant"] for r in rows] == ["int8", "pruned", "sparse", "clustered", "distilled", "hybrid"]
    for r in rows:
        for key in ("m4_bit_exact", "m0plus_bit_exact", "tflm_bit_exact", "aarch64_bit_exact"):
            done, total = r[key].split("/")
            assert done == total and int(total) > 0, (r["variant"], key, r[key])
        assert int(r["m4_flash_weights_bytes"]) == int(r["weight_blob_bytes"])
        assert int(r["m4_ram_arena_bytes"]) == int(r["arena_bytes"]) <= int(r["naive_arena_bytes"])
        assert int(r["m4_instructions_per_image"]) > 0
    by = {r["variant"]: r for r in rows}
    assert float(by["sparse"]["zero_weight_fraction"]) >= 0.8
    assert int(by["clustered"]["max_distinct_weights"]) <= 16 and int(by["hybrid"]["max_distinct_weights"]) <= 16
    assert int(by["pruned"]["weight_bytes"]) < int(by["int8"]["weight_bytes"])
    report = (quick_run / "run" / "report.md").read_text()
    assert "## Firmware: Cortex-M4" in report and "PTQ range rule" in report
    assert (quick_run / "run" / "pareto.png").stat().st_size > 0
    assert (quick_run / "run" / "firmware" / "hybrid" / "model.tflite").is_file()


def test_export_reuses_the_run_and_writes_the_same_library(quick_run, tmp_path):
    args = ["--dataset", "mnist", "--quick", "--variant", "hybrid", "--out", str(tmp_path / "fw"), "--cache-dir",
            str(quick_run / "cache"), "--data-dir", str(DATA), "--no-progress"]
    assert export_cli.main(args) == 0
    for name in ("har_graph_model.c", "har_graph_model.h", "model.tflite"):
        assert (tmp_path / "fw" / name).read_bytes() == (quick_run / "run" / "firmware" / "hybrid" / name).read_bytes()
    assert export_cli.main([*args[:4], "float", *args[5:]]) == 2


def test_bad_options_exit_2(tmp_path, capsys):
    assert run_cli.main(["--dataset", "mnist", "--variants", "int8,bogus", "--out", str(tmp_path)]) == 2
    assert run_cli.main(["--dataset", "mnist", "--seeds", "0,1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error:") for line in err) and len(err) == 2


def test_test_images_choose_nothing(tmp_path):
    """Noise for the test images and random test labels: every choice and validation score is unchanged."""
    settings = ImageRunSettings("mnist", tmp_path, str(DATA), quick=True, variants=("int8",),
                                cache_dir=tmp_path / "a", progress=False, firmware=False)
    data = load_data(settings)
    rng = np.random.default_rng(9)
    noisy = replace(data, test=ImageSet(rng.integers(0, 256, data.test.images.shape, dtype=np.uint8),
                                        rng.integers(0, 10, len(data.test)), data.test.classes, "noise"))
    noisy.digest = data.digest + "-noise"  # its own cache entries: everything retrains
    runs = []
    for d, cache in ((data, "a"), (noisy, "b")):
        r = ImageRunner(replace(settings, cache_dir=tmp_path / cache), d)
        q, info = r.int8("int8")
        runs.append((r.log["float"]["chosen_epoch"], r.log["float"]["val_accuracy_by_epoch"], info, q.weight_bytes(),
                     [n.weight.tobytes() for n in q.nodes if n.weight is not None]))
    assert runs[0] == runs[1]
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()
    shutil.rmtree(tmp_path / "b")


def test_cifar10_runs_end_to_end_on_official_format_batches(tools, tmp_path):
    """CIFAR-10 is not on this machine: batches in the official format (random pixels) drive the whole
    3-channel path; accuracy is meaningless here, agreement between the runtimes is not."""
    import pickle
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        batch = {b"labels": [int(v) for v in rng.integers(0, 10, 40)],
                 b"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    out = tmp_path / "run"
    assert run_cli.main(["--dataset", "cifar10", "--quick", "--variants", "int8", "--out", str(out), "--cache-dir",
                         str(tmp_path / "cache"), "--data-dir", str(tmp_path / "data"), "--no-progress"]) == 0
    row, = csv.DictReader(open(out / "summary.csv"))
    assert row["m4_bit_exact"] == row["tflm_bit_exact"] == row["aarch64_bit_exact"] == "4/4"
    assert "32, 32, 3" in (out / "firmware" / "int8" / "har_graph_model.h").read_text()
