"""Lazy weight loading from one flat, memory-mapped, checksummed weight file (no pickle).

File layout (all integers little-endian):
    0   8 bytes   magic b"HARFLATW"
    8   u32       format version (1)
    12  u32       header length H in bytes
    16  32 bytes  sha256 of the header bytes
    48  H bytes   header: UTF-8 JSON, sorted keys, no spaces: {"data_bytes", "metadata", "tensors":
                  [{"name", "dtype", "shape", "offset", "nbytes", "sha256"}, ...]} (offsets relative to
                  the data start)
        zero padding to the next multiple of 64 = data start
    data: each tensor's C-order bytes at a 64-byte aligned offset, zero padding in between and after the
          last one up to `data_bytes` (a multiple of 64); the file ends exactly there.
Same arrays and metadata -> byte-identical file (sorted JSON, fixed padding); written atomically.

Steps of `open_weights(path, LazyConfig(policy))`:
1. Read the fixed preamble and the header with plain reads; refuse (WeightFileError, before any inference)
   a wrong magic or version, a header whose sha256 differs, unparsable JSON, an unknown dtype, tensors
   outside the data region, or a file size other than data start + data_bytes (truncated or extended).
2. Memory-map the file read-only (mmap, whole file; nothing is read yet).
3. With `verify=True` (default) hash every tensor through the mapping (this reads its bytes: verifying a
   checksum cannot be lazy) and check that all padding bytes are zero, one tensor at a time; refuse any
   mismatch. Each tensor is released right after its check.
4. Serve `acquire(names)` / `release(names)` by policy: `eager` materialises every tensor at open and
   never releases; `lazy` materialises a tensor on its first acquire and keeps it; `lazy-release`
   materialises on acquire and drops it on release.
"Materialised" = a read-only numpy view over the mapping has been handed out and not yet released.
`resident_bytes` is the sum of `nbytes` of materialised tensors, and `high_water_bytes` its maximum since
open (or `reset_high_water`); the parsed header (`header_bytes`) stays in memory the whole time and is
reported separately. On release the tensor's pages are advised away (madvise MADV_DONTNEED where the
platform has it) so the OS may drop them from this process's resident set; re-acquiring faults them back
in from the page cache. Known limits: the accounting is by tensor, not by page (the OS maps whole 4 KiB
pages, and neighbouring small tensors share pages); a view kept by a caller after release still reads
valid bytes but is no longer counted; the file must not be modified while open (checks run at open).
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from har.errors import BadDataError, BadOptionError, DataNotFoundError
from har.paths import atomic_write_bytes

MAGIC = b"HARFLATW"
VERSION = 1
ALIGN_BYTES = 64
_PREAMBLE = struct.Struct("<8sII32s")
POLICIES = ("eager", "lazy", "lazy-release")
DTYPES = {"float32": "<f4", "float64": "<f8", "int8": "|i1", "uint8": "|u1", "int16": "<i2", "int32": "<i4",
          "int64": "<i8"}


class WeightFileError(BadDataError):
    """A weight file is truncated, altered, or not in this format."""


@dataclass(frozen=True)
class LazyConfig:
    policy: str = "lazy-release"
    verify: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise BadOptionError(f"unknown weight policy {self.policy!r}; choose one of {list(POLICIES)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _align(n: int) -> int:
    return -(-n // ALIGN_BYTES) * ALIGN_BYTES


def encode(arrays: Mapping[str, np.ndarray], metadata: dict | None = None) -> bytes:
    """The file's bytes for `arrays` (stored in the given order) and a JSON-able `metadata` dict."""
    entries, blobs, cursor = [], [], 0
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        kind = arr.dtype.name
        if kind not in DTYPES:
            raise BadOptionError(f"tensor {name!r}: dtype {kind} cannot be stored (use one of {sorted(DTYPES)})")
        data = np.ascontiguousarray(arr, dtype=np.dtype(DTYPES[kind])).tobytes()
        entries.append({"name": name, "dtype": kind, "shape": list(arr.shape), "offset": cursor,
                        "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        blobs.append(data + b"\0" * (_align(len(data)) - len(data)))
        cursor += _align(len(data))
    header = json.dumps({"data_bytes": cursor, "metadata": metadata or {}, "tensors": entries},
                        sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    pre = _PREAMBLE.pack(MAGIC, VERSION, len(header), hashlib.sha256(header).digest())
    head = pre + header
    return head + b"\0" * (_align(len(head)) - len(head)) + b"".join(blobs)


def save_weights(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], metadata: dict | None = None) -> Path:
    return atomic_write_bytes(path, encode(arrays, metadata))


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    sha256: str


def _read_header(path: Path) -> tuple[dict, int, int]:
    """(header dict, header length, data start) after the cheap structural checks."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        pre = fh.read(_PREAMBLE.size)
        if len(pre) < _PREAMBLE.size:
            raise WeightFileError(f"{path}: {size} bytes is too short for a weight file (truncated?)")
        magic, version, hlen, digest = _PREAMBLE.unpack(pre)
        if magic != MAGIC:
            raise WeightFileError(f"{path}: not a har-memopt weight file (magic {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise WeightFileError(f"{path}: weight file format version {version} is not supported (expected {VERSION})")
        header = fh.read(hlen)
        pad = fh.read(_align(_PREAMBLE.size + hlen) - _PREAMBLE.size - hlen)
    if len(header) != hlen or hashlib.sha256(header).digest() != digest:
        raise WeightFileError(f"{path}: header checksum mismatch (file truncated or altered)")
    if any(pad):
        raise WeightFileError(f"{path}: non-zero padding after the header (file altered)")
    try:
        meta = json.loads(header.decode("ascii"))
        data_start = _align(_PREAMBLE.size + hlen)
        data_bytes = int(meta["data_bytes"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise WeightFileError(f"{path}: unreadable header ({type(exc).__name__})") from None
    if size != data_start + data_bytes:
        raise WeightFileError(f"{path}: file is {size} bytes, header says {data_start + data_bytes} (truncated or extended)")
    return meta, hlen, data_start


class LazyWeights:
    """A verified, memory-mapped weight file serving tensors by policy; see the module docstring."""

    def __init__(self, path: str | os.PathLike, config: LazyConfig = LazyConfig()):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataNotFoundError(f"no weight file at {self.path}")
        self.config = config
        header, self.header_bytes, self._data_start = _read_header(self.path)
        self.metadata: dict = header.get("metadata", {})
        try:
            self.entries = {t["name"]: TensorEntry(t["name"], t["dtype"], tuple(int(s) for s in t["shape"]),
                                                   int(t["offset"]), int(t["nbytes"]), t["sha256"])
                            for t in header["tensors"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightFileError(f"{self.path}: malformed tensor entry ({exc})") from None
        self._check_entries(int(header["data_bytes"]))
        self._file = open(self.path, "rb")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._live: dict[str, np.ndarray] = {}
        self.resident_bytes = 0
        self.high_water_bytes = 0
        self.n_materialisations = 0
        if config.verify:
            self._verify()
        if config.policy == "eager":
            self.acquire(list(self.entries))

    def _check_entries(self, data_bytes: int) -> None:
        ends = 0
        for e in sorted(self.entries.values(), key=lambda e: e.offset):
            if e.dtype not in DTYPES:
                raise WeightFileError(f"{self.path}: tensor {e.name!r} has unknown dtype {e.dtype!r}")
            want = math.prod(e.shape) * np.dtype(DTYPES[e.dtype]).itemsize
            if e.nbytes != want or e.offset % ALIGN_BYTES or e.offset < ends or e.offset + e.nbytes > data_bytes:
                raise WeightFileError(f"{self.path}: tensor {e.name!r} has an inconsistent shape, offset or size")
            ends = e.offset + e.nbytes

    def _verify(self) -> None:
        view = memoryview(self._mm)
        try:
            covered = 0
            for e in sorted(self.entries.values(), key=lambda e: e.offset):
                start = self._data_start + e.offset
                if any(view[self._data_start + covered:start]):
                    raise WeightFileError(f"{self.path}: non-zero padding before tensor {e.name!r} (file altered)")
                self._track(e.nbytes)
                ok = hashlib.sha256(view[start:start + e.nbytes]).hexdigest() == e.sha256
                self._untrack(e)
                if not ok:
                    raise WeightFileError(f"{self.path}: tensor {e.name!r} fails its sha256 check (file altered)")
                covered = e.offset + e.nbytes
            if any(view[self._data_start + covered:]):
                raise WeightFileError(f"{self.path}: non-zero padding after the last tensor (file altered)")
        finally:
            view.release()

    def _track(self, nbytes: int) -> None:
        self.resident_bytes += nbytes
        self.high_water_bytes = max(self.high_water_bytes, self.resident_bytes)

    def _untrack(self, e: TensorEntry) -> None:
        self.resident_bytes -= e.nbytes
        if hasattr(mmap, "MADV_DONTNEED"):
            start = self._data_start + e.offset
            page = start - start % mmap.PAGESIZE
            self._mm.madvise(mmap.MADV_DONTNEED, page, start + e.nbytes - page)

    def _materialise(self, name: str) -> np.ndarray:
        arr = self._live.get(name)
        if arr is None:
            e = self.entries.get(name)
            if e is None:
                raise WeightFileError(f"{self.path}: no tensor named {name!r}")
            # one ndarray straight over the mapping: frombuffer + reshape made two objects, and the
            # second one's shape/strides block was a heap allocation on every lazy re-acquire
            arr = np.ndarray(e.shape, dtype=DTYPES[e.dtype], buffer=self._mm, offset=self._data_start + e.offset)
            self._live[name] = arr
            self.n_materialisations += 1
            self._track(e.nbytes)
        return arr

    def acquire(self, names: Sequence[str]) -> list[np.ndarray]:
        return [self._materialise(n) for n in names]

    def release(self, names: Sequence[str]) -> None:
        if self.config.policy != "lazy-release":
            return
        for n in names:
            if self._live.pop(n, None) is not None:
                self._untrack(self.entries[n])

    def reset_high_water(self) -> None:
        self.high_water_bytes = self.resident_bytes

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

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
        try:
            self._mm.close()
        except BufferError:  # a caller still holds a view; the mapping goes when it does
            pass
        self._file.close()

    def __enter__(self) -> "LazyWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_weights(path: str | os.PathLike, config: LazyConfig = LazyConfig()) -> LazyWeights:
    """Verify and map a weight file; see the module docstring for the checks and the policies."""
    return LazyWeights(path, config)
