"""Digests of the source code behind each cached stage, so edited code never reuses a stale stage.

Steps:
1. `source_digest(paths)`: sha256 over every source file (`SUFFIXES`: .py, the C kernels under
   `system_opts/csrc`, package data such as `har/defaults.json`) of the given files / package trees,
   relative to `ROOT`: for each entry in the given order, its files sorted by relative path, each hashed
   as (entry + relative path, byte length, bytes).
   Computed once per process per tuple of paths (`clear()` empties that memo, e.g. in tests).
2. `SOURCES` maps each step kind (`hybrid.steps.STEP_TYPES`) to the trees that determine its result; every
   kind also depends on `COMMON`: the `har` package (model, training loop, windows, splits, measure), the
   step runner `hybrid/execute.py`, `hybrid/pipeline.py` and the step configs `hybrid/steps.py`
   (`SKIP_FILES`: `har/defaults.json`, whose values reach the keys through the configs anyway).
   `kind_digest(kind)` is the digest of `COMMON` + that kind's trees.
3. `hybrid.pipeline.stage_key` puts `kind_digest` of every step in `steps[:i+1]` into stage i's key, so an
   edit to quantization code invalidates the quantize stage and all later ones, not an earlier prune stage;
   `hybrid.baseline.BaselineSpec.key` puts `baseline_digest()` (`BASELINE`: `har` + `hybrid/baseline.py`) into the
   baseline's key, and stage keys hold the baseline key, so a `har` edit rebuilds everything.
Limits: library versions (torch, numpy, onnxruntime, ...) are not hashed (they are recorded in run.json);
any byte change invalidates, comments and whitespace included (conservative); only the trees listed here are
hashed, so code reached outside them (e.g. a new helper package) must be added to `SOURCES`. A listed path
that does not exist raises `HarError` (the table is stale) instead of silently hashing less.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from har.errors import HarError

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = (".py", ".c", ".h", ".json")
COMMON: tuple[str, ...] = ("har", "hybrid/execute.py", "hybrid/pipeline.py", "hybrid/steps.py")
BASELINE: tuple[str, ...] = ("har", "hybrid/baseline.py")  # train_fold_cnn, everything it reaches, ensure_fold
# generated data whose values already reach every key through the configs (RunConfig.for_dataset): hashing
# it too would rebuild every dataset's stages whenever one dataset's defaults (or their stamp) are rewritten
SKIP_FILES = ("har/defaults.json",)
SOURCES: dict[str, tuple[str, ...]] = {
    "pca": ("model_opts/__init__.py", "model_opts/pca.py"),
    "contrastive": ("model_opts/__init__.py", "model_opts/contrastive"),
    "prune": ("model_opts/__init__.py", "model_opts/prune.py"),
    "quantize": ("model_opts/__init__.py", "model_opts/quant"),
    "onnxruntime": ("har/measure/peers.py", "har/measure/onnx_export.py", "har/measure/onnx_graph.py"),
    # stage 2 is stored with har.weightfile (hashed with har/); report2 holds select_threshold
    "cascade": ("model_opts/__init__.py", "model_opts/cascade.py", "model_opts/report2.py"),
    "distill": ("model_opts/__init__.py", "model_opts/distill.py", "model_opts/prune.py"),  # prune: target_widths
    "separable": ("model_opts/__init__.py", "model_opts/separable.py"),
    # both fine-tune the int8 simulation: the quantization package is part of what they build
    "cluster": ("model_opts/__init__.py", "model_opts/cluster.py", "model_opts/quant"),
    # sparsity distils through distill.with_teacher and records CSR sizes (model_opts/csr.py)
    "sparsity": ("model_opts/__init__.py", "model_opts/sparsity.py", "model_opts/quant", "model_opts/distill.py",
                 "model_opts/prune.py", "model_opts/csr.py"),
    # not cached (it only names a storage format); listed so later keys cover the code that stores it
    "encode": ("firmware/storage.py", "model_opts/compress", "model_opts/csr.py"),
    "system": ("system_opts",),  # not cached (hybrid.execute), listed so every key covers its code
}


def _files(base: Path) -> list[Path]:
    if base.is_file():
        return [base]
    if base.is_dir():
        skip = {(ROOT / f).resolve() for f in SKIP_FILES}
        return sorted(p for p in base.rglob("*")
                      if p.suffix in SUFFIXES and p.is_file() and "__pycache__" not in p.parts
                      and p.resolve() not in skip)
    raise HarError(f"hybrid.codehash: source path {base} does not exist; update hybrid.codehash.SOURCES")


@functools.lru_cache(maxsize=None)
def _digest(paths: tuple[str, ...], root: str) -> str:
    h = hashlib.sha256()
    for entry in paths:
        base = Path(root) / entry  # an absolute entry (tests) replaces the root
        for f in _files(base):
            rel = f.relative_to(base).as_posix() if f != base else ""
            data = f.read_bytes()
            h.update(f"{entry}/{rel}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()[:20]


def source_digest(paths: tuple[str, ...] | list[str], root: str | Path | None = None) -> str:
    """Digest of the source files under `paths` (files or directories, relative to `root`, default `ROOT`)."""
    return _digest(tuple(str(p) for p in paths), str(root if root is not None else ROOT))


def clear() -> None:
    """Forget the per-process digests (after editing files in the same process, e.g. in tests)."""
    _digest.cache_clear()


def kind_sources(kind: str) -> tuple[str, ...]:
    if kind not in SOURCES:
        raise HarError(f"hybrid.codehash: no source list for step kind {kind!r}; add it to SOURCES")
    return tuple(dict.fromkeys(COMMON + SOURCES[kind]))  # drop repeats, keep order


def kind_digest(kind: str) -> str:
    """Digest of the code that determines the result of a step of this kind."""
    return source_digest(kind_sources(kind))


def baseline_digest() -> str:
    """Digest of the code that trains the baseline (`har.experiment.train_fold_cnn` and all of `har`)."""
    return source_digest(BASELINE)


__all__ = ["ROOT", "COMMON", "BASELINE", "SOURCES", "source_digest", "clear", "kind_sources", "kind_digest",
           "baseline_digest"]
