"""Lazy weight loading: residency policies over the verified, memory-mapped weight file (`har.weightfile`).

The file format, its writer (`save_weights`, `encode`) and its checks live in `har.weightfile` (below
every package, so `model_opts` stores weights with it too); they are re-exported here. This module adds
what to keep resident, and the accounting of it.
Steps of `open_weights(path, LazyConfig(policy, verify))`:
1. Open the file with `har.weightfile.WeightFile`: structural checks, read-only mmap, and with
   `verify=True` (default) every tensor's sha256 and every padding byte checked, one tensor at a time
   (refused with WeightFileError before any inference).
2. Serve `acquire(names)` / `release(names)` by policy: `eager` materialises every tensor at open and
   never releases; `lazy` materialises a tensor on its first acquire and keeps it; `lazy-release`
   materialises on acquire and drops it on release.
"Materialised" = a read-only numpy view over the mapping has been handed out and not yet released.
`resident_bytes` is the sum of `nbytes` of materialised tensors, and `high_water_bytes` its maximum since
open (verification included: one tensor at a time) or `reset_high_water`; the parsed header
(`header_bytes`) stays in memory the whole time and is reported separately. On release the tensor's pages
are advised away (`WeightFile.advise_away`) so the OS may drop them from this process's resident set;
re-acquiring faults them back in from the page cache. Known limits: the accounting is by tensor, not by
page (the OS maps whole 4 KiB pages, and neighbouring small tensors share pages); a view kept by a caller
after release still reads valid bytes but is no longer counted; the file must not be modified while open.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from har.errors import BadOptionError
from har.weightfile import ALIGN_BYTES, DTYPES, MAGIC, VERSION, TensorEntry, WeightFile, WeightFileError, encode, \
    save_weights

__all__ = ["ALIGN_BYTES", "DTYPES", "MAGIC", "VERSION", "POLICIES", "LazyConfig", "LazyWeights", "TensorEntry",
           "WeightFileError", "encode", "open_weights", "save_weights"]
POLICIES = ("eager", "lazy", "lazy-release")


@dataclass(frozen=True)
class LazyConfig:
    policy: str = "lazy-release"
    verify: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise BadOptionError(f"unknown weight policy {self.policy!r}; choose one of {list(POLICIES)}")

    def to_dict(self) -> dict:
        return asdict(self)


class LazyWeights:
    """A verified, memory-mapped weight file serving tensors by policy; see the module docstring."""

    def __init__(self, path: str | os.PathLike, config: LazyConfig = LazyConfig()):
        self.path = Path(path)
        self.config = config
        self.file = WeightFile(self.path, verify=config.verify)
        self.metadata: dict = self.file.metadata
        self.entries: dict[str, TensorEntry] = self.file.entries
        self.header_bytes = self.file.header_bytes
        self._live: dict[str, np.ndarray] = {}
        self.resident_bytes = 0
        self.high_water_bytes = self.file.verified_peak_bytes  # verification read one tensor at a time
        self.n_materialisations = 0
        if config.policy == "eager":
            self.acquire(list(self.entries))

    def _materialise(self, name: str) -> np.ndarray:
        arr = self._live.get(name)
        if arr is None:
            arr = self.file.view(name)
            self._live[name] = arr
            self.n_materialisations += 1
            # the entry's stored int: arr.nbytes would build a new int object on every lazy re-acquire
            self.resident_bytes += self.file.entries[name].nbytes
            self.high_water_bytes = max(self.high_water_bytes, self.resident_bytes)
        return arr

    def acquire(self, names: Sequence[str]) -> list[np.ndarray]:
        return [self._materialise(n) for n in names]

    def release(self, names: Sequence[str]) -> None:
        if self.config.policy != "lazy-release":
            return
        for n in names:
            if self._live.pop(n, None) is not None:
                self.resident_bytes -= self.entries[n].nbytes
                self.file.advise_away(n)

    def reset_high_water(self) -> None:
        self.high_water_bytes = self.resident_bytes

    @property
    def total_bytes(self) -> int:
        return self.file.total_bytes

    def arrays(self) -> dict[str, np.ndarray]:
        """Every tensor (materialised for the caller, then released by policy): for inspection, not inference."""
        out = {}
        for name in self.entries:
            out[name] = np.array(self.acquire([name])[0])
            self.release([name])
        return out

    def close(self) -> None:
        self._live.clear()
        self.resident_bytes = 0
        self.file.close()

    def __enter__(self) -> "LazyWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_weights(path: str | os.PathLike, config: LazyConfig = LazyConfig()) -> LazyWeights:
    """Verify and map a weight file; see the module docstring for the checks and the policies."""
    return LazyWeights(path, config)
