"""Structured pruning on the shared `trained` fixture: physical channel removal, shapes, identity at 0."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from har import model_io
from har.errors import BadOptionError
from har.measure import MeasureConfig, TorchArtifact, measure
from har.model import CompactCNN1d, param_count, predict_logits
from model_opts import prune

NO_FT = prune.PruneConfig(ratio=0.35, steps=2, finetune_epochs=0)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # fine-tuning is tiny; extra threads only contend on a shared machine
    yield
    torch.set_num_threads(n)


def test_ratio_zero_gives_identical_outputs(trained):
    pruned, log = prune.prune_model(trained.model, trained.normalizer, trained.windows, trained.fold,
                                    replace(NO_FT, ratio=0.0))
    x = trained.normalizer(trained.x_test[:300])
    assert log == [] and pruned.config.widths == trained.model.config.widths
    assert torch.equal(predict_logits(pruned, x), predict_logits(trained.model, x))


@pytest.mark.parametrize("importance", ["l1", "l2", "random"])
def test_pruned_shapes_are_what_the_config_asked(trained, importance):
    cfg = replace(NO_FT, importance=importance)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    pruned, log = prune.prune_model(trained.model, trained.normalizer, trained.windows, trained.fold, cfg)
    want = prune.target_widths(trained.model.config.widths, 0.35)
    assert want == (10, 15, 20)
    assert isinstance(pruned, CompactCNN1d) and pruned.config.widths == want
    assert [e["widths"] for e in log][-1] == list(want) and len(log) == 2
    convs = [m for m in pruned if isinstance(m, torch.nn.Conv1d)]
    bns = [m for m in pruned if isinstance(m, torch.nn.BatchNorm1d)]
    assert [c.out_channels for c in convs] == [b.num_features for b in bns] == list(want)
    assert [c.in_channels for c in convs[1:]] == list(want[:-1])
    assert pruned[-1].in_features == want[-1] and pruned[-1].out_features == 5  # classes never pruned
    assert param_count(pruned) < 0.5 * param_count(trained.model)
    assert all(torch.equal(v, trained.model.state_dict()[k]) for k, v in before.items())  # input untouched
    assert np.isfinite(predict_logits(pruned, trained.normalizer(trained.x_test[:8])).numpy()).all()


def test_random_importance_is_seeded(trained):
    cfg = replace(NO_FT, importance="random")
    a, _ = prune.prune_model(trained.model, trained.normalizer, trained.windows, trained.fold, cfg)
    b, _ = prune.prune_model(trained.model, trained.normalizer, trained.windows, trained.fold, cfg)
    c, _ = prune.prune_model(trained.model, trained.normalizer, trained.windows, trained.fold, replace(cfg, seed=1))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not all(torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())


def test_l1_keeps_the_strongest_first_layer_filters_when_they_dominate(trained):
    model = CompactCNN1d(trained.model.config)
    model.load_state_dict(trained.model.state_dict())
    with torch.no_grad():  # make 10 first-layer channels (and their BN, next-layer slices) clearly dominant
        strong = torch.arange(0, 16, 16 // 10)[:10]
        scale = torch.full((16,), 1e-3)
        scale[strong] = 10.0
        model[0].weight.mul_(scale[:, None, None])
        model[4].weight.mul_(scale[None, :, None])
    pruned, _ = prune.prune_model(model, trained.normalizer, trained.windows, trained.fold, NO_FT)
    kept = pruned[0].weight.detach()
    original = model[0].weight.detach()[strong]
    assert torch.allclose(kept.sort(dim=0).values, original.sort(dim=0).values)


def test_pruned_model_saves_loads_and_measures_smaller(trained, tmp_path, one_thread):
    art = prune.apply(trained.model, trained.normalizer, trained.windows, trained.fold,
                      replace(NO_FT, steps=1, finetune_epochs=1))
    model_io.save(tmp_path, art.model, trained.normalizer, trained.windows.config, trained.windows.classes)
    back = model_io.load(tmp_path)
    x = trained.x_test[:200]
    assert np.array_equal(back.logits(x), art.predict(x))
    mcfg = MeasureConfig.static_only()
    base = measure(TorchArtifact(trained.model, trained.normalizer, example=x[0]), trained.x_test, trained.y_test, mcfg)
    small = measure(art, trained.x_test, trained.y_test, mcfg)
    assert small.param_count <= 0.5 * base.param_count and small.macs <= 0.5 * base.macs
    assert small.weight_bytes < base.weight_bytes and small.activation_bytes_peak < base.activation_bytes_peak
    assert small.accuracy > 0.5  # one fine-tuning epoch recovers a usable classifier (chance is 0.2)


def test_bad_config_is_refused():
    with pytest.raises(BadOptionError):
        prune.PruneConfig(importance="taylor")
    with pytest.raises(BadOptionError):
        prune.PruneConfig(ratio=1.0)
