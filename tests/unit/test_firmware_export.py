"""The exported C library on the host: round trip, bit-exactness with the integer reference, streaming,
CRC refusal, the kernels' contract and byte-identical exports (real WISDM-2019 windows, PTQ model)."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from firmware import export, preprocess
from firmware.host import HostFirmware
from firmware.program import check_contract, device_program
from har.errors import BadDataError, BadOptionError
from model_opts.quant import intref, ptq
from model_opts.quant.config import QuantConfig
from system_opts import flatten_int8

N_WINDOWS = 300


@pytest.fixture(scope="module")
def case(trained, recording, tmp_path_factory):
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold,
                    QuantConfig(calibration="minmax", calib_windows=512))
    w = trained.windows
    test = trained.fold.test_idx[np.linspace(0, len(trained.fold.test_idx) - 1, N_WINDOWS).astype(int)]
    raw = recording.xyz[w.start[test][:, None] + np.arange(w.config.length)[None]]  # (N, T, 3) m/s^2
    counts = preprocess.to_counts(raw.transpose(0, 2, 1))
    out = tmp_path_factory.mktemp("fw") / "host"
    ex = export.convert(art.program, w.config, out, export.ExportConfig(target="host"))
    return art.program, w.config, counts, ex


def reference(prog, config, counts):
    ch = preprocess.channels(counts, preprocess.SampleFormat().scale_m_s2, config.channels)
    return intref.run(prog, ch)


def test_host_library_is_bit_exact_with_the_integer_reference(case):
    prog, config, counts, ex = case
    fw = HostFirmware(ex.out_dir)
    assert fw.init_code == 0
    labels, scores = fw.classify(counts)
    ref = reference(prog, config, counts)
    assert np.array_equal(scores, ref)
    assert np.array_equal(labels, ref.argmax(axis=1))
    assert len(np.unique(labels)) > 1  # real windows, not one constant answer


def test_preprocessing_matches_the_training_channels_closely(case, trained):
    """The firmware's float32 channels are har.windows' up to rounding, so int8 inputs differ rarely."""
    prog, config, counts, _ = case
    ch = preprocess.channels(counts, preprocess.SampleFormat().scale_m_s2, config.channels)
    raw = counts.astype(np.float64) * preprocess.SampleFormat().scale_m_s2
    from har.windows import to_channels
    direct = to_channels(raw, config.channels)
    q_fw, q_direct = intref.quantize_input(prog, ch), intref.quantize_input(prog, direct)
    # float32 vs float64 rounding; horizontal = sqrt(m^2 - v^2) amplifies it near 0, still within one step
    assert np.max(np.abs(q_fw.astype(int) - q_direct)) <= 1
    assert np.mean(q_fw != q_direct) < 1e-3


def test_streaming_results_equal_the_windows_the_ring_holds(case):
    prog, config, counts, ex = case
    fw = HostFirmware(ex.out_dir)
    t, step = fw.length, fw.step
    stream = np.concatenate(counts[:6])  # 6 windows back to back: a continuous stream of 6 T samples
    labels, scores = fw.stream(stream)
    starts = np.arange(0, len(stream) - t + 1, step)
    expected = reference(prog, config, np.stack([stream[s:s + t] for s in starts]))
    assert len(scores) == len(starts)
    assert np.array_equal(scores, expected)
    again_labels, again = fw.stream(stream)  # har_reset starts a fresh ring
    assert np.array_equal(again, scores) and np.array_equal(again_labels, labels)


def test_a_flipped_weight_byte_is_refused(case, tmp_path):
    prog, config, counts, ex = case
    bad = tmp_path / "bad"
    shutil.copytree(ex.out_dir, bad, ignore=shutil.ignore_patterns("build-host"))
    src = (bad / "har_model.c").read_text()
    # flip one int8 weight value (a byte of the blob) in the generated initializer
    m = re.search(r"(_weight = \{)(-?\d+)", src)
    value = int(m.group(2))
    flipped = value ^ 0x01 if value >= 0 else -((-value) ^ 0x01)
    (bad / "har_model.c").write_text(src[:m.start(2)] + str(flipped) + src[m.end(2):])
    fw = HostFirmware(bad)
    assert fw.init_code == -1  # HAR_ERR_CRC
    with pytest.raises(BadDataError, match="HAR_ERR_STATE"):
        fw.classify(counts[:1])
    assert HostFirmware(ex.out_dir).init_code == 0


def test_a_changed_op_table_field_is_refused(case, tmp_path):
    prog, config, counts, ex = case
    bad = tmp_path / "bad-ops"
    shutil.copytree(ex.out_dir, bad, ignore=shutil.ignore_patterns("build-host"))
    src = (bad / "har_model.c").read_text()
    m = re.search(r"\{1, \{(\d+),", src)  # the first gemm's n_in: a wrong row count would overrun the arena
    (bad / "har_model.c").write_text(src[:m.start(1)] + str(int(m.group(1)) + 1) + src[m.end(1):])
    assert HostFirmware(bad).init_code == -1


def test_export_is_byte_identical_and_its_manifest_hashes_every_file(case, tmp_path):
    prog, config, _, ex = case
    again = export.convert(prog, config, tmp_path / "again", export.ExportConfig(target="host"))
    assert again.files == ex.files
    manifest = json.loads((ex.out_dir / "export.json").read_text())
    assert manifest["files"] == ex.files and manifest["arena_bytes"] == ex.arena_bytes
    for name in export.LIBRARY_SOURCES:
        assert (ex.out_dir / name).exists()
    assert f"#define HAR_ARENA_BYTES {ex.arena_bytes}" in (ex.out_dir / "har_model.h").read_text()


def test_targets_plan_their_own_scratch(case):
    prog = case[0]
    m4, m0 = device_program(prog, "cortex-m4"), device_program(prog, "cortex-m0plus")
    assert any(b.name.endswith(".xs") for b in m4.buffers) and not any(b.name.endswith(".xs") for b in m0.buffers)
    assert m0.arena_bytes <= m4.arena_bytes
    assert len(m4.blob_bytes()) >= len(m0.blob_bytes())  # M4 weight rows padded to 4 terms


def test_contract_violations_are_refused_before_any_c_is_written(case, tmp_path):
    prog, config = case[0], case[1]
    flat = flatten_int8.apply(prog, flatten_int8.FlattenInt8Config(dequantize_output=False))
    name = next(op.name for op in flat.ops if op.kind == "conv1d_q")
    flat.weights[f"{name}.shift"] = flat.weights[f"{name}.shift"].copy()
    flat.weights[f"{name}.shift"][0] = 31
    with pytest.raises(BadDataError, match="shift"):
        check_contract(flat)
    with pytest.raises(BadOptionError):
        export.ExportConfig(target="cortex-m7")
    inf = replace(prog, input=replace(prog.input, inv_scale=np.full_like(prog.input.inv_scale, np.inf)))
    with pytest.raises(BadDataError, match="non-finite"):
        export.convert(inf, config, tmp_path / "inf", export.ExportConfig(target="host"))
    assert not (tmp_path / "inf").exists()


def test_soft_sqrt_of_fpu_less_targets_is_correctly_rounded(tmp_path):
    """har_pre_sqrtf without an FPU (the M0+ path, forced on the host) equals IEEE sqrt (numpy's) bit for bit,
    on a million random float32 bit patterns plus every class of special value."""
    import ctypes
    from firmware.export import CSRC, KERNELS
    from system_opts.cbuild import compile_shared
    lib = ctypes.CDLL(str(compile_shared(["-std=c99", "-O2", "-fPIC", "-shared", "-DHAR_SOFT_SQRT", f"-I{KERNELS}"],
                                         [CSRC / "har_pre.c"], tmp_path / "soft.so", "soft sqrt")))
    lib.har_pre_sqrtf.restype, lib.har_pre_sqrtf.argtypes = ctypes.c_float, [ctypes.c_float]
    bits = np.random.default_rng(0).integers(0, 2 ** 32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32), np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38, -1.0],
                                                        np.float32), np.arange(1, 2000, dtype=np.float32) ** 2])
    got = np.array([lib.har_pre_sqrtf(float(v)) for v in x], np.float32)
    with np.errstate(invalid="ignore"):
        want = np.sqrt(x)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), x[~same][:5]


def test_without_the_toolchain_the_firmware_is_measured_on_the_host_and_says_what_it_skipped(case, tmp_path,
                                                                                              monkeypatch):
    from types import SimpleNamespace
    from firmware import toolchain
    from firmware.measure import FirmwareConfig, measure_firmware
    from hybrid.device import checks, firmware_lines
    prog, config, counts, _ = case
    monkeypatch.setattr(toolchain, "have", lambda tool: False)
    r = measure_firmware(prog, config, counts[:20], None, tmp_path, FirmwareConfig(tflm=False))
    assert r.targets == {} and r.host_mismatched_windows == 0 and len(r.skipped) == 2
    assert all(toolchain.INSTALL_HINT in line for line in r.skipped)
    runner = SimpleNamespace(state=SimpleNamespace(firmware={"hybrid": {0: r}}, forest=None),
                             s=SimpleNamespace(quick=True))
    text = "\n".join(firmware_lines(runner))
    assert "not run here: cortex-m4" in text and checks({0: r}) == []


def test_default_sample_scale_covers_every_folds_training_users(recording, locomotion):
    """The ±4 g default is justified on training users only: in every subject fold the training users'
    samples lie inside the int16 range it gives (no test user was looked at to pick it)."""
    from har.splits import subject_kfold
    limit = preprocess.SampleFormat().full_scale_g * preprocess.G_M_S2
    for fold in subject_kfold(locomotion.user, k=4, seed=0):
        starts = locomotion.start[fold.train_idx]
        raw = recording.xyz[starts[:, None] + np.arange(locomotion.config.length)[None]]
        assert np.nanmax(np.abs(raw)) < limit
        assert np.nanmax(np.abs(raw)) > limit / 4  # and the scale is not wastefully wide (below ±1 g)
