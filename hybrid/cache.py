"""Stage cache: finished pipeline stages (and baselines) under `<root>/<key>/`, keyed by config hash.

A stage writes its files into `dir(key)` (each file atomically), then `finish(key, meta)` writes
`stage.json` last: a stage whose `stage.json` exists is complete and is loaded instead of rebuilt, one
without it (a crash mid-stage) is rebuilt over. Keys are hashes of everything that determines the
result (baseline identity, fold, seed, step configs: `hybrid.pipeline.stage_key`), so a changed option
makes a new entry instead of reusing a stale one. The default root is `har.paths.cache_dir() / "hybrid"`.

Why hand-written and not `joblib.Memory`: joblib pickles a cached function's results (and hashes its
arguments by pickling them), and this project's rule is that weights are never unpickled. Each stage
instead stores its result in its own format (safetensors models, the int8 artifact format, ONNX files)
and a cache hit reloads it from those files, so a fresh run and a resumed run measure the same bytes.
joblib also hashes only the decorated function's own code, not the code it calls, so an edit in a
helper would silently reuse a stale entry.
Concurrent workers (`hybrid.executor`: processes, or Ray workers on several machines sharing the cache
path) take `claim(key)` around a stage: an exclusive `fcntl.flock` on `<root>/locks/<key>.lock`, so one
worker builds an entry while the others wait and then load it; the kernel drops the lock of a worker
that dies, and the next one rebuilds the unfinished entry over. On NFS the lock needs the server's lock
service (NFSv4, or v3 with lockd; not `nolock` mounts).
Limits: entries are never evicted (delete the folder to reclaim space); the key trusts that library
versions did not change results in between.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path

from har.paths import atomic_write_text, cache_dir

DONE_FILE = "stage.json"


def default_root() -> Path:
    return cache_dir() / "hybrid"


class StageCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.hits = 0
        self.misses = 0

    def dir(self, key: str) -> Path:
        path = self.root / "stages" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, key: str) -> dict | None:
        """The stage's metadata when it finished before, else None."""
        path = self.root / "stages" / key / DONE_FILE
        if not path.is_file():
            self.misses += 1
            return None
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError:
            self.misses += 1
            return None  # torn by hand; atomic writes never leave one: rebuild
        self.hits += 1
        return meta

    def finish(self, key: str, meta: dict) -> None:
        atomic_write_text(self.dir(key) / DONE_FILE, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")

    @contextlib.contextmanager
    def claim(self, key: str):
        """Hold the entry's lock (module docstring) for the duration of the block."""
        path = self.root / "locks" / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
