"""Pipeline steps: one frozen, JSON-serialisable config per technique, and the rules that order them.

Every step belongs to one stage, and a pipeline's steps must follow the stage order
    input -> prune -> quantize -> runtime
with at most one step per stage ("prune" also holds distillation: both give a smaller fp32 CNN; "quantize"
also holds clustering and unstructured sparsity, which fine-tune the int8 simulation; "encode" chooses how
the firmware stores the int8 weights and leaves the integers as they are). Each step also consumes one kind of model and produces another:
    fp32-cnn   a `CompactCNN1d` + its training-user `Normalizer` (a pipeline starts from the fold's baseline)
    int8       an int8 program (`model_opts.quant.Int8Artifact`)
    pca-mlp    a PCA front-end + MLP (`model_opts.pca.PCAArtifact`): not a CNN, nothing can follow it
    artifact   a finished inference artifact (flat executor, session, ONNX Runtime file, cascade)
so `hybrid.pipeline.check_steps` refuses, with one readable line, both an impossible order (quantize before
prune) and an impossible combination (pruning a PCA MLP, ONNX Runtime or a cascade on an int8 program: ONNX
Runtime quantizes by itself and the cascade's stage 2 is an fp32 `har.model_io` model).
Steps that choose something (PTQ vs QAT, the PCA dimension k, the cascade threshold) list their candidates
and choose on the fold's VALIDATION users only (see `hybrid.execute`). `quick()` gives the smoke-run version
of a step (fewer epochs, same structure). Default epoch budgets are bounded so that the full run fits
15 minutes on two cores (the baseline's epoch budget is the dataset's, chosen by `har.sweep`).
`cache_fields()` are the fields that determine what the step builds (`OrtStep` builds both ONNX files
whichever one it returns, so `int8` is left out; `SparseStep` without distillation leaves out its temperature).
"""
from __future__ import annotations

import re

from dataclasses import asdict, dataclass, replace
from typing import ClassVar, Union

from har.errors import BadOptionError

STAGES = ("input", "prune", "quantize", "encode", "runtime")
FP32, INT8, MLP, FINAL = "fp32-cnn", "int8", "pca-mlp", "artifact"
QUANT_METHODS = ("ptq", "qat")


class PipelineError(BadOptionError):
    """A pipeline whose steps are in an impossible order or combination."""


def _positive(name: str, **values: float) -> None:
    bad = {k: v for k, v in values.items() if v is None or v < 1}
    if bad:
        raise BadOptionError(f"{name}: {', '.join(f'{k}={v}' for k, v in bad.items())} must be >= 1")


@dataclass(frozen=True)
class PCAStep:
    """PCA on the flattened, normalised windows + an MLP (`model_opts.pca`); k chosen on validation users."""

    ks: tuple[int, ...] = (8, 16, 32)
    hidden: int = 64
    epochs: int = 30
    patience: int = 8
    kind: ClassVar[str] = "pca"
    stage: ClassVar[str] = "input"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = MLP

    def __post_init__(self) -> None:
        if not self.ks:
            raise BadOptionError("pca: give at least one k")
        _positive("pca", hidden=self.hidden, epochs=self.epochs, patience=self.patience, k=min(self.ks))

    def quick(self) -> "PCAStep":
        return replace(self, ks=self.ks[:2], epochs=8, patience=4)


@dataclass(frozen=True)
class ContrastiveStep:
    """SimCLR pretraining of a CNN of the baseline's widths on the training users' unlabelled windows, then
    the whole network fine-tuned with all labels (`model_opts.contrastive`). Replaces the baseline CNN."""

    pretrain_epochs: int = 8
    head_epochs: int = 12
    head_patience: int = 5
    batch_size: int = 256
    kind: ClassVar[str] = "contrastive"
    stage: ClassVar[str] = "input"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = FP32

    def __post_init__(self) -> None:
        _positive("contrastive", pretrain_epochs=self.pretrain_epochs, head_epochs=self.head_epochs,
                  head_patience=self.head_patience, batch_size=self.batch_size)

    def quick(self) -> "ContrastiveStep":
        return replace(self, pretrain_epochs=2, head_epochs=4, head_patience=2)


@dataclass(frozen=True)
class PruneStep:
    """Structured L1 pruning of every conv's output channels with fine-tuning (`model_opts.prune`)."""

    ratio: float = 0.7
    importance: str = "l1"
    steps: int = 2
    finetune_epochs: int = 5
    patience: int = 3
    lr: float = 1e-3
    kind: ClassVar[str] = "prune"
    stage: ClassVar[str] = "prune"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = FP32

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise BadOptionError(f"prune: ratio must be in [0, 1), got {self.ratio}")
        _positive("prune", steps=self.steps)

    def quick(self) -> "PruneStep":
        return replace(self, steps=1, finetune_epochs=2, patience=1)


@dataclass(frozen=True)
class QuantStep:
    """int8: PTQ is calibrated with every method in `calibrations` and the calibration most accurate on
    the validation users is kept (ties: the earlier one); then every method in `methods` is built (PTQ
    with that calibration, QAT starting from it) and the most accurate on the validation users is kept
    (ties: the earlier method). No calibration or method is fixed from a test-user table."""

    methods: tuple[str, ...] = QUANT_METHODS
    calibrations: tuple[str, ...] = ("minmax", "percentile")
    calib_windows: int = 2048
    qat_epochs: int = 8
    qat_patience: int = 3
    qat_lr: float = 3e-4
    kind: ClassVar[str] = "quantize"
    stage: ClassVar[str] = "quantize"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = INT8

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in QUANT_METHODS]
        if bad or not self.methods:
            raise BadOptionError(f"quantize: methods must be a non-empty subset of {list(QUANT_METHODS)}, "
                                 f"got {list(self.methods)}")
        from model_opts.quant.config import CALIBRATIONS  # noqa: PLC0415 -- the one list of calibrations
        if not self.calibrations or any(c not in CALIBRATIONS for c in self.calibrations):
            raise BadOptionError(f"quantize: calibrations must be a non-empty subset of {list(CALIBRATIONS)}, "
                                 f"got {list(self.calibrations)}")
        _positive("quantize", calib_windows=self.calib_windows, qat_epochs=self.qat_epochs,
                  qat_patience=self.qat_patience)

    def quick(self) -> "QuantStep":
        return replace(self, calib_windows=512, qat_epochs=1, qat_patience=1)


@dataclass(frozen=True)
class OrtStep:
    """ONNX Runtime peer of the fp32 CNN (`har.measure.peers`): the exported file, or its static int8
    (QOperator) quantisation calibrated on training users' windows."""

    int8: bool = False
    n_calibration_windows: int = 512
    kind: ClassVar[str] = "onnxruntime"
    stage: ClassVar[str] = "runtime"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = FINAL

    def __post_init__(self) -> None:
        _positive("onnxruntime", n_calibration_windows=self.n_calibration_windows)

    def quick(self) -> "OrtStep":
        return replace(self, n_calibration_windows=256)

    def cache_fields(self) -> dict:
        return {"n_calibration_windows": self.n_calibration_windows}


@dataclass(frozen=True)
class CascadeStep:
    """A tiny always-resident stage 1 + the fp32 CNN as lazily loaded stage 2 (`model_opts.cascade`).
    The threshold is chosen on validation users: the least stage-2 traffic within `tolerance_pp` of
    stage 2 alone (`model_opts.report2.select_threshold`)."""

    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
    tolerance_pp: float = 1.0
    stage1_widths: tuple[int, ...] = (8, 8)
    epochs: int = 20
    patience: int = 5
    kind: ClassVar[str] = "cascade"
    stage: ClassVar[str] = "runtime"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = FINAL

    def __post_init__(self) -> None:
        if not self.thresholds or min(self.thresholds) < 0:
            raise BadOptionError("cascade: give at least one threshold, all >= 0")
        if self.tolerance_pp < 0:
            raise BadOptionError(f"cascade: tolerance_pp must be >= 0, got {self.tolerance_pp}")
        _positive("cascade", epochs=self.epochs, patience=self.patience, width=min(self.stage1_widths or (0,)))

    def quick(self) -> "CascadeStep":
        return replace(self, epochs=8, patience=4)


@dataclass(frozen=True)
class DistillStep:
    """Knowledge distillation (`model_opts.distill`): a student of the pruned widths (`ratio` of every conv's
    channels removed, as `PruneStep` would leave them) trained from scratch on the fold's training users
    against the fold's baseline (or an ensemble of it, `teachers`) as teacher (KL at a temperature weighted alpha, + cross-entropy). Every
    (alpha, temperature) in `alphas` x `temperatures` is trained and the student with the best macro-F1 on
    the VALIDATION users is kept (ties: the earlier, alphas outer). `teachers` > 1: the teacher is the mean
    logits of the baseline and `teachers - 1` more of its kind at other seeds (`model_opts.distill.Ensemble`;
    each member trained once per fold with the baseline's recipe and cached). `alphas=(0.0,)` is the
    control: the same student, seed and schedule with cross-entropy only (one teacher, whose logits the loss
    weights by 0; no ensemble members are trained).
    `epoch_multiple` stretches the student's schedule (epochs and patience) to that many times `epochs` /
    `patience`; ensemble members keep the unstretched baseline recipe."""

    ratio: float = 0.7
    temperatures: tuple[float, ...] = (2.0, 4.0)
    alphas: tuple[float, ...] = (0.3, 0.7)
    epochs: int = 0  # 0: the dataset's epoch budget (har.defaults), the baseline's
    patience: int = 5
    teachers: int = 1  # ensemble size (the baseline + teachers - 1 more seeds)
    epoch_multiple: int = 1  # the student's schedule: epoch_multiple x (epochs, patience)
    kind: ClassVar[str] = "distill"
    stage: ClassVar[str] = "prune"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = FP32

    def __post_init__(self) -> None:
        if (not 0.0 <= self.ratio < 1.0 or not self.temperatures or not self.alphas
                or len(set(self.temperatures)) != len(self.temperatures) or len(set(self.alphas)) != len(self.alphas)
                or any(not 0 < t < float("inf") for t in self.temperatures) or any(not 0.0 <= a <= 1.0 for a in self.alphas)):
            raise BadOptionError(f"distill: need 0 <= ratio < 1, temperatures > 0, 0 <= alphas <= 1, both lists "
                                 f"non-empty (got {self.ratio}, {list(self.temperatures)}, {list(self.alphas)})")
        _positive("distill", patience=self.patience, teachers=self.teachers, epoch_multiple=self.epoch_multiple)
        if not isinstance(self.epoch_multiple, int):
            raise BadOptionError(f"distill: epoch_multiple must be a whole number, got {self.epoch_multiple!r}")

    @property
    def control(self) -> bool:
        return self.alphas == (0.0,)

    def quick(self) -> "DistillStep":
        return replace(self, epochs=2, patience=1, epoch_multiple=1)


@dataclass(frozen=True)
class SeparableStep:
    """Operations optimisation (`model_opts.separable`): the baseline's architecture with every conv block
    but the first made depthwise-separable (depthwise k-tap conv + pointwise 1x1 conv), trained from
    scratch with the baseline's recipe on the fold's training users. `widths` () = the baseline's."""

    widths: tuple[int, ...] = ()
    epochs: int = 0  # 0: the dataset's epoch budget (har.defaults), the baseline's
    kind: ClassVar[str] = "separable"
    stage: ClassVar[str] = "prune"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = FP32

    def __post_init__(self) -> None:
        if any(w < 1 for w in self.widths) or self.epochs < 0:
            raise BadOptionError(f"separable: widths must be >= 1 and epochs >= 0, got {self.widths}, {self.epochs}")

    def quick(self) -> "SeparableStep":
        return replace(self, epochs=2)


@dataclass(frozen=True)
class ClusterStep:
    """Weight clustering (`model_opts.cluster`): per layer k shared int8 values (one pinned at 0), found by
    k-means on the PTQ simulation's weights and fine-tuned with the weights tied to their centroids."""

    k: int = 16
    epochs: int = 6
    patience: int = 3
    lr: float = 3e-4
    kind: ClassVar[str] = "cluster"
    stage: ClassVar[str] = "quantize"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = INT8

    def __post_init__(self) -> None:
        if not 2 <= self.k <= 16:
            raise BadOptionError(f"cluster: k must be in [2, 16] (a palette holds 16 values), got {self.k}")
        _positive("cluster", epochs=self.epochs, patience=self.patience)

    def quick(self) -> "ClusterStep":
        return replace(self, epochs=1, patience=1)


@dataclass(frozen=True)
class SparseStep:
    """Unstructured magnitude pruning of the int8 simulation to `target` sparsity, raised gradually
    (`model_opts.sparsity`). Every scope in `scopes` ("layer": each matrix at the target; "global": the
    target over all of them by one magnitude ranking; "erk": the target over all of them, each matrix's share
    from its shape) is built with every schedule in `schedules` ("<stages>x<epochs per stage>+<final
    epochs>"; patience max(2, epochs per stage)), and the int8 program most accurate on the VALIDATION users is
    kept (ties: the earlier, scopes outer, then schedules, then `kd_alphas`). Which scope suits a network
    differs per fold (a 30-weight first filter, 6 channels x 5 taps, keeps 3 weights at 90 % per layer), so it
    is chosen, never fixed from a test-user table. `kd_alphas` is a third axis: the fine-tuning distils the
    dense network into its pruned self at that weight (0 = labels only) and temperature `kd_temperature`.
    The default is labels only: distillation at 0.7 / T = 4 (`DistillConfig`'s defaults) tied with it on the
    phone's validation users (best candidate per fold 86.14 % against 86.13 %, mean of 4 folds), so the
    simpler recipe stays (README, sparsity, has both runs' test figures)."""

    target: float = 0.9
    scopes: tuple[str, ...] = ("layer", "global", "erk")
    schedules: tuple[str, ...] = ("4x2+4", "6x3+8")
    kd_alphas: tuple[float, ...] = (0.0,)
    kd_temperature: float = 4.0
    kind: ClassVar[str] = "sparsity"
    stage: ClassVar[str] = "quantize"
    accepts: ClassVar[tuple[str, ...]] = (FP32,)
    produces: ClassVar[str] = INT8

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise BadOptionError(f"sparsity: target must be in (0, 1), got {self.target}")
        from model_opts.sparsity import SCOPES  # noqa: PLC0415 -- the one list of scopes
        if not self.scopes or any(s not in SCOPES for s in self.scopes) or len(set(self.scopes)) != len(self.scopes):
            raise BadOptionError(f"sparsity: scopes must be distinct values of {list(SCOPES)}, got {list(self.scopes)}")
        if not self.schedules or len(set(self.schedules)) != len(self.schedules):
            raise BadOptionError(f"sparsity: schedules must be a non-empty list without repeats, got {list(self.schedules)}")
        for text in self.schedules:
            parse_schedule(text)
        if (not self.kd_alphas or len(set(self.kd_alphas)) != len(self.kd_alphas)
                or any(not 0.0 <= a <= 1.0 for a in self.kd_alphas) or not 0 < self.kd_temperature < float("inf")):
            raise BadOptionError(f"sparsity: kd_alphas must be distinct values in [0, 1] and kd_temperature > 0, got "
                                 f"{list(self.kd_alphas)}, {self.kd_temperature}")

    def quick(self) -> "SparseStep":
        return replace(self, schedules=("2x1+1",))

    def cache_fields(self) -> dict:
        d = asdict(self)
        if not any(self.kd_alphas):  # labels only: no teacher, its temperature changes nothing built
            del d["kd_temperature"]
        return d


def parse_schedule(text: str) -> tuple[int, int, int]:
    """"<stages>x<epochs per stage>+<final epochs>" -> (stages, epochs per stage, final epochs)."""
    m = re.fullmatch(r"(\d+)x(\d+)\+(\d+)", str(text))
    if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise BadOptionError(f"sparsity: schedule {text!r} is not '<stages >= 1>x<epochs per stage >= 1>+<final "
                             "epochs>', e.g. '4x2+4'")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


@dataclass(frozen=True)
class EncodeStep:
    """How the firmware stores the int8 weights (`firmware.storage`): palette, huffman, huffman-palette,
    bitmask, csr or auto (per layer, the fewest bytes). The integers, and so every host figure and the
    accuracy, are unchanged; flash, RAM and instructions are the firmware's."""

    format: str = "auto"
    kind: ClassVar[str] = "encode"
    stage: ClassVar[str] = "encode"
    accepts: ClassVar[tuple[str, ...]] = (INT8,)
    produces: ClassVar[str] = INT8

    def __post_init__(self) -> None:
        from firmware.storage import FORMATS  # noqa: PLC0415 -- the one list of storage formats
        if self.format not in FORMATS or self.format == "dense":
            raise BadOptionError(f"encode: format must be one of {', '.join(f for f in FORMATS if f != 'dense')}, "
                                 f"got {self.format!r}")

    def quick(self) -> "EncodeStep":
        return self


@dataclass(frozen=True)
class SystemStep:
    """Flatten the (fp32 or int8) network and run it as `system_opts.artifacts` describes: flat executor,
    static buffer pool (planned arena, no heap allocation per inference) and/or lazily loaded weights."""

    static_pool: bool = False
    lazy_weights: bool = False
    planner: str = "greedy"
    policy: str = "lazy-release"
    int8_kernels: str = "c"  # int8 static pool: compiled C kernels (`system_opts.buffer_pool_c`)
    kind: ClassVar[str] = "system"
    stage: ClassVar[str] = "runtime"
    accepts: ClassVar[tuple[str, ...]] = (FP32, INT8)
    produces: ClassVar[str] = FINAL

    def quick(self) -> "SystemStep":
        return self


Step = Union[PCAStep, ContrastiveStep, PruneStep, QuantStep, OrtStep, CascadeStep, DistillStep, SeparableStep,
             ClusterStep, SparseStep, EncodeStep, SystemStep]
STEP_TYPES: dict[str, type] = {t.kind: t for t in (PCAStep, ContrastiveStep, PruneStep, QuantStep, OrtStep,
                                                   CascadeStep, DistillStep, SeparableStep, ClusterStep, SparseStep,
                                                   EncodeStep, SystemStep)}
