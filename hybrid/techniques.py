"""The report section of model_opts III: each compression technique against its dense reference, on the
firmware, with an energy estimate.

`technique_lines(rows, firmware)` (rows: `summary.csv`'s; firmware: variant -> fold -> FirmwareResult):
1. One table row per technique variant present (`TECHNIQUES`, each named with the variant it must be
   compared with, which shares its architecture): accuracy mean ± std over folds and the difference to
   the reference (both on test users), and fold 0's Cortex-M4 firmware: library flash, RAM incl. stack,
   instructions per inference, the weight storage and, per format, the stored bits per weight (Huffman:
   beside its Shannon bound).
2. Energy per inference (`firmware.energy.estimate`: M4 instructions x a documented CPI assumption x the
   active current of the named MCUs, plus sleep for the rest of the window step) — an ESTIMATE, labelled
   so — and its reduction vs the `int8` variant, the baseline CNN as a device runs it (the fp32 baseline
   has no firmware), the way seed 000 reports "energy reduction".
3. The acceptance checks of the issue, each with the measured figures: clustering within 0.5 pp of int8,
   Huffman within 0.3 bit of the entropy bound, >= 90 % sparsity within 2 pp of dense, the distilled
   student >= the same student without distillation.
Limits: firmware figures are fold 0's. With dense storage the architecture fixes flash and RAM in every
fold; compressed storage depends on the fold's weights (surviving centroids, Huffman code lengths, CSR
nonzeros), so other folds' bytes and instructions differ a little (their firmware.json files have them).
"""
from __future__ import annotations

import numpy as np

# variant -> (dense reference variant, what is compared)
TECHNIQUES = {"clustered": ("model-all", "weight clustering, k = 16 (decoded into the arena)"),
              "clustered-direct": ("model-all", "weight clustering, k = 16 (codebook[index] read by the gemm)"), "huffman": ("clustered", "Huffman coding of the palette indices"),
              "sparse": ("int8", "90 % unstructured sparsity"), "distilled": ("student", "knowledge distillation"),
              "student": ("model-all", "student trained alone (the KD control)"),
              "separable": ("int8", "depthwise-separable convolutions"),
              "hybrid": ("int8", "structured pruning 0.7 (the hybrid)")}
ENERGY_MCUS = ("STM32L476", "nRF52840")
CLUSTER_TOLERANCE_PP, HUFFMAN_TOLERANCE_BITS, SPARSE_TOLERANCE_PP = 0.5, 0.3, 2.0


def _m4(firmware: dict, variant: str):
    per = firmware.get(variant) or {}
    if not per:
        return None
    return per[min(per)].targets.get("cortex-m4")


def _bits(m4) -> str:
    if m4 is None or not m4.layers:
        return "-"
    parts = []
    for name, layer in m4.layers.items():
        b = layer.get("bits_per_weight")
        e = layer.get("entropy_bits")
        if layer["format"] == "dense":
            parts.append(f"{name}: dense")
        else:
            parts.append(f"{name}: {layer['format']} {b:.2f}" + (f" (H {e:.2f})" if e is not None else "")
                         if b is not None else f"{name}: {layer['format']}")
    return "; ".join(parts)


def _energy(m4, mcu_name: str, period_s: float):
    from firmware import energy
    return energy.estimate(int(round(m4.instructions_per_inference)), energy.get_mcu(mcu_name), period_s)


def technique_lines(rows: list[dict], firmware: dict, period_s: float = 1.0) -> list[str]:
    by = {r["variant"]: r for r in rows}
    present = [v for v in TECHNIQUES if v in by]
    if not present:
        return []
    lines = ["## Compression techniques on the firmware (model_opts III)", "",
             "Each technique beside the variant of the same architecture it changes (accuracy on test users, "
             "mean ± std over folds; firmware: fold 0's Cortex-M4F library, `firmware.elfsize` and unicorn). "
             "Bits per weight: stored stream bits of each gemm layer (H: the Shannon entropy of the coded "
             "symbols, the bound no symbol code beats). Regenerate: `python -m hybrid.run`.", "",
             "| variant | technique | vs | accuracy | Δ pp | M4 flash B | M4 RAM B | M4 instructions | storage: bits / weight |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in present:
        ref, what = TECHNIQUES[v]
        r = by[v]
        d = f"{100 * (r['accuracy'] - by[ref]['accuracy']):+.2f}" if ref in by else "-"
        m4 = _m4(firmware, v)
        fw = (f"{m4.library_flash_bytes:,} | {m4.ram_with_stack_bytes:,} | {m4.instructions_per_inference:,.0f}"
              if m4 is not None else "- | - | -")
        lines.append(f"| {v} | {what} | {ref} | {100 * r['accuracy']:.2f} % ± {100 * r['accuracy_std']:.2f} | "
                     f"{d} | {fw} | {_bits(m4)} |")
    lines.append("")
    lines += _energy_lines(present, firmware, period_s)
    ch = technique_checks(by, firmware)
    if ch:
        lines += ["| technique target | met | measured |", "|---|---|---|"]
        lines += [f"| {t} | {'yes' if ok else '**no**'} | {m} |" for t, ok, m in ch] + [""]
    return lines


def _energy_lines(present: list[str], firmware: dict, period_s: float) -> list[str]:
    from firmware import energy
    ref_m4 = _m4(firmware, "int8")
    variants = [v for v in ("int8", *present) if _m4(firmware, v) is not None]
    if not variants:
        return []
    lines = [f"**Energy per inference — an estimate**, not a measurement: Cortex-M4 instructions counted in "
             f"emulation x the CPI assumption of `firmware.energy` x each MCU's datasheet active current at its "
             f"clock and supply, plus its sleep current for the rest of the {period_s:g} s window step (sources "
             f"and the CPI range in `firmware/energy.py`). Reduction vs `int8`, the baseline CNN on the device.", "",
             "| variant | MCU | instructions | active µs | active µJ (CPI range) | µJ per step | saved vs int8 "
             "(active / per step) |", "|---|---|---|---|---|---|---|"]
    for v in dict.fromkeys(variants):
        m4 = _m4(firmware, v)
        for mcu in ENERGY_MCUS:
            e = _energy(m4, mcu, period_s)
            saved = "-"
            if ref_m4 is not None and v != "int8":
                red = energy.reduction(e, _energy(ref_m4, mcu, period_s))
                saved = f"{100 * red.active:.1f} % / {100 * red.period:.1f} %"
            lines.append(f"| {v} | {mcu} | {m4.instructions_per_inference:,.0f} | {1e6 * e.active_s:.1f} | "
                         f"{e.active_uj:.2f} ({e.active_uj_low:.2f}-{e.active_uj_high:.2f}) | {e.period_uj:.2f} | "
                         f"{saved} |")
    return lines + [""]


def technique_checks(by: dict, firmware: dict) -> list[tuple[str, bool, str]]:
    out = []

    def pp(a: str, b: str) -> float:
        return 100 * (by[a]["accuracy"] - by[b]["accuracy"])

    if "clustered" in by and "model-all" in by:
        out.append((f"clustering (k = 16) within {CLUSTER_TOLERANCE_PP} pp of the same int8 model (model-all)",
                    pp("clustered", "model-all") >= -CLUSTER_TOLERANCE_PP, f"{pp('clustered', 'model-all'):+.2f} pp"))
    m4 = _m4(firmware, "huffman")
    if m4 is not None and m4.layers:
        gaps = [l["bits_per_weight"] - l["entropy_bits"] for l in m4.layers.values() if l.get("entropy_bits") is not None]
        if gaps:
            out.append((f"Huffman bits/weight within {HUFFMAN_TOLERANCE_BITS} bit of the entropy bound",
                        max(gaps) <= HUFFMAN_TOLERANCE_BITS,
                        f"largest gap {max(gaps):.3f} bit (per layer: {', '.join(f'{g:.3f}' for g in gaps)})"))
    if "sparse" in by and "int8" in by:
        out.append((f">= 90 % sparsity within {SPARSE_TOLERANCE_PP} pp of dense int8",
                    pp("sparse", "int8") >= -SPARSE_TOLERANCE_PP, f"{pp('sparse', 'int8'):+.2f} pp"))
    if "distilled" in by and "student" in by:
        out.append(("KD student >= the same student without KD", pp("distilled", "student") >= 0,
                    f"{pp('distilled', 'student'):+.2f} pp (mean over folds; std "
                    f"{100 * float(np.hypot(by['distilled']['accuracy_std'], by['student']['accuracy_std'])):.2f})"))
    return out
