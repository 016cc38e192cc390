"""Fetch the WISDM archives from their official URLs and install them under the data root.

Steps for `install(name, root)`:
  1. Skip when the data is already there (unless `force`, or a local `archive` is given).
  2. Stream the archive with urllib to `<root>/.<archive>.XXXX.part` (or use a local `archive`), with a
     tqdm progress bar on a terminal. The host name lookup, the connection and every read are bounded
     (`CONNECT_TIMEOUT_S`, `READ_TIMEOUT_S`), so an offline machine fails in seconds, not minutes.
     `fetch` is injectable so tests can serve a local file.
  3. sha256 of the archive: compared with `EXPECTED_SHA256` when pinned; when not (we have no
     official digests), the digest is printed and the content is checked instead: every archive
     member listed in `EXPECTED_BLOBS` must have that git blob id (sha1 of ``b"blob <len>\\0" + data``).
     WISDM v1.1: the raw file must be present and match; WISDM-2019: at least one
     `raw/phone/accel/data_*_accel_phone.txt` (a nested `*.zip`, as UCI wraps it, is opened too);
     the `raw/watch/accel/data_*_accel_watch.txt` files are taken too, and the 22 phone and 46 watch
     files whose ids we know (those of `shared/data`) must match.
  4. Extract into a staging dir `<root>/.<target>.XXXX` (member names are flattened to their base
     names, so no path in the archive can escape), verify, then move into place with `os.replace`:
     the whole dir at once when `<root>/<target>` does not exist yet, else file by file (each
     file appears complete or not at all).
  5. Always remove the `.part` file and the staging dir, on success, refusal or Ctrl-C.

`ensure(name, root)` is `install` for `make run`/`make test`: nothing (no network) when the data is
present, else one download attempt; a failure becomes one `DataNotFoundError` line naming the path,
`--data-dir`, `$HAR_DATA_DIR` and the download command.

Layout produced: `<root>/wisdm/` gets the tarball's files (`WISDM_ar_v1.1_raw.txt`, the ARFF,
readme and about files); `<root>/wisdm2019/` gets `README.txt`, `activity_key.txt`,
`phone_accel/data_<subject>_accel_phone.txt` and `watch_accel/data_<subject>_accel_watch.txt`
(plain text, not `.xz` as in the shared copy).

Why hand-written rather than `pooch` (decided, not an oversight): pooch's integrity check is a
`known_hash` of the downloaded file, and neither archive has a published digest, so it could not be
pinned (`known_hash=None` verifies nothing). What we can check is the content: git blob ids of
members inside the UCI zip's nested zip, which pooch's `Unzip` processor does not look into. We also
need flattened member names, staging and an atomic move into our own layout, which would be
post-processing around pooch anyway. Atomic download and a tqdm bar, pooch's main gifts, take a few
lines here; and it is one dependency fewer.
Known limits: no resume of interrupted downloads; no proxy settings beyond urllib's defaults; the
bounded name lookup leaves a helper thread behind when the resolver hangs (it ends on its own).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable

from tqdm import tqdm

from har.datasets import wisdm2019, wisdm_v11
from har.errors import BadDataError, BadOptionError, DataNotFoundError, HarError
from har.paths import missing_data_hint

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
# Git blob ids of known-good files (see shared/data/README.md sections 3, 5 and 6).
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
        (1639, "7d2ab6494fb6b7e2bf13ae79f8895e93ccec95c3"), (1640, "eda01ca9b41f21c4254e086505eed09360d337b0"))}
    | {f"data_{subject}_accel_watch.txt": blob for subject, blob in (  # shared/data/README.md section 6
        (1600, "f1808c93e4a4f952b0e6a52eca690d9ffeb88edd"), (1601, "b4b4068d7ab58c7a49057c1544fcae8014061cf8"),
        (1602, "9654d9fc3914a7c21fbc05f7d04e7bb2fe387a3e"), (1603, "5efbb7b388ef0cfc1ad37c747efe4975984099b9"),
        (1604, "e60928361362ef3f49408ab68a1704285f778e84"), (1605, "91678eedbbbf98154e4be322123b200b583b0c90"),
        (1606, "360c5bf2df15e9996c800c1fb7950b124ddf0d13"), (1607, "48162658a8934cfabcab83e5776c8a065cbacf36"),
        (1608, "75afd2856a04ad0e00e1e8afddfb5bd8457bb8d8"), (1609, "94be9e0269349108489065be6429f5935ab413a0"),
        (1610, "fee5ab109a9a012a2965e9d11980597215b80cc5"), (1611, "5aa6a9c4311455657ebf12679b0887fe419690a8"),
        (1612, "c1be929ddb6407189d6482d3c8079990e534fdc2"), (1613, "78970bff9c1e00a1fbc154bb933912c224028df6"),
        (1614, "246245671b6a080073d8c6b61f32f3c5cc209173"), (1615, "7c764ce885d32e21eade279ea324d0d4eb9b4dc7"),
        (1616, "c734551071eb4d472fabb1f528bc28529aa5fb1b"), (1617, "13eff7251b686cc49fc92bf2eb8cda5300e5fba4"),
        (1618, "17e188ecd96b6122eacb4d8528e52bbc84099918"), (1619, "7f6b9af5d066fce01660cba3a6b3e12d34ebb84b"),
        (1620, "0a448c2a24df5b3927efde769c2d354d522a3dcd"), (1621, "a27c889ee7bc68ab3e80f804f934281dbaba60a6"),
        (1622, "6b8cd51bfbf3b144be47336e79c02f1ca6cac0bc"), (1623, "05ff80141305b96d6debf29a4a7b084c8607a5eb"),
        (1624, "4a648dca0ce2f6b1d99fb4c5bd07220e85ee30f2"), (1625, "701ab3bda675a99a1feb5f7fb5f313e631ae3aaf"),
        (1626, "30bbd224d3c9d5112d29907319ca9026beeca02a"), (1627, "b5773d50ef8bfef32c81392814f9a719c2c74fb8"),
        (1628, "f66ebd18731683801c79e092365715abd550bb5f"), (1630, "01a6bcff95d6d9450ccd3da04c7369f21fe0e252"),
        (1631, "5d8532cebb5d6a115863009bb6b40b404e5cf851"), (1632, "050631cfe6d4714f1bb36f1ceb57f15f77bb00e4"),
        (1633, "71cd6d1d58baf6c68b96f739dfa31aa8f2f16028"), (1634, "18320620954a38ddfe11413204f5d2aa759ed9bd"),
        (1635, "d4e5dbb8d16cdffec07cb66c8b4adafa40b9d90b"), (1636, "15a924b213daef3127648400d8c281d9eb300c68"),
        (1641, "1d66721ea709d4cd25d7ed361edd3e79ce2247b0"), (1642, "ac99c8cbd198f60483a3840c844e835c668df89b"),
        (1643, "3c114a615fbaeb37c651afafd57903e8fc62c48e"), (1644, "6c0982ad47d80bfdb6c83198085212c7f357d1de"),
        (1645, "096c4ca6c324005cef2410b219e6350b22d3094a"), (1646, "85cc420a2aa445436bf1283a71986e66c5d1d7ed"),
        (1647, "2f7b20e144dda9c4ffb49d6958f94033323eeaa6"), (1648, "a91291773253e79927f21c610c09eaaa5d32a385"),
        (1649, "d3de62a60373e725e019bcb655af5e601779164b"), (1650, "53e98682e97378f3857cf6a9741d1e620cb66bff"))},
}
# `raw/<device>/accel/data_<id>_accel_<device>.txt`, phone or watch (group 1: device, group 2: file name)
_ACCEL_MEMBER = re.compile(r"(?:^|/)raw/(phone|watch)/accel/(data_\d+_accel_\1\.txt)$")
_CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 5.0  # name lookup and TCP/TLS connect: offline machines fail fast
READ_TIMEOUT_S = 30.0  # longest silence tolerated once the transfer has started


class DownloadError(HarError):
    """The archive could not be fetched, or its checksum/content is not the expected one.

    `cause` is the short reason (e.g. "cannot reach URL (timed out)") without the manual-install advice.
    """

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause or message


def _resolve_quickly(url: str, timeout: float) -> None:
    """Fail with URLError when the host name cannot be resolved within `timeout` seconds.

    `getaddrinfo` ignores socket timeouts, and a resolver that gets no answer can block for tens of
    seconds; run it in a daemon thread and stop waiting after `timeout`.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                               type=socket.SOCK_STREAM)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=lookup, name="har-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise urllib.error.URLError(f"name lookup of {parts.hostname} timed out after {timeout:g} s")
    if outcome[0] is not None:
        raise urllib.error.URLError(outcome[0])


def fetch_url(url: str, dest: Path) -> None:
    """Stream `url` into `dest` (urllib; `file://` works too), with a progress bar on a terminal.

    Bounded waits: `CONNECT_TIMEOUT_S` for the name lookup and the connection, then `READ_TIMEOUT_S`
    per read. Network errors propagate (`install` turns them into one-line `DownloadError`s).
    """
    _resolve_quickly(url, CONNECT_TIMEOUT_S)
    with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response, open(dest, "wb") as out:
        sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
        if isinstance(sock, socket.socket):  # http(s): connected, so allow longer pauses mid-transfer
            sock.settimeout(READ_TIMEOUT_S)
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1][:40],
                  disable=None, leave=False) as bar:  # disable=None: no bar when stderr is not a terminal
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                out.write(chunk)
                bar.update(len(chunk))


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
    """Phone and watch accelerometer files (+ README, activity key) into `staging`; name -> blob id."""
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
        wanted = {info.filename: f"{match.group(1)}_accel/{match.group(2)}" for info, match in accel}
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


def expected_path(name: str, root: Path) -> Path:
    """Where the loaders look first for dataset `name` (named in missing-data messages)."""
    if name == "wisdm":
        return root / "wisdm" / WISDM_RAW
    return root / "wisdm2019" / "phone_accel"


def is_installed(name: str, root: Path) -> bool:
    """True when the loaders would find the data (`wisdm2019`: the phone accelerometer, the default)."""
    try:
        if name == "wisdm":
            return wisdm_v11.find_raw_file(root).is_file()  # the tarball itself counts: the loader reads it
        return bool(wisdm2019.find_files(root, "accel", "phone"))
    except DataNotFoundError:
        return False


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
                cause = f"cannot reach {URLS[name]} ({reason})"
                raise DownloadError(f"{cause}; {manual_hint(name, root)}", cause=cause) from None
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
        counts = "".join(f", {device} accel: {n} subjects" for device in ("phone", "watch")
                         if (n := sum(k.startswith(f"{device}_accel/") for k in blobs)))
        log(f"{name}: installed {len(blobs)} files in {target} ({checked} verified by git blob id{counts})")
        return target
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def ensure(name: str, root: str | os.PathLike, *, fetch: Fetcher | None = None,
           log: Callable[[str], None] = print) -> Path:
    """Make sure dataset `name` is present: no network when it is, else `install` it.

    On any failure (offline, refused content, unwritable root) raises one `DataNotFoundError` whose
    one-line message names the expected path, `--data-dir`, `$HAR_DATA_DIR` and the download command.
    """
    if name not in URLS:
        raise BadOptionError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(URLS))}")
    root = Path(root)
    if is_installed(name, root):
        log(f"{name}: present in {root / TARGET_DIRS[name]}")
        return root / TARGET_DIRS[name]
    try:
        return install(name, root, fetch=fetch, log=log)
    except HarError as exc:
        cause = getattr(exc, "cause", None) or str(exc)
        raise DataNotFoundError(f"{name} data not found at {expected_path(name, root)} and the download failed "
                                f"({cause}); {missing_data_hint(name, root)}") from None
