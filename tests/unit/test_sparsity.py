"""Magnitude pruning of the int8 network on a tiny CNN and 360 synthetic windows (1-epoch stages): the
program reaches the target per layer, the schedule grows to it, masked weights stay 0 through AdamW steps,
the same seed gives the same int8 weights, and test windows are never read (NaN there changes nothing)."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from har.errors import BadOptionError
from har.model import CNNConfig, CompactCNN1d
from har.splits import Fold
from har.windows import Normalizer, WindowConfig, Windows
from har.training import TrainConfig
from model_opts import distill, sparsity
from model_opts.quant import intref, ptq, qat
from model_opts.quant.artifact import Int8Artifact, load, save
from model_opts.quant.config import QATConfig, QuantConfig
from model_opts.quant.fakequant import to_program

CFG = sparsity.SparsityConfig(target=0.9, n_stages=2, epochs_per_stage=1, final_epochs=1, patience=1,
                              lr=1e-3, quant=QuantConfig(calibration="percentile", calib_windows=128))


def synthetic(test_value: float) -> tuple[Windows, Fold]:
    """3 classes of noisy sines (frequency = class), 6 users x 60 windows; user 5's windows are the test
    users' and hold `test_value` (NaN: any read of them would poison calibration or training)."""
    rng = np.random.default_rng(0)
    cfg = WindowConfig(length=32, step=16, channels="robust")
    n, c, t = 360, cfg.n_channels, cfg.length
    y = np.arange(n) % 3
    user = np.repeat(np.arange(6), 60)
    phase = rng.uniform(0, 2 * np.pi, (n, c, 1))
    x = np.sin(2 * np.pi * (y[:, None, None] + 1) * np.arange(t) / t + phase) + 0.3 * rng.normal(size=(n, c, t))
    x = x.astype(np.float32)
    x[user == 5] = test_value
    fold = Fold(0, np.flatnonzero(user < 4), np.flatnonzero(user == 4), np.flatnonzero(user == 5), (5,), (4,))
    return Windows(x, y, user, np.arange(n), ("a", "b", "c"), cfg), fold


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    windows, fold = synthetic(np.nan)
    norm = Normalizer.fit(windows.x[fold.train_idx])
    model = CompactCNN1d(CNNConfig(in_channels=windows.config.n_channels, n_classes=3, widths=(8, 12),
                                   kernel_size=3), seed=0).eval()
    return model, norm, windows, fold


@pytest.fixture(scope="module")
def pruned(setup):
    return sparsity.apply(*setup, CFG)


def int8_weights(art: Int8Artifact) -> list[np.ndarray]:
    return [op.weight for op in art.program.ops if isinstance(op, (intref.Conv1dInt8, intref.LinearInt8))]


def test_schedule_grows_to_the_target():
    for n in (1, 2, 4, 7):
        s = sparsity.schedule(replace(CFG, n_stages=n))
        assert len(s) == n and s[-1] == pytest.approx(CFG.target)
        assert all(0 < a <= b for a, b in zip(s, s[1:] + [CFG.target]))
        steps = np.diff([0.0] + s)
        assert np.all(np.diff(steps) <= 1e-12)  # cubic: the increments shrink


def test_program_reaches_the_target_in_every_layer(pruned):
    weights = int8_weights(pruned)
    assert len(weights) == 3  # two convs and the classifier Linear
    for w, rec in zip(weights, pruned.info["layers"]):
        zeros = w.size - np.count_nonzero(w)
        assert zeros >= math.ceil(CFG.target * w.size)
        assert rec["zeros"] == zeros and rec["csr_bytes"] < rec["dense_bytes"]
    assert [s["sparsity"] for s in pruned.info["stages"][:-1]] == sparsity.schedule(CFG)
    windows, fold = synthetic(0.0)
    assert np.all(np.isfinite(pruned.predict(windows.x[fold.val_idx])))


def test_info_survives_save_and_load(pruned, tmp_path):
    save(tmp_path, pruned)
    back = load(tmp_path)
    assert back.info["layers"] == pruned.info["layers"]
    assert all(np.array_equal(a, b) for a, b in zip(int8_weights(back), int8_weights(pruned)))


def test_masks_only_grow_and_hit_the_stage_sparsity(setup):
    seen = []
    sparsity.prune_sim(*setup, CFG, on_stage=lambda k, sim, masks: seen.append(
        ([m.clone() for m in masks], [w.detach().clone() for w in sim.weights])))
    targets = sparsity.schedule(CFG) + [CFG.target]
    for (masks, weights), s in zip(seen, targets):
        for m, w in zip(masks, weights):
            assert int((m == 0).sum()) == math.ceil(s * m.numel())
            assert torch.all(w[m == 0] == 0)
    for (before, _), (after, _) in zip(seen, seen[1:]):
        assert all(torch.all(a[b == 0] == 0) for a, b in zip(after, before))  # pruned stays pruned


def test_masked_weights_stay_zero_through_adamw_steps(setup):
    model, norm, windows, fold = setup
    sim = ptq.simulate(model, norm, windows.x[fold.train_idx], CFG.quant)
    masker = sparsity.Masker(sim)
    masker.update(sparsity.masks(list(sim.weights), 0.8, "layer"))
    opt = torch.optim.AdamW(sim.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.from_numpy(norm(windows.x[fold.train_idx[:64]]))
    y = torch.from_numpy(windows.y[fold.train_idx[:64]])
    sim.train()
    start = [w.detach().clone() for w in sim.weights]
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(sim(x), y).backward()
        opt.step()
        for w, m in zip(sim.weights, masker.masks):  # raw parameters, no forward re-applied the masks
            assert torch.all(w[m == 0] == 0)
    assert any(not torch.equal(a, b) for a, b in zip(start, sim.weights))  # the survivors trained
    masker.detach()


def test_same_seed_same_int8_weights_and_test_windows_never_read(setup, pruned):
    model, norm, windows, fold = setup
    again = sparsity.apply(model, norm, windows, fold, CFG)
    assert all(np.array_equal(a, b) for a, b in zip(int8_weights(again), int8_weights(pruned)))
    finite, fold2 = synthetic(123.0)  # same windows but the test users' hold finite values
    other = sparsity.apply(model, norm, finite, fold2, CFG)
    assert all(np.array_equal(a, b) for a, b in zip(int8_weights(other), int8_weights(pruned)))
    assert all(np.all(np.isfinite(op.weight_scale)) for op in pruned.program.ops if hasattr(op, "weight_scale"))


def test_global_scope_reaches_the_target_overall(setup):
    art = sparsity.apply(*setup, replace(CFG, scope="global", final_epochs=0))
    total = sum(w.size for w in int8_weights(art))
    zeros = sum(w.size - np.count_nonzero(w) for w in int8_weights(art))
    assert zeros >= math.ceil(CFG.target * total)
    assert art.info["sparsity"] == zeros / total


def test_a_dense_program_is_refused_and_bad_options_raise(setup):
    model, norm, windows, fold = setup
    dense = to_program(ptq.simulate(model, norm, windows.x[fold.train_idx], CFG.quant))
    with pytest.raises(sparsity.SparsityNotReached):
        sparsity.check_target(sparsity.layer_sparsity(dense), CFG)
    for bad in (dict(scope="row"), dict(target=1.0), dict(n_stages=0), dict(lr=0.0)):
        with pytest.raises(BadOptionError):
            replace(CFG, **bad)


def test_erk_allocation_reaches_the_target_exactly_and_favours_small_matrices():
    # the phone baseline's matrices: conv 32x6x5, 48x32x5, 64x48x5, linear 5x64
    shapes = [(32, 6, 5), (48, 32, 5), (64, 48, 5), (5, 64)]
    sizes = [math.prod(s) for s in shapes]
    for s in (0.1, 0.5, 0.9, 0.95, 0.999):
        zeros = sparsity.erk_zeros(shapes, s)
        assert sum(zeros) == sparsity.zeros_needed(s, sum(sizes))
        assert all(0 <= z <= n for z, n in zip(zeros, sizes))
        density = [1 - z / n for z, n in zip(zeros, sizes)]
        # density proportional to sum(shape) / prod(shape): the first conv and the classifier keep the most
        assert density[3] >= density[0] >= density[1] >= density[2]
        if s >= 0.9:
            assert density[0] > density[1] > density[2]
    # a target whose product lands a hair above an integer: the allocation and the check agree
    layers = [{"op": 0, "weights": 100, "zeros": sum(sparsity.erk_zeros([(10, 10)], 0.55))}]
    sparsity.check_target(layers, replace(CFG, target=0.55, scope="erk"))
    # the classifier's score would give it a density > 1 at 90 %: it stays dense, the rest pays for it
    assert sparsity.erk_zeros(shapes, 0.9)[3] == 0
    growing = [sparsity.erk_zeros(shapes, s) for s in sparsity.schedule(replace(CFG, n_stages=6))]
    assert all(a <= b for x, y in zip(growing, growing[1:]) for a, b in zip(x, y))


def test_erk_scope_reaches_the_target_overall_with_masks_that_only_grow(setup):
    seen = []
    model, norm, windows, fold = setup
    cfg = replace(CFG, scope="erk", n_stages=3, final_epochs=0)
    sim, final, _ = sparsity.prune_sim(model, norm, windows, fold, cfg,
                                       on_stage=lambda k, sim, m: seen.append([x.clone() for x in m]))
    for before, after in zip(seen, seen[1:]):
        assert all(torch.all(a <= b) for a, b in zip(after, before))  # a zero (0 in the mask) stays zero
    art = sparsity.apply(model, norm, windows, fold, cfg)
    total = sum(w.size for w in int8_weights(art))
    zeros = sum(w.size - np.count_nonzero(w) for w in int8_weights(art))
    assert zeros >= math.ceil(cfg.target * total)
    per_layer = [d["sparsity"] for d in art.info["layers"]]
    assert per_layer[0] < per_layer[1]  # the first conv (fewest weights per filter) keeps more of them


def test_distilled_finetuning_reaches_the_target_leaves_the_teacher_alone_and_never_reads_test_windows(
        setup, pruned, monkeypatch):
    model, norm, windows, fold = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teachers, calls = [], []
    real = distill.with_teacher

    def spy(student, teacher, **kw):  # record the teacher fine-tuning really uses, and its mode at every call
        teachers.append((teacher, {k: v.clone() for k, v in teacher.state_dict().items()}))
        teacher.register_forward_pre_hook(lambda m, args: calls.append((m.training, torch.is_grad_enabled())))
        return real(student, teacher, **kw)
    monkeypatch.setattr(distill, "with_teacher", spy)
    cfg = replace(CFG, kd_alpha=0.7)
    art = sparsity.apply(model, norm, windows, fold, cfg)
    sparsity.check_target(art.info["layers"], cfg)
    assert art.info["config"]["kd_alpha"] == 0.7
    # one teacher per fine-tuning round, each a copy of the dense network: it answered every training batch
    # in eval mode without gradients, its weights and BatchNorm statistics unchanged, the caller's untouched
    assert len(teachers) == cfg.n_stages + (cfg.final_epochs > 0) and calls
    assert all(not training and not grad for training, grad in calls)
    for teacher, start in teachers:
        assert teacher is not model and all(torch.equal(start[k], v) for k, v in teacher.state_dict().items())
        assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
    # the soft term changes what fine-tuning learns ...
    assert any(not np.array_equal(a, b) for a, b in zip(int8_weights(art), int8_weights(pruned)))
    # ... and it is deterministic and blind to the test users' windows (NaN there vs finite)
    finite, fold2 = synthetic(123.0)
    other = sparsity.apply(model, norm, finite, fold2, cfg)
    assert all(np.array_equal(a, b) for a, b in zip(int8_weights(other), int8_weights(art)))


def test_distillation_at_alpha_zero_is_the_label_only_finetuning(setup):
    # with_teacher's loss at alpha 0 is the cross-entropy `fit` uses by default: same int8 weights
    model, norm, windows, fold = setup
    cfg = replace(CFG, n_stages=1, final_epochs=0)
    plain = sparsity.prune_sim(model, norm, windows, fold, cfg)[0]
    sim = ptq.simulate(model, norm, windows.x[fold.train_idx], cfg.quant)
    masker = sparsity.Masker(sim)
    masker.update(sparsity.masks(list(sim.weights), cfg.target, cfg.scope))
    distil = lambda s: distill.with_teacher(s, distill.frozen_copy(model), 4.0, 0.0, TrainConfig.label_smoothing)
    qat.finetune(sim, norm, windows, fold, QATConfig(quant=cfg.quant, epochs=1, patience=1, lr=cfg.lr,
                                                     batch_size=cfg.batch_size, seed=cfg.seed), distil=distil)
    masker.detach()
    assert all(torch.equal(a, b) for a, b in zip(plain.weights, sim.eval().weights))


def test_bad_distillation_options_raise():
    for bad in (dict(kd_alpha=-0.1), dict(kd_alpha=1.5), dict(kd_temperature=0.0), dict(kd_temperature=math.inf)):
        with pytest.raises(BadOptionError):
            replace(CFG, **bad)
