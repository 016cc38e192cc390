"""What each pipeline step does for one fold: `run_step(step, state, ctx, cache, key, name)`.

Inputs come from `FoldContext`: the fold's windows, its subject split (train / validation / test users),
the baseline CNN trained on its training users and the run seed (every step is seeded with seed + fold
index, like `har.experiment`). Rules every step keeps:
- fitting (training, pruning fine-tunes, calibration, PCA, stage 1) reads TRAINING users' windows only;
- every choice (PTQ vs QAT, PCA's k, the cascade threshold) is made on VALIDATION users' windows: accuracy
  of each candidate there, the best kept (ties: the earlier / smaller candidate);
- test users' windows are never read here: they are scored by `har.measure.measure` in `hybrid.runner`.
Each finished step is stored in the stage cache (`hybrid.cache`) in its technique's own format: fp32 CNNs
with `har.model_io`, int8 programs with `model_opts.quant.save`, PCA with `PCAArtifact.save`, the cascade
directory, the two ONNX files; the result is always re-loaded from there, so a fresh run and a resumed one
measure the same bytes. System steps are not cached (flattening is deterministic and takes milliseconds);
their lazy weight files are written under `ctx.work_dir`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from har import model_io
from har.errors import HarError
from har.measure.artifact import TorchArtifact
from har.model import CompactCNN1d
from har.splits import Fold
from har.windows import Normalizer, Windows
from hybrid.cache import StageCache
from hybrid.codehash import kind_digest
from hybrid.steps import (FINAL, FP32, INT8, MLP, CascadeStep, ClusterStep, ContrastiveStep, DistillStep,
                          EncodeStep, OrtStep, PCAStep, PruneStep, QuantStep, SeparableStep, SparseStep,
                          SystemStep)


@dataclass
class FoldContext:
    windows: Windows
    fold: Fold
    model: CompactCNN1d  # the fold's baseline
    normalizer: Normalizer
    model_dir: Path  # where the baseline is saved (har.model_io)
    work_dir: Path  # run outputs of this fold (lazy weight files)
    seed: int
    baseline_key: str
    raw_xyz: np.ndarray | None = None  # the same windows on device axes (contrastive pretraining)
    train_epochs: int = 20  # the baseline's epoch budget (har.defaults); a distilled student: x epoch_multiple

    def cache_prefix(self) -> dict:
        return {"baseline": self.baseline_key, "fold": self.fold.index, "seed": self.seed}

    @property
    def step_seed(self) -> int:
        return self.seed + self.fold.index

    def split(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        idx = {"train": self.fold.train_idx, "val": self.fold.val_idx}[part]  # no "test": see docstring
        return self.windows.x[idx], self.windows.y[idx]


@dataclass
class State:
    kind: str
    model: CompactCNN1d | None = None
    normalizer: Normalizer | None = None
    artifact: Any = None  # int8: Int8Artifact; pca-mlp: PCAArtifact; artifact: any InferenceArtifact
    info: dict = field(default_factory=dict)


def val_accuracy(artifact, ctx: FoldContext) -> float:
    x, y = ctx.split("val")
    return float(np.mean(artifact.predict(x).argmax(axis=1) == y))


def _best(scores: dict) -> Any:
    """Key of the highest score; ties go to the earliest key (candidates are listed cheapest first)."""
    return max(scores, key=lambda k: (scores[k], -list(scores).index(k)))


# -- fp32 CNN steps -----------------------------------------------------------------------------------

def _cnn_stage(ctx: FoldContext, cache: StageCache, key: str, build) -> tuple[State, dict]:
    meta = cache.done(key)
    d = cache.dir(key)
    if meta is None:
        model, choices = build()
        model_io.save(d, model, ctx.normalizer, ctx.windows.config, ctx.windows.classes)
        cache.finish(key, {"choices": choices})
        meta = {"choices": choices}
    saved = model_io.load(d)
    return State(FP32, saved.model, saved.normalizer), meta["choices"]


def _prune(step: PruneStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts import prune

    def build():
        cfg = prune.PruneConfig(ratio=step.ratio, importance=step.importance, steps=step.steps,
                                finetune_epochs=step.finetune_epochs, patience=step.patience, lr=step.lr,
                                seed=ctx.step_seed)
        model, log = prune.prune_model(state.model, state.normalizer, ctx.windows, ctx.fold, cfg)
        return model, {"widths": list(prune.pruned_widths(model)), "steps": log}
    return _cnn_stage(ctx, cache, key, build)


def _contrastive(step: ContrastiveStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts.contrastive import HeadConfig, PretrainConfig, apply, pretrain

    def build():
        if ctx.raw_xyz is None:
            raise HarError("contrastive pretraining needs the windows on raw device axes (FoldContext.raw_xyz)")
        tr, va = ctx.fold.train_idx, ctx.fold.val_idx
        w, cfg = ctx.windows, state.model.config
        pcfg = PretrainConfig(widths=tuple(cfg.widths), kernel_size=cfg.kernel_size, epochs=step.pretrain_epochs,
                              batch_size=step.batch_size, channels=w.config.channels, seed=ctx.step_seed)
        encoder, history = pretrain(pcfg, ctx.raw_xyz[tr], state.normalizer, len(w.classes))
        head = HeadConfig(mode="finetune", epochs=step.head_epochs, patience=step.head_patience, seed=ctx.step_seed)
        art = apply(encoder, head, state.normalizer, w.x[tr], w.y[tr], w.x[va], w.y[va], name=name)
        return art.model, {"pretrain_final_ntxent": history[-1]["ntxent"] if history else None}
    return _cnn_stage(ctx, cache, key, build)


def _distill(step: DistillStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts import distill

    def build():
        # the control (alpha 0) trains once: the temperature does not enter its loss
        temps = step.temperatures[:1] if step.control else step.temperatures
        recipe = distill.DistillConfig(epochs=step.epochs or ctx.train_epochs, patience=step.patience, seed=ctx.seed)
        cfg = replace(recipe, temperatures=temps, alphas=step.alphas, epochs=recipe.epochs * step.epoch_multiple,
                      patience=recipe.patience * step.epoch_multiple)
        student = distill.student_config(state.model.config, step.ratio)
        teachers = 1 if step.control else step.teachers
        teacher = state.model if teachers == 1 else distill.Ensemble(  # members: the baseline's own recipe
            [state.model] + [_teacher_member(state, ctx, cache, recipe, m) for m in range(1, teachers)])
        model, info = distill.apply(teacher, student, state.normalizer, ctx.windows, ctx.fold, cfg)
        return model, {"widths": list(student.widths), "teachers": teachers, **info}
    return _cnn_stage(ctx, cache, key, build)


def _teacher_member(state: State, ctx: FoldContext, cache: StageCache, cfg, member: int):
    """Ensemble member `member` of the fold's teacher (`model_opts.distill.train_member`), trained once per
    (baseline, fold, seed, member, epochs, code) and cached like a stage; concurrent workers build it once."""
    import hashlib
    import json
    from model_opts import distill
    doc = {**ctx.cache_prefix(), "member": member, "teacher": state.model.config.to_json(), "epochs": cfg.epochs,
           "patience": cfg.patience, "code": kind_digest("distill"), "format": "hybrid-teacher-member-v1"}
    key = "teacher-" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]
    with cache.claim(key):
        d = cache.dir(key)
        if cache.done(key) is None:
            model = distill.train_member(state.model.config, state.normalizer, ctx.windows, ctx.fold, cfg, member)
            model_io.save(d, model, state.normalizer, ctx.windows.config, ctx.windows.classes,
                          extra={"member": member, "fold": ctx.fold.index})
            cache.finish(key, {"member": member, "fold": ctx.fold.index})
        return model_io.load(d).model.eval()


def _separable(step: SeparableStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts import separable

    def build():
        base = state.model.config
        widths = tuple(step.widths or base.widths)
        cfg = separable.SeparableConfig(kernel_size=base.kernel_size, dropout=base.dropout, seed=ctx.seed)
        cfg = replace(cfg, train=replace(cfg.train, epochs=step.epochs or ctx.train_epochs))
        w = ctx.windows
        model = separable.apply(base.in_channels, len(w.classes), widths, state.normalizer, w, ctx.fold, cfg)
        return model, {"widths": list(widths)}
    return _cnn_stage(ctx, cache, key, build)


# -- int8 ------------------------------------------------------------------------------------------

def _int8_stage(ctx: FoldContext, cache: StageCache, key: str, state: State, build) -> tuple[State, dict]:
    """An int8 step's result through the stage cache (`model_opts.quant.save` format)."""
    from model_opts.quant import artifact as qart
    meta, d = cache.done(key), cache.dir(key)
    if meta is None:
        art = build()
        qart.save(d, art)
        meta = {"choices": _json_info(art.info)}
        cache.finish(key, meta)
    return State(INT8, state.model, state.normalizer, qart.load(d)), meta["choices"]


def _json_info(info: dict) -> dict:
    """What a technique recorded (per-layer codebooks or sparsity, validation scores, schedule), without its
    config (already in the stage key), as JSON."""
    import json
    return json.loads(json.dumps({k: v for k, v in info.items() if k not in ("config", "technique")}, default=str))


def _cluster(step: ClusterStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts import cluster

    def build():
        cfg = cluster.ClusterConfig(k=step.k, epochs=step.epochs, patience=step.patience, lr=step.lr,
                                    seed=ctx.step_seed)
        return cluster.apply(state.model, state.normalizer, ctx.windows, ctx.fold, cfg, name="clustered")
    return _int8_stage(ctx, cache, key, state, build)


def _sparsity(step: SparseStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    """Every (scope, schedule, kd_alpha) candidate of `step` built; the int8 program most accurate on the
    validation users kept (ties: the earlier candidate)."""
    from model_opts import sparsity
    from model_opts.quant import artifact as qart
    from hybrid.steps import parse_schedule
    meta, d = cache.done(key), cache.dir(key)
    if meta is None:
        built, scores = {}, {}
        for scope, schedule, alpha in itertools.product(step.scopes, step.schedules, step.kd_alphas):
            stages, per_stage, final = parse_schedule(schedule)
            cfg = sparsity.SparsityConfig(target=step.target, n_stages=stages, epochs_per_stage=per_stage,
                                          final_epochs=final, patience=max(2, per_stage), scope=scope,
                                          kd_alpha=alpha, kd_temperature=step.kd_temperature, seed=ctx.step_seed)
            name = f"{scope} {schedule} kd={alpha:g}"
            built[name] = sparsity.apply(state.model, state.normalizer, ctx.windows, ctx.fold, cfg, name="sparse")
            scores[name] = val_accuracy(built[name], ctx)
        best = _best(scores)
        qart.save(d, built[best])
        meta = {"choices": {"candidate": best, "val_accuracy": scores, **_json_info(built[best].info)}}
        cache.finish(key, meta)
    return State(INT8, state.model, state.normalizer, qart.load(d)), meta["choices"]


def _encode(step: EncodeStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    """No new integers: the storage format travels with the state to the firmware (`finish`)."""
    return State(INT8, state.model, state.normalizer, state.artifact, {**state.info, "storage": step.format}), {}


def _quantize(step: QuantStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts.quant import artifact as qart, ptq, qat
    from model_opts.quant.config import QATConfig, QuantConfig
    meta, d = cache.done(key), cache.dir(key)
    if meta is None:
        calibrated, calib_scores = {}, {}
        for calibration in step.calibrations:
            qc = QuantConfig(calibration=calibration, calib_windows=step.calib_windows, seed=ctx.step_seed)
            calibrated[calibration] = (qc, ptq.apply(state.model, state.normalizer, ctx.windows, ctx.fold, qc,
                                                     name="int8-ptq"))
            calib_scores[calibration] = val_accuracy(calibrated[calibration][1], ctx)
        calibration = _best(calib_scores)
        qc = calibrated[calibration][0]
        built = {}
        for method in step.methods:
            if method == "ptq":
                built[method] = calibrated[calibration][1]
            else:
                cfg = QATConfig(quant=qc, epochs=step.qat_epochs, patience=step.qat_patience, lr=step.qat_lr,
                                seed=ctx.step_seed)
                built[method] = qat.apply(state.model, state.normalizer, ctx.windows, ctx.fold, cfg, name="int8-qat")
        scores = {m: val_accuracy(a, ctx) for m, a in built.items()}
        method = _best(scores)
        qart.save(d, built[method])
        meta = {"choices": {"method": method, "val_accuracy": scores, "calibration": calibration,
                            "calibration_val_accuracy": calib_scores}}
        cache.finish(key, meta)
    return State(INT8, state.model, state.normalizer, qart.load(d)), meta["choices"]


# -- input transforms ---------------------------------------------------------------------------------

def _pca(step: PCAStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts import pca
    meta, d = cache.done(key), cache.dir(key)
    if meta is None:
        w, tr, va = ctx.windows, ctx.fold.train_idx, ctx.fold.val_idx
        built, scores = {}, {}
        for k in sorted(step.ks):
            cfg = pca.PCAConfig(n_components=k, input="windows", hidden=step.hidden, epochs=step.epochs,
                                patience=step.patience, seed=ctx.step_seed)
            built[k] = pca.apply(cfg, w.x[tr], w.y[tr], w.user[tr], w.x[va], w.y[va], w.classes)
            scores[k] = val_accuracy(built[k], ctx)
        k = _best(scores)
        built[k].save(d)
        meta = {"choices": {"k": k, "val_accuracy": {str(kk): v for kk, v in scores.items()}}}
        cache.finish(key, meta)
    return State(MLP, artifact=pca.PCAArtifact.load(d)), meta["choices"]


# -- runtimes -----------------------------------------------------------------------------------------

def _ort(step: OrtStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from har.measure.peers import FP32_NAME, INT8_NAME, OrtArtifact, OrtInt8Config, PeerConfig, build_peers
    meta, d = cache.done(key), cache.dir(key)
    if meta is None:
        cfg = PeerConfig(int8=OrtInt8Config(n_calibration_windows=step.n_calibration_windows, seed=ctx.step_seed))
        peers = build_peers(state.model, state.normalizer, ctx.split("train")[0], cfg)
        if not peers.artifacts:
            raise HarError("; ".join(peers.notes) or "ONNX Runtime peers unavailable")
        from har.paths import atomic_write_bytes
        for peer_name, art in peers.artifacts.items():
            atomic_write_bytes(d / f"{peer_name}.onnx", art.model_bytes)
        meta = {"choices": {}}
        cache.finish(key, meta)
    which = INT8_NAME if step.int8 else FP32_NAME
    return State(FINAL, artifact=OrtArtifact((d / f"{which}.onnx").read_bytes(), name, 1)), {}


def _cascade(step: CascadeStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from model_opts import cascade
    from model_opts.report2 import select_threshold
    meta, d = cache.done(key), cache.dir(key)
    if meta is None:
        src = model_io.save(d / "stage2-source", state.model, state.normalizer, ctx.windows.config,
                            ctx.windows.classes)
        (x_tr, y_tr), (x_va, y_va) = ctx.split("train"), ctx.split("val")
        cfg = cascade.CascadeConfig(stage1_widths=step.stage1_widths, epochs=step.epochs, patience=step.patience,
                                    seed=ctx.step_seed)
        art = cascade.apply(cfg, src, d / "cascade", x_tr, y_tr, x_va, y_va)
        rows = []
        for t in (*sorted(step.thresholds), 1.01):  # 1.01: every window to stage 2, the reference
            a = art.with_threshold(t)
            rows.append({"threshold": t, "val_accuracy": val_accuracy(a, ctx),
                         "val_stage2_fraction": a.stats().stage2_fraction})
            a.close()
        art.close()
        chosen = select_threshold(rows, step.tolerance_pp)
        meta = {"choices": {**chosen, "stage2_alone_val_accuracy": rows[-1]["val_accuracy"]}}
        cache.finish(key, meta)
    base = cascade.CascadeArtifact.load(d / "cascade")
    art = base.with_threshold(meta["choices"]["threshold"])
    base.close()
    return State(FINAL, artifact=art), meta["choices"]


def _system(step: SystemStep, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str):
    from system_opts import artifacts
    cfg = artifacts.SystemOptsConfig(static_pool=step.static_pool, lazy_weights=step.lazy_weights,
                                     policy=step.policy, planner=step.planner, int8_kernels=step.int8_kernels)
    weight_path = ctx.work_dir / f"{name}.harw" if step.lazy_weights else None
    if state.kind == INT8:
        art = artifacts.from_int8(state.artifact, cfg, weight_path=weight_path, name=name)
        art.weight_storage = state.info.get("storage", "dense")
    else:
        shape = ctx.windows.x.shape[1:]
        art = artifacts.apply(state.model, state.normalizer, shape, cfg, weight_path=weight_path, name=name)
    return State(FINAL, artifact=art), {}


_RUNNERS = {"prune": _prune, "contrastive": _contrastive, "quantize": _quantize, "pca": _pca,
            "onnxruntime": _ort, "cascade": _cascade, "distill": _distill, "separable": _separable, "cluster": _cluster,
            "sparsity": _sparsity, "encode": _encode, "system": _system}


def run_step(step, state: State, ctx: FoldContext, cache: StageCache, key: str, name: str) -> tuple[State, dict]:
    return _RUNNERS[step.kind](step, state, ctx, cache, key, name)


def finish(state: State, ctx: FoldContext, name: str):
    """The artifact to measure: fp32 CNNs run as torch eager, int8 programs as the numpy reference."""
    if state.kind == FP32:
        example = np.ascontiguousarray(ctx.windows.x[ctx.fold.train_idx[0]])
        return TorchArtifact(state.model, state.normalizer, name, example=example)
    art = state.artifact
    art.name = name
    if "storage" in state.info:  # how the firmware stores its weights (firmware.storage)
        art.weight_storage = state.info["storage"]
    return art
