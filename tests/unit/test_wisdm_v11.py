"""WISDM v1.1 raw parser: exact-format fixtures written here, one per kind of broken record."""
from __future__ import annotations

import gzip
import io
import lzma
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from har.datasets import wisdm_v11
from har.datasets.wisdm_v11 import ACTIVITIES, REJECT_KINDS, find_raw_file, load, parse_text
from har.errors import BadDataError, DataNotFoundError, HarError

GOOD = "33,Jogging,49105962326000,-0.6946377,12.680544,0.50395286;"
GOOD2 = "17,Standing,49106062271000,5.012288,11.264028,0.95342433;"


def n_candidates(text: str) -> int:
    """The documented definition, written independently of the parser."""
    return sum(1 for chunk in re.split(r"[;\r\n]", text) if chunk.strip(" \t\x0b\x0c"))


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def test_well_formed_records_exact_values(tmp_path: Path) -> None:
    rec = load(write(tmp_path / "raw.txt", f"{GOOD}\n{GOOD2}\n"))
    assert rec.n_samples == 2
    assert rec.user.dtype == np.int32 and rec.user.tolist() == [33, 17]
    assert rec.label.dtype == np.int16 and [ACTIVITIES[i] for i in rec.label] == ["Jogging", "Standing"]
    assert rec.timestamp_ns.dtype == np.int64
    assert rec.timestamp_ns.tolist() == [49105962326000, 49106062271000]
    assert rec.xyz.dtype == np.float32
    np.testing.assert_array_equal(rec.xyz, np.array([[-0.6946377, 12.680544, 0.50395286],
                                                     [5.012288, 11.264028, 0.95342433]], dtype=np.float32))
    assert rec.activities == ("Walking", "Jogging", "Upstairs", "Downstairs", "Sitting", "Standing")
    assert rec.sample_rate_hz == 20.0
    assert rec.rejects == {}
    assert rec.source == str(tmp_path / "raw.txt")


# (fixture text, number parsed, exact reject counts)
CASES = {
    "several_records_on_one_line": (f"{GOOD}{GOOD2}{GOOD}\n", 3, {}),
    "record_split_over_two_lines": (f"{GOOD}\n33,Jogging,4910596\n2326000,-0.69,12.68,0.50;\n{GOOD2}\n",
                                    2, {"wrong_field_count": 2}),
    "truncated_last_record": (f"{GOOD}\n33,Jogging,49105962326000,-0.69", 1, {"wrong_field_count": 1}),
    "empty_z_field": (f"{GOOD}\n11,Walking,1867172313000,4.4,4.4,;\n", 1, {"empty_field": 1}),
    "empty_middle_field": ("11,Walking,,4.4,4.4,1.0;\n11,,1,4.4,4.4,1.0;\n", 0, {"empty_field": 2}),
    "trailing_comma_after_six_fields": ("11,Walking,1867172313000,4.4,4.4,1.0,;\n", 1, {}),
    "seven_real_fields": ("11,Walking,1867172313000,4.4,4.4,1.0,2.0;\n", 0, {"wrong_field_count": 1}),
    "missing_semicolon": (f"{GOOD[:-1]}\n{GOOD2[:-1]}\n{GOOD}", 3, {}),
    "blank_and_whitespace_lines": (f"\n\n  \t\n{GOOD}\n;;\n \n{GOOD2}\n\n", 2, {}),
    "crlf_line_endings": (f"{GOOD}\r\n{GOOD2}\r\n", 2, {}),
    "timestamp_zero": (f"{GOOD}\n33,Jogging,0,1.0,2.0,3.0;\n", 1, {"zero_timestamp": 1}),
    "bad_timestamp": ("33,Jogging,-5,1,2,3;\n33,Jogging,1.5e13,1,2,3;\n33,Jogging,99999999999999999999,1,2,3;\n",
                      0, {"bad_timestamp": 3}),
    "bad_user": ("0,Walking,1,1,2,3;\n37,Walking,1,1,2,3;\nx,Walking,1,1,2,3;\n-1,Walking,1,1,2,3;\n",
                 0, {"bad_user": 4}),
    "unknown_activity": ("33,walking,1,1,2,3;\n33,Running,1,1,2,3;\n", 0, {"unknown_activity": 2}),
    "bad_number": ("33,Jogging,1,abc,2,3;\n33,Jogging,1,nan,2,3;\n33,Jogging,1,1,inf,3;\n"
                   "33,Jogging,1,1,2,1e39;\n33,Jogging,1,1_0,2,3;\n", 0, {"bad_number": 5}),
    "blanks_inside_fields_are_tolerated": (" 33 , Jogging ,\t1 , 1.5 ,2, 3 ;\n", 1, {}),
    "mixed_kinds_counted_separately": (
        f"{GOOD}\n0,Walking,1,1,2,3;\n33,Jogging,0,1,2,3;\n33,Jogging,1,x,2,3;half\n", 1,
        {"bad_user": 1, "zero_timestamp": 1, "bad_number": 1, "wrong_field_count": 1}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_broken_record_kind_is_counted_exactly(name: str) -> None:
    text, n_parsed, rejects = CASES[name]
    parsed = parse_text(text)
    assert len(parsed.user) == n_parsed
    assert parsed.rejects == rejects
    assert set(parsed.rejects) <= set(REJECT_KINDS)
    assert n_parsed + sum(rejects.values()) == n_candidates(text)
    # The bulk fast path and the per-record reference agree exactly.
    reference = parse_text(text, fast=False)
    for got, want in zip(parsed, reference):
        if isinstance(got, dict):
            assert got == want
        else:
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_file_order_is_kept_across_fast_runs_and_broken_lines() -> None:
    lines = [f"{1 + i % 36},{ACTIVITIES[i % 6]},{1000 + i},{i}.5,0,0;" for i in range(40)]
    lines[5] = lines[5] + lines[6]  # two records on one line: goes through the fallback
    lines[6] = "junk"  # rejected, and record 6 still comes right after record 5
    lines[20] = lines[20][:-1]  # no ';': fallback again
    parsed = parse_text("\n".join(lines) + "\n")
    assert parsed.timestamp_ns.tolist() == [1000 + i for i in range(40)]
    assert parsed.label.tolist() == [i % 6 for i in range(40)]
    assert parsed.xyz[:, 0].tolist() == [i + 0.5 for i in range(40)]
    assert parsed.rejects == {"wrong_field_count": 1}


def test_fast_path_handles_exponents_and_every_activity() -> None:
    text = "".join(f"{u},{a},{10**14 + u},-1.5E-4,{u}.25,0;\n" for u, a in zip(range(1, 37), ACTIVITIES * 6))
    parsed = parse_text(text)
    assert parsed.label.tolist() == [i % 6 for i in range(36)]
    assert parsed.user.tolist() == list(range(1, 37))
    assert parsed.timestamp_ns.tolist() == [10**14 + u for u in range(1, 37)]
    assert np.all(parsed.xyz[:, 0] == np.float32(-1.5e-4))


def test_large_timestamps_stay_exact() -> None:
    # 19 digits do not fit a float64 mantissa: these take the exact integer path.
    parsed = parse_text("1,Walking,9223372036854775807,1,2,3;\n1,Walking,1234567890123456789,1,2,3;\n")
    assert parsed.timestamp_ns.tolist() == [9223372036854775807, 1234567890123456789]


@pytest.fixture()
def sample_text() -> str:
    body = "".join(CASES[name][0] for name in sorted(CASES))
    return body + "\n".join(f"{i % 36 + 1},{ACTIVITIES[i % 6]},{5 + i},0.{i},-{i}.1,9.81;" for i in range(200))


def _assert_same(a, b) -> None:
    for name in ("user", "label", "timestamp_ns", "xyz"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.rejects == b.rejects and a.activities == b.activities and a.sample_rate_hz == b.sample_rate_hz


def test_compressed_and_tarball_variants_give_identical_recordings(tmp_path: Path, sample_text: str) -> None:
    raw = sample_text.encode()
    plain = load(write(tmp_path / "WISDM_ar_v1.1_raw.txt", sample_text))
    (tmp_path / "WISDM_ar_v1.1_raw.txt.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "WISDM_ar_v1.1_raw.txt.xz").write_bytes(lzma.compress(raw))
    tarball = tmp_path / "WISDM_ar_latest.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, payload in (("WISDM_ar_v1.1/readme.txt", b"x"), ("WISDM_ar_v1.1/WISDM_ar_v1.1_raw.txt", raw)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert plain.n_samples > 200 and sum(plain.rejects.values()) > 20
    for variant in ("WISDM_ar_v1.1_raw.txt.gz", "WISDM_ar_v1.1_raw.txt.xz", "WISDM_ar_latest.tar.gz"):
        _assert_same(load(tmp_path / variant), plain)
    assert load(tarball).source.endswith("::WISDM_ar_v1.1/WISDM_ar_v1.1_raw.txt")


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "raw.txt"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load(path).user.tolist() == [33]


def test_unusable_inputs_raise_one_line_har_errors(tmp_path: Path) -> None:
    with pytest.raises(BadDataError, match="no valid WISDM v1.1 record"):
        load(write(tmp_path / "empty.txt", ""))
    with pytest.raises(BadDataError, match="wrong_field_count"):
        load(write(tmp_path / "other.txt", "a,b,c\nd,e\n"))
    with pytest.raises(DataNotFoundError, match="missing.txt"):
        load(tmp_path / "missing.txt")
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BadDataError, match="cannot read"):
        load(tmp_path / "broken.txt.gz")
    tarball = tmp_path / "WISDM_ar_latest.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("readme.txt"), io.BytesIO(b""))
    with pytest.raises(BadDataError, match="no member named WISDM_ar_v1.1_raw.txt"):
        load(tarball)
    with pytest.raises(HarError) as info:
        load(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", wisdm_v11.ACCEPTED_NAMES)
def test_find_raw_file_accepts_each_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "wisdm" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert find_raw_file(tmp_path) == path


def test_find_raw_file_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        find_raw_file(tmp_path)
    assert str(tmp_path / "wisdm" / "WISDM_ar_v1.1_raw.txt") in str(info.value)


# --- properties -------------------------------------------------------------------------------

FRAGMENTS = [GOOD, GOOD2, GOOD[:-1], "33", "Jogging", "Sitting", "walking", "0", "49105962326000",
             "99999999999999999999", "-0.69", "1.5E-3", "1e39", "nan", "", ",", ",,", ";", ";;", "\n",
             "\r\n", "\r", " ", "\t", "\x0b", "\xa0", "é", "\x00", "-", ".", "+"]


def _check_invariants(text: str) -> None:
    parsed = parse_text(text)
    n = len(parsed.user)
    assert len(parsed.label) == len(parsed.timestamp_ns) == n and parsed.xyz.shape == (n, 3)
    assert n + sum(parsed.rejects.values()) == n_candidates(text)
    assert all(v > 0 for v in parsed.rejects.values()) and set(parsed.rejects) <= set(REJECT_KINDS)
    assert np.all((parsed.user >= 1) & (parsed.user <= 36))
    assert np.all((parsed.label >= 0) & (parsed.label < 6)) and np.all(parsed.timestamp_ns > 0)
    assert np.all(np.isfinite(parsed.xyz))
    reference = parse_text(text, fast=False)
    for got, want in zip(parsed[:4], reference[:4]):
        np.testing.assert_array_equal(got, want)
    assert parsed.rejects == reference.rejects


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    _check_invariants(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))
def test_record_fragment_grammar_never_raises(text: str) -> None:
    _check_invariants(text)


record = st.tuples(st.integers(1, 36), st.sampled_from(ACTIVITIES), st.integers(1, 2**63 - 1),
                   st.lists(st.floats(-20, 20), min_size=3, max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.lists(record, max_size=30), st.sampled_from(["\n", "\r\n", ""]))
def test_valid_records_round_trip(records: list, sep: str) -> None:
    text = sep.join(f"{u},{a},{t},{x!r},{y!r},{z!r};" for u, a, t, (x, y, z) in records)
    parsed = parse_text(text)
    assert parsed.rejects == {}
    assert parsed.user.tolist() == [r[0] for r in records]
    assert [ACTIVITIES[i] for i in parsed.label] == [r[1] for r in records]
    assert parsed.timestamp_ns.tolist() == [r[2] for r in records]
    np.testing.assert_array_equal(parsed.xyz, np.array([r[3] for r in records], dtype=np.float32).reshape(-1, 3))


def test_well_formed_lines_take_the_bulk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speed guard: clean lines (LF or CRLF, with or without a final newline) never reach `_classify`."""
    def refuse(chunk: bytes):
        raise AssertionError(f"slow path used for {chunk!r}")

    monkeypatch.setattr(wisdm_v11, "_classify", refuse)
    text = "\n".join([GOOD, GOOD2] * 50) + "\r\n" + GOOD
    assert len(parse_text(text).user) == 101
