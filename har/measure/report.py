"""Footprints out: a console table, `footprint.json` (one object per artifact, keyed by name, every field),
`footprint.csv` (one row per artifact, the same fields; empty cell = not measured) and
`footprint_context.json` (what was measured on what: fold, users, configs, library versions).
Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from har.measure.footprint import FIELDS, Footprint
from har.paths import atomic_write_text

_COLUMNS = (  # header, field, format
    ("artifact", "name", "{}"), ("params", "param_count", "{:,}"), ("weights KiB", "weight_bytes", "kib"),
    ("MACs", "macs", "{:,}"), ("act peak KiB", "activation_bytes_peak", "kib"),
    ("deploy KiB", "model_bytes", "kib"), ("heap KiB", "peak_heap_bytes", "kib"),
    ("allocs/inf", "allocations_per_inference", "{:.1f}"), ("p50 ms", "latency_ms_p50", "{:.3f}"),
    ("p95 ms", "latency_ms_p95", "{:.3f}"), ("IQR ms", "latency_ms_iqr", "{:.3f}"),
    ("win/s b256", "throughput_windows_per_s", "{:,.0f}"), ("acc", "accuracy", "{:.4f}"),
    ("macro-F1", "macro_f1", "{:.4f}"),
)


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "kib":
        return f"{value / 1024:,.1f}"
    return fmt.format(value)


def table(footprints: list[Footprint]) -> str:
    rows = [[h for h, _, _ in _COLUMNS]]
    rows += [[_cell(getattr(fp, f), fmt) for _, f, fmt in _COLUMNS] for fp in footprints]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def footprints_json(footprints: list[Footprint]) -> str:
    names = [fp.name for fp in footprints]
    if len(set(names)) != len(names):
        raise ValueError(f"artifact names must be unique, got {names}")
    return json.dumps({fp.name: _json_safe(fp.to_dict()) for fp in footprints}, indent=2, allow_nan=False) + "\n"


def footprints_csv(footprints: list[Footprint]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FIELDS)
    for fp in footprints:
        writer.writerow(["" if v is None else v for v in (getattr(fp, f) for f in FIELDS)])
    return buf.getvalue()


def write_outputs(out_dir: str | Path, footprints: list[Footprint], context: dict) -> list[Path]:
    out = Path(out_dir)
    return [atomic_write_text(out / "footprint.json", footprints_json(footprints)),
            atomic_write_text(out / "footprint.csv", footprints_csv(footprints)),
            atomic_write_text(out / "footprint_context.json", json.dumps(context, indent=2, sort_keys=True) + "\n")]


def read_footprints(path: str | Path) -> dict[str, Footprint]:
    """`footprint.json` back into Footprints (name -> Footprint)."""
    return {name: Footprint.from_dict(d) for name, d in json.loads(Path(path).read_text()).items()}
