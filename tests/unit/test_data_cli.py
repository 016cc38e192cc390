"""`python -m har.data ensure` and the one-line missing-data messages (no network: fetch is replaced)."""
from __future__ import annotations

import io
import os
import shutil
import stat
import urllib.error
import zipfile
from pathlib import Path

import pytest

from har import data as cli
from har.datasets import arff, download, wisdm2019, wisdm_v11
from har.errors import DataNotFoundError

HINT_PARTS = ("--data-dir", "HAR_DATA_DIR", "python -m har.data download")


def fetch_that_fails(calls: list[str]):
    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    return fetch


def fetch_that_must_not_run(url: str, dest: Path) -> None:
    raise AssertionError(f"ensure touched the network: {url}")


def phone_files(root: Path, subjects=(1600, 1604)) -> Path:
    folder = root / "wisdm2019" / "phone_accel"
    folder.mkdir(parents=True)
    for s in subjects:
        (folder / f"data_{s}_accel_phone.txt").write_text(f"{s},A,1,0.0,0.0,0.0;\n")
    return folder


def test_ensure_offline_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    calls: list[str] = []
    monkeypatch.setattr(download, "fetch_url", fetch_that_fails(calls))
    assert cli.main(["ensure", "wisdm2019", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err
    assert str(root / "wisdm2019" / "phone_accel") in err
    for part in HINT_PARTS:
        assert part in err, part
    assert "python -m har.data download wisdm2019" in err and "Temporary failure in name resolution" in err
    assert calls == [download.URLS["wisdm2019"]]  # one attempt
    assert list(root.iterdir()) == []  # no .part file, no staging dir


def test_ensure_honours_har_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "from-env"
    monkeypatch.setenv("HAR_DATA_DIR", str(root))
    monkeypatch.setattr(download, "fetch_url", fetch_that_fails([]))
    assert cli.main(["ensure", "wisdm2019"]) == 2
    assert str(root / "wisdm2019" / "phone_accel") in capsys.readouterr().err
    phone_files(root)
    monkeypatch.setattr(download, "fetch_url", fetch_that_must_not_run)
    assert cli.main(["ensure", "wisdm2019"]) == 0


def test_ensure_present_exits_0_without_fetching_or_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    phone_files(root)
    monkeypatch.setattr(download, "fetch_url", fetch_that_must_not_run)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    # read-only, like CI's HAR_DATA_DIR=../shared/data: ensure must not even try to write
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")] if p.is_dir()}
    for p in modes:
        p.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert cli.main(["ensure", "wisdm2019", "--data-dir", str(root)]) == 0
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    captured = capsys.readouterr()
    assert captured.err == "" and f"present in {root / 'wisdm2019'}" in captured.out
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_ensure_accepts_the_shared_xz_layout(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "fetch_url", fetch_that_must_not_run)
    assert cli.main(["ensure", "wisdm2019", "--data-dir", str(data_dir)]) == 0


def test_ensure_downloads_when_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("wisdm-dataset/raw/phone/accel/data_1699_accel_phone.txt", "1699,A,1,0.0,0.0,0.0;\n")
        zf.writestr("wisdm-dataset/raw/watch/accel/data_1699_accel_watch.txt", "1699,A,1,0.0,0.0,0.0;\n")
    archive = tmp_path / "uci.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("wisdm-dataset.zip", inner.getvalue())
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        shutil.copyfile(archive, dest)

    root = tmp_path / "root"
    assert download.ensure("wisdm2019", root, fetch=fetch, log=lambda _: None) == root / "wisdm2019"
    assert calls == [download.URLS["wisdm2019"]]
    assert [p.name for p in wisdm2019.find_files(root, "accel", "watch")] == ["data_1699_accel_watch.txt"]
    assert download.ensure("wisdm2019", root, fetch=fetch_that_must_not_run, log=lambda _: None)
    assert len(calls) == 1


def test_ensure_refused_content_is_one_line_too(tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("raw/phone/accel/data_1600_accel_phone.txt", "tampered")

    def fetch(url: str, dest: Path) -> None:
        shutil.copyfile(archive, dest)

    with pytest.raises(DataNotFoundError) as info:
        download.ensure("wisdm2019", tmp_path / "root", fetch=fetch, log=lambda _: None)
    message = str(info.value)
    assert "\n" not in message and "content check failed" in message
    assert all(part in message for part in HINT_PARTS)


@pytest.mark.parametrize("raise_it, name, expected", [
    (lambda r: wisdm2019.find_files(r), "wisdm2019", "wisdm2019/phone_accel"),
    (lambda r: wisdm2019.find_files(r, "accel", "watch"), "wisdm2019", "wisdm2019/watch_accel"),
    (lambda r: wisdm_v11.find_raw_file(r), "wisdm", "wisdm/WISDM_ar_v1.1_raw.txt"),
    (lambda r: wisdm_v11.load(r / "wisdm" / "WISDM_ar_v1.1_raw.txt"), "wisdm", "wisdm/WISDM_ar_v1.1_raw.txt"),
    (lambda r: wisdm_v11.load(r), "wisdm", ""),
    (lambda r: arff.find_features_file(r), "wisdm", "wisdm/WISDM_ar_v1.1_transformed.arff"),
    (lambda r: arff.load(r / "wisdm" / "x.arff"), "wisdm", "wisdm/x.arff"),
])
def test_every_missing_data_error_is_one_line_with_the_remedy(tmp_path: Path, raise_it, name: str,
                                                              expected: str) -> None:
    with pytest.raises(DataNotFoundError) as info:
        raise_it(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), expected).rstrip(os.sep) in message
    for part in HINT_PARTS:
        assert part in message, part
    assert f"python -m har.data download {name}" in message
