"""Robust parser for the WISDM v1.1 raw accelerometer file (`WISDM_ar_v1.1_raw.txt`).

A record is ``user,activity,timestamp,x,y,z;``, e.g. ``33,Jogging,49105962326000,-0.6946377,12.680544,0.50395286;``.
The distributed file is known to be dirty: several records on one line, a record split over two
lines or truncated, empty fields (``11,Walking,1867172313000,4.4,4.4,;``), a trailing ``,``,
a missing ``;``, blank lines, timestamp 0. Every valid record is parsed; every other one is
counted by reject kind; nothing is dropped silently.

Record candidate (the unit the invariant counts): split the input on ``;``, ``\\r`` and ``\\n``;
strip ASCII blanks (space, tab, vertical tab, form feed) from each chunk; each chunk that is then
non-empty is one candidate. Line ends separate too (not only ``;``) because some records lack
their ``;``: otherwise such a record would swallow the next line's record. So a line's last chunk
without ``;`` is still a candidate, and a record split over two lines gives two candidates (both
normally rejected).
Invariant: ``len(parsed) + sum(rejects.values()) == number of candidates``.

Each candidate gets exactly one outcome; checks run in this order, the first failure names it:
  wrong_field_count  not 6 comma-separated fields (one trailing empty 7th field, i.e. a stray
                     ``,`` before ``;``, is tolerated)
  empty_field        a field is empty after stripping blanks
  bad_user           user is not ASCII digits in 1..36
  unknown_activity   activity is not exactly one of `ACTIVITIES` (case-sensitive)
  bad_timestamp      timestamp is not 1..19 ASCII digits with value <= int64 max
  zero_timestamp     timestamp is 0 (not a reading time; kept out so time gaps and order stay sound)
  bad_number         x, y or z is not a plain decimal number of <= 64 characters
                     (``[+-]digits[.digits][e[+-]digits]``; no nan/inf/underscores), or its
                     magnitude exceeds float32 max

Algorithm:
  1. Bytes in, no decoding: regexes and `bytes.translate` run in C on the whole buffer.
  2. One regex pass finds every line that is NOT a strictly well-formed single record
     (`_FAST_RECORD`: user 1..36, known activity, 1..15-digit timestamp, short plain numbers, ``;``).
  3. Runs of well-formed lines between those are converted in bulk: `translate` turns activity
     names into small numbers, ``;`` into commas and line ends into blanks, then `np.fromstring`
     reads all the floats at once.
     The fast path accepts a strict subset of what step 4 accepts, with identical values
     (timestamps < 1e15 are exact in float64; tests check fast == reference on random text).
  4. The other lines go through the per-record reference classifier (`_classify`).
  5. Pieces are concatenated in file order (the output is NOT sorted).

Speed (measured with `load` on a generated file of 1.1 M records, 61 MB, one broken line per
~5,000, 2-core VM): 1.2 s plain, 1.4 s .gz, 2.1 s .xz; the all-fallback path (`fast=False`) 4.4 s.

Known limits: a record cut in the middle of a number whose first part still has 6 fields
(``...,0.5`` + newline + ``0395286;``) is accepted with the truncated value -- indistinguishable
from a valid record. Values are kept as recorded: timestamps nominally phone uptime in ns (no
unit check), accelerations in the phone's units (about m/s^2: the about file says 10 = 1 g).
`load` skips a UTF-8 byte-order mark; `parse_text`/`parse_bytes` do not (it is content there).
"""
from __future__ import annotations

import gzip
import lzma
import re
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from har.datasets.base import Recording
from har.errors import BadDataError, DataNotFoundError
from har.paths import missing_data_hint

ACTIVITIES: tuple[str, ...] = ("Walking", "Jogging", "Upstairs", "Downstairs", "Sitting", "Standing")
SAMPLE_RATE_HZ = 20.0
N_USERS = 36
RAW_NAME = "WISDM_ar_v1.1_raw.txt"
TARBALL_NAME = "WISDM_ar_latest.tar.gz"
# Looked for in this order under `<root>/wisdm/`; the last one is the tarball unpacked by hand.
ACCEPTED_NAMES: tuple[str, ...] = (RAW_NAME, RAW_NAME + ".gz", RAW_NAME + ".xz", TARBALL_NAME,
                                   "WISDM_ar_v1.1/" + RAW_NAME)
REJECT_KINDS: tuple[str, ...] = ("wrong_field_count", "empty_field", "bad_user", "unknown_activity",
                                 "bad_timestamp", "zero_timestamp", "bad_number")

_ACTIVITY_INDEX = {name.encode(): i for i, name in enumerate(ACTIVITIES)}
_BLANKS = b" \t\x0b\x0c"
_INT64_MAX = 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_DIGITS = re.compile(rb"[0-9]+")
_NUMBER = re.compile(rb"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_CANDIDATE_SPLIT = re.compile(rb"[;\r\n]")

# Fast path. Numbers: at most 7 integer digits and only negative exponents, so nothing can
# overflow float32; lowercase 'e' is excluded because the translate step deletes lowercase letters.
_FAST_NUM = rb"-?[0-9]{1,7}(?:\.[0-9]{1,12})?(?:E-[0-9]{1,2})?"
_FAST_RECORD = (rb"(?:[1-9]|[12][0-9]|3[0-6]),(?:" + b"|".join(_ACTIVITY_INDEX) + rb"),[1-9][0-9]{0,14},"
                + _FAST_NUM + b"," + _FAST_NUM + b"," + _FAST_NUM + rb";\r?$")
_SLOW_LINE = re.compile(rb"^(?!" + _FAST_RECORD + rb").*$", re.MULTILINE)
# Activity names -> numbers: keep capitals and the 'd' that only "Standing" has, delete other
# lowercase letters: Walking 1, Jogging 2, Upstairs 3, Downstairs 4, Sitting 5, Standing 50.
_TRANSLATE = bytes.maketrans(b"WJUDSd;\r\n", b"123450,  ")
_DELETE = bytes(c for c in range(ord("a"), ord("z") + 1) if c != ord("d"))
_CODE_TO_LABEL = np.full(51, -1, dtype=np.int16)
_CODE_TO_LABEL[[1, 2, 3, 4, 5, 50]] = np.arange(6)


class Parsed(NamedTuple):
    """Columns of the parsed records in file order, plus reject counts by kind (non-zero only)."""

    user: np.ndarray  # int32 (n,)
    label: np.ndarray  # int16 (n,)
    timestamp_ns: np.ndarray  # int64 (n,)
    xyz: np.ndarray  # float32 (n, 3)
    rejects: dict[str, int]


def _classify(chunk: bytes) -> tuple[int, int, int, float, float, float] | str:
    """Reference semantics for one stripped, non-empty candidate: a record or a reject kind."""
    fields = [f.strip(_BLANKS) for f in chunk.split(b",")]
    if len(fields) == 7 and not fields[6]:
        fields.pop()  # stray ',' before ';' -- the six values are still unambiguous
    if len(fields) != 6:
        return "wrong_field_count"
    if not all(fields):
        return "empty_field"
    user_s, activity_s, ts_s = fields[:3]
    # Length guards come before int(): it refuses > 4300 digits and costs time on long input.
    if len(user_s) > 3 or not _DIGITS.fullmatch(user_s) or not 1 <= int(user_s) <= N_USERS:
        return "bad_user"
    label = _ACTIVITY_INDEX.get(activity_s)
    if label is None:
        return "unknown_activity"
    if len(ts_s) > 19 or not _DIGITS.fullmatch(ts_s) or int(ts_s) > _INT64_MAX:
        return "bad_timestamp"
    timestamp = int(ts_s)
    if timestamp == 0:
        return "zero_timestamp"
    values = []
    for s in fields[3:]:
        if len(s) > 64 or not _NUMBER.fullmatch(s):
            return "bad_number"
        v = float(s)
        if not abs(v) <= _FLOAT32_MAX:
            return "bad_number"
        values.append(v)
    return int(user_s), label, timestamp, values[0], values[1], values[2]


def _parse_slow(data: bytes, rows: list, rejects: Counter) -> None:
    """Classify every candidate in `data`, appending records to `rows` and kinds to `rejects`."""
    for chunk in _CANDIDATE_SPLIT.split(data):
        chunk = chunk.strip(_BLANKS)
        if chunk:
            out = _classify(chunk)
            if isinstance(out, str):
                rejects[out] += 1
            else:
                rows.append(out)


def _parse_fast(segment: bytes) -> np.ndarray | None:
    """(n, 6) float64 for a run of `_FAST_RECORD` lines, or None if the bulk read disagrees."""
    flat = segment.translate(_TRANSLATE, _DELETE).strip().rstrip(b",")
    try:
        values = np.fromstring(flat, dtype=np.float64, sep=",")
    except ValueError:
        return None
    n = segment.count(b";")  # exactly one ';' per fast line
    if values.size != 6 * n:
        return None  # cannot happen for regex-checked input; the caller then goes slow
    return values.reshape(n, 6)


def parse_bytes(data: bytes, *, fast: bool = True) -> Parsed:
    """Parse raw v1.1 content; never raises on any input. `fast=False` uses only `_classify`."""
    rejects: Counter = Counter()
    # Fast blocks: (n,6) float64 with translate codes in column 1 and exact (< 2**53) timestamps.
    # Slow blocks: label index in column 1; timestamps kept as Python ints (up to int64 max).
    blocks: list[tuple[np.ndarray, list[int] | None]] = []
    pending: list = []

    def flush() -> None:
        if pending:
            blocks.append((np.array(pending, dtype=np.float64), [r[2] for r in pending]))
            pending.clear()

    def run_of_fast_lines(segment: bytes) -> None:
        if b";" not in segment:
            return  # between two slow lines: only the newline that ends the first one
        block = _parse_fast(segment)
        if block is None:
            _parse_slow(segment, pending, rejects)
        else:
            flush()
            blocks.append((block, None))

    if fast:
        pos = 0
        for match in _SLOW_LINE.finditer(data):
            start, end = match.span()
            run_of_fast_lines(data[pos:start])
            _parse_slow(data[start:end], pending, rejects)
            pos = end
        run_of_fast_lines(data[pos:])  # fast lines after the last slow one (no final newline)
    else:
        _parse_slow(data, pending, rejects)
    flush()

    n = sum(len(b) for b, _ in blocks)
    user = np.empty(n, dtype=np.int32)
    label = np.empty(n, dtype=np.int16)
    timestamp_ns = np.empty(n, dtype=np.int64)
    xyz = np.empty((n, 3), dtype=np.float32)
    start = 0
    for block, exact_ts in blocks:
        rows = slice(start, start + len(block))
        user[rows] = block[:, 0]
        codes = block[:, 1].astype(np.int64)
        label[rows] = codes if exact_ts is not None else _CODE_TO_LABEL[codes]
        timestamp_ns[rows] = exact_ts if exact_ts is not None else block[:, 2]
        xyz[rows] = block[:, 3:6]
        start += len(block)
    return Parsed(user, label, timestamp_ns, xyz, {k: rejects[k] for k in REJECT_KINDS if rejects[k]})


def parse_text(text: str, *, fast: bool = True) -> Parsed:
    """`parse_bytes` on UTF-8 text (pure; never raises). Returns (user, label, timestamp_ns, xyz, rejects)."""
    return parse_bytes(text.encode("utf-8", "surrogatepass"), fast=fast)


def _read_raw_bytes(path: Path) -> tuple[bytes, str]:
    """File content (decompressed / extracted from the tarball) and a source label."""
    name = path.name.lower()
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar")):
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if member.isfile() and Path(member.name).name == RAW_NAME:
                        fh = tar.extractfile(member)
                        assert fh is not None  # isfile() members always have a payload
                        return fh.read(), f"{path}::{member.name}"
            raise BadDataError(f"{path} holds no member named {RAW_NAME}")
        if name.endswith(".gz"):
            return gzip.decompress(path.read_bytes()), str(path)
        if name.endswith(".xz"):
            return lzma.decompress(path.read_bytes()), str(path)
        return path.read_bytes(), str(path)
    except (OSError, EOFError, tarfile.TarError, lzma.LZMAError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataNotFoundError(f"WISDM v1.1 raw file not found: {path}; {missing_data_hint('wisdm')}") from None
        raise BadDataError(f"cannot read {path}: {exc}") from None


def load(path: str | Path) -> Recording:
    """Parse a raw v1.1 file (.txt, .gz, .xz or the official tarball) into a `Recording`.

    Raises `DataNotFoundError` if the path is missing, `BadDataError` if it cannot be read or
    holds no valid record at all.
    """
    path = Path(path)
    if path.is_dir():
        raise DataNotFoundError(f"{path} is a directory; expected the file {RAW_NAME} (or .gz/.xz/tarball); "
                                f"{missing_data_hint('wisdm')}")
    data, source = _read_raw_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark written by some editors
        data = data[3:]
    parsed = parse_bytes(data)
    if len(parsed.user) == 0:
        raise BadDataError(f"no valid WISDM v1.1 record in {source} (rejected: {parsed.rejects or 'nothing'})")
    return Recording(parsed.user, parsed.label, parsed.timestamp_ns, parsed.xyz,
                     ACTIVITIES, SAMPLE_RATE_HZ, source, dict(parsed.rejects))


def find_raw_file(root: str | Path) -> Path:
    """First of `ACCEPTED_NAMES` present under `<root>/wisdm/`; `DataNotFoundError` otherwise."""
    folder = Path(root) / "wisdm"
    for name in ACCEPTED_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise DataNotFoundError(
        f"WISDM v1.1 raw data not found: expected {folder / RAW_NAME} (or .gz, .xz, or {TARBALL_NAME} "
        f"in that folder); {missing_data_hint('wisdm', root)}")
