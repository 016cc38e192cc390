"""Unstructured magnitude pruning of the int8 network to >= `target` zeros per weight matrix, fine-tuned
through the fake quantizers: `apply(model, normalizer, windows, fold, cfg) -> Int8Artifact`.

Steps of `apply`:
1. Start from the PTQ simulation (`quant.ptq.simulate` on the fold's TRAINING windows: BatchNorm folded,
   so the sim's `weights` are exactly the conv / linear matrices the int8 program stores).
2. Gradual schedule (`schedule`, Zhu & Gupta 2017, "To prune, or not to prune"): stage t of n reaches
   s_t = target * (1 - (1 - t / n)^3), fast early while many weights are redundant, slow near the target;
   s_n = target exactly, and the sequence only grows.
3. Each stage recomputes magnitude masks (`masks`): scope "layer" zeroes the ceil(s * size) smallest |w|
   of every matrix; "global" ranks all matrices' |w| together (so layers end with different sparsities);
   "erk" gives each matrix its own sparsity from its shape (`erk_zeros`: Erdos-Renyi-Kernel, Evci et al.
   2020, "Rigging the Lottery", section 3) so that all of them together reach s, then zeroes the smallest
   |w| of each: a matrix's density is proportional to sum(shape) / prod(shape), so small matrices (the
   first conv's 30-weight filters: 6 channels x 5 taps; the classifier) keep more of their weights than
   the wide middle convs.
   Already-pruned weights rank first, so masks only grow (a pruned weight never comes back); ties break by
   index (stable sort): deterministic. Then fine-tune `epochs_per_stage` epochs with `quant.qat.finetune`
   (har.training.fit: fold.train_idx for training, fold.val_idx for early stopping; test users are never
   read), and `final_epochs` more at the target. With `kd_alpha` > 0 the fine-tuning loss distils the
   dense network the sim was built from into its pruned self (`distill.with_teacher`: alpha T^2
   KL(dense / T || pruned / T) + (1 - alpha) cross-entropy, the teacher fed the same augmented batch; no
   extra training, one dense forward per batch): the pruned network is pulled toward the dense network's
   outputs on every training window, not only toward the labels. Why it was tried: recovered on labels
   alone, a pruned model could match the dense one on the validation users and still fall ~4 pp below it
   on the test users. Measured (README, sparsity): on the phone it ties with labels only on the validation
   users and does not close that gap, so `hybrid` keeps it off by default.
4. Masked weights stay exactly 0 (`Masker`): a gradient hook multiplies each weight's gradient by its
   mask (AdamW's moments of a masked entry then stay 0, so the step leaves it at 0; weight decay of 0 is 0)
   and a forward pre-hook on the sim re-applies the masks under no_grad before every forward, so the
   fake quantizer (scale max|w| / 127 per output channel, recomputed each forward) always sees the pruned
   matrix. Fake quantization of 0 is 0, so the int8 program has at least the mask's zeros (small survivors
   may round to 0 too: sparsity only rises).
5. Convert with `quant.fakequant.to_program`, count the int8 zeros per conv / linear (the classifier
   included) and refuse a program below the target (scope "layer": each layer; "global", "erk": overall).
   Int8Artifact.info records the schedule, per-stage validation F1 and per-layer sparsity / CSR bytes.
Why not `torch.nn.utils.prune`: its reparametrisation (weight_orig * weight_mask through a forward
pre-hook on the owning module) needs the module's forward to run, but the sim's weights live in a
ParameterList that the sim indexes directly, so the hook would never fire; and every forward would
multiply by the mask in autograd. Own masks are ~20 lines and keep the sim's parameters plain.
Limits: activation ranges stay at their PTQ calibration (as in QAT); global scope compares |w| across
layers of different scales (it may empty a small layer); ERK looks at shapes only, not at how much each
layer matters; biases are not pruned. With "erk" each d_i falls as s rises (eps falls), and a layer keeps
at least its previous stage's zeros, so masks only grow there too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from har.errors import BadOptionError
from har.splits import Fold
from har.training import TrainConfig
from har.windows import Normalizer, Windows
from model_opts import distill
from model_opts.csr import csr_bytes, encode_csr, gemm_matrix
from model_opts.quant.artifact import Int8Artifact
from model_opts.quant.config import QATConfig, QuantConfig
from model_opts.quant.fakequant import QuantSim, to_program
from model_opts.quant.intref import Conv1dInt8, Int8Program, LinearInt8
from model_opts.quant.ptq import simulate
from model_opts.quant.qat import finetune

SCOPES = ("layer", "global", "erk")


class SparsityNotReached(RuntimeError):
    """The int8 program has fewer zeros than the target (a bug in masking, never a data problem)."""


@dataclass(frozen=True)
class SparsityConfig:
    target: float = 0.9  # fraction of zeros per weight matrix ("layer") or over all of them ("global", "erk")
    n_stages: int = 4  # gradual schedule steps (`schedule`)
    epochs_per_stage: int = 2
    final_epochs: int = 4  # fine-tuning at the target after the last stage
    lr: float = 3e-4
    patience: int = 2
    batch_size: int = 64
    scope: str = "layer"
    # distillation from the dense network during fine-tuning (step 3): weight of the soft term, 0 = off
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    seed: int = 0
    quant: QuantConfig = QuantConfig(calibration="percentile")

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise BadOptionError(f"unknown sparsity scope {self.scope!r}; choose one of {list(SCOPES)}")
        if not 0.0 <= self.target < 1.0:
            raise BadOptionError(f"sparsity target must be in [0, 1), got {self.target}")
        if self.n_stages < 1 or self.epochs_per_stage < 0 or self.final_epochs < 0:
            raise BadOptionError("sparsity needs n_stages >= 1, epochs_per_stage >= 0 and final_epochs >= 0")
        if not 0.0 <= self.kd_alpha <= 1.0 or not 0.0 < self.kd_temperature < math.inf:
            raise BadOptionError(f"sparsity: kd_alpha must be in [0, 1] and kd_temperature finite and > 0, got "
                                 f"{self.kd_alpha}, {self.kd_temperature}")
        if self.lr <= 0 or self.patience < 1 or self.batch_size < 2:
            raise BadOptionError("sparsity fine-tuning needs lr > 0, patience >= 1 and batch_size >= 2")

    def to_dict(self) -> dict:
        return asdict(self)


def schedule(cfg: SparsityConfig) -> list[float]:
    """Sparsity after each stage: target * (1 - (1 - t / n)^3), t = 1..n (the last is the target)."""
    n = cfg.n_stages
    return [cfg.target * (1.0 - (1.0 - t / n) ** 3) for t in range(1, n + 1)]


def zeros_needed(sparsity: float, n: int) -> int:
    """ceil(sparsity * n), forgiving float error of 1e-9 (0.5203125 * 24320 is 12654.000000000002 in floats):
    the count ERK allocates and the count `check_target` demands of an overall scope (it demands no more
    than `masks` zeroes per layer or globally, which round without the tolerance)."""
    return math.ceil(sparsity * n - 1e-9)


def erk_zeros(shapes: list[tuple[int, ...]], sparsity: float) -> list[int]:
    """Zeros per matrix under the Erdos-Renyi-Kernel allocation (module docstring, step 3).

    Density d_i = eps * sum(shape_i) / prod(shape_i), eps solved so that sum d_i n_i = (1 - s) * sum n_i;
    a matrix whose d_i would exceed 1 stays dense and eps is solved again over the rest (at most one round
    per matrix). Zeros are floor((1 - d_i) n_i), then single zeros go to the matrices with the most
    weights left until the total reaches ceil(s * sum n_i) exactly: integer, deterministic, never below s.
    """
    sizes = [math.prod(sh) for sh in shapes]
    scores = [sum(sh) / n for sh, n in zip(shapes, sizes)]
    total = sum(sizes)
    want = zeros_needed(sparsity, total)
    dense: set[int] = set()
    while True:
        budget = (total - want) - sum(sizes[i] for i in dense)  # nonzeros left for the non-dense matrices
        free = [i for i in range(len(sizes)) if i not in dense]
        eps = budget / sum(scores[i] * sizes[i] for i in free) if free else 0.0
        over = [i for i in free if eps * scores[i] > 1.0]
        if not over:
            break
        dense.update(over)
    zeros = [0 if i in dense else int(math.floor((1.0 - eps * scores[i]) * sizes[i])) for i in range(len(sizes))]
    zeros = [min(max(z, 0), n) for z, n in zip(zeros, sizes)]
    while sum(zeros) < want:  # floors left a few weights: take them from the matrices with most weights left
        i = max(range(len(sizes)), key=lambda j: (sizes[j] - zeros[j], -j))
        zeros[i] += 1
    return zeros


def masks(weights: list[torch.Tensor], sparsity: float, scope: str,
          previous: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """float 0/1 masks zeroing the smallest |w| (module docstring, step 3); `previous` zeros rank first."""
    scores = []
    for i, w in enumerate(weights):
        s = w.detach().abs().reshape(-1).double()
        if previous is not None:
            s = torch.where(previous[i].reshape(-1) > 0, s, torch.full_like(s, -1.0))
        scores.append(s)

    def smallest(s: torch.Tensor, n_zeros: int | None = None) -> torch.Tensor:
        keep = torch.ones_like(s)
        keep[torch.argsort(s, stable=True)[:math.ceil(sparsity * s.numel()) if n_zeros is None else n_zeros]] = 0.0
        return keep

    if scope == "layer":
        flat = [smallest(s) for s in scores]
    elif scope == "erk":
        zeros = erk_zeros([tuple(w.shape) for w in weights], sparsity)
        if previous is not None:  # a rounding top-up may move between stages: a layer never loses zeros
            zeros = [max(z, int((p == 0).sum())) for z, p in zip(zeros, previous)]
        flat = [smallest(s, z) for s, z in zip(scores, zeros)]
    else:
        flat = list(torch.split(smallest(torch.cat(scores)), [s.numel() for s in scores]))
    return [m.reshape(w.shape).to(w.dtype) for m, w in zip(flat, weights)]


class Masker:
    """Keeps `sim.weights[i]` at exactly 0 where `masks[i]` is 0 (module docstring, step 4)."""

    def __init__(self, sim: QuantSim):
        self.sim = sim
        self.masks = [torch.ones_like(w) for w in sim.weights]
        self._handles = [w.register_hook(lambda g, i=i: g * self.masks[i]) for i, w in enumerate(sim.weights)]
        self._handles.append(sim.register_forward_pre_hook(lambda module, args: self.enforce()))

    def update(self, new_masks: list[torch.Tensor]) -> None:
        self.masks = new_masks
        self.enforce()

    def enforce(self) -> None:
        with torch.no_grad():
            for w, m in zip(self.sim.weights, self.masks):
                w.mul_(m)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _finetune(sim: QuantSim, teacher: nn.Module | None, normalizer: Normalizer, windows: Windows, fold: Fold,
              cfg: SparsityConfig, epochs: int) -> float | None:
    if epochs == 0:
        return None
    qcfg = QATConfig(quant=cfg.quant, epochs=epochs, patience=cfg.patience, lr=cfg.lr,
                     batch_size=cfg.batch_size, seed=cfg.seed)
    distil = None if teacher is None else partial(distill.with_teacher, teacher=teacher, temperature=cfg.kd_temperature,
                                                  alpha=cfg.kd_alpha, label_smoothing=TrainConfig.label_smoothing)
    _, history = finetune(sim, normalizer, windows, fold, qcfg, distil=distil)
    return max(h["val_macro_f1"] for h in history)


def prune_sim(model: nn.Sequential, normalizer: Normalizer, windows: Windows, fold: Fold,
              cfg: SparsityConfig = SparsityConfig(), on_stage=None) -> tuple[QuantSim, list[torch.Tensor], list[dict]]:
    """Steps 1-4: the fine-tuned pruned simulation, its final masks and one record per stage.
    `on_stage(stage, sim, masks)` (optional) is called after each stage's fine-tuning."""
    torch.manual_seed(cfg.seed)
    sim = simulate(model, normalizer, windows.x[fold.train_idx], cfg.quant)
    teacher = distill.frozen_copy(model) if cfg.kd_alpha > 0 else None
    masker = Masker(sim)
    stages = []
    try:
        plan = [(s, cfg.epochs_per_stage) for s in schedule(cfg)] + [(cfg.target, cfg.final_epochs)]
        for k, (s, epochs) in enumerate(plan):
            if k < cfg.n_stages:  # the final round keeps the last stage's masks
                masker.update(masks(list(sim.weights), s, cfg.scope, masker.masks))
            f1 = _finetune(sim, teacher, normalizer, windows, fold, cfg, epochs)
            masker.enforce()
            stages.append({"stage": k, "sparsity": s, "epochs": epochs, "best_val_macro_f1": f1})
            if on_stage is not None:
                on_stage(k, sim, masker.masks)
    finally:
        masker.detach()
    return sim.eval(), masker.masks, stages


def layer_sparsity(program: Int8Program) -> list[dict]:
    """Per conv / linear of the int8 program: op index, kind, weights, zeros, sparsity, dense / CSR bytes."""
    out = []
    for i, op in enumerate(program.ops):
        if isinstance(op, (Conv1dInt8, LinearInt8)):
            w = gemm_matrix(op)
            zeros = int(w.size - np.count_nonzero(w))
            out.append({"op": i, "kind": "conv1d" if isinstance(op, Conv1dInt8) else "linear",
                        "weights": int(w.size), "zeros": zeros, "sparsity": zeros / w.size,
                        "dense_bytes": int(w.size), "csr_bytes": csr_bytes(encode_csr(w))})
    return out


def check_target(layers: list[dict], cfg: SparsityConfig) -> None:
    """Raise SparsityNotReached unless the program has the target's zeros (per layer, or overall)."""
    if cfg.scope == "layer":
        short = [d for d in layers if d["zeros"] < zeros_needed(cfg.target, d["weights"])]
    else:
        total, zeros = sum(d["weights"] for d in layers), sum(d["zeros"] for d in layers)
        short = [] if zeros >= zeros_needed(cfg.target, total) else layers
    if short:
        raise SparsityNotReached(f"int8 program below sparsity {cfg.target} ({cfg.scope}): "
                                 + ", ".join(f"op {d['op']} {d['sparsity']:.3f}" for d in short))


def apply(model: nn.Sequential, normalizer: Normalizer, windows: Windows, fold: Fold,
          cfg: SparsityConfig = SparsityConfig(), name: str = "sparse") -> Int8Artifact:
    sim, _, stages = prune_sim(model, normalizer, windows, fold, cfg)
    program = to_program(sim)
    layers = layer_sparsity(program)
    check_target(layers, cfg)
    total = sum(d["weights"] for d in layers)
    info = {"technique": "sparsity", "config": cfg.to_dict(), "stages": stages, "layers": layers,
            "sparsity": sum(d["zeros"] for d in layers) / total,
            "weight_bytes_dense": total, "weight_bytes_csr": sum(d["csr_bytes"] for d in layers)}
    return Int8Artifact(program, name, windows.classes, info=info)
