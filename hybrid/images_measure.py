"""Measure one image variant (step 3 of `hybrid.images`): accuracy through the integer reference, model
and arena bytes, the exported firmware on Cortex-M4 / M0+ under QEMU, TFLM and 64-bit Arm Linux.

Steps of `measure(runner, variant, out_dir)`:
1. int8 graph (`runner.int8`): validation and test accuracy through `model_opts.graph.intref` (the same
   integers every runtime computes), float accuracy of the model it came from, weight bytes (int8 weights
   + int32 biases), zero fraction and most distinct values per layer.
2. `firmware.graph_export.convert` into `out_dir/firmware/<variant>/` (+ `model.tflite`); the planned
   arena beside the naive sum.
3. Per target (Cortex-M4 `mps2-an386`, Cortex-M0+ `microbit`): build, run the first `N_FIRMWARE[target]`
   test images under QEMU, compare every int8 output with the reference (`*_bit_exact`), flash and RAM
   by ELF category, painted stack, instructions of one `har_g_invoke` (Unicorn). A library that does not
   fit the board (the M0+'s 16 KiB of RAM) is reported as `does not fit` with the linker's reason.
4. TFLM: the same test images through TFLM's interpreter (`*_bit_exact`), the .tflite size and the
   smallest arena (subprocess search) when `settings.tflm_arena`.
5. aarch64 Linux under qemu-aarch64 (`firmware.graph_linux`), bit-exact on the same images, when the
   tools are installed (else the row says which command installs them).
Limits: firmware and TFLM run a subset of the test images (every image is scored by the reference).
"""
from __future__ import annotations

import numpy as np

from firmware import cross, graph_export, graph_linux, graph_tflm
from har.image_cnn import to_float
from har.paths import atomic_write_bytes
from hybrid.images import float_accuracy, int8_accuracy
from model_opts.graph import intref
from model_opts.graph.techniques import distinct_values

TARGETS = ("cortex-m4", "cortex-m0plus")
N_FIRMWARE = {"cortex-m4": 100, "cortex-m0plus": 20}
N_QUICK = 4


def _zero_fraction(q) -> float:
    ws = [n.weight for n in q.nodes if n.weight is not None]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.size for w in ws))


def measure(runner, variant: str, out_dir, progress=None) -> dict:
    s = runner.settings
    model = runner.float_model(variant)
    row: dict = {"variant": variant, "dataset": s.dataset, "params": int(sum(p.numel() for p in model.parameters())),
                 "widths": "-".join(str(w) for w in model.config.widths),
                 "float_val_accuracy": float_accuracy(model, runner.data.val),
                 "float_test_accuracy": float_accuracy(model, runner.data.test)}
    if variant == "float":
        return row
    q, info = runner.int8(variant)
    row.update(int8_val_accuracy=int8_accuracy(q, runner.data.val), int8_test_accuracy=int8_accuracy(q, runner.data.test),
               weight_bytes=q.weight_bytes(), zero_weight_fraction=round(_zero_fraction(q), 4),
               max_distinct_weights=distinct_values(q), ptq_percentile=info["percentile"])
    if not s.firmware:
        return row
    lib = out_dir / "firmware" / variant
    meta = graph_export.convert(q, lib)
    row.update(arena_bytes=meta["arena_bytes"], naive_arena_bytes=meta["naive_arena_bytes"],
               weight_blob_bytes=meta["weight_blob_bytes"])
    images = runner.data.test.images
    n_max = max(N_FIRMWARE.values()) if not s.quick else N_QUICK
    qin = intref.quantize_input(q, to_float(images[:n_max]))
    ref = intref.run_int8(q, qin).reshape(len(qin), -1)
    for target in TARGETS:
        tag = "m4" if target == "cortex-m4" else "m0plus"
        n = min(N_FIRMWARE[target], n_max)
        if progress:
            progress(f"{variant}: {target}")
        try:
            run = graph_export.measure(lib, target, qin[:n], out_dir / "work" / variant / target, count_first=1)
        except cross.BuildError as e:
            row[f"{tag}_fits"] = f"does not fit: {str(e)[:120]}"
            continue
        fp = run.footprint
        row.update({f"{tag}_fits": "yes", f"{tag}_bit_exact": f"{int((run.outputs == ref[:n]).all(1).sum())}/{n}",
                    f"{tag}_flash_weights_bytes": fp["weights"]["flash_bytes"],
                    f"{tag}_flash_op_table_bytes": fp["op_table"]["flash_bytes"],
                    f"{tag}_flash_code_bytes": fp["kernel_code"]["flash_bytes"] + fp["runtime_code"]["flash_bytes"]
                    + fp["helpers"]["flash_bytes"],
                    f"{tag}_flash_library_bytes": fp["library_flash_bytes"],
                    f"{tag}_ram_arena_bytes": fp["arena"]["ram_bytes"],
                    f"{tag}_ram_library_bytes": fp["library_ram_bytes"], f"{tag}_stack_bytes": run.stack_bytes,
                    f"{tag}_instructions_per_image": run.instructions[0]})
    if progress:
        progress(f"{variant}: TFLM")
    model_bytes = graph_tflm.to_tflite(q)
    atomic_write_bytes(lib / "model.tflite", model_bytes)
    out = graph_tflm.run(model_bytes, qin)
    row.update(tflm_bit_exact=f"{int((out == ref).all(1).sum())}/{len(qin)}", tflm_model_bytes=len(model_bytes))
    if s.tflm_arena and not s.quick:
        row["tflm_arena_min_bytes_x86_64"] = graph_tflm.min_arena_bytes(model_bytes)
    if graph_linux.have_tools():
        if progress:
            progress(f"{variant}: aarch64 Linux")
        lr = graph_linux.run(lib, qin, out_dir / "work" / variant / "aarch64")
        row["aarch64_bit_exact"] = f"{int((lr.outputs == ref).all(1).sum())}/{len(qin)}"
    else:
        row["aarch64_bit_exact"] = f"not run: {graph_linux.INSTALL_HINT}"
    return row
