"""`python -m hybrid.export`: one variant of `hybrid.run`, one fold, as a freestanding C library (firmware).

Examples:
    python -m hybrid.export --variant hybrid --out fw/                       # Cortex-M4F, fold 0
    python -m hybrid.export --variant int8 --target cortex-m0plus --out fw-m0/
    python -m hybrid.export --variant clustered --storage auto --out fw-c/     # fewest bytes per layer
    python -m hybrid.export --int8 .cache/hybrid/<stage>/ --window-length 40 --channels robust_tilt --out fw/
    python -m hybrid.export --dataset mnist --variant int8 --out fw-mnist/      # an image CNN (graph path)
Steps: build the variant for the fold exactly as `hybrid.run` does (same stage cache: a finished run makes
this instant; otherwise the fold's baseline and steps are trained here, choices on validation users), take
its int8 program and write it with `firmware.export.convert` (C sources, Makefile, CMake snippet, README,
model.tflite, export.json). Exportable: variants that end on an int8 program (`EXPORTABLE`); others
(fp32, ONNX Runtime, cascade, PCA) exit 2 naming the choices. The weights are stored as the variant
stores them (clustered: palette, huffman: Huffman-coded palette indices, sparse: CSR; else dense) unless
`--storage` says otherwise (`firmware.storage.FORMATS`). `--int8 DIR` exports a saved int8
artifact (`model_opts.quant.save`) without data; its window must then be given.
"""
from __future__ import annotations

from pathlib import Path

from har import datasets
from har.cli import parser, run_cli
from har.errors import BadOptionError
from har.windows import WindowConfig
from firmware.preprocess import SampleFormat
from firmware.program import TARGETS

EXPORTABLE = ("int8", "model-all", "clustered", "clustered-direct", "huffman", "sparse", "distilled", "student", "separable",
              "hybrid")


def build_parser():
    p = parser("hybrid.export", "Export an int8 variant as a freestanding C library for Cortex-M (or the host).")
    p.add_argument("--variant", default="hybrid", help=f"one of {', '.join(EXPORTABLE)} (default hybrid)")
    p.add_argument("--out", required=True, help="output directory (created; files replaced atomically)")
    p.add_argument("--target", default="cortex-m4", help=f"{' | '.join(TARGETS)} (default cortex-m4)")
    p.add_argument("--fold", type=int, default=0, help="subject fold whose training users built the model")
    p.add_argument("--dataset", default=datasets.DEFAULT_DATASET)
    p.add_argument("--activities", default=datasets.DEFAULT_ACTIVITIES)
    p.add_argument("--data-dir", default=None, help="data root (else $HAR_DATA_DIR, else ./data)")
    p.add_argument("--cache-dir", default=None, help="stage cache (default: <project>/.cache/hybrid)")
    p.add_argument("--quick", action="store_true", help="the --quick variant of hybrid.run (few epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-scale-g", type=float, default=SampleFormat().full_scale_g,
                   help="accelerometer full scale in g of the int16 samples (default 4)")
    p.add_argument("--step", type=int, default=None,
                   help="samples between streaming results (default: the training windows' step; with --int8: "
                        "half the window length)")
    p.add_argument("--storage", default=None,
                   help="weight storage: dense | palette | palette-direct | huffman | huffman-palette | bitmask | csr | auto "
                        "(default: the variant's own)")
    p.add_argument("--int8", default=None, help="export this saved int8 artifact directory instead of a variant")
    p.add_argument("--window-length", type=int, default=None, help="with --int8: the training window length")
    p.add_argument("--channels", default=None, help="with --int8: the training channel set")
    p.add_argument("--no-progress", action="store_true")
    return p


def variant_program(variant: str, fold: int, dataset: str, activities: str, data_dir: str | None,
                    cache_dir: Path | None, quick: bool, seed: int, progress: bool):
    """(int8 program, window config, the variant's weight storage) of `variant` on `fold`, built as hybrid.run
    builds it."""
    from hybrid.pipeline import Pipeline, preset
    from hybrid.runner import RunSettings, Runner, load_data
    from hybrid import provenance
    from hybrid.baseline import BaselineSpec
    if variant not in EXPORTABLE:
        preset(variant)  # an unknown name: the list of every variant
        raise BadOptionError(f"variant {variant!r} does not end on an int8 program; export one of "
                             f"{', '.join(EXPORTABLE)}")
    runner = Runner(RunSettings(out=Path("."), dataset=dataset, activities=activities, data_dir=data_dir,
                                quick=quick, seed=seed, variants=(variant,), cache_dir=cache_dir,
                                progress=progress, flamegraphs=False))
    runner.data = load_data(runner.s, runner.run_cfg, runner.cache)
    if not 0 <= fold < len(runner.data.folds):
        raise BadOptionError(f"--fold must be in 0..{len(runner.data.folds) - 1}, got {fold}")
    runner.spec = BaselineSpec(dataset, activities, runner.run_cfg, provenance.data_digest(runner.data.checksums),
                               runner.s.threads)
    built = Pipeline(runner.configs[variant]).build(runner.context(fold), runner.cache)
    try:
        art = built.artifact
        prog = getattr(art, "int8_program", None) or getattr(art, "program")
        storage = getattr(art, "weight_storage", "dense")
    finally:
        built.close()
    return prog, runner.data.windows.config, storage


def _run_images(args) -> int:
    """An image variant (`hybrid.images`) as a graph library (`firmware.graph_export`) + model.tflite."""
    from firmware import graph_export, graph_tflm
    from har.paths import atomic_write_bytes
    from hybrid.images import ImageRunner, ImageRunSettings, check_variants
    if args.int8 or args.storage or args.step is not None or args.fold != 0 or args.target != "cortex-m4":
        raise BadOptionError(f"--int8/--storage/--step/--fold/--target apply to the HAR datasets, not to --dataset "
                             f"{args.dataset} (its library builds for every target: see its Makefile)")
    if args.variant == "float":
        raise BadOptionError("variant 'float' has no int8 program; export int8 or another image variant")
    variant, = check_variants([args.variant])
    runner = ImageRunner(ImageRunSettings(args.dataset, Path(args.out), args.data_dir, args.quick, args.seed,
                                          (variant,), Path(args.cache_dir) if args.cache_dir else None,
                                          not args.no_progress))
    q, _ = runner.int8(variant)
    meta = graph_export.convert(q, args.out)
    atomic_write_bytes(Path(args.out) / "model.tflite", graph_tflm.to_tflite(q))
    print(f"{args.out}: {args.dataset} {variant}: {len(meta['ops'])} ops, weights {meta['weight_blob_bytes']} B, "
          f"arena {meta['arena_bytes']} B (naive {meta['naive_arena_bytes']} B); any Cortex-M or Linux target "
          f"builds har_graph.c + har_graph_model.c")
    return 0


def _run(args) -> int:
    from har.datasets.images import NAMES as IMAGE_DATASETS
    if args.dataset in IMAGE_DATASETS:
        return _run_images(args)
    from firmware.export import ExportConfig, convert
    from firmware.storage import WeightStorage
    if args.storage is not None:
        WeightStorage(args.storage)  # a bad name exits 2 before any build
    storage = "dense"
    if args.int8:
        from model_opts.quant.artifact import load
        if args.window_length is None or args.channels is None:
            raise BadOptionError("--int8 needs --window-length and --channels (the window it was trained on)")
        prog = load(args.int8).program
        window = WindowConfig(length=args.window_length, step=max(1, args.window_length // 2),
                              channels=args.channels)
    else:
        prog, window, storage = variant_program(args.variant, args.fold, args.dataset, args.activities,
                                                args.data_dir, Path(args.cache_dir) if args.cache_dir else None,
                                                args.quick, args.seed, not args.no_progress)
    cfg = ExportConfig(target=args.target, sample=SampleFormat(args.full_scale_g), step=args.step,
                       storage=WeightStorage(args.storage or storage))
    ex = convert(prog, window, args.out, cfg)
    print(f"{args.out}: {args.target}, {cfg.storage.format} weights, arena {ex.arena_bytes} B, "
          f"weights {len(ex.device.blob_bytes())} B, "
          f"CRC32 0x{ex.crc32:08x}, {len(ex.files)} files (see README.md)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
