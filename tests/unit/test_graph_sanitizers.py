"""The graph kernels (har_graph.c) under ASan + UBSan: random modules (residual, depthwise, grouped,
strided, every pooling kind, a (C, H, W) flatten, the HAR CNN) with random and saturating inputs run in
exactly-sized buffers with no finding, and their outputs equal the integer reference."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from firmware import hygiene
from har.model import CNNConfig, CompactCNN1d
from model_opts.graph import intref
from model_opts.graph.fx_import import import_module
from model_opts.graph.quantize import quantize
from model_opts.graph.techniques import GraphClusterConfig, cluster
from system_opts import graph_program
from system_opts.graph_c import CSRC
from tests.unit.graph_models import FlattenNet, ProbeNet, randomise_bn

DRIVER = hygiene.FUZZ_SOURCE.with_name("sanitize_har_graph.c")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    try:
        return hygiene.sanitizer_build([DRIVER, CSRC / "har_graph.c"], tmp_path_factory.mktemp("san") / "drv",
                                       include_dirs=[CSRC])
    except hygiene.BuildError as e:  # no sanitizer runtime on this machine
        pytest.skip(str(e))


def _program_file(prog, qin) -> bytes:
    head = np.array([len(prog.ops), len(prog.blob), prog.arena_bytes, prog.input_offset, prog.input_bytes,
                     prog.output_offset, prog.output_bytes, len(qin)], "<u4")
    return head.tobytes() + prog.ops.astype("<i4").tobytes() + prog.blob + qin.astype(np.int8).tobytes()


CASES = [("probe", lambda s: randomise_bn(ProbeNet(), s), (1, 28, 28)), ("flatten", lambda s: FlattenNet(), (3, 8, 8)),
         ("har", lambda s: randomise_bn(CompactCNN1d(CNNConfig(separable=True), seed=s), s), (6, 80)),
         ("strided", lambda s: nn.Sequential(nn.Conv2d(3, 6, 5, stride=3, padding=2), nn.ReLU6(), nn.AvgPool2d(3, 2),
                                             nn.Conv2d(6, 12, 3, groups=3, padding=1), nn.Flatten(), nn.Linear(72, 4)), (3, 17, 19))]


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_graph_kernels_have_no_finding_and_match_the_reference(driver, tmp_path, name, make, shape, seed):
    torch.manual_seed(seed)
    model = make(seed).eval()
    rng = np.random.default_rng(seed)
    q = quantize(import_module(model, shape), [rng.standard_normal((32, *shape)).astype(np.float32) * (1 + seed)])
    if seed == 1:  # clustered: every layer stored as a 4-bit palette (decode into an exactly-sized scratch row)
        q = cluster(q, GraphClusterConfig(16, seed))
    qin = rng.integers(-128, 128, (8, *q.input.shape), dtype=np.int8)
    qin[0], qin[1] = -128, 127
    prog = graph_program.build(q)
    assert prog.summary()["palette4_layers"] == (sum(n.weight is not None for n in q.nodes) if seed == 1 else 0)
    (tmp_path / "p.bin").write_bytes(_program_file(prog, qin))
    done = subprocess.run([str(driver), str(tmp_path / "p.bin"), str(tmp_path / "o.bin")], capture_output=True,
                          text=True, timeout=300, env=hygiene.sanitizer_env())
    assert done.returncode == 0, done.stderr[-2000:]
    out = np.frombuffer((tmp_path / "o.bin").read_bytes(), np.int8).reshape(len(qin), -1)
    np.testing.assert_array_equal(out, intref.run_int8(q, qin).reshape(len(qin), -1))


def test_graph_fuzz_target_finds_nothing_and_catches_a_planted_overrun(tmp_path):
    try:
        clean = hygiene.run_fuzz(20_000, seed=3, jobs=2, kernels="graph")
    except hygiene.BuildError as e:
        pytest.skip(str(e))
    assert clean.findings == 0 and clean.runs == 20_000
    planted = tmp_path / "k"
    planted.mkdir()
    for f in CSRC.glob("*.h"):
        (planted / f.name).write_bytes(f.read_bytes())
    src = (CSRC / "har_graph.c").read_text()
    bug = src.replace("for (int32_t k = 0; k < op[8]; k++) y[k] = (int8_t)clamp8(x[k], op[23], op[24]);",
                      "for (int32_t k = 0; k <= op[8]; k++) y[k] = (int8_t)clamp8(x[k], op[23], op[24]);")
    assert bug != src
    (planted / "har_graph.c").write_text(bug)
    found = hygiene.run_fuzz(5_000, seed=3, kernel_dir=planted, kernels="graph", max_findings=3)
    assert found.findings >= 1 and any("har_graph.c" in s for s in found.sites), found


def test_hygiene_cli_fuzzes_the_graph_kernels(capsys):
    assert hygiene.main(["--kernels", "graph", "--runs", "2000", "--seed", "1"]) == 0
    assert "har-fuzz: 2000 runs" in capsys.readouterr().out
    assert hygiene.main(["--kernels", "nope", "--runs", "1"]) == 2
