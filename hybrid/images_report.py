"""Run the image pipeline (`hybrid.images`) over its variants and write the outputs.

Steps of `run(settings)`: load the data once, then per variant (one progress bar; a failing variant is
named and the run exits 2, the rows done so far stay in summary.csv) `hybrid.images_measure.measure`;
after each variant rewrite `summary.csv` (atomic); at the end `report.md` (tables of accuracy, bytes,
firmware per target, TFLM and aarch64 agreement, validation choices), `pareto.png` (int8 test accuracy
against weight bytes, Pareto front marked, seed 000's 3.6 KiB / 98.9 % MNIST point as a reference) and
`run.json` (settings, per-variant training logs with cache keys, versions, git commit, data digest).
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from har.cli import git_commit, versions
from har.errors import HarError
from har.paths import atomic_write_text
from hybrid.images import ImageRunner, ImageRunSettings
from hybrid.images_measure import measure

SEED000 = {"mnist": (3.6 * 1024, 0.9896, "seed 000: 98.96 %, 3.57-3.75 KB"),
           "fashion-mnist": (3.75 * 1024, 0.9150, "seed 000: 91.50 %"), "cifar10": (3.75 * 1024, 0.8977, "seed 000: 89.77 %")}


def _csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _pct(v) -> str:
    return f"{100 * v:.2f}" if isinstance(v, float) else "-"


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for _, k in cols:
            v = r.get(k, "-")
            cells.append(_pct(v) if k.endswith("accuracy") else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return out


def pareto(rows: list[dict]) -> list[str]:
    """Variants no other beats on both weight bytes and int8 test accuracy."""
    pts = [r for r in rows if "weight_bytes" in r]
    return [r["variant"] for r in pts if not any(
        o["weight_bytes"] <= r["weight_bytes"] and o["int8_test_accuracy"] >= r["int8_test_accuracy"]
        and (o["weight_bytes"], o["int8_test_accuracy"]) != (r["weight_bytes"], r["int8_test_accuracy"]) for o in pts)]


def plot(rows: list[dict], dataset: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from har.plots import save_figure
    pts = [r for r in rows if "weight_bytes" in r]
    front = set(pareto(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for r in pts:
        on = r["variant"] in front
        ax.scatter(r["weight_bytes"], 100 * r["int8_test_accuracy"], s=46, color="#2ca02c" if on else "#1f77b4", zorder=3)
        ax.annotate(r["variant"], (r["weight_bytes"], 100 * r["int8_test_accuracy"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7.5)
    if dataset in SEED000:
        b, a, label = SEED000[dataset]
        ax.scatter(b, 100 * a, marker="*", s=160, facecolors="none", edgecolors="#9467bd", zorder=4)
        ax.annotate(label, (b, 100 * a), textcoords="offset points", xytext=(7, -10), fontsize=7, color="#9467bd")
    ax.set_xscale("log")
    ax.set_xlabel("stored weights: int8 weights + int32 biases (bytes, log scale)")
    ax.set_ylabel("int8 accuracy on the official test set (%)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"{dataset}: int8 variants (green: Pareto front)", fontsize=9)
    return save_figure(fig, path)


def report(rows: list[dict], runner: ImageRunner, settings: ImageRunSettings, seconds: float) -> str:
    s = settings
    lines = [f"# Image CNNs through the graph path: {s.dataset}", "",
             f"Commit `{git_commit(short=True)}`, {time.strftime('%Y-%m-%d')}, `python -m hybrid.run --dataset {s.dataset}"
             f"{' --quick' if s.quick else ''}` ({seconds:.0f} s). Training {len(runner.data.fit)} images, validation "
             f"{len(runner.data.val)} (held out of the training set: every choice), test {len(runner.data.test)} "
             f"(the published test set{', a quick subset' if s.quick else ''}: only scored).", "",
             "## Accuracy and bytes", ""]
    lines += _table(rows, [("variant", "variant"), ("widths", "widths"), ("params", "params"),
                           ("float test %", "float_test_accuracy"), ("int8 val %", "int8_val_accuracy"),
                           ("int8 test %", "int8_test_accuracy"), ("weight bytes", "weight_bytes"),
                           ("zero weights", "zero_weight_fraction"), ("max distinct / layer", "max_distinct_weights"),
                           ("arena bytes (planned)", "arena_bytes"), ("naive arena", "naive_arena_bytes")])
    lines += ["", f"Pareto front (weight bytes vs int8 test accuracy): {', '.join(pareto(rows)) or '-'}. "
              "Figure: `pareto.png`. Clustered layers (<= 16 values) are stored as 4-bit palettes (the firmware "
              "tables' flash weights column is the stored blob); sparse layers are stored dense.", ""]
    if s.firmware:
        for tag, name in (("m4", "Cortex-M4 (QEMU mps2-an386)"), ("m0plus", "Cortex-M0+ (QEMU microbit, 16 KiB RAM)")):
            lines += [f"## Firmware: {name}", "", "Flash and RAM from the linked ELF (`firmware.elfsize`), never summed "
                      "together; stack painted; instructions of one `har_g_invoke` counted by Unicorn; bit-exact = "
                      "int8 outputs equal to the integer reference on that many test images.", ""]
            lines += _table(rows, [("variant", "variant"), ("fits", f"{tag}_fits"), ("bit-exact", f"{tag}_bit_exact"),
                                   ("flash weights", f"{tag}_flash_weights_bytes"),
                                   ("flash op table", f"{tag}_flash_op_table_bytes"),
                                   ("flash code", f"{tag}_flash_code_bytes"), ("flash library", f"{tag}_flash_library_bytes"),
                                   ("RAM arena", f"{tag}_ram_arena_bytes"), ("RAM library", f"{tag}_ram_library_bytes"),
                                   ("stack", f"{tag}_stack_bytes"), ("instructions / image", f"{tag}_instructions_per_image")])
            lines.append("")
        lines += ["## Peers: TFLM and 64-bit Arm Linux", "", "TFLM: the exported `model.tflite` through the "
                  "tflite-micro wheel's interpreter (an x86-64 host build: its persistent tail is larger than on a "
                  "32-bit MCU). aarch64: the same C library, static, under qemu-aarch64.", ""]
        lines += _table(rows, [("variant", "variant"), ("TFLM bit-exact", "tflm_bit_exact"),
                               (".tflite bytes", "tflm_model_bytes"), ("TFLM min arena (x86-64)", "tflm_arena_min_bytes_x86_64"),
                               ("aarch64 bit-exact", "aarch64_bit_exact")])
        lines.append("")
    lines += ["## Choices made on validation images", ""]
    for r in rows:
        if "ptq_percentile" in r:
            lines.append(f"- {r['variant']}: PTQ range rule = percentile {r['ptq_percentile']} "
                         f"(int8 validation accuracy per rule: {runner.ptq_log.get(r['variant'], {})})")
    for name, log in runner.log.items():
        if "chosen_epoch" in log:
            lines.append(f"- {name}: epochs chosen by early stopping = {log['chosen_epoch']} "
                         f"(validation accuracy {100 * log['val_accuracy']:.2f} %)")
    return "\n".join(lines) + "\n"


def run(settings: ImageRunSettings) -> list[dict]:
    t0 = time.perf_counter()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    runner = ImageRunner(settings)
    rows: list[dict] = []
    bar = tqdm(settings.variants, desc=f"{settings.dataset} variants", disable=not settings.progress)
    for v in bar:
        bar.set_postfix_str(v)
        try:
            rows.append(measure(runner, v, out, progress=bar.set_postfix_str))
        except HarError as e:  # one line naming the variant; the rows before it stay in summary.csv
            raise HarError(f"variant {v}: {e}") from None
        atomic_write_text(out / "summary.csv", _csv(rows))
    seconds = time.perf_counter() - t0
    if any("weight_bytes" in r for r in rows):
        plot(rows, settings.dataset, out / "pareto.png")
    atomic_write_text(out / "report.md", report(rows, runner, settings, seconds))
    meta = {"settings": {k: str(v) for k, v in asdict(settings).items()}, "commit": git_commit(),
            "versions": versions(), "data_digest": runner.data.digest, "model": json.loads(runner.cfg.to_json()),
            "train": asdict(runner.tcfg), "training_logs": runner.log, "ptq": runner.ptq_log, "seconds": round(seconds, 1)}
    atomic_write_text(out / "run.json", json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    return rows
