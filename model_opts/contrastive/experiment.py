"""The contrastive table for one saved fold: label-efficiency and narrow-student arms, measured.

Steps of `run_fold(fd, raw_xyz, cfg)` (fd = `har.measure.fold_data.FoldData`; raw_xyz = the fold's windows
on device axes, (N, 3, T)):
1. Normaliser fitted on the training users' channel windows.
2. Pretrain the encoder (`cfg.pretrain.widths`, default = the baseline's (32, 48, 64)) with NT-Xent on the
   training users' raw windows, no labels.
3. For each label fraction and each of its `label_draws` subsets (stratified, seeded subsets of the
   training users' windows; 5 % is drawn 3 times by default because one draw of ~320 windows is noisy):
   - `contrastive-linear`: frozen encoder + linear head;
   - `contrastive-finetune`: pretrained encoder, whole network fine-tuned (the main arm);
   - `scratch`: the same architecture from random init, same recipe (`HeadConfig` "finetune"); at 100 %
     labels this arm is the saved `har.train` fold model itself (same architecture, same labels, the same
     `TrainConfig` recipe) instead of a retrain, to stay within the CPU budget.
   At 100 % `cfg.full_head` (fewer epochs) fine-tunes the pretrained network, again for CPU.
4. Narrow student (`cfg.student_widths`, all labels): from scratch; from scratch with distillation from the
   saved baseline (teacher logits); contrastively pretrained + linear head; contrastively pretrained +
   fine-tuned with distillation (separates what the contrastive start adds from what the teacher adds).
5. Every model is scored on the fold's test users through `har.measure.measure` (static fields: weight
   bytes, MACs, accuracy, macro-F1).
Validation users early-stop every supervised arm alike (their labels are used for model selection only).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from har.errors import BadOptionError
from har.measure.artifact import TorchArtifact
from har.measure.fold_data import FoldData
from har.measure.footprint import MeasureConfig, measure
from har.model import CNNConfig, CompactCNN1d
from har.windows import Normalizer
from model_opts.contrastive.finetune import HeadConfig, apply, label_subset
from model_opts.contrastive.pretrain import PretrainConfig, pretrain


@dataclass(frozen=True)
class ContrastiveRunConfig:
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    fractions: tuple[float, ...] = (0.05, 0.2, 1.0)
    label_draws: tuple[int, ...] = (3, 1, 1)  # label subsets drawn per fraction (seeds seed, seed+100, ...)
    head: HeadConfig = field(default_factory=lambda: HeadConfig(mode="finetune"))
    full_head: HeadConfig = field(default_factory=lambda: HeadConfig(mode="finetune", epochs=30, patience=6))
    linear: HeadConfig = field(default_factory=lambda: HeadConfig(mode="linear"))
    student_widths: tuple[int, ...] = (16, 24, 32)
    student_pretrain_epochs: int = 12
    distill_alpha: float = 0.5
    seed: int = 0

    def quick(self) -> "ContrastiveRunConfig":
        short = dict(epochs=6, patience=3)
        return replace(self, pretrain=replace(self.pretrain, epochs=3), label_draws=(1,) * len(self.fractions),
                       head=replace(self.head, **short),
                       full_head=replace(self.full_head, **short), linear=replace(self.linear, **short),
                       student_pretrain_epochs=2)

    def __post_init__(self) -> None:
        if len(self.label_draws) != len(self.fractions) or min(self.label_draws, default=1) < 1:
            raise BadOptionError(f"label_draws {self.label_draws} must give >= 1 draw per fraction {self.fractions}")

    def to_dict(self) -> dict:
        return asdict(self)


def _row(arm: str, fraction: float, n_labels: int, widths, art: TorchArtifact, fd: FoldData, cpu_s: float) -> dict:
    x, y = fd.windows.x[fd.test_idx], fd.windows.y[fd.test_idx]
    fp = measure(art, x, y, MeasureConfig.static_only())
    return {"arm": arm, "label_fraction": fraction, "n_labels": int(n_labels), "widths": list(widths),
            "accuracy": fp.accuracy, "macro_f1": fp.macro_f1, "weight_bytes": fp.weight_bytes, "macs": fp.macs,
            "param_count": fp.param_count, "cpu_s": round(cpu_s, 2)}


def _fresh(widths: tuple[int, ...], n_ch: int, n_cls: int, seed: int) -> CompactCNN1d:
    torch.manual_seed(seed)
    return CompactCNN1d(CNNConfig(in_channels=n_ch, n_classes=n_cls, widths=widths))


def run_fold(fd: FoldData, raw_xyz: np.ndarray, cfg: ContrastiveRunConfig, fold: int) -> dict:
    w = fd.windows
    tr, va = fd.train_idx, fd.val_idx
    n_ch, n_cls = w.config.n_channels, len(w.classes)
    seed = cfg.seed + fold
    norm = Normalizer.fit(w.x[tr])
    example = w.x[tr[0]]
    rows, t0 = [], time.process_time()
    pcfg = replace(cfg.pretrain, seed=seed, channels=w.config.channels)
    encoder, history = pretrain(pcfg, raw_xyz[tr], norm, n_cls)
    pretrain_cpu_s = time.process_time() - t0

    def train(arm, model, head, rows_idx, fraction, widths, teacher=None, draw=0):
        t = time.process_time()
        art = apply(model, replace(head, seed=seed + 100 * draw), norm, w.x[rows_idx], w.y[rows_idx], w.x[va],
                    w.y[va], teacher_logits=teacher, name=f"{arm}@{fraction:g}")
        row = _row(arm, fraction, len(rows_idx), widths, art, fd, time.process_time() - t)
        rows.append(row | {"label_draw": draw})
        return art

    for fraction, n_draws in zip(cfg.fractions, cfg.label_draws):
        full = fraction == 1.0
        for draw in range(1 if full else n_draws):
            label_seed = seed + 100 * draw
            sub = tr[label_subset(w.y[tr], fraction, label_seed)]
            train("contrastive-linear", encoder, cfg.linear, sub, fraction, pcfg.widths, draw=draw)
            head = cfg.full_head if full else cfg.head
            train("contrastive-finetune", encoder, head, sub, fraction, pcfg.widths, draw=draw)
            if full and tuple(fd.saved.model.config.widths) == tuple(pcfg.widths):
                baseline = TorchArtifact(fd.saved.model, fd.saved.normalizer, "scratch@1", example=example)
                row = _row("scratch", 1.0, len(sub), pcfg.widths, baseline, fd, 0.0)
                rows.append(row | {"label_draw": 0, "note": "saved har.train model"})
            else:
                train("scratch", _fresh(pcfg.widths, n_ch, n_cls, seed), cfg.head, sub, fraction, pcfg.widths,
                      draw=draw)

    if cfg.student_widths:
        sw = tuple(cfg.student_widths)
        t = time.process_time()
        student_cfg = replace(pcfg, widths=sw, epochs=cfg.student_pretrain_epochs)
        student_enc, _ = pretrain(student_cfg, raw_xyz[tr], norm, n_cls)
        student_pretrain_cpu_s = time.process_time() - t
        teacher = TorchArtifact(fd.saved.model, fd.saved.normalizer).predict(w.x[tr])
        distill = replace(cfg.full_head, distill_alpha=cfg.distill_alpha)
        train("student-scratch", _fresh(sw, n_ch, n_cls, seed), cfg.full_head, tr, 1.0, sw)
        train("student-distill", _fresh(sw, n_ch, n_cls, seed), distill, tr, 1.0, sw, teacher=teacher)
        train("student-contrastive-linear", student_enc, cfg.linear, tr, 1.0, sw)
        train("student-contrastive-distill", student_enc, distill, tr, 1.0, sw, teacher=teacher)
    else:
        student_pretrain_cpu_s = 0.0
    return {"fold": fold, "rows": rows, "pretrain_history": history, "pretrain_cpu_s": round(pretrain_cpu_s, 2),
            "student_pretrain_cpu_s": round(student_pretrain_cpu_s, 2),
            "cpu_s_total": round(time.process_time() - t0, 2)}
