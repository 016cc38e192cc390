import json

import numpy as np
import pytest
import torch
from torch import nn

from har.measure import TorchArtifact
from har.model import CNNConfig, CompactCNN1d
from har.windows import Normalizer
from system_opts import flatten
from system_opts.kernels import run_program


def _torch_logits(model, norm, x):
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(norm(x))).numpy()


def test_flat_fp32_matches_torch_eager_on_every_test_window(trained):
    x = trained.x_test
    ref = _torch_logits(trained.model, trained.normalizer, x)
    prog = flatten.apply(trained.model, trained.normalizer, x.shape[1:])
    out = run_program(prog, x)
    assert out.shape == ref.shape == (len(x), 5)
    assert np.array_equal(out.argmax(1), ref.argmax(1))
    assert np.abs(out - ref).max() <= 1e-4
    assert [op.kind for op in prog.ops] == ["conv1d", "maxpool1d", "conv1d", "maxpool1d", "conv1d",
                                           "global_avg_pool", "linear"]
    assert all(op.attrs["relu"] for op in prog.ops if op.kind == "conv1d")
    assert prog.macs_per_window() == TorchArtifact(trained.model, trained.normalizer, example=x[0]).macs_per_window()


def test_folded_normaliser_pads_with_the_mean_and_is_exact_at_the_borders(trained):
    # strongly offset channels make a wrong border treatment visible in the first and last outputs
    x = trained.x_test[:64]
    kept = flatten.apply(trained.model, trained.normalizer, x.shape[1:], flatten.FlattenConfig(fold_normalizer=False))
    folded = flatten.apply(trained.model, trained.normalizer, x.shape[1:])
    assert kept.ops[0].kind == "normalize" and folded.ops[0].kind == "conv1d"
    np.testing.assert_allclose(folded.weights["op0.conv1d.pad_value"], trained.normalizer.mean)
    ref = _torch_logits(trained.model, trained.normalizer, x)
    assert np.abs(run_program(kept, x) - ref).max() <= 1e-4
    assert np.abs(run_program(folded, x) - ref).max() <= 1e-4
    # padding the raw input with zeros instead (the naive fold) is measurably wrong
    naive = dict(folded.weights)
    naive["op0.conv1d.pad_value"] = np.zeros_like(naive["op0.conv1d.pad_value"])
    wrong = run_program(flatten.FlatProgram(folded.ops, folded.tensors, naive), x)
    assert np.abs(wrong - ref).max() > 1e-3


def test_unsupported_modules_are_named():
    norm = Normalizer(np.zeros(3, np.float32), np.ones(3, np.float32))
    model = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    with pytest.raises(flatten.UnsupportedModuleError, match=r"unsupported op GELU at module path '1'"):
        flatten.apply(model, norm, (3, 16))
    with pytest.raises(flatten.UnsupportedModuleError, match="stride"):
        flatten.apply(nn.Sequential(nn.Conv1d(3, 4, 3, stride=2)), norm, (3, 16))
    with pytest.raises(flatten.UnsupportedModuleError, match="must directly follow a conv"):
        flatten.apply(nn.Sequential(nn.Conv1d(3, 4, 3), nn.MaxPool1d(2), nn.BatchNorm1d(4)), norm, (3, 16))
    with pytest.raises(flatten.UnsupportedModuleError, match="Flatten"):
        flatten.apply(nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(56, 2)), norm, (3, 16))
    with pytest.raises(flatten.UnsupportedModuleError, match="expects 5 input channels, gets 3"):
        flatten.apply(nn.Sequential(nn.Conv1d(5, 4, 3)), norm, (3, 16))


class _Residual1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x


def test_any_module_flattens_through_the_graph_importer_and_a_residual_is_named():
    """Not only nn.Sequential: the importer is torch.fx; an add is outside the chain executor's set."""
    norm = Normalizer(np.zeros(3, np.float32), np.ones(3, np.float32))

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv1d(3, 4, 3, padding=1), nn.AdaptiveAvgPool1d(1), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    prog = flatten.apply(Chain().eval(), norm, (3, 16))
    assert [op.kind for op in prog.ops] == ["conv1d", "global_avg_pool", "linear"] and prog.ops[0].attrs["relu"]
    with pytest.raises(flatten.UnsupportedModuleError, match=r"module <root>: it reads \(1, 0\).*graph path"):
        flatten.apply(_Residual1d().eval(), norm, (3, 16))


def test_other_supported_ops_match_torch():
    torch.manual_seed(0)
    norm = Normalizer(np.array([1.0, -2.0, 0.5], np.float32), np.array([2.0, 0.5, 1.0], np.float32))
    model = nn.Sequential(nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU()), nn.AvgPool1d(3),
                          nn.Conv1d(8, 8, 1, bias=True), nn.BatchNorm1d(8), nn.MaxPool1d(2), nn.ReLU(),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 6), nn.ReLU(),
                          nn.Linear(6, 3)).eval()
    x = np.random.default_rng(0).normal(2, 3, size=(16, 3, 20)).astype(np.float32)
    prog = flatten.apply(model, norm, (3, 20))
    assert [op.kind for op in prog.ops] == ["conv1d", "avgpool1d", "conv1d", "maxpool1d", "relu",
                                           "global_avg_pool", "linear", "linear"]
    np.testing.assert_allclose(run_program(prog, x), _torch_logits(model, norm, x), atol=1e-5)


def test_program_description_round_trips_through_json(trained):
    prog = flatten.apply(trained.model, trained.normalizer, trained.x_test.shape[1:])
    again = flatten.FlatProgram.from_dict(json.loads(json.dumps(prog.to_dict())), prog.weights)
    assert again.ops == prog.ops and again.tensors == prog.tensors
    x = trained.x_test[:32]
    assert np.array_equal(run_program(again, x), run_program(prog, x))


def test_default_cnn_flattens_with_packed_shapes():
    model = CompactCNN1d(CNNConfig()).eval()
    norm = Normalizer(np.zeros(6, np.float32), np.ones(6, np.float32))
    prog = flatten.apply(model, norm, (6, 80))
    assert prog.weights["op0.conv1d.weight"].shape == (5 * 6 + 1, 32)
    assert prog.weights["op6.linear.weight"].shape == (5, 64 + 1)  # C_out % 16 in 1..8: stored transposed
    assert [op.attrs["weight_layout"] for op in prog.ops if "weight_layout" in op.attrs] == ["kn"] * 3 + ["nk"]
    kn = flatten.apply(model, norm, (6, 80), flatten.FlattenConfig(weight_layout="kn"))
    x = np.random.default_rng(0).normal(size=(4, 6, 80)).astype(np.float32)
    np.testing.assert_allclose(run_program(kn, x), run_program(prog, x), atol=1e-5)
    assert [t.shape for t in prog.tensors] == [(80, 6), (80, 32), (40, 32), (40, 48), (20, 48), (20, 64), (64,), (5,)]
