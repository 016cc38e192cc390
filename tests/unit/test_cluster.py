"""Weight clustering of the int8 network on a tiny CNN over synthetic windows (a few seconds in all)."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from har.errors import BadOptionError
from har.model import CNNConfig, CompactCNN1d
from har.splits import Fold
from har.training import TrainConfig, fit
from har.windows import Normalizer, WindowConfig, Windows
from model_opts import cluster
from model_opts.quant import artifact, intref, ptq
from model_opts.quant.intref import Conv1dInt8, LinearInt8

CFG = cluster.ClusterConfig(epochs=1, patience=1, agreement_windows=400)


def _gemms(program):
    return [op for op in program.ops if isinstance(op, (Conv1dInt8, LinearInt8))]


@pytest.fixture(scope="module")
def tiny():
    """Nine synthetic users, four classes (a class = a frequency and a per-channel offset), a CNN (8, 8)
    trained two epochs on users 0-5; users 6-7 validate, user 8 is the test user."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, c, t, n_cls = 720, 6, 32, 4
    y = rng.integers(0, n_cls, n)
    user = np.repeat(np.arange(9), n // 9)
    phase = rng.uniform(0, 2 * np.pi, (n, c, 1))
    x = (np.sin(2 * np.pi * (y[:, None, None] + 1) * np.arange(t) / t + phase) + 0.5 * y[:, None, None]
         * np.linspace(-1, 1, c)[None, :, None] + rng.normal(0, 0.3, (n, c, t))).astype(np.float32)
    win = Windows(x, y.astype(np.int64), user, np.arange(n), tuple("abcd"), WindowConfig(length=t, step=t))
    fold = Fold(0, np.flatnonzero(user < 6), np.flatnonzero((user >= 6) & (user < 8)), np.flatnonzero(user == 8),
                (8,), (6, 7))
    norm = Normalizer.fit(x[fold.train_idx])
    model = CompactCNN1d(CNNConfig(in_channels=c, n_classes=n_cls, widths=(8, 8)), seed=0)
    model, _ = fit(model, norm(x[fold.train_idx]), y[fold.train_idx], norm(x[fold.val_idx]), y[fold.val_idx],
                   TrainConfig(epochs=2, seed=0), progress=False)
    yield model, norm, win, fold
    torch.set_num_threads(torch_threads)


@pytest.mark.parametrize("k", [4, 8, 16])
def test_every_layer_has_at_most_k_values_zero_included(tiny, k, tmp_path):
    model, norm, win, fold = tiny
    art = cluster.apply(model, norm, win, fold, replace(CFG, k=k))
    gemms = _gemms(art.program)
    layers = art.info["layers"]
    assert len(layers) == len(gemms) == 3
    for op, info in zip(gemms, layers):
        values = np.unique(op.weight)
        assert 0 in info["codebook"] and len(info["codebook"]) <= k
        assert set(values.tolist()) <= set(info["codebook"]) and info["distinct"] == len(values)
        assert info["codebook"] == sorted(info["codebook"]) and np.abs(values).max() <= 127
        assert (op.weight == 0).any()  # the pinned centroid has members: padding zeros cost no entry
    # frozen per-channel scales: exactly the PTQ ones; the activation quantization is PTQ's too
    plain = ptq.apply(model, norm, win, fold, CFG.quant).program
    for op, ref in zip(gemms, _gemms(plain)):
        assert np.array_equal(op.weight_scale, ref.weight_scale)
        assert (op.input_zero_point, op.output_zero_point) == (ref.input_zero_point, ref.output_zero_point)
    # the integer program runs, and agrees with the fine-tuned simulation on training windows
    assert art.program.validate() is art.program
    logits = intref.run(art.program, win.x[fold.val_idx])
    assert logits.shape == (len(fold.val_idx), 4) and logits.dtype == np.int8
    assert art.info["train_class_agreement"] >= 0.98
    # info is JSON and survives the artifact's save/load with the weights
    json.dumps(art.info)
    back = artifact.load(art.save(tmp_path).parent)
    assert back.info == json.loads(json.dumps(art.info))
    assert all(np.array_equal(a.weight, b.weight) for a, b in zip(gemms, _gemms(back.program)))


def test_finetuning_moves_centroids_not_indices(tiny):
    model, norm, win, fold = tiny
    start, _ = cluster.cluster_sim(model, norm, win, fold, replace(CFG, epochs=0))
    tuned, log = cluster.cluster_sim(model, norm, win, fold, replace(CFG, epochs=2, keep_start_if_better=False))
    assert len(log["val_macro_f1"]) >= 2 and not log["kept_start"]
    n_layers = len(start.free)
    assert all(torch.equal(start.index(p), tuned.index(p)) for p in range(n_layers))
    assert all(torch.equal(start.scale(p), tuned.scale(p)) for p in range(n_layers))
    assert any(not torch.equal(start.free[p], tuned.free[p]) for p in range(n_layers))
    assert any(not torch.equal(start.sim.biases[p], tuned.sim.biases[p]) for p in range(n_layers))
    # the pinned centroid stays exactly 0 and every weight is its centroid's rounded value
    for p in range(n_layers):
        c = tuned.centroids(p).detach()
        assert c[0] == 0 and torch.equal(c, torch.round(c))
        assert torch.equal(tuned.int_weight(p).detach(), c[tuned.index(p)])


def test_keep_start_restores_the_untuned_clustering_when_tuning_does_not_help(tiny):
    model, norm, win, fold = tiny
    start, _ = cluster.cluster_sim(model, norm, win, fold, replace(CFG, epochs=0))
    tuned, log = cluster.cluster_sim(model, norm, win, fold, replace(CFG, epochs=2, keep_start_if_better=True))
    scores = log["val_macro_f1"]
    assert log["kept_start"] == (scores[0] >= max(scores[1:]))
    same = all(torch.equal(start.free[p], tuned.free[p]) for p in range(len(start.free)))
    assert same == log["kept_start"]


def test_same_seed_same_program(tiny):
    model, norm, win, fold = tiny
    a = cluster.apply(model, norm, win, fold, replace(CFG, k=8))
    b = cluster.apply(model, norm, win, fold, replace(CFG, k=8))
    assert a.info == b.info
    for x, y in zip(a.program.ops, b.program.ops):
        for field in ("weight", "bias", "multiplier", "shift"):
            if hasattr(x, field):
                assert np.array_equal(getattr(x, field), getattr(y, field))


def test_test_users_are_never_read(tiny):
    model, norm, win, fold = tiny
    x = win.x.copy()
    y = win.y.copy()
    x[fold.test_idx] = np.nan
    y[fold.test_idx] = 0
    poisoned = replace(win, x=x, y=y)
    a = cluster.apply(model, norm, win, fold, CFG)
    b = cluster.apply(model, norm, poisoned, fold, CFG)
    assert a.info == b.info
    assert all(np.array_equal(p.weight, q.weight) and np.array_equal(p.bias, q.bias)
               for p, q in zip(_gemms(a.program), _gemms(b.program)))


@pytest.mark.parametrize("k", [0, 1, 17, 2.5, True])
def test_bad_k_is_refused(k):
    with pytest.raises(BadOptionError):
        cluster.ClusterConfig(k=k)


def test_cluster_values_pins_zero_and_assigns_to_the_nearest_centroid():
    rng = np.random.default_rng(1)
    values = rng.laplace(0, 20, 500).clip(-127, 127) + 3.0  # off-centre: no centroid lands on 0 by itself
    for k in (2, 5, 16):
        centroids, index = cluster.cluster_values(values, k, seed=0)
        assert centroids[0] == 0 and len(centroids) <= k and np.all(np.diff(centroids[1:]) > 0)
        dist = np.abs(values[:, None] - centroids[None, :])
        assert np.array_equal(dist[np.arange(len(values)), index], dist.min(axis=1))
    few = np.array([-3.0, 5.0, 5.0, 7.0])  # fewer distinct values than k: kept exactly, 0 added
    centroids, index = cluster.cluster_values(few, 8)
    assert centroids.tolist() == [0.0, -3.0, 5.0, 7.0] and np.array_equal(centroids[index], few)


def test_a_depthwise_separable_network_is_refused_with_a_reason(tiny):
    _, norm, win, fold = tiny
    model = CompactCNN1d(CNNConfig(in_channels=6, n_classes=4, widths=(8, 8), separable=True), seed=0).eval()
    with pytest.raises(BadOptionError, match="depthwise-separable"):
        cluster.apply(model, norm, win, fold, cluster.ClusterConfig(k=4, epochs=1))
