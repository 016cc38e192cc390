"""Break-even sparsity: from which fraction of zero weights sparse storage beats dense int8 on a device,
in flash and in instructions, measured on the firmware (not estimated).

Steps of `sweep(prog, window, counts, out_dir, sparsities)`:
1. For each sparsity s, zero the fraction s of smallest-magnitude weights of every gemm layer of `prog`
   (`sparsify`: the structure magnitude pruning leaves; accuracy is not the question here, bytes and
   instructions are, and they depend on the number and place of the zeros, not on retraining).
2. Build and run that program's firmware three ways — dense (the target's own loop order), "csr" (the
   sparse gemm reads CSR from flash) and "bitmask" (a mask + the nonzeros, decoded into the arena before
   each layer) — on Cortex-M4F and M0+ (`firmware.measure`, two windows, bit-exactness checked as
   always): library flash, weights flash, arena, instructions per inference (unicorn).
3. `break_even(rows, target, storage, metric)`: the smallest sparsity at which `storage` is below dense,
   linearly interpolated between the two measured grid points around the crossing (None: never in the
   grid). Reported for flash (library) and instructions.
Limits: the zeros are placed by magnitude on an already trained model, so the nonzeros per row vary as a
real pruned model's do; instructions of the dense loop orders barely depend on the values (only the
requantisation clamps branch), so their row is flat up to a few instructions.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

STORAGES = ("dense", "csr", "bitmask")
TARGETS = ("cortex-m4", "cortex-m0plus")
SPARSITIES = (0.0, 0.25, 0.5, 0.65, 0.8, 0.9, 0.95)


def sparsify_weight(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """`weight` with its ceil(sparsity * size) smallest magnitudes set to 0 (ties: the earlier; the count
    `model_opts.sparsity` guarantees)."""
    w = weight.reshape(-1).copy()
    w[np.argsort(np.abs(w.astype(np.int32)), kind="stable")[:int(np.ceil(sparsity * w.size))]] = 0
    return w.reshape(weight.shape)


def sparsify(prog, sparsity: float):
    """`prog` with `sparsify_weight` applied to every conv/linear weight."""
    from model_opts.quant.intref import Conv1dInt8, LinearInt8
    ops = tuple(replace(op, weight=sparsify_weight(op.weight, sparsity)) if isinstance(op, (Conv1dInt8, LinearInt8))
                else op for op in prog.ops)
    return replace(prog, ops=ops)


def sweep(prog, window, counts: np.ndarray, out_dir: str | Path, sparsities=SPARSITIES,
          targets=TARGETS, progress: bool = False) -> list[dict]:
    from tqdm.auto import tqdm
    from firmware.measure import FirmwareConfig, measure_firmware
    from firmware.storage import WeightStorage
    out, rows = Path(out_dir), []
    grid = [(s, st) for s in sparsities for st in STORAGES]
    for s, storage in tqdm(grid, desc="break-even", disable=not progress):
        cfg = FirmwareConfig(targets=tuple(targets), n_count_windows=1, n_stream_windows=0, tflm=False,
                             storage=WeightStorage(storage))
        r = measure_firmware(sparsify(prog, s), window, counts[:2], None, out / f"s{s:g}_{storage}", cfg)
        for t, res in r.targets.items():
            if res.mismatched_windows or r.host_mismatched_windows:
                raise RuntimeError(f"{storage} at sparsity {s:g} on {t} is not bit-exact")
            rows.append({"sparsity": s, "storage": storage, "target": t, "flash_bytes": res.library_flash_bytes,
                         "weights_flash_bytes": res.flash["weights"], "arena_bytes": res.arena_bytes,
                         "instructions": res.instructions_per_inference})
    return rows


def break_even(rows: list[dict], target: str, storage: str, metric: str) -> float | None:
    """Module step 3: the interpolated sparsity where `storage`'s `metric` drops below dense's."""
    pts = sorted({r["sparsity"] for r in rows if r["target"] == target})
    val = {(r["sparsity"], r["storage"]): r[metric] for r in rows if r["target"] == target}
    diff = [(s, val[(s, storage)] - val[(s, "dense")]) for s in pts if (s, storage) in val and (s, "dense") in val]
    for (s0, d0), (s1, d1) in zip(diff, diff[1:]):
        if d0 >= 0 > d1:
            return s0 + (s1 - s0) * d0 / (d0 - d1)
    if diff and diff[0][1] < 0:
        return diff[0][0]  # cheaper already at the first grid point
    return None


def lines(rows: list[dict]) -> list[str]:
    """Markdown: the measured grid and the break-even points."""
    if not rows:
        return []
    out = ["## Break-even sparsity (firmware, measured)", "",
           "The int8 model of fold 0 with the given fraction of each layer's smallest weights zeroed, built dense, "
           "as CSR (sparse gemm) and as a bitmask (decoded into the arena); library flash from the ELF, "
           "instructions per inference from unicorn; every build bit-exact with the integer reference. "
           "Regenerate: `python -m hybrid.run` (full runs).", "",
           "| target | sparsity | dense flash B | csr flash B | bitmask flash B | dense instr. | csr instr. | bitmask instr. |",
           "|---|---|---|---|---|---|---|---|"]
    by = {(r["target"], r["sparsity"], r["storage"]): r for r in rows}

    def cell(c, key: str) -> str:
        return "-" if c is None else f"{c[key]:,.0f}"
    for t in TARGETS:
        for s in sorted({r["sparsity"] for r in rows if r["target"] == t}):
            cells = [by.get((t, s, st)) for st in STORAGES]  # None: that build did not fit the board
            out.append(f"| {t} | {s:.2f} | " + " | ".join(cell(c, "flash_bytes") for c in cells) + " | "
                       + " | ".join(cell(c, "instructions") for c in cells) + " |")
    out += ["", "| target | storage | break-even sparsity: flash | instructions |", "|---|---|---|---|"]
    for t in TARGETS:
        for st in STORAGES[1:]:
            if not any(r["target"] == t and r["storage"] == st for r in rows):
                if any(r["target"] == t for r in rows):
                    out.append(f"| {t} | {st} | not measured: no build fitted the board | - |")
                continue
            f, i = break_even(rows, t, st, "flash_bytes"), break_even(rows, t, st, "instructions")
            out.append(f"| {t} | {st} | {'never' if f is None else f'{f:.2f}'} | "
                       f"{'never' if i is None else f'{i:.2f}'} |")
    return out + ["", "A '-' is a build that did not fit the board (`firmware.measure` reports it, e.g. a "
                  "decoded layer larger than the microbit's 16 KiB RAM).", ""]
