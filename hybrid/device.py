"""The firmware section of `hybrid.run`: every int8 variant, every fold, exported and run on emulated Cortex-M.

`firmware_fold(artifact, window, raw_xyz_test, y_test, out_dir, memo)` (called by `hybrid.runner` after a
fold's variant is built) takes the artifact's int8 program (variants ending on one: int8, model-all,
hybrid), turns the fold's test windows into the int16 counts a device would read
(`firmware.preprocess.to_counts`), and runs `firmware.measure.measure_firmware`: host library, Cortex-M4F
and M0+ under QEMU on every test window, ELF accounting, unicorn instruction counts, TFLM. It returns the
`FirmwareResult` and the `DeviceFigures` (Cortex-M4: library flash, RAM with stack, instructions per
inference) that go into the variant's `Footprint`.
`firmware_lines(runner)` renders the report section: per variant, M4 and M0+ columns (flash and RAM by
category from fold 0's ELF, stack, instructions per inference and per MAC, bit-exactness counted over
every fold's test windows, firmware accuracy), the arena beside TFLM's, and the acceptance checks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from har.measure.footprint import DeviceFigures
from har.paths import atomic_write_text

FLASH_TARGET_BYTES, FLASH_GOAL_BYTES = 8 * 1024, 6 * 1024
RAM_TARGET_BYTES, RAM_GOAL_BYTES = 3 * 1024, 2 * 1024
INSN_PER_MAC_TARGET, INSN_PER_MAC_GOAL = 3.0, 1.5


def int8_program_of(artifact):
    """The `Int8Program` an artifact runs, or None (fp32, ONNX Runtime, cascade, PCA)."""
    from model_opts.quant.intref import Int8Program
    for attr in ("int8_program", "program"):
        prog = getattr(artifact, attr, None)
        if isinstance(prog, Int8Program):
            return prog
    return None


def _digest(prog, counts: np.ndarray, storage) -> str:
    import hashlib
    from firmware.program import device_program
    dev = device_program(prog, "host", storage)
    return hashlib.sha256(dev.blob_bytes() + repr(dev.records).encode() + counts.tobytes()).hexdigest()


def firmware_fold(artifact, window, raw_xyz_test: np.ndarray, y_test: np.ndarray, out_dir: Path,
                  memo: dict | None = None):
    """(FirmwareResult, DeviceFigures | None) of one fold, or (None, None) for a non-int8 artifact. `memo`
    (one run's): a variant whose int8 program and windows equal an earlier one's (model-all and hybrid run
    the same program) reuses its result instead of measuring the same firmware twice."""
    from firmware.measure import FirmwareConfig, measure_firmware
    from firmware.preprocess import to_counts
    from firmware.storage import WeightStorage
    prog = int8_program_of(artifact)
    if prog is None:
        return None, None
    storage = WeightStorage(getattr(artifact, "weight_storage", "dense"))
    counts = to_counts(raw_xyz_test)
    key = _digest(prog, counts, storage)
    result = None if memo is None else memo.get(key)
    if result is None:
        result = measure_firmware(prog, window, counts, y_test, out_dir, FirmwareConfig(storage=storage))
        if memo is not None:
            memo[key] = result
    m4 = result.targets.get("cortex-m4")
    device = None if m4 is None else DeviceFigures("cortex-m4", m4.library_flash_bytes, m4.ram_with_stack_bytes,
                                                   m4.instructions_per_inference)
    atomic_write_text(out_dir / "firmware.json", json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return result, device


def forest_peer(runner) -> dict:
    """The emlearn RandomForest firmware (`firmware.forest`) on fold 0: the `rf` peer's 300 trees (fits the
    M4F board only) and a 15,000-node forest chosen on validation users for the M0+ board. Full runs only
    (minutes: the 300-tree forest is ~28 MB of generated C); --quick notes it instead."""
    from dataclasses import replace
    from firmware import toolchain
    from firmware.forest import ForestConfig, build_forest_firmware
    d, fold = runner.data, runner.data.folds[0]
    boards = all(toolchain.have(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm"))  # else host only
    full = ForestConfig.for_run(runner.run_cfg, targets=("cortex-m4",) if boards else ())
    out = {}
    for name, cfg in (("rf-300", full), ("rf-15k-nodes", replace(full, node_budget=15_000, targets=(
            "cortex-m4", "cortex-m0plus") if boards else ()))):
        res = build_forest_firmware(d.windows, d.raw_xyz, fold, runner.out / "firmware" / "forest" / name, cfg)
        out[name] = res.to_dict()
    return out


def forest_lines(forest: dict | None) -> list[str]:
    if not forest:
        return []
    lines = ["### Classical peer: emlearn RandomForest firmware (fold 0)", "",
             "The `rf` peer's forest on the firmware's own channels' statistics (`har_features.c`), converted "
             "with emlearn (inline trees, hard vote, thresholds as exact int32 order keys), built and run like the "
             "CNN (`python -m firmware.forest`).", "",
             "| forest | decision nodes | accuracy (C, hard vote) | target | fits | flash B (library) | RAM B "
             "(static + stack) | instructions / inference | QEMU = host |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in forest.items():
        if not r["targets"]:
            lines.append(f"| {name} | {r['n_decision_nodes']:,} | {100 * r['accuracy']:.2f} % | host only "
                         f"(no Cortex-M toolchain) | - | - | - | - | - |")
        for t in r["targets"]:
            fp = t.get("footprint") or {}
            ram = (fp.get("library_ram_bytes", 0) + (fp.get("stack_bytes") or 0)) if fp else None
            lines.append(f"| {name} | {r['n_decision_nodes']:,} | {100 * r['accuracy']:.2f} % | {t['target']} | "
                         f"{'yes' if t['fits'] else 'no (over by ' + format(t['flash_overflow_bytes'] or 0, ',') + ' B)'}"
                         f" | {format(fp['library_flash_bytes'], ',') if fp else '-'} | "
                         f"{format(ram, ',') if ram is not None else '-'} | "
                         f"{format(round(t['instructions_mean']), ',') if t['instructions_mean'] else '-'} | "
                         f"{'-' if t['agreement'] is None else format(100 * t['agreement'], '.1f') + ' %'} |")
    return lines + [""]


def _kib(b) -> str:
    return "-" if b is None else f"{b:,} B ({b / 1024:.2f} KiB)"


def checks(results: dict) -> list[tuple[str, bool, str]]:
    """Acceptance of the `hybrid` variant's firmware (results: fold -> FirmwareResult)."""
    if not results:
        return []
    r0 = results[min(results)]
    m4 = r0.targets.get("cortex-m4")
    if m4 is None:
        return []
    total = sum(r.n_windows for r in results.values())
    targets = ("cortex-m4", "cortex-m0plus")
    every = all(t in r.targets for r in results.values() for t in targets)  # every fold ran on both boards
    bad = {t: sum(r.targets[t].mismatched_windows + r.targets[t].stream_mismatched for r in results.values()
                  if t in r.targets) for t in targets}
    host_bad = sum(r.host_mismatched_windows for r in results.values())
    tflm_all = all(r.tflm for r in results.values())
    tflm_bad = [r.tflm["mismatched_windows"] for r in results.values() if r.tflm]
    per_mac = m4.instructions_per_inference / r0.macs
    tflm_arena = (r0.tflm or {}).get("arena_min_bytes")
    return [
        ("bit-exact with the integer reference: host, M4, M0+, every fold",
         every and host_bad == 0 and not any(bad.values()),
         f"{total:,} test windows: host {host_bad}, M4 {bad['cortex-m4']}, M0+ {bad['cortex-m0plus']} mismatches"
         + ("" if every else " (not every fold ran on both boards)")),
        ("equal to TFLM on every test window", tflm_all and sum(tflm_bad) == 0,
         f"{sum(tflm_bad)} mismatches over {total:,} windows" if tflm_all else "TFLM not run on every fold"),
        ("M4 flash <= 8 KiB (goal 6 KiB)", m4.library_flash_bytes <= FLASH_TARGET_BYTES,
         f"{_kib(m4.library_flash_bytes)}, {'within' if m4.library_flash_bytes <= FLASH_GOAL_BYTES else 'above'} goal"),
        ("M4 RAM incl. stack <= 3 KiB (goal 2 KiB)", m4.ram_with_stack_bytes <= RAM_TARGET_BYTES,
         f"{_kib(m4.ram_with_stack_bytes)}, {'within' if m4.ram_with_stack_bytes <= RAM_GOAL_BYTES else 'above'} goal"),
        ("our arena <= TFLM's arena", tflm_arena is not None and m4.arena_bytes <= tflm_arena,
         f"{m4.arena_bytes:,} B vs {tflm_arena if tflm_arena is not None else '-'} B (TFLM's smallest working arena, "
         f"64-bit host build; its head, activations + scratch: {(r0.tflm or {}).get('arena_head_bytes', '-')} B)"),
        ("M4 instructions <= 3 per MAC (goal 1.5)", per_mac <= INSN_PER_MAC_TARGET,
         f"{m4.instructions_per_inference:,.0f} per inference / {r0.macs:,} MACs = {per_mac:.2f}"),
    ]


def firmware_lines(runner) -> list[str]:
    fw = getattr(runner.state, "firmware", {}) or {}
    if not fw:
        return []
    forest = getattr(runner.state, "forest", None)
    lines = ["## Firmware (Cortex-M4F and Cortex-M0+, emulated)", "",
             "Each int8 variant, each fold: `firmware.export` writes the C library; the host build, a Cortex-M4F "
             "build (QEMU `mps2-an386`) and a Cortex-M0+ build (QEMU `microbit`, an M0: same ARMv6-M ISA) classify "
             "every test window from raw int16 accelerometer counts (+-4 g) and are compared with the integer "
             "reference bit for bit. Flash and RAM: the library in the linked app firmware (`firmware.elfsize`, "
             "fold 0); RAM includes the painted stack; instructions: unicorn on the same ELF, counted twice. "
             "Reproduce one: `python -m hybrid.export --variant hybrid --out fw/` then `make -C fw m4`.", ""]
    for name, results in fw.items():
        if not results:
            continue
        r0 = results[min(results)]
        lines += [f"### {name}", ""]
        if r0.skipped:
            lines += [f"- not run here: {s}" for s in r0.skipped] + [""]
        tgts = [t for t in ("cortex-m4", "cortex-m0plus") if t in r0.targets]
        if tgts:
            head = "| | " + " | ".join(tgts) + " |"
            lines += [head, "|---|" + "---|" * len(tgts)]
            cats = [c for c in r0.targets[tgts[0]].flash if c not in ("startup", "padding")]
            for c in cats:
                if any(r0.targets[t].flash[c] for t in tgts):
                    lines.append(f"| flash: {c} | " + " | ".join(f"{r0.targets[t].flash[c]:,}" for t in tgts) + " |")
            lines.append("| **flash: library total** | " + " | ".join(f"**{r0.targets[t].library_flash_bytes:,}**"
                                                                        for t in tgts) + " |")
            for c in cats:
                if any(r0.targets[t].ram[c] for t in tgts):
                    lines.append(f"| RAM: {c} | " + " | ".join(f"{r0.targets[t].ram[c]:,}" for t in tgts) + " |")
            lines.append("| (not library: board startup + alignment, flash / RAM) | " + " | ".join(
                f"{r0.targets[t].flash['startup'] + r0.targets[t].flash['padding']:,} / "
                f"{r0.targets[t].ram['startup'] + r0.targets[t].ram['padding']:,}" for t in tgts) + " |")
            lines.append("| RAM: stack (painted) | " + " | ".join(f"{r0.targets[t].stack_bytes:,}" for t in tgts) + " |")
            lines.append("| **RAM: library incl. stack** | " + " | ".join(
                f"**{r0.targets[t].ram_with_stack_bytes:,}**" for t in tgts) + " |")
            lines.append("| instructions / inference (mean, min-max) | " + " | ".join(
                f"{r0.targets[t].instructions_per_inference:,.0f} ({min(r0.targets[t].instructions):,}-"
                f"{max(r0.targets[t].instructions):,})" for t in tgts) + " |")
            lines.append("| instructions / MAC | " + " | ".join(
                f"{r0.targets[t].instructions_per_inference / r0.macs:.2f}" for t in tgts) + " |")
            lines.append("| counts repeat exactly | " + " | ".join(
                "yes" if r0.targets[t].instructions_repeat_equal else "**no**" for t in tgts) + " |")
            lines.append("| mismatched windows / all folds | " + " | ".join(
                f"{sum(r.targets[t].mismatched_windows for r in results.values())} / "
                f"{sum(r.n_windows for r in results.values()):,}" for t in tgts) + " |")
            lines.append("| firmware accuracy (mean over folds) | " + " | ".join(
                f"{100 * float(np.mean([r.targets[t].accuracy for r in results.values()])):.2f} %" for t in tgts) + " |")
            lines.append("")
        host_bad = sum(r.host_mismatched_windows for r in results.values())
        lines.append(f"- host build: {host_bad} mismatched windows over {sum(r.n_windows for r in results.values()):,}")
        if r0.tflm:
            lines.append(f"- TFLM (`tflite-micro` {r0.tflm.get('model_bytes', 0):,} B .tflite): "
                         f"{sum(r.tflm['mismatched_windows'] for r in results.values() if r.tflm)} mismatched windows; "
                         f"smallest working arena {r0.tflm.get('arena_min_bytes', '-')} B (head: activations + "
                         f"scratch {r0.tflm.get('arena_head_bytes', '-')} B) vs ours "
                         f"{r0.targets['cortex-m4'].arena_bytes if 'cortex-m4' in r0.targets else '-'} B (M4). "
                         f"{r0.tflm.get('note', '')}")
        lines.append("")
        if name == "hybrid":
            ch = checks(results)
            if ch:
                lines += ["| firmware target | met | measured |", "|---|---|---|"]
                lines += [f"| {t} | {'yes' if ok else '**no**'} | {m} |" for t, ok, m in ch] + [""]
    if forest:
        lines += forest_lines(forest)
    elif runner.s.quick:
        lines += ["- RandomForest firmware peer: full runs only (`python -m firmware.forest`).", ""]
    return lines
