"""WISDM v1.1 transformed ARFF: the real file (via the data root) plus small exact-format fixtures."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from har.datasets.arff import FeatureTable, find_features_file, load, parse_arff
from har.errors import BadDataError, DataNotFoundError, HarError
from har.paths import data_root

CLASSES = ("Walking", "Jogging", "Upstairs", "Downstairs", "Sitting", "Standing")
FEATURE_NAMES = tuple(f"{axis}{i}" for axis in "XYZ" for i in range(10)) + (
    "XAVG", "YAVG", "ZAVG", "XPEAK", "YPEAK", "ZPEAK", "XABSOLDEV", "YABSOLDEV", "ZABSOLDEV",
    "XSTANDDEV", "YSTANDDEV", "ZSTANDDEV", "RESULTANT")


def header(users: str = '{"33" , "17", "5"}', class_line: str = '@attribute class{ "Walking" , "Jogging" , '
           '"Upstairs" , "Downstairs" , "Sitting" , "Standing" }', n_features: int = 43) -> list[str]:
    """The real file's header layout (spacing quirks included), with a short user list."""
    lines = ["@relation activity_recognition_labeled", "", '@attribute "UNIQUE_ID" numeric',
             f'@attribute "user" {users} ']
    lines += [f'@attribute "{name}" numeric' for name in FEATURE_NAMES[:n_features]]
    return lines + [class_line, "", "@data"]


def row(uid: int, user: str, label: str, first: str = "0.5") -> str:
    return ",".join([str(uid), user, first] + [f"{i}.25" for i in range(1, 43)] + [label])


def write_arff(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\r\n".join(lines) + "\r\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def real_root() -> Path:
    return data_root()  # honours $HAR_DATA_DIR; no hidden fallback to another folder


def test_real_file_counts() -> None:
    try:
        path = find_features_file(real_root())
    except DataNotFoundError as exc:
        pytest.skip(f"real WISDM ARFF not present (set HAR_DATA_DIR): {exc}")
    table = load(path)
    assert table.features.shape == (5418, 43) and table.features.dtype == np.float32
    assert table.user.dtype == np.int32 and table.label.dtype == np.int16
    assert sorted(set(table.user.tolist())) == list(range(1, 37))
    assert table.classes == CLASSES
    counts = dict(zip(table.classes, np.bincount(table.label, minlength=6).tolist()))
    assert counts == {"Walking": 2081, "Jogging": 1625, "Upstairs": 632, "Downstairs": 528,
                      "Sitting": 306, "Standing": 246}
    assert table.feature_names == FEATURE_NAMES
    # '?' appears only in the three PEAK features (checked once on the real file).
    nan_per_feature = dict(zip(table.feature_names, np.isnan(table.features).sum(axis=0).tolist()))
    assert {k: v for k, v in nan_per_feature.items() if v} == {"XPEAK": 381, "YPEAK": 131, "ZPEAK": 103}
    assert table.user[0] == 33 and table.label[0] == CLASSES.index("Jogging")
    np.testing.assert_allclose(table.features[0, :3], [0.04, 0.09, 0.14])
    assert table.source == str(path)


def test_fixture_values_missing_and_gz_variant(tmp_path: Path) -> None:
    lines = header() + [row(1, "33", "Jogging"), row(2, '"17"', "Standing", first="?"), row(3, "5", "Walking")]
    plain = load(write_arff(tmp_path / "f.arff", lines))
    gz = load(write_arff(tmp_path / "f.arff.gz", lines, gz=True))
    assert isinstance(plain, FeatureTable) and plain.n_rows == 3
    assert plain.user.tolist() == [33, 17, 5]
    assert plain.label.tolist() == [1, 5, 0] and plain.classes == CLASSES
    assert plain.features[0, 0] == np.float32(0.5) and np.isnan(plain.features[1, 0])
    assert plain.features[2, 42] == np.float32(42.25)
    assert plain.feature_names == FEATURE_NAMES
    for name in ("features", "user", "label"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(gz, name))


def test_class_order_follows_the_declaration(tmp_path: Path) -> None:
    lines = header(class_line="@attribute class {Sitting,Walking}") + [row(1, "5", "Walking")]
    table = load(write_arff(tmp_path / "f.arff", lines))
    assert table.classes == ("Sitting", "Walking") and table.label.tolist() == [1]


@pytest.mark.parametrize("lines, message", [
    ([], "no @data"),
    (header(), "no data rows"),
    (header(n_features=42) + [], "expected 46 attributes"),
    (header(users="numeric") + [row(1, "33", "Walking")], "expected 46 attributes"),
    (header() + [row(1, "33", "Walking") + ",extra"], "has 47 values"),
    (header() + [row(1, "99", "Walking")], "not declared"),
    (header() + [row(1, "33", "Running")], "not declared"),
    (header() + [row(1, "33", "Walking", first="abc")], "not a number"),
    (["hello world"], "not an ARFF header line"),
])
def test_unusable_files_raise_bad_data(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_arff(tmp_path / "bad.arff", lines)
    with pytest.raises(BadDataError, match=message) as info:
        load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty.arff").write_bytes(b"")
    with pytest.raises(BadDataError):
        load(tmp_path / "empty.arff")
    with pytest.raises(DataNotFoundError, match="nope.arff"):
        load(tmp_path / "nope.arff")
    (tmp_path / "latin.arff").write_bytes(b"\xff\xfe@relation")
    with pytest.raises(BadDataError, match="not UTF-8"):
        load(tmp_path / "latin.arff")


def test_find_features_file(tmp_path: Path) -> None:
    with pytest.raises(HarError) as info:
        find_features_file(tmp_path)
    assert str(tmp_path / "wisdm" / "WISDM_ar_v1.1_transformed.arff") in str(info.value)
    (tmp_path / "wisdm").mkdir()
    plain = write_arff(tmp_path / "wisdm" / "WISDM_ar_v1.1_transformed.arff", header())
    assert find_features_file(tmp_path) == plain
    gz = write_arff(tmp_path / "wisdm" / "WISDM_ar_v1.1_transformed.arff.gz", header(), gz=True)
    assert find_features_file(tmp_path) == gz  # the shipped .gz wins when both exist


def test_parse_arff_accepts_lf_and_comments() -> None:
    text = "% a comment\n" + "\n".join(header()) + "\n% rows follow\n" + row(7, "5", "Sitting") + "\n"
    table = parse_arff(text)
    assert table.user.tolist() == [5] and table.label.tolist() == [4] and table.source == "<text>"
