"""A module written in the test (residual depthwise block, grouped conv, max / avg / global pooling,
ReLU6) imported, quantized, exported as C and run bit-exactly on Cortex-M4 and M0+ under QEMU, with
flash and RAM read from the ELF, instructions counted, and the weights' CRC enforced."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from firmware import cross, graph_export, qemu, toolchain
from model_opts.graph import intref
from model_opts.graph.fx_import import import_module
from model_opts.graph.quantize import quantize
from tests.unit.graph_models import ProbeNet, randomise_bn

TARGETS = ("cortex-m4", "cortex-m0plus")


@pytest.fixture(scope="module")
def tools():
    for tool in toolchain.TOOLS:
        toolchain.require(tool)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    graph = import_module(randomise_bn(ProbeNet()), (1, 28, 28))
    rng = np.random.default_rng(0)
    q = quantize(graph, [rng.standard_normal((64, 1, 28, 28)).astype(np.float32)])
    out = tmp_path_factory.mktemp("glib")
    meta = graph_export.convert(q, out)
    qin = rng.integers(-128, 128, (6, 28, 28, 1), dtype=np.int8)
    qin[0], qin[1] = -128, 127
    return q, out, meta, qin


@pytest.mark.parametrize("target", TARGETS)
def test_palette_weights_are_bit_exact_and_smaller(tools, exported, target, tmp_path):
    from model_opts.graph.techniques import GraphClusterConfig, cluster
    q, _, meta, qin = exported
    qc = cluster(q, GraphClusterConfig(16, 0))
    dense = graph_export.convert(qc, tmp_path / "dense", storage="dense")
    packed = graph_export.convert(qc, tmp_path / "packed", storage="auto")
    assert packed["palette4_layers"] > 0 and packed["weight_blob_bytes"] < dense["weight_blob_bytes"]
    run = graph_export.measure(tmp_path / "packed", target, qin, tmp_path / "w", count_first=0)
    np.testing.assert_array_equal(run.outputs, intref.run_int8(qc, qin))
    assert run.footprint["weights"]["flash_bytes"] == packed["weight_blob_bytes"]


@pytest.mark.parametrize("target", TARGETS)
def test_graph_firmware_is_bit_exact_and_measured(tools, exported, target, tmp_path):
    q, lib, meta, qin = exported
    run = graph_export.measure(lib, target, qin, tmp_path, count_first=2)
    np.testing.assert_array_equal(run.outputs, intref.run_int8(q, qin))
    fp = run.footprint
    assert fp["weights"]["flash_bytes"] == meta["weight_blob_bytes"]  # the blob, read from the ELF
    assert fp["arena"]["ram_bytes"] == meta["arena_bytes"] < meta["naive_arena_bytes"]
    assert fp["kernel_code"]["flash_bytes"] > 0 and 0 < run.stack_bytes < 2048
    assert len(run.instructions) == 2 and min(run.instructions) > 100_000
    again = graph_export.measure(lib, target, qin[:1], tmp_path / "again", count_first=1)
    assert again.instructions[0] == run.instructions[0]  # counts repeat to the instruction


def test_export_is_deterministic_and_the_crc_is_enforced(tools, exported, tmp_path):
    q, lib, meta, qin = exported
    again = graph_export.convert(q, tmp_path / "again")
    assert again["sha256"] == meta["sha256"]
    bad = tmp_path / "bad"
    graph_export.convert(q, bad)
    src = (bad / "har_graph_model.c").read_text()
    start = src.index("har_weights[")
    brace = src.index("{", start) + 1
    first = src.index(",", brace)
    value = int(src[brace:first].strip())
    (bad / "har_graph_model.c").write_text(src[:brace] + f"\n    {(value + 1) % 256}" + src[first:])
    res = cross.build("cortex-m4", [bad / s for s in graph_export.SOURCES], tmp_path / "bad.elf", harness="graph")
    (tmp_path / graph_export.INPUTS_FILE).write_bytes(graph_export.inputs_bytes(qin[:1]))
    assert qemu.run("cortex-m4", res.elf, tmp_path).exit_code == 2  # CRC mismatch: nothing runs
    assert json.loads((lib / "export.json").read_text())["ops"][3] == "block"


def test_exported_makefile_builds_the_static_libraries(tools, exported, tmp_path):
    import shutil
    import subprocess
    _, lib, _, _ = exported
    work = tmp_path / "lib"
    shutil.copytree(lib, work)
    done = subprocess.run(["make", "m4", "m0plus", "host"], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    assert all((work / f"libhar_graph_{t}.a").stat().st_size > 0 for t in ("m4", "m0plus", "host"))
