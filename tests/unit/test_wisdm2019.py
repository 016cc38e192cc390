import gzip
import lzma
import os

import numpy as np
import pytest

from har.datasets import wisdm2019
from har.errors import BadDataError, DataNotFoundError

LINES = ["1600,A,252207666810782,-0.36476135,8.793503,1.0550842;",
         "1600,A,252207717164786,-0.8797302,9.768784,1.0169983;",
         "1600,B,252207767518790,2.0014954,11.10907,2.619156;"]


def _write(tmp_path, text, name="data_1600_accel_phone.txt"):
    folder = tmp_path / "wisdm2019" / "phone_accel"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = text.encode()
    path.write_bytes(lzma.compress(data) if name.endswith(".xz") else gzip.compress(data)
                     if name.endswith(".gz") else data)
    return path


def test_real_files_parse_completely(recording):
    # counts published in shared/data/README.md section 5
    assert recording.n_samples == 1_433_489
    assert recording.rejects == {}
    assert len(np.unique(recording.user)) == 22
    assert np.bincount(recording.label)[:5].tolist() == [79676, 81439, 79650, 79687, 79653]


@pytest.mark.parametrize("name", ["data_1600_accel_phone.txt", "data_1600_accel_phone.txt.gz",
                                  "data_1600_accel_phone.txt.xz"])
def test_plain_gz_xz_agree(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HAR_CACHE_DIR", str(tmp_path / "cache"))
    _write(tmp_path, "\n".join(LINES) + "\n", name)
    rec = wisdm2019.load(tmp_path)
    assert rec.user.tolist() == [1600] * 3 and rec.label.tolist() == [0, 0, 1]
    assert rec.timestamp_ns[0] == 252207666810782
    np.testing.assert_allclose(rec.xyz[2], [2.0014954, 11.10907, 2.619156], rtol=1e-6)


@pytest.mark.parametrize("bad, kind", [
    ("1600,A,252207666810782,-0.36,8.79;", "wrong_field_count"),
    ("1600,A,252207666810782,-0.36,,1.05;", "empty_field"),
    ("1600,N,252207666810782,-0.36,8.79,1.05;", "unknown_activity"),
    ("1600,A,2522076x6810782,-0.36,8.79,1.05;", "bad_number"),
    ("1600,A,252207666810782,-0.36,nan,1.05;", "bad_number"),
])
def test_each_malformed_kind_is_counted_not_fatal(tmp_path, monkeypatch, bad, kind):
    monkeypatch.setenv("HAR_CACHE_DIR", str(tmp_path / "cache"))
    _write(tmp_path, "\n".join([LINES[0], bad, LINES[1], ""]) + "\n")
    rec = wisdm2019.load(tmp_path)
    assert rec.n_samples == 2
    assert rec.rejects == {kind: 1}


def test_cache_is_used_then_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HAR_CACHE_DIR", str(tmp_path / "cache"))
    path = _write(tmp_path, "\n".join(LINES) + "\n")
    first = wisdm2019.load(tmp_path)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert wisdm2019.load(tmp_path).n_samples == first.n_samples
    path.write_text("\n".join(LINES[:2]) + "\n")
    os.utime(path, ns=(1, 1))
    assert wisdm2019.load(tmp_path).n_samples == 2


def test_decompressed_copy_wins_over_its_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("HAR_CACHE_DIR", str(tmp_path / "cache"))
    _write(tmp_path, "\n".join(LINES) + "\n", "data_1600_accel_phone.txt.xz")
    _write(tmp_path, LINES[0] + "\n", "data_1600_accel_phone.txt")
    assert wisdm2019.load(tmp_path).n_samples == 1


def test_missing_and_unusable_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HAR_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="phone_accel"):
        wisdm2019.load(tmp_path)
    _write(tmp_path, "")
    with pytest.raises(BadDataError):
        wisdm2019.load(tmp_path)
    _write(tmp_path, "a;b;c\n1;2;3\n")
    with pytest.raises(BadDataError):
        wisdm2019.load(tmp_path)
