"""The flat weight file: one memory-mapped, checksummed file of named numpy arrays (no pickle).

This module is the format alone (writer, verified reader, errors), at the bottom floor so that every
package may store weights with it: `system_opts.lazy_weights` puts its residency policies on top,
`model_opts.cascade` stores its stage 2 with it.
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

Steps of `WeightFile(path, verify=True)`:
1. Read the fixed preamble and the header with plain reads; refuse (WeightFileError, before any use) a
   wrong magic or version, a header whose sha256 differs, unparsable JSON, an unknown dtype, tensors
   outside the data region or overlapping, or a file size other than data start + data_bytes.
2. Memory-map the file read-only (mmap, whole file; nothing is read yet).
3. With `verify` hash every tensor through the mapping (verifying a checksum reads its bytes) and check
   that all padding bytes are zero, one tensor at a time, its pages advised away right after; refuse any
   mismatch. `verified_peak_bytes` is the largest tensor read at once (0 without `verify`).
Then `view(name)` is a read-only ndarray straight over the mapping (no copy), `advise_away(name)` tells
the OS it may drop that tensor's pages (madvise MADV_DONTNEED where the platform has it; a later read
faults them back in from the page cache), `arrays()` copies every tensor out.
Known limits: pages are 4 KiB, so advising one tensor away also covers neighbours sharing its first or
last page; a view kept after `advise_away` still reads valid bytes; the file must not be modified while
open (the checks run at open only).
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from har.errors import BadDataError, BadOptionError, DataNotFoundError
from har.paths import atomic_write_bytes

MAGIC = b"HARFLATW"
VERSION = 1
ALIGN_BYTES = 64
_PREAMBLE = struct.Struct("<8sII32s")
DTYPES = {"float32": "<f4", "float64": "<f8", "int8": "|i1", "uint8": "|u1", "int16": "<i2", "int32": "<i4",
          "int64": "<i8"}


class WeightFileError(BadDataError):
    """A weight file is truncated, altered, or not in this format."""


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
        raise WeightFileError(f"{path}: file is {size} bytes, header says {data_start + data_bytes} "
                              "(truncated or extended)")
    return meta, hlen, data_start


class WeightFile:
    """A checked, read-only memory mapping of one weight file; see the module docstring."""

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataNotFoundError(f"no weight file at {self.path}")
        header, self.header_bytes, self.data_start = _read_header(self.path)
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
        self.verified_peak_bytes = 0
        if verify:
            try:
                self._verify()
            except WeightFileError:
                self.close()
                raise

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
                start = self.data_start + e.offset
                if any(view[self.data_start + covered:start]):
                    raise WeightFileError(f"{self.path}: non-zero padding before tensor {e.name!r} (file altered)")
                self.verified_peak_bytes = max(self.verified_peak_bytes, e.nbytes)
                ok = hashlib.sha256(view[start:start + e.nbytes]).hexdigest() == e.sha256
                self.advise_away(e.name)
                if not ok:
                    raise WeightFileError(f"{self.path}: tensor {e.name!r} fails its sha256 check (file altered)")
                covered = e.offset + e.nbytes
            if any(view[self.data_start + covered:]):
                raise WeightFileError(f"{self.path}: non-zero padding after the last tensor (file altered)")
        finally:
            view.release()

    def view(self, name: str) -> np.ndarray:
        """Read-only array over the mapping (no bytes copied; pages fault in as they are read)."""
        e = self.entries.get(name)  # inline, not _entry(): this runs per lazy acquire (one call less)
        if e is None:
            raise WeightFileError(f"{self.path}: no tensor named {name!r}")
        # one ndarray straight over the mapping: frombuffer + reshape made two objects, and the second
        # one's shape/strides block was a heap allocation on every re-read
        return np.ndarray(e.shape, dtype=DTYPES[e.dtype], buffer=self._mm, offset=self.data_start + e.offset)

    def advise_away(self, name: str) -> None:
        """Let the OS drop the pages of tensor `name` from this process's resident set."""
        if hasattr(mmap, "MADV_DONTNEED"):
            e = self.entries.get(name)  # per lazy release: inline like view()
            if e is None:
                raise WeightFileError(f"{self.path}: no tensor named {name!r}")
            start = self.data_start + e.offset
            page = start - start % mmap.PAGESIZE
            self._mm.madvise(mmap.MADV_DONTNEED, page, start + e.nbytes - page)

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def arrays(self) -> dict[str, np.ndarray]:
        """A copy of every tensor (each tensor's pages advised away after its copy): for inspection."""
        out = {}
        for name in self.entries:
            out[name] = np.array(self.view(name))
            self.advise_away(name)
        return out

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:  # a caller still holds a view; the mapping goes when it does
            pass
        self._file.close()

    def __enter__(self) -> "WeightFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
