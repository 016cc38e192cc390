"""int8 PTQ on the shared `trained` fixture: folding, integer-only reference, artifact save/load, bytes."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from har.errors import BadDataError, DataNotFoundError
from har.measure import MeasureConfig, TorchArtifact, measure
from har.model import predict_logits
from model_opts.quant import intref, ptq
from model_opts.quant.artifact import FILE_NAME, Int8Artifact, load, save
from model_opts.quant.config import QuantConfig
from model_opts.quant.fakequant import class_agreement, to_program
from model_opts.quant.graph import UnsupportedModelError, fold_model, run_float

CFG = QuantConfig(calibration="minmax", calib_windows=1024)


@pytest.fixture(scope="module")
def sim(trained):
    return ptq.simulate(trained.model, trained.normalizer, trained.x_train, CFG)


@pytest.fixture(scope="module")
def program(sim):
    return to_program(sim)


def test_batchnorm_folding_keeps_the_float_function(trained):
    x = trained.normalizer(trained.x_test[:256])
    with torch.inference_mode():
        folded = run_float(fold_model(trained.model), torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(folded, predict_logits(trained.model, x).numpy(), atol=1e-4)


def test_unsupported_module_is_refused():
    with pytest.raises(UnsupportedModelError, match="GELU"):
        fold_model(nn.Sequential(nn.Conv1d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2)))


def test_program_is_integer_only_between_input_and_output(program, trained):
    assert program.ops[0].weight.dtype == np.int8 and program.ops[0].bias.dtype == np.int32
    h = intref.quantize_input(program, trained.x_test[:32])
    assert h.dtype == np.int8
    for op in program.ops:
        h = intref._KERNELS[type(op)](op, h)
        assert h.dtype == np.int8, type(op).__name__
    conv = program.ops[0]
    assert conv.act_min == conv.output_zero_point  # fused ReLU clamps at the quantized real zero
    assert np.all(np.abs(program.ops[0].weight.astype(int)) <= 127)


def test_conv_requantization_within_one_lsb_of_exact_float(program, trained):
    op = program.ops[0]
    q = intref.quantize_input(program, trained.x_test[:64])
    got = intref.conv1d_int8(op, q).astype(np.int64)
    xs = torch.from_numpy(q.astype(np.float64)) - op.input_zero_point
    acc = torch.nn.functional.conv1d(xs, torch.from_numpy(op.weight.astype(np.float64)),
                                     torch.from_numpy(op.bias.astype(np.float64)), padding=op.padding).numpy()
    real = acc * (op.input_scale * op.weight_scale[None, :, None] / op.output_scale) + op.output_zero_point
    exact = np.clip(real, op.act_min, op.act_max)
    assert np.abs(got - exact).max() <= 1.0


def test_integer_reference_agrees_with_fake_quant_model(sim, program, trained):
    assert class_agreement(sim, program, trained.x_test) >= 0.995


def test_int8_accuracy_and_bytes_against_fp32(program, trained):
    mcfg = MeasureConfig.static_only()
    fp32 = measure(TorchArtifact(trained.model, trained.normalizer, example=trained.x_test[0]),
                   trained.x_test, trained.y_test, mcfg)
    int8 = measure(Int8Artifact(program), trained.x_test, trained.y_test, mcfg)
    assert int8.weight_bytes <= 0.30 * fp32.weight_bytes
    assert int8.macs == fp32.macs
    assert int8.activation_bytes_peak < fp32.activation_bytes_peak
    # one-sided: int8 must not lose accuracy. The 4-epoch fixture is not bit-reproducible across sessions
    # (2 training threads) and has many borderline windows; int8 was seen up to 2.1 pp *better* on it
    assert int8.accuracy >= fp32.accuracy - 0.02


def test_global_pool_refuses_another_length(program, trained):
    with pytest.raises(ValueError, match="built for"):
        intref.run(program, trained.x_test[:2, :, :60])


def test_artifact_save_load_identical_predictions_and_bytes(trained, program, tmp_path):
    art = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold, CFG)
    save(tmp_path / "a", art)
    again = ptq.apply(trained.model, trained.normalizer, trained.windows, trained.fold, CFG)
    save(tmp_path / "b", again)
    assert (tmp_path / "a" / FILE_NAME).read_bytes() == (tmp_path / "b" / FILE_NAME).read_bytes()
    loaded = load(tmp_path / "a")
    x = trained.x_test[:500]
    assert np.array_equal(loaded.predict_int8(x), art.predict_int8(x))
    assert np.array_equal(art.predict_int8(x), intref.run(program, x))  # apply == simulate + to_program
    assert loaded.classes == trained.windows.classes
    save(tmp_path / "c", loaded)
    assert (tmp_path / "c" / FILE_NAME).read_bytes() == (tmp_path / "a" / FILE_NAME).read_bytes()


def test_load_errors_are_readable(tmp_path):
    with pytest.raises(DataNotFoundError):
        load(tmp_path)
    (tmp_path / FILE_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(BadDataError, match="unusable int8 artifact"):
        load(tmp_path)


F32_MAX = float(np.finfo(np.float32).max)
NON_FINITE = (np.nan, np.inf, -np.inf, F32_MAX, -F32_MAX)


def _non_finite_windows(x: np.ndarray) -> np.ndarray:
    """Copies of real windows with NaN, +-Inf and +-FLT_MAX written at scattered (channel, step) places,
    one window with a whole NaN channel and one all NaN."""
    x = np.array(x, dtype=np.float32)
    n, c, t = x.shape
    for i in range(n - 2):
        for j, v in enumerate(NON_FINITE):
            x[i, (i + j) % c, (7 * i + 5 * j) % t] = v
    x[-2, 1] = np.nan
    x[-1] = np.nan
    return x


def test_input_quantizer_nan_and_infinity_policy(program, trained):
    """NaN -> the input zero point (what the channel's training mean quantizes to), +Inf -> 127 and
    -Inf -> -128 like the finite extremes; every other sample quantizes as in the clean window."""
    clean = np.asarray(trained.x_test[:12], dtype=np.float32)
    x = _non_finite_windows(clean)
    assert np.all(program.input.inv_scale > 0)  # so +values saturate high, -values low
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN reaches the int8 cast, the overflow to Inf is expected
        q = intref.quantize_input(program, x)
    zp = program.input.zero_point
    assert q.dtype == np.int8
    assert np.all(q[np.isnan(x)] == zp)
    assert np.all(q[x == np.inf] == 127) and np.all(q[x == F32_MAX] == 127)
    assert np.all(q[x == -np.inf] == -128) and np.all(q[x == -F32_MAX] == -128)
    finite = np.isfinite(x) & (np.abs(x) < F32_MAX)
    assert np.array_equal(q[finite], intref.quantize_input(program, clean)[finite])
    mean_window = np.broadcast_to(trained.normalizer.mean[None, :, None], clean[:1].shape)
    assert np.all(intref.quantize_input(program, mean_window) == zp)
    # so a NaN sample runs through the whole network as its channel's mean would
    imputed = np.where(np.isnan(x), trained.normalizer.mean[None, :, None], x)
    assert np.array_equal(intref.run(program, x), intref.run(program, imputed))
