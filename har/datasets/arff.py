"""Loader for the WISDM v1.1 transformed-feature file `WISDM_ar_v1.1_transformed.arff[.gz]`.

The file: CRLF lines, 46 attributes -- "UNIQUE_ID" (numeric), "user" (nominal, users listed in
order of first appearance), 43 numeric features X0..RESULTANT, and `class` (nominal); `?` marks a
missing value. The real file has 5,418 rows (the about file says 5,424).

Algorithm:
  1. Read bytes (gunzip when the gzip magic is present), decode UTF-8, split lines (any ending).
  2. Header: skip blank lines and `%` comments; `@attribute <name> <type>` where the name may be
     quoted and the type may follow without a space (`class{...}`); `@data` ends the header.
  3. Check the schema: first UNIQUE_ID, then user (nominal), 43 numeric, last class (nominal).
  4. Data rows are split on `,` (values are plain numbers or bare/quoted nominal tokens); `?` in a
     feature becomes NaN; user and class must be declared nominal values.

Why by hand: `scipy.io.arff.loadarff` (checked with scipy 1.17.1) fails on this file twice:
`@attribute class{ ... }` (no blank before `{`) raises `ParseArffError: unknown attribute`, and
after fixing that, the user list `{"33" , "17", ...}` keeps the blank before each comma in the
value ('33 '), so the data value `33` is rejected with `ValueError: 33 value not in (...)`.

Known limits: no sparse rows (`{0 x, ...}`), no string/date attributes, no quoted values that
contain commas; such files raise `BadDataError`.
"""
from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from har.errors import BadDataError, DataNotFoundError
from har.paths import missing_data_hint

FILE_NAME = "WISDM_ar_v1.1_transformed.arff"
ACCEPTED_NAMES: tuple[str, ...] = (FILE_NAME + ".gz", FILE_NAME)
N_FEATURES = 43
_ATTRIBUTE = re.compile(r"""@attribute\s+("[^"]*"|'[^']*'|[^\s{]+)\s*(.*)$""", re.IGNORECASE)
_NUMERIC_TYPES = {"numeric", "real", "integer"}


@dataclass(frozen=True)
class FeatureTable:
    """One row per 10-s window of the WISDM v1.1 release; `label` indexes into `classes`."""

    features: np.ndarray  # float32 (n, 43); NaN where the file has '?'
    feature_names: tuple[str, ...]
    user: np.ndarray  # int32 (n,)
    label: np.ndarray  # int16 (n,)
    classes: tuple[str, ...]  # in the order the class attribute declares them
    source: str

    def __post_init__(self) -> None:
        n = len(self.user)
        if self.features.shape != (n, len(self.feature_names)) or len(self.label) != n:
            raise ValueError(f"inconsistent shapes: features {self.features.shape}, user {n}, "
                             f"label {len(self.label)}, {len(self.feature_names)} names")

    @property
    def n_rows(self) -> int:
        return len(self.user)


def _unquote(token: str) -> str:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    return token


def _parse_header(lines: list[str], where: str) -> tuple[list[tuple[str, str | list[str]]], int]:
    """Attributes as (name, 'numeric' or nominal values) and the index of the first data line."""
    attributes: list[tuple[str, str | list[str]]] = []
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        lower = line.lower()
        if lower.startswith("@relation"):
            continue
        if lower.startswith("@data"):
            return attributes, i + 1
        match = _ATTRIBUTE.match(line)
        if not match:
            raise BadDataError(f"{where}: line {i + 1} is not an ARFF header line: {line[:60]!r}")
        name, kind = _unquote(match.group(1)), match.group(2).strip()
        if kind.startswith("{") and kind.endswith("}"):
            attributes.append((name, [_unquote(v) for v in kind[1:-1].split(",")]))
        elif kind.lower() in _NUMERIC_TYPES:
            attributes.append((name, "numeric"))
        else:
            raise BadDataError(f"{where}: attribute {name!r} has unsupported type {kind[:40]!r}")
    raise BadDataError(f"{where}: no @data section (empty or not an ARFF file)")


def _check_schema(attributes: list[tuple[str, str | list[str]]], where: str) -> None:
    names = [name for name, _ in attributes]
    ok = (len(attributes) == N_FEATURES + 3
          and names[0].upper() == "UNIQUE_ID" and names[1].lower() == "user" and names[-1].lower() == "class"
          and isinstance(attributes[1][1], list) and isinstance(attributes[-1][1], list)
          and all(kind == "numeric" for _, kind in attributes[2:-1]))
    if not ok:
        raise BadDataError(f"{where}: expected 46 attributes (UNIQUE_ID, nominal user, 43 numeric "
                           f"features, nominal class), found {len(attributes)}: {', '.join(names[:5])}...")


def parse_arff(text: str, source: str = "<text>") -> FeatureTable:
    """Parse the transformed ARFF content; `BadDataError` (one line) for anything unusable."""
    lines = text.splitlines()
    attributes, first_data = _parse_header(lines, source)
    _check_schema(attributes, source)
    user_values = attributes[1][1]
    classes = tuple(attributes[-1][1])
    assert isinstance(user_values, list)  # checked by _check_schema; narrows the type
    try:
        user_ids = {value: int(value) for value in user_values}
    except ValueError:
        raise BadDataError(f"{source}: user values are not integers: {user_values[:5]}") from None
    class_index = {name: i for i, name in enumerate(classes)}

    features: list[list[str]] = []
    users: list[int] = []
    labels: list[int] = []
    for i in range(first_data, len(lines)):
        line = lines[i].strip()
        if not line or line.startswith("%"):
            continue
        values = line.split(",")
        if len(values) != len(attributes):
            raise BadDataError(f"{source}: line {i + 1} has {len(values)} values, expected {len(attributes)}")
        user, label = _unquote(values[1]), _unquote(values[-1])
        if user not in user_ids or label not in class_index:
            raise BadDataError(f"{source}: line {i + 1}: user {user!r} or class {label!r} is not declared")
        users.append(user_ids[user])
        labels.append(class_index[label])
        features.append(values[2:-1])
    if not users:
        raise BadDataError(f"{source}: no data rows")
    # numpy parses the number strings in bulk; '?' -> 'nan' first so that step cannot fail on it.
    cells = np.char.strip(np.array(features))
    cells[cells == "?"] = "nan"
    try:
        matrix = cells.astype(np.float32)
    except ValueError as exc:
        raise BadDataError(f"{source}: a feature value is not a number ({exc})") from None
    return FeatureTable(matrix, tuple(name for name, _ in attributes[2:-1]), np.array(users, dtype=np.int32),
                        np.array(labels, dtype=np.int16), classes, source)


def load(path: str | Path) -> FeatureTable:
    """Read `WISDM_ar_v1.1_transformed.arff` or its `.gz`; HarError subclasses for user problems."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise DataNotFoundError(f"WISDM v1.1 feature file not found: {path}; {missing_data_hint('wisdm')}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise BadDataError(f"cannot read {path}: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadDataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_arff(text, str(path))


def find_features_file(root: str | Path) -> Path:
    """`<root>/wisdm/WISDM_ar_v1.1_transformed.arff.gz` (or the plain .arff); `DataNotFoundError` if absent."""
    folder = Path(root) / "wisdm"
    for name in ACCEPTED_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise DataNotFoundError(f"WISDM v1.1 feature file not found: expected {folder / FILE_NAME} "
                            f"(or .gz); {missing_data_hint('wisdm', root)}")
