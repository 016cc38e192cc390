"""`hybrid.Pipeline`: config checks and JSON, presets, stage cache, determinism and byte fields across folds."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from har.errors import BadOptionError, HarError
from har.measure import MeasureConfig, measure
from har.measure.footprint import BYTE_FIELDS
from har.model import CNNConfig, CompactCNN1d
from har.splits import subject_kfold
from har.training import TrainConfig, fit
from har.windows import Normalizer
from hybrid import (PRESETS, VARIANTS, CascadeStep, ContrastiveStep, FoldContext, OrtStep, PCAStep, Pipeline,
                    PipelineConfig, PipelineError, PruneStep, QuantStep, StageCache, SystemStep, preset, stage_key)
from hybrid.pipeline import step_from_dict, step_to_dict
from hybrid.steps import FINAL, FP32, INT8, MLP, DistillStep, SparseStep, parse_schedule

REQUIRED = ("baseline", "ort-fp32", "ort-int8", "int8", "pruned", "pca", "contrastive", "cascade", "flat",
            "static-pool", "lazy-weights", "system-all", "model-all", "clustered", "clustered-direct", "huffman",
            "sparse", "distilled", "student", "separable", "hybrid")


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny trainings; extra threads only contend on a shared machine
    yield
    torch.set_num_threads(n)


def test_presets_are_the_required_variants_and_round_trip_through_json():
    assert VARIANTS == REQUIRED
    for name, cfg in PRESETS.items():
        again = PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg and again.to_json() == cfg.to_json(), name
        assert again.quick() == cfg.quick()
    assert preset("hybrid").output_kind == FINAL
    assert preset("model-all").output_kind == INT8
    assert preset("baseline").output_kind == FP32 and preset("pca").output_kind == MLP
    kinds = [s.kind for s in preset("hybrid").steps]
    assert kinds == ["prune", "quantize", "system"] and preset("hybrid").steps[2].static_pool
    with pytest.raises(BadOptionError, match="unknown variant"):
        preset("nope")


@pytest.mark.parametrize("steps, match", [
    ((QuantStep(), PruneStep()), "cannot follow 'quantize'"),  # order
    ((SystemStep(), SystemStep(static_pool=True)), "one step each"),  # a stage twice
    ((PCAStep(), PruneStep()), "needs a fp32-cnn model, but after 'pca' the model is a pca-mlp"),
    ((QuantStep(), OrtStep(int8=True)), "needs a fp32-cnn model"),  # ORT quantizes by itself
    ((PruneStep(), QuantStep(), CascadeStep()), "needs a fp32-cnn model"),  # stage 2 must be fp32
    ((SystemStep(), QuantStep()), "cannot follow 'system'"),
    ((ContrastiveStep(), PCAStep()), "cannot follow 'contrastive'"),
])
def test_impossible_orders_and_combinations_are_refused(steps, match):
    with pytest.raises(PipelineError, match=match) as info:
        PipelineConfig("bad", steps)
    assert isinstance(info.value, HarError) and "\n" not in str(info.value)


def test_possible_combinations_are_accepted():
    for steps in [(ContrastiveStep(), PruneStep(), QuantStep(), SystemStep(static_pool=True, lazy_weights=True)),
                  (PruneStep(), OrtStep(int8=True)), (PruneStep(), CascadeStep()), (QuantStep(), SystemStep())]:
        assert PipelineConfig("ok", steps).output_kind == FINAL


@pytest.mark.parametrize("bad", [
    lambda: PruneStep(ratio=1.0), lambda: QuantStep(methods=("fp16",)), lambda: QuantStep(methods=()),
    lambda: PCAStep(ks=()), lambda: CascadeStep(tolerance_pp=-1), lambda: PipelineConfig("a b"),
    lambda: step_from_dict({"kind": "prune", "rate": 0.5}), lambda: step_from_dict({"kind": "fold"}),
    lambda: PipelineConfig.from_dict({"name": "x"}),
    lambda: SparseStep(scopes=()), lambda: SparseStep(scopes=("layer", "layer")), lambda: SparseStep(scopes=("row",)),
    lambda: SparseStep(schedules=("4x2",)), lambda: SparseStep(schedules=("0x2+4",)),
    lambda: SparseStep(schedules=("4x2+4", "4x2+4")), lambda: SparseStep(kd_alphas=()),
    lambda: SparseStep(kd_alphas=(0.7, 0.7)), lambda: SparseStep(kd_alphas=(1.2,)),
    lambda: SparseStep(kd_temperature=0.0), lambda: DistillStep(alphas=()),
    lambda: DistillStep(alphas=(1.5,)), lambda: DistillStep(temperatures=(0.0,)),
    lambda: DistillStep(temperatures=(2.0, 2.0)), lambda: DistillStep(temperatures=(float("inf"),)),
    lambda: DistillStep(alphas=(0.3, 0.3)), lambda: DistillStep(teachers=0), lambda: DistillStep(epoch_multiple=0),
    lambda: DistillStep(epoch_multiple=1.5),
])
def test_bad_step_options_raise_one_line_har_errors(bad):
    with pytest.raises(BadOptionError) as info:
        bad()
    assert "\n" not in str(info.value)


def test_stage_keys_follow_what_determines_the_result():
    prefix = {"baseline": "b", "fold": 0, "seed": 0}
    a = stage_key(prefix, (PruneStep(ratio=0.5),))
    assert a == stage_key(dict(prefix), (PruneStep(ratio=0.5),))
    assert a != stage_key(prefix, (PruneStep(ratio=0.7),))
    assert a != stage_key({**prefix, "fold": 1}, (PruneStep(ratio=0.5),))
    # the ONNX stage builds both files: the int8 flag picks one, it does not change what is built
    assert stage_key(prefix, (OrtStep(int8=True),)) == stage_key(prefix, (OrtStep(int8=False),))
    # labels-only sparse fine-tuning has no teacher: its temperature builds nothing, with a teacher it does
    assert stage_key(prefix, (SparseStep(kd_temperature=2.0),)) == stage_key(prefix, (SparseStep(),))
    kd = SparseStep(kd_alphas=(0.0, 0.7))
    assert stage_key(prefix, (replace(kd, kd_temperature=2.0),)) != stage_key(prefix, (kd,))
    assert stage_key(prefix, (kd,)) != stage_key(prefix, (SparseStep(),))


# -- building on real data --------------------------------------------------------------------------

def tiny(cfg: PipelineConfig) -> PipelineConfig:
    """The same pipeline with the least training that still exercises every step."""
    small = {PruneStep: dict(steps=1, finetune_epochs=0), QuantStep: dict(methods=("ptq",), calib_windows=256),
             CascadeStep: dict(epochs=1, patience=1), OrtStep: dict(n_calibration_windows=64),
             PCAStep: dict(ks=(4,), epochs=1, patience=1), SystemStep: {},
             ContrastiveStep: dict(pretrain_epochs=1, head_epochs=1, head_patience=1)}
    return replace(cfg, steps=tuple(replace(s, **small[type(s)]) for s in cfg.steps))


def context(model, norm, windows, fold, tmp_path, key="test-baseline") -> FoldContext:
    return FoldContext(windows, fold, model, norm, tmp_path / "model", tmp_path / f"work{fold.index}", 0, key)


def test_hybrid_build_is_deterministic_cached_and_chooses_on_validation(trained, tmp_path, one_thread):
    cfg = PipelineConfig("hybrid", (PruneStep(ratio=0.5, steps=1, finetune_epochs=1, patience=1),
                                    QuantStep(qat_epochs=1, qat_patience=1, calib_windows=512),
                                    SystemStep(static_pool=True)), "hybrid")
    ctx = context(trained.model, trained.normalizer, trained.windows, trained.fold, tmp_path)
    x = trained.x_test[:400]
    caches = [StageCache(tmp_path / "c1"), StageCache(tmp_path / "c2")]
    built = [Pipeline(cfg).build(ctx, c) for c in caches]
    again = Pipeline(cfg).build(ctx, caches[0])  # every stage from the cache
    assert caches[0].hits >= 2
    arrays = [b.artifact.weight_arrays() for b in (*built, again)]
    assert all(a.keys() == arrays[0].keys() for a in arrays)
    assert all(np.array_equal(a[k], arrays[0][k]) for a in arrays for k in a)
    scores = [b.artifact.predict(x) for b in (*built, again)]
    assert all(np.array_equal(s, scores[0]) for s in scores)
    choice = built[0].choices["quantize"]
    assert choice == built[1].choices["quantize"] == again.choices["quantize"]
    val = choice["val_accuracy"]
    assert set(val) == {"ptq", "qat"} and val[choice["method"]] == max(val.values())
    assert built[0].choices["prune"]["widths"] == [8, 12, 16]
    art = built[0].artifact
    assert art.name == "hybrid" and art.arena_bytes() is not None
    for b in (*built, again):
        b.close()


@pytest.fixture(scope="module")
def fold1_model(locomotion):
    """A second small CNN, on fold 1's training users (1 epoch: only its shapes matter here)."""
    fold = subject_kfold(locomotion.user, k=4, seed=0)[1]
    norm = Normalizer.fit(locomotion.x[fold.train_idx])
    model = CompactCNN1d(CNNConfig(in_channels=6, n_classes=5, widths=(16, 24, 32)), seed=1)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model, _ = fit(model, norm(locomotion.x[fold.train_idx]), locomotion.y[fold.train_idx],
                   norm(locomotion.x[fold.val_idx]), locomotion.y[fold.val_idx],
                   TrainConfig(epochs=1, patience=1, seed=1), progress=False)
    torch.set_num_threads(n)
    return model, norm, fold


FIXED = ("baseline", "ort-int8", "int8", "pruned", "cascade", "static-pool", "system-all", "model-all", "hybrid")


def test_byte_fields_are_equal_across_folds_for_fixed_architecture_variants(trained, fold1_model, tmp_path,
                                                                            one_thread):
    model1, norm1, fold1 = fold1_model
    ctxs = [context(trained.model, trained.normalizer, trained.windows, trained.fold, tmp_path),
            context(model1, norm1, trained.windows, fold1, tmp_path)]
    cache = StageCache(tmp_path / "cache")
    for name in FIXED:
        cfg = tiny(preset(name))
        assert cfg.fixed_architecture
        fields = []
        for ctx in ctxs:
            built = Pipeline(cfg).build(ctx, cache)
            test = ctx.fold.test_idx[:200]
            fp = measure(built.artifact, trained.windows.x[test], trained.windows.y[test], MeasureConfig.static_only())
            built.close()
            fields.append({f: getattr(fp, f) for f in BYTE_FIELDS})
            assert fp.name == name and 0.0 <= fp.accuracy <= 1.0  # 1-epoch models: only shapes matter
        assert fields[0] == fields[1], name
    assert not preset("pca").fixed_architecture  # k is chosen per fold: its bytes may differ


def test_sparse_schedules_parse_and_steps_round_trip_through_json():
    assert parse_schedule("4x2+4") == (4, 2, 4) and parse_schedule("6x3+0") == (6, 3, 0)
    for step in (SparseStep(), SparseStep(scopes=("global",), schedules=("2x1+1", "3x2+2"), kd_alphas=(0.0, 0.7)),
                 DistillStep(),
                 DistillStep(alphas=(0.0,)), DistillStep(teachers=3, epoch_multiple=2)):
        back = step_from_dict(json.loads(json.dumps(step_to_dict(step))))
        assert back == step and hash(back) == hash(step)
    assert DistillStep(alphas=(0.0,)).control and not DistillStep().control


def test_the_kd_control_trains_the_distilled_variants_student_on_its_schedule():
    distilled, student = ([s for s in preset(name).steps if isinstance(s, DistillStep)][0]
                          for name in ("distilled", "student"))
    assert student.control and not distilled.control and distilled.teachers == 3
    fields = ("ratio", "epochs", "patience", "epoch_multiple")
    assert [getattr(distilled, f) for f in fields] == [getattr(student, f) for f in fields]
    assert distilled.epoch_multiple == 2
    assert [type(s) for s in preset("distilled").steps] == [type(s) for s in preset("student").steps]
