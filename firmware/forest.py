"""The classical peer as firmware: the project's RandomForest (`rf` peer) converted to C with emlearn and
measured like the CNN firmware (accuracy, flash/RAM by category, instructions per inference).

Steps of `build_forest_firmware(win, raw_xyz, fold, out_dir, cfg)`:
1. Counts: the fold's device-axis windows as int16 counts (`firmware.preprocess.to_counts`, +-4 g).
2. Features from the C the device runs (`firmware.forest_c.c_features`: csrc/har_features.c, window_stats'
   statistics of har_pre.c's float32 channels), so the forest is trained on the device's own inputs.
3. Train sklearn's RandomForestClassifier as the `rf` peer does (`har.experiment.forest_predict`: its trees,
   min_samples_leaf=2 and seed, fit on training + validation users); test users are only scored. With
   `node_budget` (a small board), first choose trees x max_leaf_nodes within the budget on the validation
   users (`choose_for_budget`), then fit as above.
4. Convert with emlearn (`method="inline"`: one C function per tree, hard voting, leaves are class
   indices). emlearn prints a float threshold with 6 decimals and tests `x < t`, where sklearn tests
   `float32 x <= float64 t`: so the C compares order keys (har_float_key, int32) and every threshold is
   replaced by key(largest float32 <= t) + 1 before emlearn prints it (its int32 dtype prints integers
   verbatim): `key(x) < that` is then exactly sklearn's test, and the C trees route as sklearn's do.
5. Write the directory: har_forest_model.c/.h (generated), har_model.h (the CNN firmware's API), the
   fixed sources (har_pre, har_features, har_forest, har_forest_api, har_int8.h) and forest.json.
6. Host: gcc builds the directory's library; `har_forest_classify` on every test window gives the accuracy,
   and must equal the Python hard vote of the same sklearn trees on the same features (else AssertionError).
   Also reported: sklearn's own (soft-vote) accuracy, and how often the forest's prediction on numpy's
   window_stats of the same channels equals its prediction on the C features.
7. Targets: `firmware.cross` builds the test ELF (boards/harness.c through the har_model.h adapter) and the
   footprint ELF (app_min.c); QEMU classifies the test windows (agreement with the host must be 100 %),
   `firmware.elfsize` accounts the footprint ELF, `firmware.icount` counts har_classify's instructions
   under Unicorn. A forest too big for a board's flash is reported as not fitting, with the overflow.
Accounting: the generated tree code (its thresholds are immediates and literal pools: the model's
parameters) is `weights`; har_features.o and har_pre.o `preprocessing`; har_forest.o and har_forest_api.o
`runtime_code`; `har_arena` (channels + features), `har_ring`, `har_state` by name; har_features' static
scratch (sort keys, twiddles) `runtime_state`.
Limits: hard voting (emlearn's compact form), where sklearn's `predict` averages class fractions: both
accuracies are reported. The project's forest (300 grown trees, ~1e5 decision nodes, ~16 B of Thumb code
each) fits the M4F board's 4 MiB, not the micro:bit's 256 KiB.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from firmware.forest_c import CSRC, KERNELS, LIBRARY_SOURCES, c_features, host_classify, host_library
from firmware.preprocess import CHANNEL_SETS, SampleFormat, channels as numpy_channels, to_counts
from har.errors import BadOptionError, HarError
from har.paths import atomic_write_text

FIXED_SOURCES = (CSRC / "har_pre.c", CSRC / "har_pre.h", KERNELS / "har_int8.h", CSRC / "har_features.c",
                 CSRC / "har_features.h", CSRC / "har_forest.c", CSRC / "har_forest.h", CSRC / "har_forest_api.c",
                 CSRC / "har_ring.c", CSRC / "har_ring.h")
ACCOUNTING_OBJECTS = {"har_forest_model.o": "weights", "har_features.o": "preprocessing",
                      "har_pre.o": "preprocessing", "har_forest.o": "runtime_code",
                      "har_forest_api.o": "runtime_code", "har_ring.o": "runtime_code"}
MODEL_NAME = "har_forest_model"
TARGETS = ("cortex-m4", "cortex-m0plus")
BUDGET_TREES = (300, 100, 30, 10)  # tree counts `choose_for_budget` tries (at most cfg.trees)


@dataclass(frozen=True)
class ForestConfig:
    """The `rf` peer's settings (har.experiment.forest_predict) and how the firmware is measured.
    `max_leaf_nodes=None` grows every tree out, as the peer does. `node_budget`: at most this many decision
    nodes in all, trees and their size chosen on validation users (overrides trees / max_leaf_nodes)."""
    trees: int = 300
    min_samples_leaf: int = 2
    max_leaf_nodes: int | None = None
    node_budget: int | None = None
    seed: int = 0
    sample: SampleFormat = field(default_factory=SampleFormat)
    opt: str = "-Os"
    targets: tuple[str, ...] = TARGETS
    target_windows: int | None = None   # test windows QEMU classifies per target (None: all)
    count_windows: int = 20             # windows whose har_classify instructions Unicorn counts
    qemu_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.trees < 1 or self.min_samples_leaf < 1:
            raise BadOptionError("trees and min_samples_leaf must be >= 1")
        if (self.max_leaf_nodes is not None and self.max_leaf_nodes < 2) or \
                (self.node_budget is not None and self.node_budget < 1):
            raise BadOptionError("max_leaf_nodes must be >= 2 and node_budget >= 1 (or None)")
        if not set(self.targets) <= set(TARGETS):
            raise BadOptionError(f"unknown target in {self.targets}; choose from {', '.join(TARGETS)}")

    @classmethod
    def for_run(cls, run, **overrides) -> "ForestConfig":
        """The peer of `har.experiment.RunConfig` `run`: its tree count and seed."""
        return cls(trees=run.rf_trees, seed=run.seed, **overrides)

    def to_dict(self) -> dict:
        return {**asdict(self), "sample": self.sample.to_dict()}


@dataclass(frozen=True)
class TargetResult:
    target: str
    fits: bool
    flash_overflow_bytes: int | None     # the linker's "region FLASH overflowed by N bytes" when not fitting
    windows: int                         # test windows QEMU classified
    agreement: float | None              # fraction of QEMU labels equal to the host library's
    footprint: dict | None               # firmware.elfsize.Footprint.to_dict() of the app_min ELF (+ stack)
    instructions_mean: float | None      # har_classify per window, over `counted` windows (Unicorn)
    instructions_min: int | None
    instructions_max: int | None
    counted: int
    commands: tuple[str, ...]


@dataclass(frozen=True)
class ForestFirmwareResult:
    config: dict                         # the ForestConfig, with trees / max_leaf_nodes as fitted
    selection: tuple                     # (trees, max_leaf_nodes, validation accuracy) per budget candidate
    fold: int
    test_users: tuple[int, ...]
    n_test_windows: int
    n_features: int
    n_decision_nodes: int
    accuracy: float                      # host C library on the test users (hard voting)
    sklearn_soft_accuracy: float         # the same trees' sklearn predict (soft voting), same C features
    soft_hard_agreement: float           # test windows where the two voting rules agree
    numpy_feature_agreement: float       # forest on numpy window_stats vs on the C features, test windows
    host_equals_sklearn_trees: bool      # host labels == Python hard vote of sklearn's trees (else raised)
    targets: tuple[TargetResult, ...]
    out_dir: str
    commands: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


# ---- forest, conversion ----------------------------------------------------------------------------

def train_forest(x: np.ndarray, y: np.ndarray, cfg: ForestConfig):
    from sklearn.ensemble import RandomForestClassifier
    forest = RandomForestClassifier(cfg.trees, n_jobs=2, random_state=cfg.seed, min_samples_leaf=cfg.min_samples_leaf,
                                    max_leaf_nodes=cfg.max_leaf_nodes)
    return forest.fit(x, y).set_params(n_jobs=1)  # serial predict: see har.experiment.forest_predict


def choose_for_budget(x: np.ndarray, y: np.ndarray, fold, cfg: ForestConfig) -> tuple[ForestConfig, tuple]:
    """Trees x leaves within `cfg.node_budget` decision nodes, chosen on the fold's validation users.
    Candidates: BUDGET_TREES (at most cfg.trees), each tree capped at budget // trees + 1 leaves (a tree
    of L leaves has L - 1 decision nodes); each is fit on the training users only and scored by the
    firmware's rule (hard vote) on the validation users; the best wins (ties: the fewer trees, i.e. the
    cheaper inference). Returns the chosen config and every (trees, max_leaf_nodes, val accuracy)."""
    if cfg.node_budget is None:
        return cfg, ()
    if len(fold.val_idx) == 0:
        raise BadOptionError("node_budget needs validation users to choose the forest's shape")
    rows = []
    for trees in sorted({min(t, cfg.trees) for t in BUDGET_TREES}):
        leaves = cfg.node_budget // trees + 1
        if leaves < 2:
            continue
        cand = replace(cfg, trees=trees, max_leaf_nodes=leaves)
        forest = train_forest(x[fold.train_idx], y[fold.train_idx], cand)
        rows.append((trees, leaves, float(np.mean(hard_vote(forest, x[fold.val_idx]) == y[fold.val_idx]))))
    if not rows:
        raise BadOptionError(f"node_budget {cfg.node_budget} is too small for one split per tree")
    trees, leaves, _ = max(rows, key=lambda r: (r[2], -r[0]))
    return replace(cfg, trees=trees, max_leaf_nodes=leaves), tuple(rows)


def hard_vote(forest, x: np.ndarray) -> np.ndarray:
    """What the firmware computes: each tree votes for its leaf's majority class (first on ties), the most
    voted class wins (lowest index on ties); sklearn's trees route float32 features."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    votes = np.zeros((len(x32), len(forest.classes_)), np.int64)
    rows = np.arange(len(x32))
    for tree in forest.estimators_:
        leaf_class = tree.tree_.value[:, 0, :].argmax(axis=1)
        votes[rows, leaf_class[tree.apply(x32)]] += 1
    return forest.classes_[votes.argmax(axis=1)]


def float_key(v) -> np.ndarray:
    """har_float_key in numpy: int32 order keys of float32 values (-0 counted as +0)."""
    a = np.asarray(v, dtype=np.float32) + np.float32(0.0)
    i = a.view(np.int32)
    return np.where(i < 0, i ^ np.int32(0x7FFFFFFF), i)


def threshold_key(threshold: float) -> int:
    """Integer t' with key(x) < t'  <=>  float32 x <= float64 `threshold` (sklearn's split test)."""
    a = np.float32(threshold)
    if float(a) > threshold:
        a = np.nextafter(a, np.float32(-np.inf))
    if not np.isfinite(a):
        raise BadOptionError(f"split threshold {threshold!r} is not a finite float32")
    return int(float_key(a)) + 1


def model_c(forest) -> tuple[str, int]:
    """emlearn's inline C of `forest` on int32 feature keys; returns (code, decision nodes)."""
    saved = np.geterr()
    try:
        import emlearn  # its bayes module calls np.seterr(all="raise") for the whole process on import
    finally:
        np.seterr(**saved)
    conv = emlearn.convert(forest, method="inline", dtype="int32_t")
    nodes = conv.forest_[0]
    for node in nodes:
        node[1] = threshold_key(float(node[1]))
    code = conv.save(name=MODEL_NAME, include_proba=False)
    head = ("/* har_forest_model.c: generated by har-memopt firmware.forest with emlearn (inline, hard voting);\n"
            " * features are int32 order keys (har_float_key), thresholds exact keys of sklearn's splits. */\n"
            "#include \"har_forest_model.h\"\n#pragma GCC diagnostic ignored \"-Wunused-parameter\"\n")
    return head + code.strip() + "\n", len(nodes)


# ---- the firmware directory ------------------------------------------------------------------------

def _hexf(v: float) -> str:
    return f"{float(np.float32(v)).hex()}f"


def _headers(forest, t: int, step: int, channels: str, n_classes: int, sample: SampleFormat) -> dict[str, str]:
    n_ch = (6 if channels == "robust_tilt" else 3) + (channels == "raw")
    n_feat = n_ch * 12 + 3
    labels = ", ".join(str(int(c)) for c in forest.classes_)
    model_h = f"""/* har_forest_model.h: generated by har-memopt firmware.forest; the forest's constants. */
#ifndef HAR_FOREST_MODEL_H
#define HAR_FOREST_MODEL_H
#include <stdint.h>
#define HAR_FOREST_T {t}
#define HAR_FOREST_CHANNEL_SET {CHANNEL_SETS[channels]}  /* {channels} */
#define HAR_FOREST_N_STAT_CHANNELS {n_ch}
#define HAR_FOREST_N_FEATURES {n_feat}
#define HAR_FOREST_N_CLASSES {len(forest.classes_)}
#define HAR_FOREST_N_TREES {len(forest.estimators_)}
#define HAR_FOREST_LABELS {{{labels}}}  /* the forest's class index -> dataset label */
int32_t {MODEL_NAME}_predict(const int32_t *features, int32_t features_length);
#endif
"""
    api_h = f"""/* har_model.h: generated by har-memopt firmware.forest; the CNN firmware's API on the forest. */
#ifndef HAR_MODEL_H
#define HAR_MODEL_H
#include <stdint.h>

#define HAR_T {t}            /* window length, samples */
#define HAR_STEP {step}          /* samples between results while streaming */
#define HAR_N_CLASSES {n_classes}
#define HAR_ARENA_BYTES {4 * (n_ch * t + n_feat)}
#define HAR_SAMPLE_SCALE {_hexf(sample.scale_m_s2)} /* m/s^2 per count: +-{sample.full_scale_g:g} g full scale, int16 */

typedef struct {{
    int32_t label;                  /* the forest's class */
    int8_t scores[HAR_N_CLASSES];   /* one-hot: 1 for the label */
}} har_result;

enum {{ HAR_OK = 0, HAR_READY = 1, HAR_ERR_CRC = -1, HAR_ERR_STATE = -2, HAR_ERR_ARG = -3, HAR_ERR_RUN = -4 }};

int har_init(void);
void har_reset(void);
int har_push(const int16_t xyz[3], har_result *out);
int har_classify(const int16_t *xyz, har_result *out);
uint32_t har_weights_crc32(void);                     /* 0: the forest has no weight blob */
#endif
"""
    return {"har_forest_model.h": model_h, "har_model.h": api_h}


def write_firmware_dir(out_dir: str | Path, forest, t: int, step: int, channels: str, n_classes: int,
                       cfg: ForestConfig, meta: dict | None = None) -> tuple[Path, int]:
    """Step 5 of the module docstring; returns (directory, decision nodes). Same inputs, same bytes."""
    d = Path(out_dir)
    code, n_nodes = model_c(forest)
    files = {**_headers(forest, t, step, channels, n_classes, cfg.sample), "har_forest_model.c": code}
    files.update({p.name: p.read_text() for p in FIXED_SOURCES})
    for name, text in files.items():
        atomic_write_text(d / name, text)
    doc = {"generator": "firmware.forest", "config": cfg.to_dict(), "window": {"length": t, "step": step,
           "channels": channels}, "n_classes": n_classes, "classes": [int(c) for c in forest.classes_],
           "trees": len(forest.estimators_), "decision_nodes": n_nodes, "library_sources": list(LIBRARY_SOURCES),
           "defines": {"HAR_FEATURES_MAX_T": t}, **(meta or {}),
           "files": {n: hashlib.sha256(files[n].encode()).hexdigest() for n in sorted(files)}}
    atomic_write_text(d / "forest.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return d, n_nodes


# ---- targets ---------------------------------------------------------------------------------------

def _flash_overflow(err) -> int | None:
    m = re.search(r"region `?FLASH'? overflowed by (\d+) bytes", getattr(err, "details", "") or str(err))
    return int(m.group(1)) if m else None


def measure_target(target: str, out_dir: Path, counts: np.ndarray, host_labels: np.ndarray, n_classes: int,
                   cfg: ForestConfig) -> TargetResult:
    """Step 7 of the module docstring for one target; `counts`/`host_labels` are the test windows."""
    from firmware import cross, elfsize, icount, qemu
    t = counts.shape[1]
    build_dir = out_dir / f"build-{target}"
    sources = [out_dir / s for s in LIBRARY_SOURCES]
    defines = {"HAR_FEATURES_MAX_T": t}
    try:
        test = cross.build(target, sources, build_dir / "forest-test.elf", defines=defines, opt=cfg.opt,
                           harness="test")
        app = cross.build(target, sources, build_dir / "forest-app.elf", defines=defines, opt=cfg.opt,
                          harness="app")
    except cross.BuildError as e:
        over = _flash_overflow(e)
        if over is None:
            raise
        return TargetResult(target, False, over, 0, None, None, None, None, None, 0, ())
    n = len(counts) if cfg.target_windows is None else min(cfg.target_windows, len(counts))
    run_dir = build_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (qemu.SCORES_FILE, qemu.STACK_FILE):
        (run_dir / stale).unlink(missing_ok=True)
    qemu.write_windows(run_dir, counts[:n])
    res = qemu.run(target, test.elf, run_dir, cfg.qemu_timeout_s)
    if res.exit_code != 0:
        raise HarError(f"forest firmware on {target} exited {res.exit_code} "
                       f"({qemu.EXIT_CODES.get(res.exit_code, 'unknown')}): {res.stderr_text.strip()[:200]}")
    labels = qemu.read_records(run_dir / qemu.SCORES_FILE, n_classes).labels
    stack = qemu.read_stack_bytes(run_dir / qemu.STACK_FILE)
    footprint = elfsize.from_build(app, stack_bytes=stack, objects=ACCOUNTING_OBJECTS)
    k = min(cfg.count_windows, n)
    calls = icount.count_calls(target, test.elf, {qemu.WINDOWS_FILE: qemu.windows_bytes(counts[:k])}) if k else []
    cmds = tuple(" ".join(c) for c in (*test.commands, *app.commands[-1:], qemu.command(target, test.elf)))
    return TargetResult(target, True, None, n, float(np.mean(labels == host_labels[:n])), footprint.to_dict(),
                        float(np.mean(calls)) if calls else None, min(calls) if calls else None,
                        max(calls) if calls else None, len(calls), cmds)


# ---- the whole measurement -------------------------------------------------------------------------

def build_forest_firmware(win, raw_xyz: np.ndarray, fold, out_dir: str | Path, cfg: ForestConfig = ForestConfig(),
                          step: int | None = None) -> ForestFirmwareResult:
    """Steps 1-7 of the module docstring on one fold of `win` (har.experiment.windows_for)."""
    from har.features import window_stats
    channels, scale = win.config.channels, cfg.sample.scale_m_s2
    counts = to_counts(raw_xyz, cfg.sample)
    x = c_features(counts, channels, scale)
    cfg, selection = choose_for_budget(x, win.y, fold, cfg)
    fit_idx = np.concatenate([fold.train_idx, fold.val_idx])
    forest = train_forest(x[fit_idx], win.y[fit_idx], cfg)
    t, k = counts.shape[1], len(win.classes)
    d, n_nodes = write_firmware_dir(out_dir, forest, t, step or win.config.step, channels, k, cfg,
                                    {"fold": fold.index, "test_users": list(fold.test_users),
                                     "val_users": list(fold.val_users), "class_names": list(win.classes)})
    lib, host_cmd = host_library(d)
    test, y = fold.test_idx, win.y[fold.test_idx]
    host = host_classify(lib, counts[test], channels, scale)
    reference = hard_vote(forest, x[test])
    if not np.array_equal(host, reference):
        raise AssertionError(f"C forest differs from sklearn's trees on {int(np.sum(host != reference))} windows")
    soft = forest.predict(x[test])
    ch = numpy_channels(counts[test], scale, channels)
    on_numpy = hard_vote(forest, window_stats(ch, channels))
    targets = tuple(measure_target(tg, d, counts[test], host, k, cfg) for tg in cfg.targets)
    return ForestFirmwareResult(cfg.to_dict(), selection, fold.index, tuple(fold.test_users), len(test), x.shape[1],
                                n_nodes, float(np.mean(host == y)), float(np.mean(soft == y)),
                                float(np.mean(soft == host)), float(np.mean(on_numpy == host)), True, targets,
                                str(d), (" ".join(host_cmd),))


def build_parser():
    from har.cli import parser
    p = parser("firmware.forest", "The RandomForest peer as Cortex-M firmware: accuracy, flash/RAM, instructions.")
    p.add_argument("--dataset", default="wisdm2019")
    p.add_argument("--activities", default="locomotion")
    p.add_argument("--data-dir", default=None, help="data root (else $HAR_DATA_DIR, else ./data)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", default="reports/forest-firmware")
    p.add_argument("--max-leaf-nodes", type=int, default=None, help="cap each tree (default: grown out, as `rf`)")
    p.add_argument("--node-budget", type=int, default=None,
                   help="at most this many decision nodes; trees x leaves chosen on validation users")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--target-windows", type=int, default=None, help="test windows per QEMU run (default: all)")
    p.add_argument("--count-windows", type=int, default=20)
    return p


def _run(args) -> int:
    from har import datasets
    from har.cli import command_line
    from har.experiment import RunConfig, make_folds, windows_for
    from har.paths import data_root
    run = RunConfig.for_dataset(args.dataset, args.activities)
    datasets.check_names(args.dataset, args.activities)
    rec = datasets.load_recording(args.dataset, data_root(args.data_dir))
    win, raw = windows_for(rec, run.window, datasets.activity_labels(args.dataset, args.activities, rec.activities))
    folds = make_folds(win.user, run)
    if not 0 <= args.fold < len(folds):
        raise BadOptionError(f"--fold must be in 0..{len(folds) - 1}")
    cfg = ForestConfig.for_run(run, max_leaf_nodes=args.max_leaf_nodes, node_budget=args.node_budget,
                               targets=tuple(args.targets.split(",")),
                               target_windows=args.target_windows, count_windows=args.count_windows)
    res = build_forest_firmware(win, raw, folds[args.fold], Path(args.out), cfg)
    doc = {"command": command_line("firmware.forest", build_parser, args), "dataset": args.dataset,
           "activities": args.activities, "window": run.window.to_dict(), **res.to_dict()}
    atomic_write_text(Path(args.out) / "forest_firmware.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"{res.config['trees']} trees, {res.n_decision_nodes} decision nodes: accuracy {res.accuracy:.4f} "
          f"(sklearn soft vote {res.sklearn_soft_accuracy:.4f}), numpy-feature agreement "
          f"{res.numpy_feature_agreement:.4f} -> {Path(args.out) / 'forest_firmware.json'}")
    for tr in res.targets:
        if not tr.fits:
            print(f"  {tr.target}: does not fit, FLASH overflowed by {tr.flash_overflow_bytes} bytes")
            continue
        fp = tr.footprint
        print(f"  {tr.target}: agreement {tr.agreement:.4f} on {tr.windows}, library flash "
              f"{fp['library_flash_bytes']} B, RAM {fp['library_ram_bytes']} B + stack {fp['stack_bytes']} B, "
              f"instructions mean {tr.instructions_mean:.0f} [{tr.instructions_min}, {tr.instructions_max}]")
    if any(tr.fits and tr.agreement != 1.0 for tr in res.targets):
        print("error: a target's labels differ from the host library's (see forest_firmware.json)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from har.cli import run_cli
    return run_cli(build_parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
