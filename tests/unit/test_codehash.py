"""`hybrid.codehash`: stage and baseline cache keys follow the source code that produced the stage."""
from __future__ import annotations

import shutil

import pytest

from har.errors import HarError
from har.experiment import RunConfig
from hybrid import codehash
from hybrid.baseline import BaselineSpec
from hybrid.cache import StageCache
from hybrid.pipeline import PRESETS, stage_key
from hybrid.steps import STEP_TYPES, PruneStep, QuantStep, SystemStep

PREFIX = {"baseline": "b", "fold": 0, "seed": 0}


@pytest.fixture(autouse=True)
def fresh_digests():
    codehash.clear()  # tests edit files inside one process: never reuse a memoised digest
    yield
    codehash.clear()


def _edit(path, text="\n# edited\n"):
    path.write_text(path.read_text() + text)
    codehash.clear()


def _fake_package(root):
    pkg = root / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "sub" / "mod.py").write_text("def f():\n    return 1\n")
    (pkg / "notes.txt").write_text("not source\n")
    return pkg


def test_editing_a_source_file_changes_the_digest(tmp_path):
    pkg = _fake_package(tmp_path)
    first = codehash.source_digest(("pkg",), root=tmp_path)
    assert first == codehash.source_digest(["pkg"], root=tmp_path)  # stable, list or tuple
    (pkg / "notes.txt").write_text("changed, but not a source file\n")
    codehash.clear()
    assert codehash.source_digest(("pkg",), root=tmp_path) == first
    _edit(pkg / "sub" / "mod.py", "    # a comment only: conservative, still invalidates\n")
    second = codehash.source_digest(("pkg",), root=tmp_path)
    assert second != first
    (pkg / "sub" / "new.py").write_text("")  # an added (even empty) file counts too
    codehash.clear()
    assert codehash.source_digest(("pkg",), root=tmp_path) not in (first, second)
    # a moved file is a different tree even with the same bytes
    shutil.move(pkg / "sub" / "new.py", pkg / "new.py")
    codehash.clear()
    assert codehash.source_digest(("pkg",), root=tmp_path) not in (first, second)


def test_the_digest_is_memoised_until_cleared(tmp_path):
    pkg = _fake_package(tmp_path)
    first = codehash.source_digest(("pkg",), root=tmp_path)
    (pkg / "__init__.py").write_text("X = 2\n")
    assert codehash.source_digest(("pkg",), root=tmp_path) == first  # once per process
    codehash.clear()
    assert codehash.source_digest(("pkg",), root=tmp_path) != first


def test_a_missing_source_path_is_a_loud_error(tmp_path):
    with pytest.raises(HarError, match="does not exist"):
        codehash.source_digest(("nope",), root=tmp_path)
    with pytest.raises(HarError, match="no source list"):
        codehash.kind_digest("no-such-kind")


@pytest.fixture
def tmp_sources(tmp_path, monkeypatch):
    """The prune and quantize sources (and the common part) as tmp copies of the real files."""
    common = tmp_path / "common.py"
    shutil.copy(codehash.ROOT / "hybrid" / "execute.py", common)
    prune = tmp_path / "prune.py"
    shutil.copy(codehash.ROOT / "model_opts" / "prune.py", prune)
    quant = tmp_path / "quant"
    shutil.copytree(codehash.ROOT / "model_opts" / "quant", quant, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "COMMON", (str(common),))
    monkeypatch.setitem(codehash.SOURCES, "prune", (str(prune),))
    monkeypatch.setitem(codehash.SOURCES, "quantize", (str(quant),))
    return common, prune, quant


def _keys(steps=(PruneStep(), QuantStep(), SystemStep(static_pool=True))):
    return [stage_key(PREFIX, steps[:i + 1]) for i in range(len(steps))]


def test_editing_pruning_code_invalidates_the_prune_stage_and_every_later_one(tmp_sources):
    _, prune, _ = tmp_sources
    before = _keys()
    assert before == _keys()
    _edit(prune)
    after = _keys()
    assert all(a != b for a, b in zip(before, after))  # prune, quantize (and the uncached system stage)


def test_editing_quantization_code_invalidates_only_the_quantize_stage_onwards(tmp_sources):
    _, _, quant = tmp_sources
    before = _keys()
    _edit(quant / "ptq.py")
    after = _keys()
    assert after[0] == before[0]  # the prune stage is reused
    assert after[1] != before[1] and after[2] != before[2]


def test_editing_common_code_invalidates_every_stage(tmp_sources):
    common, _, _ = tmp_sources
    before = _keys()
    _edit(common)
    assert all(a != b for a, b in zip(before, _keys()))


def test_a_stage_finished_under_the_old_code_is_not_found_under_the_new(tmp_sources, tmp_path):
    _, _, quant = tmp_sources
    cache = StageCache(tmp_path / "cache")
    old = stage_key(PREFIX, (PruneStep(), QuantStep()))
    cache.dir(old)
    cache.finish(old, {"choices": {"method": "ptq"}})
    assert cache.done(old) == {"choices": {"method": "ptq"}}
    _edit(quant / "intref.py")
    new = stage_key(PREFIX, (PruneStep(), QuantStep()))
    assert new != old and cache.done(new) is None
    assert cache.done(old) is not None  # the old entry stays (never evicted), it is just not used


def test_the_baseline_key_follows_the_har_package(tmp_path, monkeypatch):
    fake = tmp_path / "har_copy.py"
    fake.write_text("def train():\n    return 1\n")
    monkeypatch.setattr(codehash, "BASELINE", (str(fake),))
    spec = BaselineSpec("wisdm2019", "locomotion", RunConfig(), "d" * 20, 1)
    before = spec.key()
    assert spec.to_dict()["key"] == before and spec.to_dict()["code_digest"] == codehash.baseline_digest()
    _edit(fake)
    assert spec.key() != before


def test_every_step_kind_has_sources_that_exist():
    assert set(codehash.SOURCES) == set(STEP_TYPES)
    assert "har" in codehash.COMMON and "har" in codehash.BASELINE
    for kind in STEP_TYPES:
        for entry in codehash.kind_sources(kind):
            assert (codehash.ROOT / entry).exists(), (kind, entry)
        assert len(codehash.kind_digest(kind)) == 20
    # the technique's own code is in its kind's list
    assert "model_opts/prune.py" in codehash.SOURCES["prune"]
    assert "model_opts/quant" in codehash.SOURCES["quantize"]
    assert any((codehash.ROOT / "system_opts" / "csrc").glob("*.c"))
    # different techniques, different digests; and every preset's keys can be computed
    assert len({codehash.kind_digest(k) for k in STEP_TYPES}) == len(STEP_TYPES)
    for cfg in PRESETS.values():
        for i in range(len(cfg.steps)):
            stage_key(PREFIX, cfg.steps[:i + 1])
