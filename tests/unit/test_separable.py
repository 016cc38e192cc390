"""Depthwise-separable CNN end to end: model, BN fold, int8 reference, flat program, numpy / C sessions,
firmware host build and TFLM, all bit-exact with the integer reference."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from firmware import export, preprocess
from firmware.host import HostFirmware
from har.errors import BadDataError, BadOptionError
from har.measure.artifact import TorchArtifact
from har.model import CNNConfig, CompactCNN1d, param_count
from har.training import TrainConfig
from model_opts import separable
from model_opts.quant import artifact, intref, ptq, qat
from model_opts.quant.config import QATConfig, QuantConfig
from model_opts.quant.fakequant import class_agreement, to_program
from model_opts.quant.fixedpoint import quantize_multipliers
from model_opts.quant.graph import FloatDepthwiseConv1d, fold_model, run_float
from model_opts.quant.intref import DepthwiseConv1dInt8, GlobalAvgPoolInt8, InputQuant, Int8Program, MaxPool1dInt8
from system_opts import cbuild, flatten_int8
from system_opts.buffer_pool_c import CInt8Session
from system_opts.buffer_pool_int8 import Int8Session
from system_opts.int8_layout import device_tensors
from system_opts.kernels import run_program

from tests.unit.int8_programs import layer

INT32_MAX = np.iinfo(np.int32).max


def _bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    model.eval()


# ------------------------------------------------------------------ model


def test_separable_model_shapes_params_and_macs_against_the_standard_one():
    std_cfg = CNNConfig(in_channels=3, n_classes=5, widths=(16, 24, 32))
    sep_cfg = replace(std_cfg, separable=True)
    std, sep = CompactCNN1d(std_cfg, seed=0), CompactCNN1d(sep_cfg, seed=0)
    x = torch.randn(4, 3, 100)
    assert sep.eval()(x).shape == std.eval()(x).shape == (4, 5)
    grouped = [m for m in sep if isinstance(m, torch.nn.Conv1d) and m.groups > 1]
    assert [m.groups for m in grouped] == [16, 24]  # every block but the first
    assert isinstance(sep[0], torch.nn.Conv1d) and sep[0].groups == 1
    assert param_count(sep) == separable.count_params(sep_cfg) < param_count(std) == separable.count_params(std_cfg)
    traced = {c: TorchArtifact(m, _identity_norm(3), example=np.zeros((3, 100), np.float32)).macs_per_window()
              for c, m in ((sep_cfg, sep), (std_cfg, std))}
    assert traced[sep_cfg] == separable.count_macs(sep_cfg, 100) < traced[std_cfg] == separable.count_macs(std_cfg, 100)


def _identity_norm(c: int):
    from har.windows import Normalizer
    return Normalizer(np.zeros(c, np.float32), np.ones(c, np.float32))


def test_standard_configs_keep_their_json_and_old_configs_load():
    std = CNNConfig(in_channels=6, n_classes=5, widths=(8, 12))
    assert "separable" not in json.loads(std.to_json())  # cache keys hash this text
    old = json.loads(std.to_json())
    assert CNNConfig.from_dict(old) == std and not CNNConfig.from_dict(old).separable
    sep = replace(std, separable=True)
    assert json.loads(sep.to_json())["separable"] is True and CNNConfig.from_dict(json.loads(sep.to_json())) == sep
    # the standard network is built from the same modules in the same order: same weights for a seed
    a, b = CompactCNN1d(std, seed=3).state_dict(), CompactCNN1d(CNNConfig(6, 5, (8, 12)), seed=3).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_separable_options_are_refused():
    with pytest.raises(BadOptionError):
        separable.SeparableConfig(kernel_size=4)
    with pytest.raises(BadOptionError):
        separable.model_config(3, 5, ())


def test_bn_fold_of_a_separable_model_matches_it():
    model = CompactCNN1d(CNNConfig(in_channels=3, n_classes=4, widths=(8, 12, 16), separable=True), seed=1)
    _bn_stats(model)
    ops = fold_model(model)
    assert sum(isinstance(op, FloatDepthwiseConv1d) for op in ops) == 2
    x = torch.randn(8, 3, 64)
    with torch.inference_mode():
        ref = model(x).double()
        got = run_float(ops, x).double()
    assert torch.allclose(got, ref, atol=1e-4 * float(ref.abs().max()))


# ------------------------------------------------------------------ integer reference


def _requant_exact(acc: int, m: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier in Python integers (no numpy, no fixedpoint)."""
    if shift > 0:
        acc = max(-2 ** 31, min(2 ** 31 - 1, acc << shift))
    high = (acc * m + 2 ** 30) >> 31  # SRDHM: nudge + truncation == floor((ab + 2^30) / 2^31)
    e = max(-shift, 0)
    if e == 0:
        return high
    q, r = divmod(high, 2 ** e)  # floor; ties away from zero
    half = 2 ** (e - 1)
    return q + (1 if r > half or (r == half and high >= 0) else 0)


def _dw_reference(op: DepthwiseConv1dInt8, q: np.ndarray) -> np.ndarray:
    """float64 sums (exact: |acc| < 2^53), int32 wrap of the bias add, exact-integer requantisation."""
    xs = np.pad(q.astype(np.float64) - op.input_zero_point, ((0, 0), (0, 0), (op.padding, op.padding)))
    c, _, k = op.weight.shape
    t_out = xs.shape[2] - k + 1
    acc = sum(xs[:, :, j:j + t_out] * op.weight[None, :, 0, j, None].astype(np.float64) for j in range(k))
    out = np.empty(acc.shape, np.int8)
    for idx in np.ndindex(*acc.shape):
        ch = idx[1]
        a = (int(acc[idx]) + int(op.bias[ch]) + 2 ** 31) % 2 ** 32 - 2 ** 31
        v = _requant_exact(a, int(op.multiplier[ch]), int(op.shift[ch])) + op.output_zero_point
        out[idx] = min(max(v, op.act_min), op.act_max)
    return out


def dw_layer(rng, q: np.ndarray, zp_in: int, k: int, pad: int, relu: bool) -> tuple[DepthwiseConv1dInt8, np.ndarray]:
    """A depthwise conv spreading its outputs over int8 on `q`, with corner channels like int8_programs.layer:
    0 bias INT32_MAX (wraps), 1 multiplier 0, 2 shift -31, 3 a unit tap with multiplier 3 (left shift),
    4 multiplier 2^20 (saturating left shift)."""
    c = q.shape[1]
    w = rng.integers(-127, 128, (c, 1, k)).astype(np.int8)
    w[3] = 0
    w[3, 0, k // 2] = 1
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    probe = DepthwiseConv1dInt8(w, np.zeros(c, np.int32), np.zeros(c, np.int32), np.zeros(c, np.int32), pad, zp_in, 0,
                                -128)
    xs = np.pad(q.astype(np.float64) - zp_in, ((0, 0), (0, 0), (pad, pad)))
    t_out = xs.shape[2] - k + 1
    acc = sum(xs[:, :, j:j + t_out] * w[None, :, 0, j, None] for j in range(k)) + bias[None, :, None]
    real = 100.0 / np.maximum(np.abs(acc).max(axis=(0, 2)), 1.0)
    real[3], real[4] = 3.0, 2.0 ** 20
    mult, shift = quantize_multipliers(real)
    bias[0] = INT32_MAX
    mult[1], shift[1], shift[2] = 0, 0, -31
    zp_out = int(rng.integers(-20, 20))
    op = replace(probe, bias=bias, multiplier=mult, shift=shift, output_zero_point=zp_out,
                 act_min=zp_out if relu else -128)
    return op, intref.dwconv1d_int8(op, q)


def dw_program(rng, length=24, c_in=3):
    """conv -> dwconv (padded, ReLU) -> max pool 2 (phase-major dwconv output) -> dwconv (no padding)
    -> 1x1 conv -> dwconv k 1 -> max pool 3 -> global pool -> linear, calibrated on random windows."""
    iq = InputQuant(rng.uniform(0.5, 20, c_in).astype(np.float32), rng.uniform(-50, 50, c_in).astype(np.float32),
                    0.1, 3)
    x = rng.normal(0, 5, (200, c_in, length)).astype(np.float32)
    h = intref.quantize_input(Int8Program(iq, (), 1.0, 0, c_in, length), x)
    ops, zp = [], 3
    steps = [("conv", 7, 3, 1), ("dw", 0, 5, 2), ("pool", 2), ("dw", 0, 3, 0), ("conv", 9, 1, 0), ("dw", 0, 1, 0),
             ("pool", 3)]
    for i, s in enumerate(steps):
        if s[0] == "pool":
            op = MaxPool1dInt8(s[1])
            h = intref.maxpool1d_int8(op, h)
        elif s[0] == "dw":
            op, h = dw_layer(rng, h, zp, s[2], s[3], relu=i % 2 == 1)
        else:
            op, h = layer(rng, h, zp, s[1], s[2], s[3], relu=True)
        ops.append(op)
        zp = getattr(op, "output_zero_point", zp)
    sums = np.abs(h.astype(np.int64) - zp).sum(axis=2).max()
    m, sh = quantize_multipliers(np.array([100.0 / max(sums, 1)]))
    ops.append(GlobalAvgPoolInt8(h.shape[2], int(m[0]), int(sh[0]), zp, -5))
    h = intref.global_avg_pool_int8(ops[-1], h)
    op, _ = layer(rng, h, -5, 6)
    ops.append(op)
    return Int8Program(iq, tuple(ops), 0.05, op.output_zero_point, c_in, length).validate(), x


def test_depthwise_reference_equals_an_exact_integer_reference():
    rng = np.random.default_rng(0)
    for k, pad, zp in ((5, 2, 7), (3, 0, -128), (1, 0, 127), (4, 3, 0)):
        q = rng.integers(-128, 128, (6, 9, 17)).astype(np.int8)
        op, out = dw_layer(rng, q, zp, k, pad, relu=k == 5)
        assert out.shape == (6, 9, 17 + 2 * pad - k + 1)
        assert np.array_equal(out, _dw_reference(op, q))
        assert len(np.unique(out)) > 20  # outputs spread over int8, not one clamped value


def test_flat_program_and_both_sessions_equal_the_reference_on_corner_cases():
    rng = np.random.default_rng(1)
    prog, x = dw_program(rng)
    ref = intref.run(prog, x)
    assert len(np.unique(ref[:, 5])) > 10  # logits vary with the window (channels 0-4 are corner cases)
    flat = flatten_int8.apply(prog, flatten_int8.FlattenInt8Config(dequantize_output=False))
    assert [op.kind for op in flat.ops].count("dwconv1d_q") == 3
    phases = device_tensors(flat)[2]  # both pooled depthwise outputs are stored phase-major
    assert sorted(phases[op.output] for op in flat.ops if op.kind == "dwconv1d_q" and op.output in phases) == [2, 3]
    # (the batch executor's conv1d_q saturates an overflowing bias add where the reference wraps: its
    # depthwise kernel is compared on the real model below)
    numpy_s, c_s = Int8Session(prog), CInt8Session(prog)
    assert np.array_equal(numpy_s.predict_int8(x), ref)
    assert np.array_equal(c_s.predict_int8(x), ref)
    assert c_s.arena_bytes() <= numpy_s.arena_bytes()
    assert intref.macs_per_window(prog) == flat.macs_per_window() + sum(  # the flat count skips depthwise
        op.weight.size * t for op, t in _dw_steps(prog))


def _dw_steps(prog):
    for (name, shape), op in zip(intref.tensor_shapes(prog)[1:], prog.ops):
        if isinstance(op, DepthwiseConv1dInt8):
            yield op, shape[1]


def test_depthwise_contract_violations_are_refused():
    rng = np.random.default_rng(2)
    prog, _ = dw_program(rng)
    flat = flatten_int8.apply(prog)
    i = next(j for j, op in enumerate(flat.ops) if op.kind == "dwconv1d_q")
    bad = dict(flat.weights)
    bad[f"{flat.ops[i].name}.shift"] = np.full_like(bad[f"{flat.ops[i].name}.shift"], 31)
    with pytest.raises(BadDataError, match="shift"):
        cbuild.check_contract(replace(flat, weights=bad))
    with pytest.raises(ValueError):
        replace(prog, ops=(replace(prog.ops[1], weight=prog.ops[1].weight.reshape(-1, 5)),)).validate()


# ------------------------------------------------------------------ trained on real windows


@pytest.fixture(scope="module")
def sep_case(locomotion, fold0):
    from har.training import bound_threads
    from har.windows import Normalizer
    bound_threads(1)
    norm = Normalizer.fit(locomotion.x[fold0.train_idx])
    cfg = separable.SeparableConfig(train=TrainConfig(epochs=2, patience=2))
    model = separable.apply(locomotion.config.n_channels, 5, (16, 24, 32), norm, locomotion, fold0, cfg)
    art = ptq.apply(model, norm, locomotion, fold0, QuantConfig(calibration="minmax", calib_windows=512))
    return model, norm, art


def test_separable_ptq_program_runs_bit_exact_everywhere(sep_case, locomotion, fold0, recording, tmp_path):
    model, norm, art = sep_case
    prog = art.program
    assert model.config.separable and model.config.widths == (16, 24, 32)
    assert sum(isinstance(op, DepthwiseConv1dInt8) for op in prog.ops) == 2
    assert intref.macs_per_window(prog) == separable.count_macs(model.config, prog.length)
    val = locomotion.x[fold0.val_idx[::40]]
    ref = intref.run(prog, val)
    assert len(np.unique(ref.argmax(1))) > 1
    assert np.array_equal(CInt8Session(prog).predict_int8(val), ref)
    assert np.array_equal(Int8Session(prog).predict_int8(val[:20]), ref[:20])
    flat = flatten_int8.apply(prog, flatten_int8.FlattenInt8Config(dequantize_output=False))
    assert np.array_equal(run_program(flat, val), ref)
    art.save(tmp_path / "a")
    again = artifact.load(tmp_path / "a")
    assert np.array_equal(again.predict_int8(val), ref)
    assert (tmp_path / "a" / artifact.FILE_NAME).read_bytes() == again.save(tmp_path / "b").read_bytes()
    # the firmware host build on real recorded windows (validation users), from int16 counts
    w = locomotion
    idx = fold0.val_idx[np.linspace(0, len(fold0.val_idx) - 1, 120).astype(int)]
    raw = recording.xyz[w.start[idx][:, None] + np.arange(w.config.length)[None]]
    counts = preprocess.to_counts(raw.transpose(0, 2, 1))
    ex = export.convert(prog, w.config, tmp_path / "fw", export.ExportConfig(target="host"))
    assert "#define HAR_WITH_DWCONV 1" in (tmp_path / "fw" / "har_int8_config.h").read_text()
    labels, scores = HostFirmware(ex.out_dir).classify(counts)
    ch = preprocess.channels(counts, preprocess.SampleFormat().scale_m_s2, w.config.channels)
    fw_ref = intref.run(prog, ch)
    assert np.array_equal(scores, fw_ref) and np.array_equal(labels, fw_ref.argmax(1))
    tflm = pytest.importorskip("firmware.tflm")
    model_bytes = tflm.to_tflite(prog)
    assert model_bytes == tflm.to_tflite(prog)
    assert np.array_equal(tflm.run(model_bytes, intref.quantize_input(prog, val[:30])), ref[:30])


def test_a_standard_export_enables_no_depthwise_kernel(tmp_path):
    rng = np.random.default_rng(3)
    from tests.unit.int8_programs import adversarial_program
    from har.windows import WindowConfig
    prog, _ = adversarial_program(rng, [(5, 3, 1)], pool=2, length=WindowConfig().length,
                                  c_in=WindowConfig().n_channels)
    export.convert(prog, WindowConfig(), tmp_path, export.ExportConfig(target="host", tflite=False))
    assert "DWCONV" not in (tmp_path / "har_int8_config.h").read_text()


def test_separable_qat_converts_and_stays_bit_exact(sep_case, locomotion, fold0):
    model, norm, _ = sep_case
    sim = ptq.simulate(model, norm, locomotion.x[fold0.train_idx[::4]], QuantConfig(calib_windows=256))
    sim, _ = qat.finetune(sim, norm, locomotion, fold0, QATConfig(epochs=1, patience=1))
    prog = to_program(sim)
    val = locomotion.x[fold0.val_idx[::60]]
    assert class_agreement(sim, prog, val) > 0.9
    assert np.array_equal(CInt8Session(prog).predict_int8(val), intref.run(prog, val))


def test_separable_firmware_on_qemu_m4_and_m0plus_and_tflm(sep_case, locomotion, fold0, recording, tmp_path):
    from firmware import measure, toolchain
    if not all(toolchain.have(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm")):
        pytest.skip(f"arm-none-eabi-gcc / qemu-system-arm missing ({toolchain.INSTALL_HINT})")
    pytest.importorskip("tflite_micro")
    _, _, art = sep_case
    w = locomotion
    idx = fold0.val_idx[np.linspace(0, len(fold0.val_idx) - 1, 12).astype(int)]  # validation users
    raw = recording.xyz[w.start[idx][:, None] + np.arange(w.config.length)[None]]
    counts = preprocess.to_counts(raw.transpose(0, 2, 1))
    res = measure.measure_firmware(art.program, w.config, counts, w.y[idx], tmp_path,
                                   measure.FirmwareConfig(targets=("cortex-m4", "cortex-m0plus"),
                                                          n_count_windows=4, n_stream_windows=2))
    assert res.host_mismatched_windows == 0 and not res.skipped
    for target in ("cortex-m4", "cortex-m0plus"):
        t = res.targets[target]
        assert (t.mismatched_windows, t.stream_mismatched) == (0, 0) and t.instructions_repeat_equal
    assert res.tflm["mismatched_windows"] == 0
