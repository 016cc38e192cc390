"""What a run was made from: dataset file checksums, package versions, the git commit.

`data_files(dataset, root)` lists exactly the files the loader reads (WISDM-2019: the per-subject phone
accelerometer files; WISDM v1.1: the raw file). `checksums(files, cache_file)` returns the sha256 of each;
digests are cached in a JSON file keyed by path, size and modification time, so a rerun hashes nothing
unless a file changed (same trust as the loader's own cache: an in-place edit keeping size and mtime is
not noticed). `data_digest` folds them into one hash that keys the cached baseline.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from har.cli import git_commit, versions as har_versions  # noqa: F401 -- git_commit re-exported
from har.datasets.download import sha256_file
from har.errors import BadOptionError
from har.paths import atomic_write_text

def data_files(dataset: str, root: Path) -> list[Path]:
    from har.datasets import WISDM2019_DEVICES
    if dataset in WISDM2019_DEVICES:
        from har.datasets import wisdm2019
        return wisdm2019.find_files(root, device=WISDM2019_DEVICES[dataset])
    if dataset == "wisdm":
        from har.datasets import wisdm_v11
        return [wisdm_v11.find_raw_file(root)]
    raise BadOptionError(f"hybrid.run needs a raw-signal dataset (wisdm2019, wisdm2019-watch or wisdm), not {dataset!r}")



def checksums(files: list[Path], cache_file: Path | None = None) -> dict[str, str]:
    """{file name: sha256}, reusing cached digests whose path, size and mtime still match."""
    cached: dict = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except json.JSONDecodeError:
            cached = {}
    out, changed = {}, False
    for f in files:
        st = f.stat()
        ident = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if cached.get(ident) is None:
            cached[ident] = sha256_file(f)
            changed = True
        out[f.name] = cached[ident]
    if cache_file is not None and changed:
        atomic_write_text(cache_file, json.dumps(cached, indent=1, sort_keys=True) + "\n")
    return out


def data_digest(sums: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = dict(har_versions())
    for mod in ("onnx", "onnxruntime", "memray", "torch_pruning", "threadpoolctl", "matplotlib", "safetensors",
                "pandas", "tqdm"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except (ImportError, AttributeError):
            out[mod] = None
    return out
