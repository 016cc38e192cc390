"""`python -m hybrid.run`: every technique alone and combined, measured, with report, plots and memray profiles.

Examples:
    python -m hybrid.run                         # full: 4 subject folds, writes reports/<timestamp>/
    python -m hybrid.run --quick --out /tmp/q    # smoke run: fold 0, few epochs (about a minute)
    python -m hybrid.run --budget-kib 4          # most accurate int8 static-pool variant within 4 KiB
    python -m hybrid.run --flash-kib 6 --ram-kib 2   # most accurate firmware within 6 KiB flash, 2 KiB RAM (M4)
Outputs in `--out`: summary.csv, folds.csv, report.md, accuracy_vs_bytes.png, memory_breakdown.png,
latency.png, flamegraphs/<variant>.html, run.json (+ budget.csv with --budget-kib). Steps: `hybrid.runner`.
Bad options, missing data or a failing stage: exit code 2 and one line on stderr; rows of finished
variants stay in summary.csv, finished stages in the stage cache (a rerun resumes).
"""
from __future__ import annotations

import time
from pathlib import Path

from har import datasets
from har.cli import parser, run_cli
from har.errors import BadOptionError
from hybrid.pipeline import VARIANTS, preset


def build_parser():
    p = parser("hybrid.run", "Every memory technique alone and combined on held-out users: summary.csv, report.md, "
                             "plots, memray flame graphs.")
    p.add_argument("--dataset", default=datasets.DEFAULT_DATASET, help="wisdm2019 (phone, default), wisdm2019-watch or wisdm; or an image "
                   "dataset through the graph path: mnist, fashion-mnist, cifar10 (hybrid.images)")
    p.add_argument("--activities", default=datasets.DEFAULT_ACTIVITIES, help="locomotion | all")
    p.add_argument("--data-dir", default=None, help="data root (else $HAR_DATA_DIR, else ./data)")
    p.add_argument("--out", default=None, help="output directory (default: reports/<timestamp>/)")
    p.add_argument("--quick", action="store_true", help="fold 0 only, few epochs, quick measurement: a smoke run")
    p.add_argument("--budget-kib", type=float, default=None,
                   help="search widths x prune ratio x PTQ/QAT for the most accurate variant within N KiB "
                        "(then only the variants named by --variants run)")
    p.add_argument("--flash-kib", type=float, default=None,
                   help="with --ram-kib: search widths x prune ratio x recipe (PTQ/QAT, Huffman, clustering, 90 %% "
                        "sparsity, distillation) for the most accurate firmware within F KiB flash (Cortex-M4 ELF)")
    p.add_argument("--ram-kib", type=float, default=None, help="with --flash-kib: RAM budget incl. stack, KiB")
    p.add_argument("--budget-folds", default=None, help="with --flash-kib: comma-separated folds to search "
                   "(default: every fold, each choosing on its own validation users)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default 0)")
    p.add_argument("--variants", default=None,
                   help=f"'all', 'none' or a comma list of {', '.join(VARIANTS)} (default: all; with --budget-kib: none)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (default 1: on a shared 2-core machine 2 threads were measured "
                        "many times slower for the small MLP/CNN trainings here); measuring always uses 1")
    p.add_argument("--cache-dir", default=None, help="stage cache (default: <project>/.cache/hybrid); a path every "
                   "worker sees (shared file system) lets a second machine or a rerun resume")
    p.add_argument("--executor", default="local", help="where trainings run: local (default; --workers processes) "
                   "or ray (hybrid.executor)")
    p.add_argument("--workers", type=int, default=1, help="local: training processes (1: this process); ray "
                   "without --ray-address: CPUs of the local Ray it starts")
    p.add_argument("--ray-address", default=None, help="with --executor ray: 'auto' (the cluster `ray start` runs "
                   "here) or HOST:PORT of a head node; default: start a local Ray")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (a sweep axis): every variant x fold x seed, "
                   "mean and 95 %% interval over seeds x folds; the first seed's run is measured in full")
    p.add_argument("--no-flamegraphs", action="store_true", help="skip the memray flame graph HTML files")
    p.add_argument("--no-firmware", action="store_true",
                   help="skip the firmware section (export + emulated Cortex-M4/M0+ runs of the int8 variants)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _variants(flag: str | None, budget: bool) -> tuple[str, ...]:
    if flag is None:
        return () if budget else VARIANTS
    if flag.strip() == "all":
        return VARIANTS
    names = tuple(v.strip() for v in flag.split(",") if v.strip() and v.strip() != "none")
    for n in names:
        preset(n)  # BadOptionError naming the choices
    if len(set(names)) != len(names):
        raise BadOptionError(f"--variants lists a variant twice: {flag}")
    return names


def _distinct_ints(flag: str, option: str, what: str) -> tuple[int, ...]:
    """A comma-separated list of distinct integers >= 0 (`what` names them in the one-line error)."""
    try:
        values = tuple(int(v) for v in flag.split(",") if v.strip())
    except ValueError:
        raise BadOptionError(f"{option} takes comma-separated {what}, got {flag!r}") from None
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise BadOptionError(f"{option} needs distinct {what} >= 0, got {flag!r}")
    return values


def _seeds(flag: str | None) -> tuple[int, ...]:
    return () if flag is None else _distinct_ints(flag, "--seeds", "integers")


def _budget_folds(flag: str | None, searching: bool) -> tuple[int, ...] | None:
    if flag is None:
        return None
    if not searching:
        raise BadOptionError("--budget-folds applies to the firmware budget search: give --flash-kib/--ram-kib")
    return _distinct_ints(flag, "--budget-folds", "fold numbers")


def _run_images(args) -> int:
    """`--dataset mnist|fashion-mnist|cifar10`: the image pipeline (`hybrid.images`)."""
    from hybrid.images import VARIANTS as IMAGE_VARIANTS, ImageRunSettings, check_variants
    from hybrid.images_report import pareto, run
    given = {"--budget-kib": args.budget_kib, "--flash-kib": args.flash_kib, "--seeds": args.seeds,
             "--budget-folds": args.budget_folds,
             "--ray-address": args.ray_address}
    for flag, value in given.items():
        if value is not None:
            raise BadOptionError(f"{flag} applies to the HAR datasets, not to --dataset {args.dataset}")
    if args.executor != "local" or args.workers != 1:
        raise BadOptionError(f"--executor/--workers apply to the HAR datasets, not to --dataset {args.dataset}")
    if args.variants in (None, "all"):
        variants = IMAGE_VARIANTS
    else:
        variants = check_variants(v.strip() for v in args.variants.split(",") if v.strip())
    out = Path(args.out) if args.out else Path("reports") / time.strftime("%Y%m%d-%H%M%S")
    settings = ImageRunSettings(args.dataset, out, args.data_dir, args.quick, args.seed or 0, variants,
                                Path(args.cache_dir) if args.cache_dir else None, not args.no_progress,
                                not args.no_firmware)
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = run(settings)
    finally:
        torch.set_num_threads(threads)
    for r in rows:
        acc = r.get("int8_test_accuracy", r.get("float_test_accuracy"))
        print(f"{r['variant']:>10}: test {100 * acc:.2f} %  weights {r.get('weight_bytes', '-')} B  "
              f"M4 flash {r.get('m4_flash_library_bytes', '-')} B RAM {r.get('m4_ram_library_bytes', '-')} B")
    print(f"Pareto front: {', '.join(pareto(rows))}")
    print(f"-> {out / 'report.md'}")
    return 0


def _run(args) -> int:
    from har.datasets.images import NAMES as IMAGE_DATASETS
    if args.dataset in IMAGE_DATASETS:
        return _run_images(args)
    from hybrid.runner import RunSettings, run
    if args.budget_kib is not None and not args.budget_kib > 0:
        raise BadOptionError(f"--budget-kib must be > 0, got {args.budget_kib}")
    if args.threads < 1:
        raise BadOptionError(f"--threads must be >= 1, got {args.threads}")
    if (args.flash_kib is None) != (args.ram_kib is None):
        raise BadOptionError("give --flash-kib and --ram-kib together")
    if args.flash_kib is not None and not (args.flash_kib > 0 and args.ram_kib > 0):
        raise BadOptionError(f"--flash-kib and --ram-kib must be > 0, got {args.flash_kib}, {args.ram_kib}")
    from hybrid.executor import ExecutorConfig
    ExecutorConfig(args.executor, args.workers, args.ray_address)  # BadOptionError for a bad combination
    if args.executor == "ray":
        try:
            import ray  # noqa: F401 -- checked before any data is read
        except ImportError:
            raise BadOptionError("--executor ray needs Ray: pip install -e '.[distributed]'") from None
    seeds = _seeds(args.seeds)
    budget_folds = _budget_folds(args.budget_folds, args.flash_kib is not None)
    if args.quick and budget_folds and set(budget_folds) != {0}:  # caught before any data is read
        raise BadOptionError(f"--quick runs fold 0 only: --budget-folds {args.budget_folds} names other folds")
    if seeds and args.seed is not None:
        raise BadOptionError("give --seed or --seeds, not both")
    searching = args.budget_kib is not None or args.flash_kib is not None
    variants = _variants(args.variants, searching)
    if len(seeds) > 1 and not variants:
        raise BadOptionError("--seeds is an axis of the variants: give --variants too (the budget searches run "
                             "one seed)")
    if not variants and not searching:
        raise BadOptionError("nothing to run: give --variants, --budget-kib or --flash-kib/--ram-kib")
    out = Path(args.out) if args.out else Path("reports") / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    settings = RunSettings(out=out, dataset=args.dataset, activities=args.activities, data_dir=args.data_dir,
                           quick=args.quick, seed=seeds[0] if seeds else (args.seed or 0), variants=variants,
                           budget_kib=args.budget_kib, executor=args.executor, workers=args.workers,
                           ray_address=args.ray_address, seeds=seeds,
                           flash_kib=args.flash_kib, ram_kib=args.ram_kib, budget_folds=budget_folds,
                           threads=args.threads, cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                           progress=not args.no_progress, flamegraphs=not args.no_flamegraphs,
                           firmware=not args.no_firmware)
    import torch
    threads = torch.get_num_threads()
    try:
        from hybrid import tasks  # the executor tasks and the seeds axis
        runner = run(settings, trainer=tasks)
    finally:
        torch.set_num_threads(threads)  # restored for in-process callers (tests)
    from hybrid.report import hybrid_checks, results_table
    if runner.state.rows:
        print("\n".join(results_table(runner.state.rows)))
        for target, ok, measured in hybrid_checks(runner.state.rows):
            print(f"hybrid: {target}: {'met' if ok else 'NOT met'} ({measured})")
    print(f"-> {out / 'report.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
