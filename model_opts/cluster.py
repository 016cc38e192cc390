"""Weight clustering of the int8 network (TFMOT-style, weights tied to their centroids while fine-tuning):
`apply(model, normalizer, windows, fold, cfg) -> Int8Artifact` whose every conv/linear holds at most `k`
distinct int8 weight values, one codebook per layer shared by all its output channels, 0 always included.

Steps:
1. PTQ simulation (`quant.ptq.simulate` on the fold's TRAINING windows, `cfg.quant`): BatchNorm folded,
   activation ranges calibrated. Each output channel's weight scale s_c = max|w_c| / 127 is read from the
   folded weights once and then frozen (`fakequant.weight_scales`, the PTQ scale), so the integer domain
   w / s_c in [-127, 127] is the one every channel of the layer shares.
2. Per layer, cluster the integer-domain values w / s_c (all channels together, 1-D) with scikit-learn
   KMeans (k clusters, `n_init` restarts, random_state = seed, one thread: deterministic). Then pin the
   centroid nearest 0 at exactly 0 and run Lloyd iterations (nearest-centroid assignment, mean update)
   with that centroid held at 0 until the assignment stops changing (`refine_iters` at most): a local
   optimum of k-means under the constraint "one centroid is 0", warm-started from the unconstrained
   one. Why not "k - 1 clusters on the nonzero values, plus 0": folded weights have no natural
   "nonzero" threshold, and k - 1 free clusters over all values would themselves place one centroid
   near 0, wasting a codebook entry next to the pinned one. A layer with fewer than k distinct values
   keeps them exactly (plus 0).
3. Fine-tune `ClusteredSim`: the simulation with each weight replaced by
   s_c * round_ste(clamp(centroid, -127, 127))[index] (indices fixed buffers, the k - 1 free centroids
   and the biases trained; the zero centroid is a constant). Centroids are stored divided by 127 so
   that one Adam learning rate suits both them and the biases (Adam steps are ~lr in parameter units:
   in integer units a step of 1e-3 would never move a rounded value). Training is `har.training.fit`
   on fold.train_idx, early stopping on fold.val_idx macro-F1; the test users are never read.
   Optionally (`keep_start_if_better`) the un-tuned clustering is kept when no epoch beats its
   validation macro-F1.
4. Integer program: `fakequant.to_program` gives the structure and the activation quantization, then
   each conv/linear gets int8 weights round(centroid)[index], its frozen s_c, and the int32 bias and
   (multiplier, shift) derived from s_in * s_c / s_out with the same helpers and float expressions as
   `to_program` (`bias_int`, `quantize_multipliers`). `intref.run` on that program is the ground truth;
   its class agreement with the fine-tuned simulation on training windows is recorded in `info`.
Limits: the gradient reaching a centroid is the sum over its members (TFMOT's), so a centroid with many
members moves as one; centroids that round to the same integer merge (fewer than k values); the global
pool's output scale may be moved one float32 step by `to_program`, as for PTQ, so the simulation and the
program can differ by one LSB at a rounding boundary (hence the agreement check, not bit equality).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits
from torch import nn

from har.errors import BadOptionError
from har.splits import Fold
from har.training import TrainConfig, fit
from har.windows import Normalizer, Windows
from model_opts.quant import fakequant
from model_opts.quant.artifact import Int8Artifact
from model_opts.quant.config import QuantConfig
from model_opts.quant.fakequant import QuantSim, bias_int, weight_scales
from model_opts.quant.fixedpoint import quantize_multipliers
from model_opts.quant.intref import Conv1dInt8, Int8Program, LinearInt8
from model_opts.quant.ptq import simulate

K_MIN, K_MAX = 2, 16  # a device palette holds at most 16 values; 1 would be "all zero"
W_MAX = 127  # symmetric int8 weights, as in fakequant


@dataclass(frozen=True)
class ClusterConfig:
    k: int = 16  # codebook entries per layer, the pinned 0 included
    quant: QuantConfig = QuantConfig(calibration="percentile")
    epochs: int = 6  # 0 = cluster only, no fine-tuning
    patience: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0  # decay would pull centroids (and biases) toward 0
    batch_size: int = 64
    n_init: int = 4  # KMeans restarts
    refine_iters: int = 50  # constrained Lloyd iterations after pinning 0
    agreement_windows: int = 2048  # training windows on which program and simulation are compared
    # let the un-tuned clustering compete in early stopping as "epoch -1" (off: one convention for every
    # fine-tuning step — qat and prune keep their fine-tuned model and `fit` alone picks the epoch)
    keep_start_if_better: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or not K_MIN <= self.k <= K_MAX:
            raise BadOptionError(f"cluster k must be an integer in [{K_MIN}, {K_MAX}], got {self.k!r}")
        if self.epochs < 0 or self.patience < 1 or self.lr <= 0 or self.batch_size < 1:
            raise BadOptionError("clustering needs epochs >= 0, patience >= 1, lr > 0 and batch_size >= 1")
        if self.n_init < 1 or self.refine_iters < 0 or self.agreement_windows < 1:
            raise BadOptionError("clustering needs n_init >= 1, refine_iters >= 0 and agreement_windows >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)  # ties -> lowest index


def cluster_values(values: np.ndarray, k: int, n_init: int = 4, seed: int = 0,
                   refine_iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(centroids float64 (m,) with centroids[0] == 0 and the rest ascending, m <= k; index int64 per value)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    distinct = np.unique(v)
    if len(distinct) < k:  # nothing to merge: keep every value exactly (0 added, m <= k)
        others = distinct[distinct != 0]
    else:
        with threadpool_limits(1):  # one thread: the same sums in the same order on every machine
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed, algorithm="lloyd").fit(v[:, None])
        c = np.sort(km.cluster_centers_.ravel())
        zero = int(np.abs(c).argmin())
        c[zero] = 0.0
        idx = _nearest(v, c)
        for _ in range(refine_iters):
            new = c.copy()
            for m in range(len(c)):
                if m != zero and np.any(idx == m):  # an empty cluster keeps its centroid
                    new[m] = v[idx == m].mean()
            new_idx = _nearest(v, new)
            c = new
            if np.array_equal(new_idx, idx):
                break
            idx = new_idx
        others = np.delete(c, zero)
    centroids = np.concatenate([[0.0], np.sort(others)])
    return centroids, _nearest(v, centroids)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class ClusteredSim(nn.Module):
    """`QuantSim` whose conv/linear weights are s_c * round(centroid)[index] (see module docstring, step 3).

    Holds the PTQ simulation (`sim`: activation quantization, biases, structure); its fp32 weights are only
    the clustering's starting point and are frozen."""

    # the input quantization and op order are QuantSim's own; only `_body` differs (the weights)
    forward = QuantSim.forward
    forward_raw = QuantSim.forward_raw

    def __init__(self, sim: QuantSim, k: int, n_init: int = 4, seed: int = 0, refine_iters: int = 50):
        super().__init__()
        if "dwconv" in sim.kinds:  # its integer program would keep the unclustered depthwise weights
            raise BadOptionError("clustering a depthwise-separable network is not supported (its depthwise "
                                 "layers have no shared codebook); cluster a standard one")
        self.sim = sim
        self.k = int(k)
        self.free = nn.ParameterList()  # per layer, the centroids other than the pinned 0, divided by 127
        for p, w in enumerate(sim.weights):
            w = w.detach()
            sim.weights[p].requires_grad_(False)  # unused by `_body`: only the clustering's start
            s = weight_scales(w)
            values = (w.double() / s.double().reshape(-1, *([1] * (w.ndim - 1)))).numpy()
            centroids, index = cluster_values(values, k, n_init, seed, refine_iters)
            self.register_buffer(f"scale{p}", s.clone())
            self.register_buffer(f"index{p}", torch.from_numpy(index.reshape(w.shape)))
            self.free.append(nn.Parameter(torch.from_numpy(centroids[1:] / W_MAX).float()))

    def act(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sim.act(k)

    def input_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sim.input_affine()

    def scale(self, p: int) -> torch.Tensor:
        return getattr(self, f"scale{p}")

    def index(self, p: int) -> torch.Tensor:
        return getattr(self, f"index{p}")

    def centroids(self, p: int) -> torch.Tensor:
        """Integer-valued centroids of layer p (float32, straight-through gradients), entry 0 is 0."""
        free = torch.clamp(round_ste(self.free[p] * W_MAX), -W_MAX, W_MAX)
        return torch.cat([torch.zeros(1, dtype=free.dtype), free])

    def int_weight(self, p: int) -> torch.Tensor:
        return self.centroids(p)[self.index(p)]

    def layer_weight(self, p: int) -> tuple[torch.Tensor, torch.Tensor]:
        """s_c * round(centroid)[index] and s_c: the weights `QuantSim._body` runs instead of its own."""
        w_scale = self.scale(p)
        return self.int_weight(p) * w_scale.reshape(-1, *([1] * (self.index(p).ndim - 1))), w_scale

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.sim._body(x, self.layer_weight)


def to_program(csim: ClusteredSim) -> Int8Program:
    """Integer program of `csim`: `fakequant.to_program`'s structure with the clustered gemm layers."""
    base = fakequant.to_program(csim.sim)
    ops = []
    with torch.no_grad():
        for op, meta in zip(base.ops, csim.sim.meta, strict=True):  # one program op per sim op
            if isinstance(op, (Conv1dInt8, LinearInt8)):
                p = meta["param"]
                w_scale = csim.scale(p)
                # op.input_scale / output_scale are float(cur_s) / float(s_out) of to_program (float32
                # values, exact round trip), so bias and multipliers use its very expressions
                in_scale = torch.tensor(op.input_scale, dtype=torch.float32)
                b_q = bias_int(csim.sim.biases[p].detach(), in_scale, w_scale)
                m, sh = quantize_multipliers(op.input_scale * w_scale.double().numpy() / op.output_scale)
                op = replace(op, weight=csim.int_weight(p).numpy().astype(np.int8),
                             bias=b_q.numpy().astype(np.int64).astype(np.int32), multiplier=m, shift=sh,
                             weight_scale=w_scale.double().numpy())
            ops.append(op)
    return replace(base, ops=tuple(ops)).validate()


def layer_info(program: Int8Program) -> list[dict]:
    """Per conv/linear: its op index, the codebook (sorted int8 values, 0 always in) and its size."""
    out = []
    for i, op in enumerate(program.ops):
        if isinstance(op, (Conv1dInt8, LinearInt8)):
            used = np.unique(op.weight)
            codebook = np.union1d(used, [0]).astype(int)
            out.append({"op": i, "kind": "conv1d" if isinstance(op, Conv1dInt8) else "linear",
                        "codebook": [int(v) for v in codebook], "distinct": int(len(used)),
                        "zero_fraction": float(np.mean(op.weight == 0))})
    return out


def cluster_sim(model: nn.Sequential, normalizer: Normalizer, windows: Windows, fold: Fold,
                cfg: ClusterConfig = ClusterConfig(), progress: bool = False) -> tuple[ClusteredSim, dict]:
    """Clustered, fine-tuned simulation of `model` (steps 1-3) and its fine-tuning log: validation
    macro-F1 per epoch (entry 0 = the clustering before any tuning) and whether that start was kept."""
    sim = simulate(model, normalizer, windows.x[fold.train_idx], cfg.quant)
    csim = ClusteredSim(sim, cfg.k, cfg.n_init, cfg.seed, cfg.refine_iters).eval()
    if cfg.epochs == 0:
        return csim, {"val_macro_f1": [], "kept_start": True}
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       patience=cfg.patience, seed=cfg.seed, axis_flips=windows.config.channels == "raw")
    x_tr, x_val = normalizer(windows.x[fold.train_idx]), normalizer(windows.x[fold.val_idx])
    start_state = copy.deepcopy(csim.state_dict())
    start_f1 = _val_macro_f1(csim, x_val, windows.y[fold.val_idx])
    csim, history = fit(csim, x_tr, windows.y[fold.train_idx], x_val, windows.y[fold.val_idx], tcfg,
                        desc=f"cluster k={cfg.k}", progress=progress)
    scores = [start_f1] + [h["val_macro_f1"] for h in history]
    # `fit` never scores the state it starts from; here that state is a legitimate candidate
    kept = cfg.keep_start_if_better and start_f1 >= max(scores[1:])
    if kept:
        csim.load_state_dict(start_state)
    return csim.eval(), {"val_macro_f1": scores, "kept_start": bool(kept)}


def _val_macro_f1(model: nn.Module, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """`fit`'s early-stopping score (macro-F1 of the eval-mode model on normalised validation windows)."""
    model.eval()
    with torch.inference_mode():
        pred = model(torch.as_tensor(x_val)).argmax(1).numpy()
    return float(f1_score(y_val, pred, average="macro", zero_division=0))


def apply(model: nn.Sequential, normalizer: Normalizer, windows: Windows, fold: Fold,
          cfg: ClusterConfig = ClusterConfig(), name: str = "clustered") -> Int8Artifact:
    csim, log = cluster_sim(model, normalizer, windows, fold, cfg)
    program = to_program(csim)
    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.agreement_windows, len(fold.train_idx))
    check = np.sort(rng.choice(fold.train_idx, size=n, replace=False))
    info = {"technique": "cluster", "config": cfg.to_dict(), "layers": layer_info(program),
            "train_class_agreement": fakequant.class_agreement(csim, program, windows.x[check]),
            **log}
    return Int8Artifact(program, name, windows.classes, info=info)
