"""WISDM-2019 (UCI 507) raw per-subject files: `data_<subject>_<accel|gyro>_<phone|watch>.txt[.xz|.gz]`.

Lines look like `1600,A,252207666810782,-0.36476135,8.793503,1.0550842;` (subject, activity code A..S without
N, timestamp, x, y, z). Steps of `load`:

1. Find the files of one sensor/device under `<root>/wisdm2019/<device>_<sensor>/` (the layout of
   `shared/data`) or the official `<root>/wisdm2019/raw/<device>/<sensor>/`.
2. Return the cached arrays if a cache entry keyed by every file's name, size and mtime exists (one
   uncompressed `.npz`, loaded with `allow_pickle=False`).
3. Otherwise decompress and parse the files on a thread pool: `lzma`/`gzip` and pandas' C tokenizer
   release the GIL, so two cores really work in parallel. The fast path is pandas' C parser with
   `comment=';'` (which strips the record terminator) and strict dtypes; it is all-or-nothing per file.
4. A file the fast path cannot take (a malformed line anywhere) is re-parsed line by line: every valid
   record is kept and every rejected one is counted by kind in `Recording.rejects`.
5. Write the cache atomically.

Measured on the 22 shared phone-accelerometer files (1,433,489 rows): see `tests/benchmarks/test_ingest.py`.
Limits: the robust path is ~20x slower than the fast path (fine: the shipped files are clean); the cache
key trusts size+mtime, so an in-place edit that keeps both is not noticed.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from har.datasets.base import Recording
from har.errors import BadDataError, DataNotFoundError
from har.paths import atomic_write_bytes, cache_dir, missing_data_hint

CODES = "ABCDEFGHIJKLMOPQRS"  # no N in the official key
ACTIVITIES = ("walking", "jogging", "stairs", "sitting", "standing", "typing", "teeth", "soup", "chips",
              "pasta", "drinking", "sandwich", "kicking", "catch", "dribbling", "writing", "clapping", "folding")
SAMPLE_RATE_HZ = 20.0
PARSER_VERSION = 1
_FILE_RE = re.compile(r"^data_(\d+)_(accel|gyro)_(phone|watch)\.txt(\.xz|\.gz)?$")
_CODE_TO_LABEL = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(CODES):
    _CODE_TO_LABEL[ord(_c)] = _i


def find_files(root: Path, sensor: str = "accel", device: str = "phone") -> list[Path]:
    """Per-subject files for one sensor/device, sorted by subject id; `DataNotFoundError` if none."""
    base = Path(root) / "wisdm2019"
    candidates = [base / f"{device}_{sensor}", base / "raw" / device / sensor]
    for folder in candidates:
        if folder.is_dir():
            by_subject: dict[int, Path] = {}
            # plain text sorts before .gz/.xz, so a decompressed copy wins over its archive
            for p in sorted(folder.iterdir(), key=lambda p: (len(p.name), p.name)):
                m = _FILE_RE.match(p.name)
                if m and m.group(2) == sensor and m.group(3) == device:
                    by_subject.setdefault(int(m.group(1)), p)
            if by_subject:
                return [by_subject[k] for k in sorted(by_subject)]
    raise DataNotFoundError(f"no WISDM-2019 {device} {sensor} files (data_<id>_{sensor}_{device}.txt[.xz]) "
                            f"in {candidates[0]}; {missing_data_hint('wisdm2019' + (' --force' if device != 'phone' else ''), root)}")


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def _parse_fast(raw: bytes) -> dict[str, np.ndarray] | None:
    """Strict C-parser path; None when the file has anything unusual (then the robust path runs)."""
    try:
        df = pd.read_csv(io.BytesIO(raw), header=None, comment=";", engine="c",
                         names=["user", "code", "t", "x", "y", "z"],
                         dtype={"user": np.int32, "code": "S1", "t": np.int64,
                                "x": np.float32, "y": np.float32, "z": np.float32})
    except (ValueError, TypeError, pd.errors.ParserError, OverflowError):
        return None
    if df.isna().any().any() or len(df) != raw.count(b";"):
        return None
    codes = df["code"].to_numpy().view(np.uint8)
    label = _CODE_TO_LABEL[codes]
    if (label < 0).any():
        return None
    return {"user": df["user"].to_numpy(), "label": label, "timestamp_ns": df["t"].to_numpy(),
            "xyz": df[["x", "y", "z"]].to_numpy(np.float32)}


def parse_robust(text: str) -> tuple[dict[str, np.ndarray], Counter]:
    """Line-by-line parse: every `;`-terminated chunk is a candidate, parsed or counted by kind."""
    users, labels, times, xyz = [], [], [], []
    rejects: Counter = Counter()
    for chunk in text.replace("\n", ";").split(";"):
        chunk = chunk.strip()
        if not chunk:
            continue
        fields = [f.strip() for f in chunk.split(",")]
        if len(fields) != 6:
            rejects["wrong_field_count"] += 1
            continue
        if any(f == "" for f in fields):
            rejects["empty_field"] += 1
            continue
        if len(fields[1]) != 1 or fields[1] not in CODES:
            rejects["unknown_activity"] += 1
            continue
        try:
            u, t = int(fields[0]), int(fields[2])
            vals = [float(f) for f in fields[3:]]
        except ValueError:
            rejects["bad_number"] += 1
            continue
        if not all(np.isfinite(vals)):
            rejects["bad_number"] += 1
            continue
        users.append(u)
        labels.append(CODES.index(fields[1]))
        times.append(t)
        xyz.append(vals)
    cols = {"user": np.asarray(users, np.int32), "label": np.asarray(labels, np.int16),
            "timestamp_ns": np.asarray(times, np.int64),
            "xyz": np.asarray(xyz, np.float32).reshape(-1, 3)}
    return cols, rejects


def _parse_file(path: Path) -> tuple[dict[str, np.ndarray], Counter]:
    raw = _read_bytes(path)
    cols = _parse_fast(raw)
    if cols is not None:
        return cols, Counter()
    return parse_robust(raw.decode("utf-8", errors="replace"))


def _cache_key(files: list[Path]) -> str:
    h = hashlib.sha256(f"wisdm2019-v{PARSER_VERSION}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


def _from_cache(path: Path, source: str) -> Recording | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            rejects = json.loads(bytes(z["rejects_json"]).decode())
            return Recording(z["user"], z["label"], z["timestamp_ns"], z["xyz"], ACTIVITIES,
                             SAMPLE_RATE_HZ, source, rejects)
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache entry is rebuilt, never trusted


def _to_cache(path: Path, rec: Recording) -> None:
    buf = io.BytesIO()
    np.savez(buf, user=rec.user, label=rec.label, timestamp_ns=rec.timestamp_ns, xyz=rec.xyz,
             rejects_json=np.frombuffer(json.dumps(rec.rejects).encode(), np.uint8))
    atomic_write_bytes(path, buf.getvalue())


def load(root: Path, sensor: str = "accel", device: str = "phone", use_cache: bool = True,
         workers: int = 2) -> Recording:
    """All subjects of one sensor/device as one `Recording` (subjects in id order, rows in file order)."""
    files = find_files(root, sensor, device)
    source = str(files[0].parent)
    cache_path = cache_dir() / f"wisdm2019-{device}-{sensor}-{_cache_key(files)}.npz"
    if use_cache and cache_path.exists():
        rec = _from_cache(cache_path, source)
        if rec is not None:
            return rec
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        parts = list(pool.map(_parse_file, files))
    rejects: Counter = Counter()
    for _, r in parts:
        rejects.update(r)
    if sum(len(c["user"]) for c, _ in parts) == 0:
        raise BadDataError(f"no valid WISDM-2019 records in {source}")
    rec = Recording(
        user=np.concatenate([c["user"] for c, _ in parts]),
        label=np.concatenate([c["label"] for c, _ in parts]).astype(np.int16),
        timestamp_ns=np.concatenate([c["timestamp_ns"] for c, _ in parts]),
        xyz=np.concatenate([c["xyz"] for c, _ in parts]),
        activities=ACTIVITIES, sample_rate_hz=SAMPLE_RATE_HZ, source=source, rejects=dict(rejects))
    if use_cache:
        _to_cache(cache_path, rec)
    return rec
