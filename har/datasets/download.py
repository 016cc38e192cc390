"""Fetch the WISDM archives from their official URLs and install them under the data root.

Steps for `install(name, root)`:
  1. Skip when the data is already there (unless `force`, or a local `archive` is given).
  2. Stream the archive with urllib to `<root>/.<archive>.XXXX.part` (or use a local `archive`);
     `fetch` is injectable so tests can serve a local file.
  3. sha256 of the archive: compared with `EXPECTED_SHA256` when pinned; when not (we have no
     official digests), the digest is printed and the content is checked instead: every archive
     member listed in `EXPECTED_BLOBS` must have that git blob id (sha1 of ``b"blob <len>\\0" + data``).
     WISDM v1.1: the raw file must be present and match; WISDM-2019: at least one
     `raw/phone/accel/data_*_accel_phone.txt` (a nested `*.zip`, as UCI wraps it, is opened too)
     and the 22 files whose ids we know must match.
  4. Extract into a staging dir `<root>/.<target>.XXXX` (member names are flattened to their base
     names, so no path in the archive can escape), verify, then move into place with `os.replace`:
     the whole dir at once when `<root>/<target>` does not exist yet, else file by file (each
     file appears complete or not at all).
  5. Always remove the `.part` file and the staging dir, on success, refusal or Ctrl-C.

Layout produced: `<root>/wisdm/` gets the tarball's files (`WISDM_ar_v1.1_raw.txt`, the ARFF,
readme and about files); `<root>/wisdm2019/` gets `README.txt`, `activity_key.txt` and
`phone_accel/data_<subject>_accel_phone.txt` (plain text, not `.xz` as in the shared copy).
Known limits: no resume of interrupted downloads; no proxy settings beyond urllib's defaults.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable

from har.datasets import wisdm_v11
from har.errors import BadDataError, BadOptionError, DataNotFoundError, HarError

Fetcher = Callable[[str, Path], None]

URLS = {
    "wisdm": "https://www.cis.fordham.edu/wisdm/includes/datasets/latest/WISDM_ar_latest.tar.gz",
    "wisdm2019": "https://archive.ics.uci.edu/static/public/507/"
                 "wisdm+smartphone+and+smartwatch+activity+and+biometrics+dataset.zip",
}
ARCHIVE_NAMES = {name: url.rsplit("/", 1)[1] for name, url in URLS.items()}  # for messages and temp names
TARGET_DIRS = {"wisdm": "wisdm", "wisdm2019": "wisdm2019"}
# Official digests are not published; pin them here once verified.
EXPECTED_SHA256: dict[str, str | None] = {"wisdm": None, "wisdm2019": None}
WISDM_RAW = wisdm_v11.RAW_NAME
# Git blob ids of known-good files (see shared/data/README.md sections 3 and 5).
EXPECTED_BLOBS: dict[str, dict[str, str]] = {
    "wisdm": {WISDM_RAW: "f448b1ec15898a77f47f49d85e98ae1bde83185c"},
    "wisdm2019": {f"data_{subject}_accel_phone.txt": blob for subject, blob in (
        (1600, "090f87506a7715c9450a7c89d68e6bfc1154a8d8"), (1604, "06559ca2059df38dc4d95783f202bb480924c002"),
        (1606, "762143a022f01fbf55b617c4491620542a9eb67a"), (1607, "41276567ab9151444208690fd22ce67e002ea397"),
        (1609, "ef1cedcd12fbc1689a2400771bbcf707de26d5dc"), (1611, "c02497724719497fd1683cf4a77d2567bd04788e"),
        (1612, "25757bddb92de7ff1cc038f483d5d9e1a631c8ec"), (1615, "2aa6c7814c4729f4f41756fed7f8524835f5880e"),
        (1617, "6080a3240c9748cbe93f7d749d83393ef6546d8f"), (1618, "5b68d8f5fddb8f1ef9cb23266cd010d199b8f849"),
        (1622, "38614f28a448d557039220e2f5168ddd3ad631a2"), (1624, "221632f81e7500e71bdfc786f86e7edbc77b78d2"),
        (1626, "cec850421a53f756386d0ca2b932677753a4bc05"), (1630, "f0a983fb15370dd921b65bd2014b37a89c0fc71d"),
        (1631, "b7b7794bf11fdf7116f4e37a98c1c05e14b3bff1"), (1632, "fa34c3dda2787fe94f47b9dbd2fe8f43b294324f"),
        (1634, "f7f998739cd20a216d97bc9b063c6facd1c760a2"), (1636, "7618f94e688396500c80ebbd26ddfa1742ee9a8e"),
        (1637, "85ecb3fde2cb4c5447f275e562a91adf7e011e0a"), (1638, "437611a4535fe2be5229df4fa4ead3559bc06bd7"),
        (1639, "7d2ab6494fb6b7e2bf13ae79f8895e93ccec95c3"), (1640, "eda01ca9b41f21c4254e086505eed09360d337b0"))},
}
_ACCEL_MEMBER = re.compile(r"(?:^|/)raw/phone/accel/(data_\d+_accel_phone\.txt)$")
_CHUNK_BYTES = 1 << 20
FETCH_TIMEOUT_S = 60.0


class DownloadError(HarError):
    """The archive could not be fetched, or its checksum/content is not the expected one."""


def fetch_url(url: str, dest: Path) -> None:
    """Stream `url` into `dest` (urllib; `file://` works too). Network errors propagate."""
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK_BYTES)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_id(data: bytes) -> str:
    """What `git hash-object` prints for a file with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _copy_hashing(src: IO[bytes], size: int, dest: Path) -> str:
    """Copy `size` bytes from `src` to `dest`, returning the git blob id of what was copied."""
    digest = hashlib.sha1(b"blob %d\0" % size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _extract_wisdm(archive: Path, staging: Path) -> dict[str, str]:
    """Flatten the tarball's regular files into `staging`; returns basename -> blob id."""
    blobs: dict[str, str] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            base = Path(member.name).name
            if member.isfile() and not base.startswith("."):  # skip macOS `._*` resource forks
                fh = tar.extractfile(member)
                assert fh is not None  # regular members always have a payload
                blobs[base] = _copy_hashing(fh, member.size, staging / base)
    return blobs


def _extract_wisdm2019(archive: Path, staging: Path, depth: int = 0) -> dict[str, str]:
    """Phone-accelerometer files (+ README, activity key) into `staging`; name -> blob id."""
    blobs: dict[str, str] = {}
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        accel = [(i, m) for i in infos if (m := _ACCEL_MEMBER.search(i.filename))]
        if not accel and depth == 0:
            for info in infos:  # UCI wraps the dataset zip inside its own download zip
                if info.filename.endswith(".zip"):
                    inner = staging / ".inner.zip"
                    with zf.open(info) as src, open(inner, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK_BYTES)
                    found = _extract_wisdm2019(inner, staging, depth + 1)
                    inner.unlink()
                    if found:
                        return found
            return blobs
        if not accel:
            return blobs
        prefix = accel[0][0].filename[: accel[0][1].start()]
        prefix = prefix + "/" if prefix else ""
        wanted = {info.filename: f"phone_accel/{match.group(1)}" for info, match in accel}
        wanted.update({prefix + name: name for name in ("README.txt", "activity_key.txt")})
        for info in infos:
            if info.filename in wanted and not info.is_dir():
                with zf.open(info) as src:
                    blobs[wanted[info.filename]] = _copy_hashing(src, info.file_size, staging / wanted[info.filename])
    return blobs


def _verify_content(name: str, blobs: dict[str, str], archive_label: str) -> int:
    """Raise `DownloadError` unless the extracted files are the expected ones; returns #files checked."""
    if name == "wisdm" and WISDM_RAW not in blobs:
        raise DownloadError(f"{archive_label} does not contain {WISDM_RAW}; nothing was installed")
    if name == "wisdm2019" and not any(k.startswith("phone_accel/") for k in blobs):
        raise DownloadError(f"{archive_label} holds no raw/phone/accel/data_*_accel_phone.txt; nothing was installed")
    checked = 0
    for path, blob in blobs.items():
        expected = EXPECTED_BLOBS[name].get(Path(path).name)
        if expected is not None:
            if blob != expected:
                raise DownloadError(f"content check failed: {Path(path).name} in {archive_label} has git blob id "
                                    f"{blob}, expected {expected}; nothing was installed")
            checked += 1
    return checked


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.chmod(0o755)  # mkdtemp made it private; the data folder is not
        os.replace(staging, target)  # one rename: the folder appears complete
        return
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = target / src.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)


def manual_hint(name: str, root: Path) -> str:
    if name == "wisdm":
        return f"download {ARCHIVE_NAMES[name]} yourself and put it in {root / 'wisdm'}/"
    return (f"download the zip from that address yourself and run "
            f"`python -m har.data download {name} --archive <file> --data-dir {root}`")


def is_installed(name: str, root: Path) -> bool:
    if name == "wisdm":
        try:
            return wisdm_v11.find_raw_file(root).is_file()  # the tarball itself counts: the loader reads it
        except DataNotFoundError:
            return False
    return any((root / "wisdm2019" / "phone_accel").glob("data_*_accel_phone.txt*"))


def install(name: str, root: str | os.PathLike, *, fetch: Fetcher | None = None, archive: Path | None = None,
            force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Download (or take `archive`), verify and unpack dataset `name`; returns its folder."""
    if name not in URLS:
        raise BadOptionError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(URLS))}")
    root = Path(root)
    target = root / TARGET_DIRS[name]
    if is_installed(name, root) and not force and archive is None:
        log(f"{name}: already present in {target} (use --force to download again)")
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create data dir {root}: {exc.strerror}") from None
    part: Path | None = None
    staging: Path | None = None
    try:
        if archive is None:
            fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{ARCHIVE_NAMES[name]}.", suffix=".part")
            os.close(fd)
            part = Path(tmp)
            log(f"{name}: fetching {URLS[name]}")
            try:
                (fetch or fetch_url)(URLS[name], part)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                reason = getattr(exc, "reason", None) or exc  # offline, DNS, HTTP status, reset, timeout
                raise DownloadError(f"cannot reach {URLS[name]} ({reason}); {manual_hint(name, root)}") from None
            except OSError as exc:  # local side: disk full, permissions
                raise DownloadError(f"cannot save the download to {part}: {exc}") from None
            source = part
        else:
            if not archive.is_file():
                raise DataNotFoundError(f"archive not found: {archive}")
            source = archive
        label = ARCHIVE_NAMES[name] if archive is None else str(archive)
        digest = sha256_file(source)
        expected = EXPECTED_SHA256.get(name)
        if expected is not None and digest != expected:
            raise DownloadError(f"checksum mismatch for {label}: sha256 {digest}, expected {expected}; "
                                f"nothing was installed")
        if expected is None:
            log(f"{name}: sha256 {digest} (no pinned value; checking the content instead)")
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{TARGET_DIRS[name]}."))
        extract = _extract_wisdm if name == "wisdm" else _extract_wisdm2019
        try:
            blobs = extract(source, staging)
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise BadDataError(f"cannot unpack {label}: {exc}; nothing was installed") from None
        checked = _verify_content(name, blobs, label)
        _move_into_place(staging, target)
        log(f"{name}: installed {len(blobs)} files in {target} ({checked} verified by git blob id)")
        return target
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
