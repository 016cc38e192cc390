"""`Pipeline`: model-centric and system-level steps composed from one frozen, JSON-serialisable config.

A `PipelineConfig` is a name, a family (for the report) and a tuple of steps (`hybrid.steps`). Building
(`Pipeline.build(ctx, cache)`) starts from the fold's baseline fp32 CNN and runs the steps in order:
input transforms (PCA, contrastive pretraining) -> pruning -> quantization -> runtime (flatten / plan /
lazy weights, ONNX Runtime, cascade). The order and the combination are checked when the config is
made, not halfway through a run: an impossible one raises `PipelineError` (a `HarError`).
A pipeline that ends on an fp32 CNN is measured as torch eager (`TorchArtifact`), one that ends on an int8
program as the integer-only numpy reference (`Int8Artifact`).
Steps are serialised (`step_to_dict` / `step_from_dict`), keyed (`cache_fields`, `stage_key`) and ordered
(`check_steps`) here; `hybrid.steps` holds only the configs.
`PRESETS` holds the variants of `python -m hybrid.run`, in report order; `VARIANTS` their names.
Why these settings: the pruning ratio 0.7 is fixed in advance from the byte budget (model bytes
depend on the architecture only; `python -m hybrid.run --budget-kib N` lists every ratio's bytes in
`budget.csv`), not tuned on any users; every data-driven choice (PTQ calibration and method, k,
threshold) is made per fold on validation users by the step itself. The hybrid leaves lazy weights out:
they change no model byte (stored weights are counted either way) and slow the static pool down.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from har.errors import BadOptionError
from hybrid.codehash import kind_digest
from hybrid.steps import (FINAL, FP32, INT8, MLP, CascadeStep, ClusterStep, ContrastiveStep, DistillStep, EncodeStep,
                          OrtStep, PCAStep, PipelineError, PruneStep, QuantStep, SeparableStep, SparseStep, STAGES,
                          STEP_TYPES, Step, SystemStep)

FAMILIES = ("baseline", "peer", "model", "system", "hybrid")


# -- steps: serialised, keyed, ordered ------------------------------------------------------------------

def step_to_dict(step: Step) -> dict:
    return {"kind": step.kind, **asdict(step)}


def cache_fields(step: Step) -> dict:
    own = getattr(step, "cache_fields", None)
    return {"kind": step.kind, **(own() if own else asdict(step))}


def step_from_dict(d: dict) -> Step:
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in STEP_TYPES:
        raise BadOptionError(f"unknown pipeline step {kind!r}; choose one of {', '.join(STEP_TYPES)}")
    cls = STEP_TYPES[kind]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise BadOptionError(f"step {kind!r} has no option(s) {unknown}")
    # JSON has no tuples: lists come back as the tuples the frozen configs hold
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def check_steps(steps: tuple[Step, ...]) -> str:
    """The kind of model the steps end with; `PipelineError` for an impossible order or combination."""
    state, last_stage, last_kind = FP32, -1, "the baseline"
    for step in steps:
        if type(step) not in STEP_TYPES.values():
            raise PipelineError(f"{step!r} is not a pipeline step")
        rank = STAGES.index(step.stage)
        if rank <= last_stage:
            raise PipelineError(f"step {step.kind!r} ({step.stage} stage) cannot follow {last_kind!r} "
                                f"({STAGES[last_stage]} stage): the order is {' -> '.join(STAGES)}, one step each")
        if state not in step.accepts:
            raise PipelineError(f"step {step.kind!r} needs a {' or '.join(step.accepts)} model, but after "
                                f"{last_kind!r} the model is a {state}")
        state, last_stage, last_kind = step.produces, rank, step.kind
    return state


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    steps: tuple[Step, ...] = ()
    family: str = "model"
    description: str = ""
    # False when a step chooses the architecture per fold (PCA's k): then bytes may differ between folds
    fixed_architecture: bool = True

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ,"):
            raise BadOptionError(f"pipeline name {self.name!r} must be non-empty, without spaces, commas or slashes")
        if self.family not in FAMILIES:
            raise BadOptionError(f"unknown family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        object.__setattr__(self, "steps", tuple(self.steps))
        check_steps(self.steps)

    @property
    def output_kind(self) -> str:
        return check_steps(self.steps)

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "description": self.description,
                "fixed_architecture": self.fixed_architecture, "steps": [step_to_dict(s) for s in self.steps]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        try:
            steps = tuple(step_from_dict(s) for s in d["steps"])
            return cls(d["name"], steps, d.get("family", "model"), d.get("description", ""),
                       d.get("fixed_architecture", True))
        except (KeyError, TypeError) as exc:
            raise BadOptionError(f"unusable pipeline config: {exc}") from None

    def quick(self) -> "PipelineConfig":
        return replace(self, steps=tuple(s.quick() for s in self.steps))


def stage_key(prefix: dict[str, Any], steps: tuple[Step, ...]) -> str:
    """Cache key of the result of `steps` (all of them) applied under `prefix` (baseline, fold, seed): their
    configs and the digest of each one's source code (`hybrid.codehash`), so edited code is rebuilt."""
    doc = {"prefix": prefix, "steps": [cache_fields(s) for s in steps], "code": [kind_digest(s.kind) for s in steps]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _p(name: str, family: str, description: str, *steps: Step, fixed: bool = True) -> PipelineConfig:
    return PipelineConfig(name, tuple(steps), family, description, fixed)


_PRUNE = PruneStep(ratio=0.7)
_QUANT = QuantStep()
_POOL = SystemStep(static_pool=True)
PRESETS: dict[str, PipelineConfig] = {p.name: p for p in (
    _p("baseline", "baseline", "the har.train CNN (32, 48, 64), fp32, torch eager"),
    _p("ort-fp32", "peer", "the baseline exported to ONNX, ONNX Runtime CPU, 1 thread", OrtStep(int8=False)),
    _p("ort-int8", "peer", "ONNX Runtime static int8 (QOperator, per-channel), calibrated on training users",
       OrtStep(int8=True)),
    _p("int8", "model", "int8 (PTQ or QAT, chosen on validation users), integer-only numpy reference", _QUANT),
    _p("pruned", "model", "L1 structured pruning, 70 % of every conv's channels removed, fine-tuned; fp32 torch",
       _PRUNE),
    _p("pca", "model", "PCA of the flattened normalised window (k chosen on validation users) + MLP, fp32",
       PCAStep(), fixed=False),
    _p("contrastive", "model", "SimCLR-pretrained CNN (32, 48, 64) fine-tuned with all labels, fp32 torch",
       ContrastiveStep()),
    _p("cascade", "model", "tiny stage 1 (8, 8) always resident; the baseline as lazily loaded stage 2 below a "
       "confidence threshold chosen on validation users", CascadeStep()),
    _p("flat", "system", "the baseline flattened (BN and normaliser folded), numpy flat executor", SystemStep()),
    _p("static-pool", "system", "flat program in one planned static arena (zero heap allocation per inference)",
       SystemStep(static_pool=True)),
    _p("lazy-weights", "system", "flat executor reading each layer's weights from a memory-mapped weight file",
       SystemStep(lazy_weights=True)),
    _p("system-all", "system", "static pool fed by the lazy weight file (every system technique)",
       SystemStep(static_pool=True, lazy_weights=True)),
    _p("model-all", "model", "pruned (0.7) then int8 (PTQ or QAT on validation users), integer-only numpy "
       "reference", _PRUNE, _QUANT),
    _p("clustered", "model", "pruned (0.7), then int8 with 16 shared weight values per layer (k-means, one pinned "
       "at 0; fine-tuned with tied weights); firmware stores 4-bit palette indices, decoded into the arena",
       _PRUNE, ClusterStep(k=16), EncodeStep("palette"), _POOL),
    _p("clustered-direct", "model", "the clustered variant's program with its 4-bit indices and codebook read "
       "straight from flash by the palette gemm (no decoder, no arena slot)", _PRUNE, ClusterStep(k=16),
       EncodeStep("palette-direct"), _POOL),
    _p("huffman", "model", "Deep Compression's chain: the clustered variant's program with its palette indices "
       "Huffman-coded per layer (canonical codes), decoded into the arena right before each layer", _PRUNE,
       ClusterStep(k=16), EncodeStep("huffman-palette"), _POOL),
    _p("sparse", "model", "int8 (the baseline's widths) with 90 % of the weights zero (gradual magnitude pruning, "
       "fine-tuned; per-layer, global or ERK scope and schedule chosen on validation users); firmware stores CSR and "
       "runs the sparse gemm", SparseStep(target=0.9),
       EncodeStep("csr"), _POOL),
    _p("distilled", "model", "a student of the pruned widths (0.7) trained from scratch with an ensemble teacher "
       "(the baseline + 2 more seeds of it, mean logits; KL at T in {2, 4}, alpha in {0.3, 0.7}, chosen on "
       "validation users, + cross-entropy) on twice the baseline's epochs and patience, then int8",
       DistillStep(teachers=3, epoch_multiple=2), _QUANT, _POOL),
    _p("student", "model", "the distilled variant's control: the same student, seed and schedule (twice the "
       "baseline's epochs and patience) trained with cross-entropy only (alpha = 0), then int8",
       DistillStep(alphas=(0.0,), epoch_multiple=2), _QUANT, _POOL),
    _p("separable", "model", "the baseline's widths with every conv block but the first depthwise-separable "
       "(depthwise 5-tap + pointwise 1x1), trained from scratch like the baseline, then int8", SeparableStep(),
       _QUANT, _POOL),
    _p("hybrid", "hybrid", "pruned (0.7) -> int8 (PTQ or QAT on validation users) -> int8 static pool run by "
       "compiled C kernels (planned arena, zero heap allocation per inference)", _PRUNE, _QUANT, _POOL),
)}
VARIANTS: tuple[str, ...] = tuple(PRESETS)


def preset(name: str) -> PipelineConfig:
    if name not in PRESETS:
        raise BadOptionError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return PRESETS[name]


@dataclass
class Built:
    """A built variant for one fold: the artifact to measure and what was chosen on validation users."""

    artifact: Any
    choices: dict = field(default_factory=dict)

    def close(self) -> None:
        getattr(self.artifact, "close", lambda: None)()


class Pipeline:
    def __init__(self, config: PipelineConfig):
        check_steps(config.steps)
        self.config = config

    def build(self, ctx, cache) -> Built:
        """Run the steps for one fold (`hybrid.execute.FoldContext`), each finished step cached in `cache`
        (`hybrid.cache.StageCache`) under the hash of everything that determines it."""
        from hybrid.execute import State, finish, run_step
        state = State(FP32, model=ctx.model, normalizer=ctx.normalizer)
        choices: dict = {}
        for i, step in enumerate(self.config.steps):
            key = stage_key(ctx.cache_prefix(), self.config.steps[:i + 1])
            with cache.claim(key):  # concurrent workers: one builds the entry, the others load it
                state, chosen = run_step(step, state, ctx, cache, key, self.config.name)
            if chosen:
                choices[step.kind] = chosen
        return Built(finish(state, ctx, self.config.name), choices)


__all__ = ["PipelineConfig", "Pipeline", "PipelineError", "Built", "PRESETS", "VARIANTS", "preset", "stage_key",
           "FP32", "INT8", "MLP", "FINAL"]
