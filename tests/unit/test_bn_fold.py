"""The shared BatchNorm fold (`har.bn_fold`) against torch's eval-mode modules and torch's float32 helper."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from har.bn_fold import fold_bn
from har.errors import HarError


def _random_bn(n: int, seed: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(n).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # statistics far from the (0, 1) defaults, so a wrong fold cannot pass by luck
        bn.running_mean.copy_(torch.randn(n, generator=g) * 2)
        bn.running_var.copy_(torch.rand(n, generator=g) * 5 + 0.01)
        bn.weight.copy_(torch.randn(n, generator=g) * 0.5 + 1)
        bn.bias.copy_(torch.randn(n, generator=g))
    return bn


def _conv(w: np.ndarray, b: np.ndarray, x: torch.Tensor, padding: int) -> np.ndarray:
    return nn.functional.conv1d(x.double(), torch.from_numpy(w), torch.from_numpy(b), padding=padding).numpy()


@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_computes_eval_mode_conv_then_batchnorm(bias):
    torch.manual_seed(0)
    conv, bn = nn.Conv1d(6, 12, 5, padding=2, bias=bias).eval(), _random_bn(12, seed=1)
    x = torch.randn(8, 6, 40)
    with torch.inference_mode():
        ref = bn(conv(x)).double().numpy()
    w, b = fold_bn(conv.weight.detach().numpy(), None if conv.bias is None else conv.bias.detach().numpy(), bn)
    assert w.dtype == np.float64 and b.dtype == np.float64 and w.shape == (12, 6, 5) and b.shape == (12,)
    # the reference itself runs in float32, so its error (not the fold's) sets the tolerance
    np.testing.assert_allclose(_conv(w, b, x, padding=2), ref, atol=1e-5, rtol=1e-5)


def test_fold_matches_torch_float32_helper_to_float32_rounding():
    torch.manual_seed(2)
    conv, bn = nn.Conv1d(9, 32, 7, bias=True), _random_bn(32, seed=3)
    w, b = fold_bn(conv.weight.detach().numpy(), conv.bias.detach().numpy(), bn)
    tw, tb = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_fold_rounds_like_the_exact_float64_formula():
    # the int8 artifacts depend on the float32-rounded fold: it must equal W * gamma / sqrt(var + eps) in float64
    torch.manual_seed(4)
    conv, bn = nn.Conv1d(16, 24, 5, bias=False), _random_bn(24, seed=5)
    w0 = conv.weight.detach().double().numpy()
    s = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    w, b = fold_bn(w0, None, bn)
    assert np.array_equal(w.astype(np.float32), (w0 * s[:, None, None]).astype(np.float32))
    exact_b = (-bn.running_mean.detach().double().numpy()) * s + bn.bias.detach().double().numpy()
    assert np.array_equal(b.astype(np.float32), exact_b.astype(np.float32))


def test_linear_weights_fold_like_torch_linear_helper():
    torch.manual_seed(6)
    lin, bn = nn.Linear(20, 10), _random_bn(10, seed=7)
    w, b = fold_bn(lin.weight.detach().numpy(), lin.bias.detach().numpy(), bn)
    tw, tb = fuse_linear_bn_weights(lin.weight, lin.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_batchnorm_without_affine_or_statistics():
    w = np.ones((3, 2, 1))
    bn = nn.BatchNorm1d(3, affine=False).eval()
    folded, _ = fold_bn(w, None, bn)
    np.testing.assert_allclose(folded, w / np.sqrt(1 + bn.eps))
    with pytest.raises(HarError, match="running statistics"):
        fold_bn(w, None, nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(HarError, match="output channels"):
        fold_bn(w, None, nn.BatchNorm1d(4))
