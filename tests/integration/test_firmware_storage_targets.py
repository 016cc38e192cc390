"""Compressed weight storage on emulated Cortex-M4F and M0+: bit-exact with the integer reference, and what
each format costs and saves, read from the ELF (flash by category, arena) and counted in emulation."""
from __future__ import annotations

import pytest

from firmware import toolchain
from firmware.measure import FirmwareConfig, measure_firmware
from firmware.storage import WeightStorage
from model_opts.quant import ptq
from model_opts.quant.config import QuantConfig
from tests.unit.test_firmware_storage import _structured

N_WINDOWS = 40


@pytest.fixture(scope="module")
def results(trained, device_counts, tmp_path_factory):
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        toolchain.require(tool)
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold,
                    QuantConfig(calibration="minmax", calib_windows=512))
    w = trained.windows
    test, counts = device_counts(N_WINDOWS)
    prog = _structured(art.program, keep=0.1)
    out = tmp_path_factory.mktemp("storage")
    return {fmt: measure_firmware(prog, w.config, counts, w.y[test], out / fmt,
                                  FirmwareConfig(n_count_windows=2, n_stream_windows=2, tflm=False,
                                                 storage=WeightStorage(fmt)))
            for fmt in ("dense", "palette", "palette-direct", "huffman", "csr")}


def test_every_format_is_bit_exact_on_both_boards(results):
    for fmt, r in results.items():
        assert r.host_mismatched_windows == 0, fmt
        for target in ("cortex-m4", "cortex-m0plus"):
            t = r.targets[target]
            assert (t.n_windows, t.mismatched_windows, t.stream_mismatched) == (N_WINDOWS, 0, 0), (fmt, target)
            assert t.instructions_repeat_equal and t.storage == fmt


def test_decoding_trades_flash_for_arena_and_instructions(results):
    for target in ("cortex-m4", "cortex-m0plus"):
        dense = results["dense"].targets[target]
        assert dense.flash["decoder_code"] == 0
        for fmt in ("palette", "huffman"):
            t = results[fmt].targets[target]
            assert t.flash["decoder_code"] > 0, (fmt, target)  # the decoder is linked and counted
            assert t.flash["weights"] < dense.flash["weights"], (fmt, target)
            assert t.ram["arena"] > dense.ram["arena"], (fmt, target)  # the decoded layer's slot
            if target == "cortex-m4":  # the SMLAD gemm is unchanged; the decoding comes on top
                assert t.instructions_per_inference > dense.instructions_per_inference, fmt
        csr = results["csr"].targets[target]
        assert csr.flash["decoder_code"] == 0 and csr.flash["weights"] < dense.flash["weights"]
        assert csr.ram["arena"] <= dense.ram["arena"]
        direct, decoded = results["palette-direct"].targets[target], results["palette"].targets[target]
        assert direct.flash["decoder_code"] == 0 and direct.flash["weights"] < dense.flash["weights"]
        assert direct.ram["arena"] <= dense.ram["arena"] < decoded.ram["arena"]  # the clustering's RAM cost gone
        # 90 % zeros: the sparse gemm skips them, the dense loop orders cannot
        assert csr.instructions_per_inference < dense.instructions_per_inference, target


def test_break_even_sweep_measures_both_sides_of_the_crossing(trained, device_counts, tmp_path):
    from firmware import breakeven
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold, QuantConfig(calib_windows=256))
    w = trained.windows
    _, counts = device_counts(2, "train")
    rows = breakeven.sweep(art.program, w.config, counts, tmp_path, sparsities=(0.0, 0.95), targets=("cortex-m4",))
    by = {(r["sparsity"], r["storage"]): r for r in rows}
    assert by[(0.0, "csr")]["flash_bytes"] > by[(0.0, "dense")]["flash_bytes"]  # indices cost more than zeros save
    assert by[(0.95, "csr")]["flash_bytes"] < by[(0.95, "dense")]["flash_bytes"]
    assert by[(0.95, "csr")]["instructions"] < by[(0.95, "dense")]["instructions"]
    assert by[(0.0, "dense")]["weights_flash_bytes"] == by[(0.95, "dense")]["weights_flash_bytes"]
    s = breakeven.break_even(rows, "cortex-m4", "csr", "flash_bytes")
    assert s is not None and 0.0 < s < 0.95
