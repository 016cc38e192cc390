"""Download/install of the WISDM archives, run on tiny local archives (no network)."""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import urllib.error
import zipfile
from pathlib import Path

import pytest

from har import data as cli
from har.datasets import download, wisdm2019, wisdm_v11
from har.datasets.download import DownloadError, git_blob_id, install

RAW = b"33,Jogging,49105962326000,-0.6946377,12.680544,0.50395286;\n17,Walking,2,1.0,2.0,3.0;\n"


def blob(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def make_tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture()
def tarball(tmp_path: Path) -> Path:
    return make_tarball(tmp_path / "WISDM_ar_latest.tar.gz", {
        "WISDM_ar_v1.1/WISDM_ar_v1.1_raw.txt": RAW, "WISDM_ar_v1.1/readme.txt": b"readme\n",
        "WISDM_ar_v1.1/._readme.txt": b"mac junk", "../../escape.txt": b"flattened"})


@pytest.fixture()
def trust_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the fixture's raw file the 'known good' one."""
    monkeypatch.setitem(download.EXPECTED_BLOBS, "wisdm", {"WISDM_ar_v1.1_raw.txt": blob(RAW)})


def copy_fetcher(source: Path):
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        shutil.copyfile(source, dest)

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


def test_git_blob_id_matches_git_hash_object() -> None:
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # values printed by `git hash-object`
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_install_unpacks_flat_and_leaves_nothing_else(tmp_path: Path, tarball: Path, trust_fixture: None) -> None:
    root = tmp_path / "root"
    fetch = copy_fetcher(tarball)
    logged: list[str] = []
    target = install("wisdm", root, fetch=fetch, log=logged.append)
    assert fetch.calls == [download.URLS["wisdm"]]
    assert target == root / "wisdm"
    assert sorted(p.name for p in root.iterdir()) == ["wisdm"]  # no .part, no staging dir
    assert sorted(p.name for p in target.iterdir()) == ["WISDM_ar_v1.1_raw.txt", "escape.txt", "readme.txt"]
    assert not (tmp_path / "escape.txt").exists()
    assert (target / "WISDM_ar_v1.1_raw.txt").read_bytes() == RAW
    assert wisdm_v11.load(wisdm_v11.find_raw_file(root)).user.tolist() == [33, 17]
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert any(digest in line for line in logged)  # unpinned: the digest is shown to the user
    assert (target.stat().st_mode & 0o777) == 0o755


def test_install_into_existing_folder_keeps_other_files(tmp_path: Path, tarball: Path, trust_fixture: None) -> None:
    (tmp_path / "wisdm").mkdir()
    (tmp_path / "wisdm" / "WISDM_ar_v1.1_transformed.arff.gz").write_bytes(b"keep me")
    install("wisdm", tmp_path, fetch=copy_fetcher(tarball), log=lambda _: None)
    assert (tmp_path / "wisdm" / "WISDM_ar_v1.1_transformed.arff.gz").read_bytes() == b"keep me"
    assert (tmp_path / "wisdm" / "WISDM_ar_v1.1_raw.txt").read_bytes() == RAW
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_already_present_is_not_downloaded_again(tmp_path: Path, tarball: Path) -> None:
    (tmp_path / "wisdm").mkdir()
    shutil.copy(tarball, tmp_path / "wisdm" / "WISDM_ar_latest.tar.gz")  # the loader reads it as is
    fetch = copy_fetcher(tarball)
    install("wisdm", tmp_path, fetch=fetch, log=lambda _: None)
    assert fetch.calls == []
    assert not (tmp_path / "wisdm" / "WISDM_ar_v1.1_raw.txt").exists()


def test_explicit_archive_installs_even_when_present(tmp_path: Path, tarball: Path, trust_fixture: None) -> None:
    (tmp_path / "wisdm").mkdir()
    shutil.copy(tarball, tmp_path / "wisdm" / "WISDM_ar_latest.tar.gz")
    install("wisdm", tmp_path, archive=tarball, log=lambda _: None)
    assert (tmp_path / "wisdm" / "WISDM_ar_v1.1_raw.txt").read_bytes() == RAW


def test_pinned_checksum_mismatch_is_refused(tmp_path: Path, tarball: Path, trust_fixture: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(download.EXPECTED_SHA256, "wisdm", "0" * 64)
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        install("wisdm", root, fetch=copy_fetcher(tarball), log=lambda _: None)
    assert list(root.iterdir()) == []
    # With the right digest pinned, the same archive installs.
    monkeypatch.setitem(download.EXPECTED_SHA256, "wisdm", hashlib.sha256(tarball.read_bytes()).hexdigest())
    install("wisdm", root, fetch=copy_fetcher(tarball), log=lambda _: None)
    assert (root / "wisdm" / "WISDM_ar_v1.1_raw.txt").is_file()


def test_unknown_raw_file_content_is_refused_by_blob_id(tmp_path: Path, tarball: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    # Default table: the real file's blob id, which the fixture does not have.
    code = cli.main(["download", "wisdm", "--data-dir", str(tmp_path / "root"), "--archive", str(tarball)])
    err = capsys.readouterr().err
    assert code == 2
    assert "content check failed" in err and "f448b1ec15898a77f47f49d85e98ae1bde83185c" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list((tmp_path / "root").iterdir()) == []


def test_archive_without_raw_file_is_refused(tmp_path: Path) -> None:
    bad = make_tarball(tmp_path / "x.tar.gz", {"readme.txt": b"x"})
    with pytest.raises(DownloadError, match="does not contain WISDM_ar_v1.1_raw.txt"):
        install("wisdm", tmp_path / "root", archive=bad, log=lambda _: None)
    assert list((tmp_path / "root").iterdir()) == []


def test_corrupt_archive_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    assert cli.main(["download", "wisdm", "--data-dir", str(tmp_path / "r"), "--archive",
                     str(tmp_path / "junk.tar.gz")]) == 2
    assert "cannot unpack" in capsys.readouterr().err
    assert list((tmp_path / "r").iterdir()) == []


def test_offline_exits_2_with_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    def offline(url: str, dest: Path) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "fetch_url", offline)
    root = tmp_path / "root"
    assert cli.main(["download", "wisdm", "--data-dir", str(root)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "cannot reach https://www.cis.fordham.edu" in captured.err
    assert f"put it in {root / 'wisdm'}/" in captured.err
    assert list(root.iterdir()) == []  # the .part file is gone


def test_real_urllib_fetch_over_file_url(tmp_path: Path, tarball: Path, trust_fixture: None,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(download.URLS, "wisdm", tarball.as_uri())
    assert cli.main(["download", "wisdm", "--data-dir", str(tmp_path / "root")]) == 0
    assert (tmp_path / "root" / "wisdm" / "WISDM_ar_v1.1_raw.txt").read_bytes() == RAW
    assert "installed 3 files" in capsys.readouterr().out
    monkeypatch.setitem(download.URLS, "wisdm2019", (tmp_path / "absent.zip").as_uri())
    assert cli.main(["download", "wisdm2019", "--data-dir", str(tmp_path / "root")]) == 2
    assert "--archive <file>" in capsys.readouterr().err


WATCH_LINE = b"1699,A,90426708196641,7.091625,-0.5916671,8.195502;\n"


def make_wisdm2019_zip(path: Path, accel: dict[str, bytes], watch: dict[str, bytes] | None = None) -> Path:
    """UCI layout: an outer zip holding wisdm-dataset.zip (default watch member: an unknown subject)."""
    watch = {"data_1699_accel_watch.txt": WATCH_LINE} if watch is None else watch
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("wisdm-dataset/README.txt", "readme")
        zf.writestr("wisdm-dataset/activity_key.txt", "walking = A")
        zf.writestr("wisdm-dataset/raw/watch/gyro/data_1601_gyro_watch.txt", "not taken")
        zf.writestr("wisdm-dataset/raw/phone/accel/data_1601_accel_watch.txt", "device mismatch: not taken")
        for name, payload in accel.items():
            zf.writestr(f"wisdm-dataset/raw/phone/accel/{name}", payload)
        for name, payload in watch.items():
            zf.writestr(f"wisdm-dataset/raw/watch/accel/{name}", payload)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("WISDM-dataset-description.pdf", "pdf")
        zf.writestr("wisdm-dataset.zip", inner.getvalue())
    return path


def test_wisdm2019_layout_from_nested_zip(tmp_path: Path) -> None:
    line = b"1601,A,252207666810782,-0.36476135,8.793503,1.0550842;\n"
    archive = make_wisdm2019_zip(tmp_path / "uci.zip", {"data_1601_accel_phone.txt": line})
    logged: list[str] = []
    target = install("wisdm2019", tmp_path / "root", archive=archive, log=logged.append)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == ["README.txt", "activity_key.txt", "phone_accel/data_1601_accel_phone.txt",
                     "watch_accel/data_1699_accel_watch.txt"]
    assert (target / "phone_accel" / "data_1601_accel_phone.txt").read_bytes() == line
    assert (target / "watch_accel" / "data_1699_accel_watch.txt").read_bytes() == WATCH_LINE
    assert "phone accel: 1 subjects, watch accel: 1 subjects" in logged[-1]
    assert archive.is_file()  # a user's own archive is never deleted
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["wisdm2019"]
    # the loader reads what was installed, for both devices
    assert [p.name for p in wisdm2019.find_files(tmp_path / "root", "accel", "watch")] == [
        "data_1699_accel_watch.txt"]


def test_wisdm2019_known_watch_subjects_are_checked(tmp_path: Path) -> None:
    assert len([k for k in download.EXPECTED_BLOBS["wisdm2019"] if k.endswith("_watch.txt")]) == 46
    assert download.EXPECTED_BLOBS["wisdm2019"]["data_1600_accel_watch.txt"] == \
        "f1808c93e4a4f952b0e6a52eca690d9ffeb88edd"  # `xz -dc ...1600_accel_watch.txt.xz | git hash-object --stdin`
    phone = {"data_1699_accel_phone.txt": b"1699,A,1,0.0,0.0,0.0;\n"}
    archive = make_wisdm2019_zip(tmp_path / "uci.zip", phone, {"data_1600_accel_watch.txt": b"tampered"})
    with pytest.raises(DownloadError, match="data_1600_accel_watch.txt .* has git blob id"):
        install("wisdm2019", tmp_path / "root", archive=archive, log=lambda _: None)
    assert list((tmp_path / "root").iterdir()) == []


def test_wisdm2019_watch_blobs_match_the_shared_copy(data_dir: Path) -> None:
    """The pinned watch ids are those of the real files (46 subjects under $HAR_DATA_DIR)."""
    import lzma
    files = wisdm2019.find_files(data_dir, "accel", "watch")
    assert len(files) == 46
    for path in files:
        raw = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
        name = path.name.removesuffix(".xz")
        assert git_blob_id(raw) == download.EXPECTED_BLOBS["wisdm2019"][name], name


def test_wisdm2019_known_subject_with_wrong_content_is_refused(tmp_path: Path) -> None:
    archive = make_wisdm2019_zip(tmp_path / "uci.zip", {"data_1600_accel_phone.txt": b"tampered"})
    with pytest.raises(DownloadError, match="data_1600_accel_phone.txt .* has git blob id"):
        install("wisdm2019", tmp_path / "root", archive=archive, log=lambda _: None)
    assert list((tmp_path / "root").iterdir()) == []
    empty = make_wisdm2019_zip(tmp_path / "empty.zip", {})
    with pytest.raises(DownloadError, match="no raw/phone/accel"):
        install("wisdm2019", tmp_path / "root", archive=empty, log=lambda _: None)


def test_info_lists_present_and_missing(tmp_path: Path, tarball: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "wisdm").mkdir()
    shutil.copy(tarball, tmp_path / "wisdm" / "WISDM_ar_latest.tar.gz")
    assert cli.main(["info", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"data root: {tmp_path}"
    assert "present" in lines[1] and "WISDM_ar_latest.tar.gz" in lines[1]
    assert lines[2].split()[-1] == "missing" and lines[3].split()[-1] == "missing"
    assert "wisdm2019 watch accel" in lines[4] and lines[4].split()[-1] == "missing"


def test_info_lists_watch_accel(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "wisdm2019" / "watch_accel"
    folder.mkdir(parents=True)
    for subject in (1600, 1601):
        (folder / f"data_{subject}_accel_watch.txt.xz").write_bytes(b"")
    assert cli.main(["info", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split()[-1] == "missing"  # phone
    assert lines[4].endswith(f"present  2 subject files in {folder}")


def test_fetch_url_streams_with_a_progress_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * (3 * (1 << 20) + 5))  # more than one chunk
    bars: list[dict] = []
    real_tqdm = download.tqdm

    def recording_tqdm(*args, **kwargs):
        assert kwargs["disable"] is None  # shown on a terminal only
        bar = real_tqdm(*args, **{**kwargs, "disable": False, "file": io.StringIO()})  # force it on here
        bars.append({"total": kwargs.get("total"), "bar": bar})
        return bar

    monkeypatch.setattr(download, "tqdm", recording_tqdm)
    download.fetch_url(source.as_uri(), tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
    assert bars[0]["total"] == source.stat().st_size and bars[0]["bar"].n == source.stat().st_size


def test_name_lookup_that_hangs_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    release = threading.Event()

    def hanging_lookup(*args, **kwargs):
        release.wait(10)
        raise OSError("released")

    monkeypatch.setattr(download.socket, "getaddrinfo", hanging_lookup)
    monkeypatch.setattr(download, "CONNECT_TIMEOUT_S", 0.2)
    t0 = time.perf_counter()
    try:
        with pytest.raises(urllib.error.URLError, match="name lookup of example.invalid timed out"):
            download.fetch_url("https://example.invalid/x.zip", Path("/nonexistent/never-written"))
    finally:
        release.set()
    assert time.perf_counter() - t0 < 2
