"""Contrastive encoding: NT-Xent by hand, augmentations, label subsets, pretrain -> head -> artifact."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from har import model_io
from har.errors import BadDataError, BadOptionError
from har.measure import InferenceArtifact, TorchArtifact
from har.model import CNNConfig, CompactCNN1d
from har.windows import Normalizer, to_channels
from model_opts.contrastive import (AugmentConfig, HeadConfig, PretrainConfig, apply, augment_raw, label_subset,
                                    make_view, nt_xent, pretrain)
from model_opts.contrastive.augment import jitter, permute, random_rotations, rotate, scale, time_warp


def test_nt_xent_equals_hand_computed_value():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[3.0, 3.0], [-1.0, 0.0]])
    tau = 0.5
    # unit vectors: a=(1,0), b=(0,1), c=(1,1)/sqrt2, d=(-1,0); rows in order a, b, c, d; partners a<->c, b<->d
    s = 1 / math.sqrt(2)
    cos = {("a", "b"): 0.0, ("a", "c"): s, ("a", "d"): -1.0, ("b", "c"): s, ("b", "d"): 0.0, ("c", "d"): -s}
    sim = lambda p, q: cos.get((p, q), cos.get((q, p))) / tau  # noqa: E731
    names, partner = "abcd", {"a": "c", "b": "d", "c": "a", "d": "b"}
    losses = []
    for i in names:
        denom = sum(math.exp(sim(i, k)) for k in names if k != i)
        losses.append(-math.log(math.exp(sim(i, partner[i])) / denom))
    expected = sum(losses) / 4
    assert nt_xent(z1, z2, tau).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_rejects_mismatched_batches():
    with pytest.raises(BadDataError):
        nt_xent(torch.zeros(4, 3), torch.zeros(3, 3))


@pytest.fixture(scope="module")
def raw_windows(recording, locomotion):
    gather = locomotion.start[:64, None] + np.arange(locomotion.config.length)[None, :]
    return recording.xyz[gather].astype(np.float32)  # (64, T, 3) device axes


@pytest.mark.parametrize("fn", [
    lambda x, r: jitter(x, 0.3, r), lambda x, r: scale(x, 0.1, r), lambda x, r: rotate(x, 30.0, r),
    lambda x, r: time_warp(x, 0.2, 4, r), lambda x, r: permute(x, 4, r),
    lambda x, r: augment_raw(x, AugmentConfig(permute_segments=4), r)])
def test_augmentations_preserve_shape_and_dtype(raw_windows, fn):
    out = fn(raw_windows, np.random.default_rng(0))
    assert out.shape == raw_windows.shape and out.dtype == np.float32
    assert not np.array_equal(out, raw_windows)
    assert np.array_equal(out, fn(raw_windows, np.random.default_rng(0)))  # seeded


def test_make_view_gives_normalised_channel_windows(raw_windows, locomotion):
    raw_nct = raw_windows.transpose(0, 2, 1)
    norm = Normalizer.fit(locomotion.x[:500])
    v = make_view(raw_nct, AugmentConfig(), np.random.default_rng(1), "robust_tilt", norm)
    assert v.shape == (64, 6, raw_windows.shape[1]) and v.dtype == np.float32
    plain = norm(to_channels(raw_windows, "robust_tilt"))
    np.testing.assert_allclose(plain, norm(locomotion.x[:64]), rtol=1e-5, atol=1e-5)


def test_rotation_is_proper_bounded_and_moves_only_tilt(raw_windows):
    rot = random_rotations(100, 30.0, np.random.default_rng(2))
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    angles = np.degrees(np.arccos(np.clip((np.trace(rot, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angles.max() <= 30.0 + 1e-9
    before = to_channels(raw_windows, "robust_tilt")
    after = to_channels(rotate(raw_windows, 30.0, np.random.default_rng(3)), "robust_tilt")
    # vertical, horizontal, magnitude are rotation invariant (gravity rotates with the signal) ...
    np.testing.assert_allclose(after[:, :3], before[:, :3], rtol=1e-3, atol=1e-3)
    assert np.abs(after[:, 3:] - before[:, 3:]).max() > 0.05  # ... the tilt channels are not


def test_label_subset_is_stratified_seeded_and_within_rows():
    y = np.repeat(np.arange(5), [400, 300, 200, 100, 50])
    idx = label_subset(y, 0.05, seed=3)
    assert len(idx) == round(0.05 * len(y)) and np.all(np.diff(idx) > 0)
    np.testing.assert_allclose(np.bincount(y[idx], minlength=5) / len(idx), np.bincount(y) / len(y), atol=0.02)
    assert np.array_equal(idx, label_subset(y, 0.05, seed=3))
    assert not np.array_equal(idx, label_subset(y, 0.05, seed=4))
    assert np.array_equal(label_subset(y, 1.0, seed=0), np.arange(len(y)))
    with pytest.raises(BadOptionError):
        label_subset(y, 0.0, seed=0)
    with pytest.raises(BadOptionError):
        HeadConfig(mode="svm")


@pytest.fixture(scope="module")
def tiny_pretrained(recording, locomotion, fold0):
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(fold0.train_idx, 512, replace=False))
    gather = locomotion.start[rows, None] + np.arange(locomotion.config.length)[None, :]
    raw = recording.xyz[gather].transpose(0, 2, 1).astype(np.float32)
    norm = Normalizer.fit(locomotion.x[fold0.train_idx])
    cfg = PretrainConfig(widths=(8, 12), epochs=2, batch_size=128)
    model, hist = pretrain(cfg, raw, norm, n_classes=5)
    return model, hist, norm, cfg, raw


def test_pretrain_learns_and_is_deterministic(tiny_pretrained):
    model, hist, norm, cfg, raw = tiny_pretrained
    assert len(hist) == 2 and all(np.isfinite(h["ntxent"]) for h in hist)
    assert hist[-1]["ntxent"] < math.log(2 * 128 - 1)  # below chance level of the 255-way task
    again, _ = pretrain(cfg, raw, norm, n_classes=5)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("mode", ["linear", "finetune"])
def test_head_artifact_round_trips(tiny_pretrained, locomotion, fold0, tmp_path, mode):
    model, _, norm, _, _ = tiny_pretrained
    w, f = locomotion, fold0
    sub = f.train_idx[label_subset(w.y[f.train_idx], 0.05, seed=0)]
    art = apply(model, HeadConfig(mode=mode, epochs=2, patience=2), norm, w.x[sub], w.y[sub],
                w.x[f.val_idx[:300]], w.y[f.val_idx[:300]])
    assert isinstance(art, InferenceArtifact) and isinstance(art, TorchArtifact)
    if mode == "linear":  # the frozen encoder is exactly the pretrained one
        for k, v in model.state_dict().items():
            if not k.startswith(str(len(model) - 1)):
                assert torch.equal(art.model.state_dict()[k], v), k
    x = w.x[f.test_idx[:200]]
    model_io.save(tmp_path, art.model, art.normalizer, w.config, w.classes)
    saved = model_io.load(tmp_path)
    again = TorchArtifact(saved.model, saved.normalizer, example=x[0])
    assert np.array_equal(art.predict(x), again.predict(x))


def test_distillation_head_runs_with_teacher_logits(trained, locomotion, fold0):
    w, f = locomotion, fold0
    sub = f.train_idx[:256]
    teacher = TorchArtifact(trained.model, trained.normalizer).predict(w.x[sub])
    torch.manual_seed(0)
    student = CompactCNN1d(CNNConfig(widths=(8, 8)))
    art = apply(student, HeadConfig(mode="finetune", epochs=1, patience=1, distill_alpha=0.5), trained.normalizer,
                w.x[sub], w.y[sub], w.x[f.val_idx[:200]], w.y[f.val_idx[:200]], teacher_logits=teacher)
    assert np.isfinite(art.predict(w.x[f.test_idx[:50]])).all()
    with pytest.raises(BadDataError):
        apply(student, HeadConfig(mode="finetune", epochs=1, distill_alpha=0.5), trained.normalizer,
              w.x[sub], w.y[sub], w.x[f.val_idx[:200]], w.y[f.val_idx[:200]])
