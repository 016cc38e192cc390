"""The exported firmware of a real PTQ model on emulated Cortex-M4F and Cortex-M0+ (QEMU), against the integer
reference and TFLM, with its ELF accounting, stack and instruction counts; and the CRC refusal in flash."""
from __future__ import annotations

import os
import shutil

import pytest

from firmware import export, toolchain
from firmware.measure import FirmwareConfig, measure_firmware
from model_opts.quant import ptq
from model_opts.quant.config import QuantConfig

N_WINDOWS = 300


@pytest.fixture(scope="module")
def tools():
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        toolchain.require(tool)


@pytest.fixture(scope="module")
def case(trained, device_counts):
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold,
                    QuantConfig(calibration="minmax", calib_windows=512))
    test, counts = device_counts(N_WINDOWS)
    return art.program, trained.windows.config, counts, trained.windows.y[test]


@pytest.fixture(scope="module")
def measured(tools, case, tmp_path_factory):
    prog, window, counts, labels = case
    out = tmp_path_factory.mktemp("fw")
    return measure_firmware(prog, window, counts, labels, out, FirmwareConfig(n_count_windows=3)), out


def test_both_targets_are_bit_exact_with_the_reference_and_with_tflm(measured):
    r, _ = measured
    assert r.n_windows == N_WINDOWS and r.host_mismatched_windows == 0
    for target in ("cortex-m4", "cortex-m0plus"):
        t = r.targets[target]
        assert (t.n_windows, t.mismatched_windows, t.stream_mismatched) == (N_WINDOWS, 0, 0), target
        assert t.accuracy == r.host_accuracy
    assert r.tflm is not None and r.tflm["mismatched_windows"] == 0


def test_flash_ram_stack_and_instructions_are_measured_per_target(measured):
    r, _ = measured
    m4, m0 = r.targets["cortex-m4"], r.targets["cortex-m0plus"]
    for t in (m4, m0):
        assert t.flash["weights"] > 0 and t.flash["op_table"] > 0 and t.flash["kernel_code"] > 0
        assert t.ram["arena"] == t.arena_bytes and t.ram["ring_buffer"] > 0 and t.stack_bytes > 0
        lib = ("weights", "op_table", "kernel_code", "decoder_code", "preprocessing", "runtime_code", "helpers")
        assert t.flash["decoder_code"] == 0  # dense weights: the decoder is not linked
        assert t.library_flash_bytes == sum(t.flash[c] for c in lib)
        assert t.instructions_repeat_equal and min(t.instructions) > r.macs / 4
    assert m0.flash["helpers"] > m4.flash["helpers"]  # soft float and 64-bit helpers on v6-M
    assert m4.instructions_per_inference < m0.instructions_per_inference  # SMLAD and the FPU
    assert m4.arena_bytes <= r.tflm["arena_min_bytes"]


def test_a_flipped_byte_in_flash_is_refused_by_the_firmware(measured):
    from firmware import elfsize, qemu
    _, out = measured
    work = out / "cortex-m4" / "work"
    elf = out / "cortex-m4" / "test.elf"
    bad = out / "bad.elf"
    shutil.copy(elf, bad)
    offset = elfsize.Elf(bad).file_offset("har_weights") + 5
    data = bytearray(bad.read_bytes())
    data[offset] ^= 0x10
    bad.write_bytes(bytes(data))
    assert qemu.run("cortex-m4", bad, work, timeout_s=60).exit_code == 2  # har_init: HAR_ERR_CRC
    assert qemu.run("cortex-m4", elf, work, timeout_s=60).exit_code == 0


def test_export_directory_builds_with_its_own_makefile(measured, tools):
    _, out = measured
    lib = out / "cortex-m4" / "lib"
    if shutil.which("make") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("make not installed (the README's Quickstart needs it)")
    import subprocess
    done = subprocess.run(["make", "-C", str(lib), "m4", "m0plus", "host"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert (lib / "libhar-cortex-m4.a").stat().st_size > 0 and (lib / "libhar.so").stat().st_size > 0
    assert export.LIBRARY_SOURCES[0] in (lib / "Makefile").read_text()
