"""`python -m hybrid.run --dataset mnist|fashion-mnist|cifar10`: the image CNN of the dataset and every
applicable technique, each through the graph path (torch.fx import, int8, planned arena, C firmware).

Steps of `run(settings)`:
1. Data (`har.datasets.images`): the published training set minus a stratified, seeded validation set of
   5,000 images (every choice below is made on it), the published test set (only ever scored).
2. Variants (`VARIANTS`), each a float model then `_ptq`:
   float      the baseline CNN of the dataset (`PRESETS`), trained with early stopping on validation;
   int8       its PTQ: calibration on 512 training images, the range rule (min/max or the 99.99th
              percentile) chosen on validation accuracy;
   pruned     channels pruned by half (`techniques.prune_channels`, 2 steps, each fine-tuned), then PTQ;
   sparse     80 % of every conv / linear weight zeroed by gradual magnitude pruning, fine-tuned, PTQ;
   clustered  the int8 baseline's weights clustered to 16 values per layer (no retraining);
   separable  the depthwise-separable architecture (every block but the first), trained, PTQ;
   student    half the widths, trained plainly (the control of `distilled`);
   distilled  the same student trained by knowledge distillation from the baseline (alpha 0.5, T = 4);
   hybrid     the separable student, distilled, PTQ, clustered to 16 values per layer;
   small      seed 000's budget: the separable, distilled CNN at width factor 0.25, 0.5, 0.75, 0.875 or 1 whose
              int8 validation accuracy is best among those storing <= 3.6 KiB of weights (bytes depend on
              the architecture only, so over-budget candidates are never trained).
   Trained models are cached (`hybrid.cache.StageCache`, safetensors + config JSON; keys hold the configs,
   the seed, the data digest and the training code's digest), so a rerun measures without retraining.
3. Measure (`hybrid.images_measure`): int8 accuracy on validation and test through the integer reference;
   weights and planned arena; the firmware on Cortex-M4 and M0+ under QEMU (flash and RAM per ELF
   category, painted stack, instructions per image, bit-exact on test images), TFLM (bit-exact, arena),
   64-bit Arm Linux under qemu-aarch64 (bit-exact). `summary.csv`, `report.md`, `pareto.png`, `run.json`,
   one exported library per variant under `firmware/`.
`--quick`: 3,000 training, 1,000 validation and 1,000 test images, 2 epochs, a 4-8-8 network: a smoke run.
Limits: one seed; clustered layers are stored as 4-bit palettes (flash shrinks), sparse layers dense (the
zeros are counted, not yet skipped or compressed). Cache keys hold every recipe setting (`what`), the
training code's digest (`TRAINING_CODE`) and the data; like `hybrid.codehash`, library versions are not
hashed, and this module's own glue (which settings reach the trainer) is keyed by those settings only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from har.datasets import images as image_data
from har.errors import BadOptionError
from har.image_cnn import ImageCNN, ImageCNNConfig, ImageTrainConfig, accuracy, to_float, train
from har.paths import data_root
from hybrid.cache import StageCache
from hybrid.codehash import source_digest
from model_opts.graph import intref
from model_opts.graph.fx_import import import_module
from model_opts.graph.quantize import QuantizeConfig, quantize
from model_opts.graph.techniques import (ChannelPruneConfig, GraphClusterConfig, SparsityConfig, cluster,
                                         prune_channels, sparsify)

VARIANTS = ("float", "int8", "pruned", "sparse", "clustered", "separable", "student", "distilled", "hybrid", "small")
PRESETS = {
    "mnist": (ImageCNNConfig((16, 32, 64)), ImageTrainConfig(max_epochs=20, patience=4)),
    "fashion-mnist": (ImageCNNConfig((32, 64, 64), residual=True), ImageTrainConfig(max_epochs=20, patience=4,
                                                                                    hflip=True)),
    "cifar10": (ImageCNNConfig((32, 64, 128), residual=True, in_channels=3),
                ImageTrainConfig(max_epochs=30, patience=5, hflip=True, shift_px=4)),
}
QUICK = {"fit": 3000, "val": 1000, "test": 1000, "widths": (4, 8, 8), "epochs": 2}
N_VAL = 5000
N_CALIBRATION = 512
PERCENTILES = (100.0, 99.99)
# the code a trained model depends on (model, trainer, data, pruning / sparsity); the importer and the
# quantizer only read trained models, so their edits re-measure without retraining
TRAINING_CODE = ("har/image_cnn.py", "har/datasets/images.py", "model_opts/graph/techniques.py")
FINETUNE_EPOCHS = 3
KD = {"alpha": 0.5, "temperature": 4.0}
SMALL_FACTORS = (0.25, 0.5, 0.75, 0.875, 1.0)
SMALL_BUDGET_BYTES = int(3.6 * 1024)


@dataclass(frozen=True)
class ImageRunSettings:
    dataset: str
    out: Path
    data_dir: str | None = None
    quick: bool = False
    seed: int = 0
    variants: tuple[str, ...] = VARIANTS
    cache_dir: Path | None = None
    progress: bool = True
    firmware: bool = True
    tflm_arena: bool = True  # the smallest TFLM arena (a subprocess search per variant)


def check_variants(names) -> tuple[str, ...]:
    names = tuple(names)
    for n in names:
        if n not in VARIANTS:
            raise BadOptionError(f"unknown image variant {n!r}; choose from {', '.join(VARIANTS)}")
    return names


@dataclass
class Data:
    fit: image_data.ImageSet
    val: image_data.ImageSet
    test: image_data.ImageSet
    digest: str


def load_data(settings: ImageRunSettings) -> Data:
    root = data_root(settings.data_dir)
    train_set = image_data.load(settings.dataset, root, "train")
    test = image_data.load(settings.dataset, root, "test")
    fit, val = image_data.split_validation(train_set, min(N_VAL, len(train_set) // 10), settings.seed)
    if settings.quick:
        rng = np.random.default_rng(settings.seed)
        fit = fit.subset(np.sort(rng.permutation(len(fit))[:QUICK["fit"]]))
        val = val.subset(np.arange(min(QUICK["val"], len(val))))
        test = test.subset(np.arange(min(QUICK["test"], len(test))))
    h = hashlib.sha256()
    for part in (fit, val, test):
        h.update(part.images.tobytes())
        h.update(part.labels.tobytes())
    return Data(fit, val, test, h.hexdigest()[:16])


def _scaled(cfg: ImageCNNConfig, factor: float, **changes) -> ImageCNNConfig:
    return replace(cfg, widths=tuple(max(2, int(round(w * factor))) for w in cfg.widths), **changes)


class ImageRunner:
    """Trains (or loads) the float model of every variant and quantizes it (steps 1-2 of the module docstring)."""

    def __init__(self, settings: ImageRunSettings, data: Data | None = None):
        self.settings = settings
        self.data = data or load_data(settings)
        self.cache = StageCache(settings.cache_dir)
        cfg, tcfg = PRESETS[settings.dataset]
        n_classes = len(self.data.fit.classes)
        cfg = replace(cfg, in_channels=self.data.fit.images.shape[1], n_classes=n_classes)
        if settings.quick:
            cfg = replace(cfg, widths=QUICK["widths"])
            tcfg = replace(tcfg, max_epochs=QUICK["epochs"], patience=QUICK["epochs"])
        self.cfg, self.tcfg = cfg, replace(tcfg, seed=settings.seed)
        self.code = source_digest(TRAINING_CODE)
        self.input_shape = tuple(self.data.fit.images.shape[1:])
        self.log: dict[str, dict] = {}
        self.ptq_log: dict[str, dict] = {}
        self._ptq: dict[int, tuple] = {}  # id of a model held in _models -> (int8 graph, choice info)
        self._models: dict[str, torch.nn.Module] = {}

    # ---- training, cached
    def _key(self, what: dict) -> str:
        text = json.dumps({"what": what, "data": self.data.digest, "code": self.code, "seed": self.settings.seed,
                           "train": dataclasses.asdict(self.tcfg), "dataset": self.settings.dataset}, sort_keys=True,
                          default=str)
        return "img-" + hashlib.sha256(text.encode()).hexdigest()[:24]

    def _trained(self, name: str, what: dict, build) -> torch.nn.Module:
        if name in self._models:
            return self._models[name]
        key = self._key(what)
        with self.cache.claim(key):
            meta = self.cache.done(key)
            if meta is None:
                model, info = build()
                cfg = model.config
                save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                          str(self.cache.dir(key) / "model.safetensors"))
                meta = {"config": json.loads(cfg.to_json()), "info": info}
                self.cache.finish(key, meta)
            c = meta["config"]
            cfg = ImageCNNConfig(**{**c, "widths": tuple(c["widths"])})
            model = ImageCNN(cfg)
            model.load_state_dict(load_file(str(self.cache.dir(key) / "model.safetensors")), strict=True)
        self.log[name] = {"cache_key": key, **meta["info"]}
        self._models[name] = model.eval()
        return self._models[name]

    def _fit(self, model, teacher=None, after_step=None, epochs=None) -> dict:
        tcfg = self.tcfg if epochs is None else replace(self.tcfg, max_epochs=epochs, patience=epochs)
        return train(model, self.data.fit, self.data.val, tcfg, self.settings.progress, teacher=teacher,
                     after_step=after_step, **(KD if teacher is not None else {}))

    def baseline(self) -> torch.nn.Module:
        def build():
            m = ImageCNN(self.cfg, seed=self.settings.seed)
            return m, self._fit(m)
        return self._trained("float", {"model": self.cfg.to_json()}, build)

    def _scratch(self, name: str, cfg: ImageCNNConfig, distil: bool) -> torch.nn.Module:
        teacher = self.baseline() if distil else None

        def build():
            m = ImageCNN(cfg, seed=self.settings.seed)
            return m, self._fit(m, teacher=teacher)
        teacher_key = self._key({"model": self.cfg.to_json()}) if distil else None  # the baseline's own entry
        return self._trained(name, {"model": cfg.to_json(), "kd": KD if distil else None, "teacher": teacher_key}, build)

    def float_model(self, variant: str) -> torch.nn.Module:
        cfg = self.cfg
        ft = 1 if self.settings.quick else FINETUNE_EPOCHS
        if variant in ("float", "int8", "clustered"):
            return self.baseline()
        if variant == "pruned":
            pcfg = ChannelPruneConfig(0.5, 2)

            def build():
                hist = []
                example = torch.zeros(1, *self.input_shape)
                m = prune_channels(self.baseline(), example, pcfg,
                                   lambda w, _: hist.append(self._fit(w, epochs=ft)["val_accuracy"]))
                m.config = replace(cfg, widths=_widths(m))
                return m, {"val_accuracy_per_step": hist, "widths": list(m.config.widths)}
            return self._trained(variant, {"base": cfg.to_json(), "prune": dataclasses.asdict(pcfg), "ft": ft}, build)
        if variant == "sparse":
            scfg = SparsityConfig(0.8, 3)

            def build():
                m, s = sparsify(self.baseline(), scfg, lambda w, cb: self._fit(w, after_step=cb, epochs=ft))
                m.config = cfg
                return m, {"sparsity": s}
            return self._trained(variant, {"base": cfg.to_json(), "sparsity": dataclasses.asdict(scfg), "ft": ft},
                                 build)
        if variant == "separable":
            return self._scratch(variant, replace(cfg, separable_from=1), False)
        if variant == "student":
            return self._scratch(variant, _scaled(cfg, 0.5), False)
        if variant == "distilled":
            return self._scratch(variant, _scaled(cfg, 0.5), True)
        if variant == "hybrid":
            return self._scratch(variant, _scaled(cfg, 0.5, separable_from=1), True)
        if variant == "small":
            return self.small()
        raise BadOptionError(f"unknown image variant {variant!r}")

    def small_candidates(self) -> list[tuple[float, ImageCNNConfig, int]]:
        """(width factor, config, weight bytes) of the `small` candidates within the budget."""
        out = []
        for f in SMALL_FACTORS:
            cfg = _scaled(self.cfg, f, separable_from=1)
            b = weight_bytes(ImageCNN(cfg), self.input_shape)
            if b <= SMALL_BUDGET_BYTES:
                out.append((f, cfg, b))
        if not out:
            raise BadOptionError(f"no small candidate stores <= {SMALL_BUDGET_BYTES} bytes of weights")
        return out

    def small(self) -> torch.nn.Module:
        if "small" in self._models:
            return self._models["small"]
        scores = {}
        best = None
        for f, cfg, b in self.small_candidates():
            m = self._scratch(f"small@{f}", cfg, True)
            q, _ = self.ptq(m)
            scores[str(f)] = {"weight_bytes": b, "int8_val_accuracy": int8_accuracy(q, self.data.val)}
            if best is None or scores[str(f)]["int8_val_accuracy"] > best[1]:
                best = (m, scores[str(f)]["int8_val_accuracy"], f)
        self.log["small"] = {"budget_bytes": SMALL_BUDGET_BYTES, "candidates": scores, "chosen_factor": best[2],
                             **self.log[f"small@{best[2]}"]}
        self._models["small"] = best[0]
        return best[0]

    # ---- int8
    def ptq(self, model: torch.nn.Module) -> tuple[object, dict]:
        """PTQ with the range rule of the best validation accuracy (ties: the first, min/max); once per model
        (int8 and clustered share the baseline's, `small` its chosen candidate's)."""
        if id(model) in self._ptq:
            q, info = self._ptq[id(model)]
            return q, dict(info)
        graph = import_module(model, self.input_shape)
        rng = np.random.default_rng(self.settings.seed)
        idx = np.sort(rng.permutation(len(self.data.fit))[:N_CALIBRATION])
        cal = [to_float(self.data.fit.images[idx[i:i + 256]]) for i in range(0, len(idx), 256)]
        best = None
        scores = {}
        for p in PERCENTILES:
            q = quantize(graph, cal, QuantizeConfig(percentile=p))
            acc = int8_accuracy(q, self.data.val)
            scores[str(p)] = acc
            if best is None or acc > best[1]:
                best = (q, acc, p)
        self._ptq[id(model)] = (best[0], {"percentile": best[2], "val_int8_accuracy_by_percentile": scores})
        return best[0], dict(self._ptq[id(model)][1])

    def int8(self, variant: str):
        q, info = self.ptq(self.float_model(variant))
        self.ptq_log[variant] = info["val_int8_accuracy_by_percentile"]
        if variant in ("clustered", "hybrid"):
            q = cluster(q, GraphClusterConfig(16, self.settings.seed))
            info["cluster_k"] = 16
        return q, info


def _widths(model) -> tuple[int, ...]:
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    return tuple(int(m.out_channels) for m in convs)


def weight_bytes(model: torch.nn.Module, input_shape) -> int:
    """int8 weights + int32 biases the graph of `model` stores (BN folded): `QGraph.weight_bytes` before PTQ."""
    g = import_module(model, input_shape)
    return sum(n.weight.size + 4 * n.bias.size for n in g.nodes if n.weight is not None)


def int8_accuracy(q, images: image_data.ImageSet, batch: int = 500) -> float:
    hits = 0
    for i in range(0, len(images), batch):
        out = intref.run(q, to_float(images.images[i:i + batch]))
        hits += int((out.reshape(len(out), -1).argmax(1) == images.labels[i:i + batch]).sum())
    return hits / max(len(images), 1)


def float_accuracy(model, images: image_data.ImageSet) -> float:
    return accuracy(model, images.images, images.labels)

