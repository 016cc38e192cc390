"""`python -m model_opts.report2`: PCA, contrastive-encoding and cascade tables over a har.train run.

Example: `python -m model_opts.report2 --model /tmp/m_c --out reports/model_opts2 [--quick] [--parts pca,cascade]`.
Per saved fold (`har.measure.fold_data.load_fold`: the fold model, windows cut with its saved window config,
its saved test and validation users, train = everyone else):
- `pca`: `model_opts.pca` on flattened windows for each k (and the same MLP on the full input), plus the
  saved CNN as context. `features`: the same on the WISDM v1.1 transformed features (own subject folds
  over that table's users: `har.splits.subject_kfold`, same seed).
- `contrastive`: `model_opts.contrastive.experiment.run_fold` (label fractions 5/20/100 %, narrow student).
- `cascade`: stage 1 = CompactCNN1d (8, 8) trained here, stage 2 = the saved fold model, loaded lazily.
  Every threshold of the grid is run through the real `CascadeArtifact` on validation and test users;
  the threshold is SELECTED on validation users (smallest stage-2 fraction whose accuracy is within
  `--tolerance-pp` of stage 2 alone) and REPORTED on test users. Mean latency: batch-1 streaming of a
  seeded sample of test windows, each call timed (`har.measure.timing.time_calls`), stage-2 loads included.
Accuracy, weight bytes and MACs come from `har.measure.measure` (static fields). Outputs (atomic):
`report2.json` (every row per fold, configs, versions) and `report2.md` (means over folds).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from har import datasets
from har.cli import parser, run_main, versions
from har.errors import BadOptionError
from har.measure.artifact import TorchArtifact
from har.measure.fold_data import FoldData, load_fold
from har.measure.footprint import MeasureConfig, measure
from har.measure.timing import time_calls
from har.paths import atomic_write_text, data_root
from har.splits import subject_kfold
from har.training import bound_threads
from har.windows import to_channels
from model_opts import cascade as cascade_mod
from model_opts import pca as pca_mod
from model_opts.contrastive.experiment import ContrastiveRunConfig, run_fold

PARTS = ("pca", "features", "contrastive", "cascade")
WINDOW_KS = (2, 4, 8, 16, 32, 64, 128)
FEATURE_KS = (1, 2, 4, 8, 12, 16, 24, 32)
THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.01)
STATIC = MeasureConfig.static_only()


def _acc(scores: np.ndarray, y: np.ndarray) -> float:
    return float((scores.argmax(1) == y).mean())


def _pca_rows(cfg: pca_mod.PCAConfig, ks, x, y, users, tr, va, te, classes) -> list[dict]:
    rows = []
    for k in (*ks, None):
        t = time.process_time()
        art = pca_mod.apply(replace(cfg, n_components=k), x[tr], y[tr], users[tr], x[va], y[va], classes)
        x_te = x[te] if x.ndim == 3 else np.ascontiguousarray(x[te][:, :, None])
        fp = measure(art, x_te, y[te], STATIC)
        proj = sum(v.nbytes for n, v in art.arrays.items() if n.startswith("pca."))
        rows.append({"k": k if k is not None else "full", "accuracy": fp.accuracy, "macro_f1": fp.macro_f1,
                     "weight_bytes": fp.weight_bytes, "projection_bytes": proj, "macs": fp.macs,
                     "cpu_s": round(time.process_time() - t, 2)})
    return rows


def pca_windows_fold(fd: FoldData, cfg: pca_mod.PCAConfig, ks) -> dict:
    w = fd.windows
    rows = _pca_rows(cfg, ks, w.x, w.y, w.user, fd.train_idx, fd.val_idx, fd.test_idx, w.classes)
    cnn = TorchArtifact(fd.saved.model, fd.saved.normalizer, "cnn", example=w.x[0])
    fp = measure(cnn, w.x[fd.test_idx], w.y[fd.test_idx], STATIC)
    return {"rows": rows, "cnn": {"accuracy": fp.accuracy, "weight_bytes": fp.weight_bytes, "macs": fp.macs}}


def pca_features(root: Path, cfg: pca_mod.PCAConfig, ks, k_folds: int, n_folds: int, seed: int) -> list[dict]:
    from har.datasets import arff
    table = arff.load(arff.find_features_file(root))
    label = table.label.astype(np.int64)
    out = []
    for f in subject_kfold(table.user, k_folds, seed=seed)[:n_folds]:
        rows = _pca_rows(replace(cfg, input="features", seed=seed + f.index), ks, table.features, label, table.user,
                         f.train_idx, f.val_idx, f.test_idx, table.classes)
        out.append({"fold": f.index, "test_users": list(f.test_users), "rows": rows})
    return out


def _stream_latency_ms(art: cascade_mod.CascadeArtifact, x: np.ndarray) -> tuple[float, float, object]:
    singles = [np.ascontiguousarray(x[i:i + 1]) for i in range(len(x))]
    for s in singles[:5]:  # warm-up: first-call allocations are not steady state
        art.predict(s)
    art.reset_stats()
    it = iter(singles)
    ms = time_calls(lambda: art.predict(next(it)), len(singles)) * 1e3
    return float(ms.mean()), float(np.median(ms)), art.stats()


def cascade_fold(fd: FoldData, out: Path, fold: int, seed: int, quick: bool, n_latency: int) -> dict:
    w = fd.windows
    tr, va, te = fd.train_idx, fd.val_idx, fd.test_idx
    cfg = cascade_mod.CascadeConfig(seed=seed + fold, **({"epochs": 8, "patience": 4} if quick else {}))
    t0 = time.process_time()
    art = cascade_mod.apply(cfg, fd.fold_dir, out / f"fold{fold}", w.x[tr], w.y[tr], w.x[va], w.y[va])
    stage1_cpu_s = time.process_time() - t0
    stage2 = TorchArtifact(fd.saved.model, fd.saved.normalizer, "stage2", example=w.x[0])
    fps = {a.name: measure(a, w.x[te], w.y[te], STATIC).to_dict() for a in (art.stage1, stage2, art)}
    lat_idx = np.sort(np.random.default_rng(seed + fold).choice(te, min(n_latency, len(te)), replace=False))
    rows = []
    for t in THRESHOLDS:
        a = art.with_threshold(t)
        val_acc, val_frac = _acc(a.predict(w.x[va]), w.y[va]), a.stats().stage2_fraction
        a.reset_stats()
        test_acc, s = _acc(a.predict(w.x[te]), w.y[te]), a.stats()
        mean_ms, p50_ms, ls = _stream_latency_ms(a, w.x[lat_idx])
        rows.append({"threshold": t, "val_accuracy": val_acc, "val_stage2_fraction": val_frac,
                     "test_accuracy": test_acc, "test_stage2_fraction": s.stage2_fraction,
                     "mean_resident_weight_bytes": s.mean_resident_weight_bytes,
                     "peak_resident_weight_bytes": ls.peak_resident_weight_bytes,
                     "latency_ms_mean": mean_ms, "latency_ms_p50": p50_ms,
                     "latency_stage2_fraction": ls.stage2_fraction, "expected_macs": a.expected_macs(s.stage2_fraction)})
        a.close()
    art.close()
    return {"fold": fold, "rows": rows, "footprints": fps, "stage1_cpu_s": round(stage1_cpu_s, 2)}


def select_threshold(rows: list[dict], tolerance_pp: float) -> dict:
    """On validation users: the smallest stage-2 fraction within `tolerance_pp` of stage 2 alone."""
    large = next(r for r in rows if r["threshold"] > 1.0)["val_accuracy"]
    ok = [r for r in rows if r["val_accuracy"] >= large - tolerance_pp / 100]
    return min(ok, key=lambda r: (r["val_stage2_fraction"], r["threshold"]))


def _mean(vals) -> float:
    return float(np.mean(vals))


def _k_table(folds_rows: list[list[dict]], ref: float | None, title: str, lines: list[str]) -> dict:
    by_k: dict = {}
    for rows in folds_rows:
        for r in rows:
            by_k.setdefault(r["k"], []).append(r)
    full = _mean([r["accuracy"] for r in by_k["full"]])
    lines += [f"### {title}", "", "| k | accuracy (mean ± std) | Δ vs full input (pp) | weight bytes | "
              "of which projection | MACs |", "|---|---|---|---|---|---|"]
    within = within_ref = None
    for k, rs in by_k.items():
        acc = _mean([r["accuracy"] for r in rs])
        if k != "full" and within is None and acc >= full - 0.02:
            within = k
        if k != "full" and ref is not None and within_ref is None and acc >= ref - 0.02:
            within_ref = k
        lines.append(f"| {k} | {acc:.4f} ± {np.std([r['accuracy'] for r in rs]):.4f} | {100 * (acc - full):+.2f} | "
                     f"{rs[0]['weight_bytes']:,} | {rs[0]['projection_bytes']:,} | {rs[0]['macs']:,} |")
    lines += ["", f"Smallest k within 2 pp of the full input ({full:.4f}): **{within}**."]
    if ref is not None:
        lines.append(f"Saved CNN on the same test users: {ref:.4f}; smallest k within 2 pp of it: **{within_ref}**.")
    lines.append("")
    return {"full_accuracy": full, "smallest_k_within_2pp": within, "reference_accuracy": ref,
            "smallest_k_within_2pp_of_reference": within_ref}


def _contrastive_md(folds: list[dict], lines: list[str]) -> dict:
    by: dict = {}
    for f in folds:
        for r in f["rows"]:
            by.setdefault((r["arm"], r["label_fraction"]), []).append(r)
    lines += ["### Contrastive encoding (test users, mean over folds)", "",
              "| arm | labels | widths | accuracy (mean ± std over folds × label draws) | macro-F1 | weight bytes | MACs |",
              "|---|---|---|---|---|---|---|"]
    for (arm, frac), rs in by.items():
        acc = [r["accuracy"] for r in rs]
        lines.append(f"| {arm} | {frac:.0%} | {tuple(rs[0]['widths'])} | {_mean(acc):.4f} ± {np.std(acc):.4f} | "
                     f"{_mean([r['macro_f1'] for r in rs]):.4f} | {rs[0]['weight_bytes']:,} | {rs[0]['macs']:,} |")
    gaps = {}
    for frac in sorted({k[1] for k in by}):
        if ("contrastive-finetune", frac) in by and ("scratch", frac) in by:
            gaps[frac] = 100 * (_mean([r["accuracy"] for r in by[("contrastive-finetune", frac)]])
                                - _mean([r["accuracy"] for r in by[("scratch", frac)]]))
    gap_text = ", ".join(f"{f:.0%}: {g:+.2f}" for f, g in gaps.items())
    lines += ["", f"Contrastive fine-tune minus scratch (pp): {gap_text}",
              f"CPU seconds (pretrain + all arms, per fold): {[f['cpu_s_total'] for f in folds]}", ""]
    return {"gap_pp": {str(k): v for k, v in gaps.items()}}


def _cascade_md(folds: list[dict], tolerance_pp: float, lines: list[str]) -> dict:
    lines += ["### Cascade over the threshold (mean over folds; test users)", "",
              "| threshold | accuracy | stage-2 fraction | mean resident weight bytes | peak resident weight bytes |"
              " mean latency ms (p50) | val accuracy | val stage-2 fraction |", "|---|---|---|---|---|---|---|---|"]
    for i, t in enumerate(THRESHOLDS):
        rs = [f["rows"][i] for f in folds]
        m = {k: _mean([r[k] for r in rs]) for k in rs[0] if k != "threshold"}
        lines.append(f"| {t:g} | {m['test_accuracy']:.4f} | {m['test_stage2_fraction']:.3f} | "
                     f"{m['mean_resident_weight_bytes']:,.0f} | {m['peak_resident_weight_bytes']:,.0f} | "
                     f"{m['latency_ms_mean']:.3f} ({m['latency_ms_p50']:.3f}) | {m['val_accuracy']:.4f} | "
                     f"{m['val_stage2_fraction']:.3f} |")
    chosen = []
    for f in folds:
        sel = select_threshold(f["rows"], tolerance_pp)
        large = next(r for r in f["rows"] if r["threshold"] > 1.0)["test_accuracy"]
        chosen.append({"fold": f["fold"], "threshold": sel["threshold"], "test_accuracy": sel["test_accuracy"],
                       "large_test_accuracy": large, "test_stage2_fraction": sel["test_stage2_fraction"],
                       "mean_resident_weight_bytes": sel["mean_resident_weight_bytes"],
                       "latency_ms_mean": sel["latency_ms_mean"]})
    lines += ["", f"Threshold chosen on validation users (within {tolerance_pp} pp of stage 2 alone, "
              "least stage 2):", "",
              "| fold | threshold | test accuracy | stage 2 alone | Δ pp | stage-2 fraction | mean resident bytes |",
              "|---|---|---|---|---|---|---|"]
    for c in chosen:
        delta_pp = 100 * (c["test_accuracy"] - c["large_test_accuracy"])
        lines.append(f"| {c['fold']} | {c['threshold']:g} | {c['test_accuracy']:.4f} | {c['large_test_accuracy']:.4f} "
                     f"| {delta_pp:+.2f} | {c['test_stage2_fraction']:.3f} | {c['mean_resident_weight_bytes']:,.0f} |")
    d = _mean([100 * (c["test_accuracy"] - c["large_test_accuracy"]) for c in chosen])
    frac = _mean([c["test_stage2_fraction"] for c in chosen])
    # one threshold for all folds, chosen on the fold-mean of the validation columns
    pooled = [{"threshold": t, **{k: _mean([f["rows"][i][k] for f in folds]) for k in
                                  ("val_accuracy", "val_stage2_fraction", "test_accuracy", "test_stage2_fraction")}}
              for i, t in enumerate(THRESHOLDS)]
    one = select_threshold(pooled, tolerance_pp)
    large = pooled[-1]["test_accuracy"]
    lines += ["", f"Per-fold choice, mean: Δ {d:+.2f} pp at stage-2 fraction {frac:.3f}.",
              f"One threshold for all folds (chosen on the fold-mean validation accuracy): {one['threshold']:g} -> "
              f"test accuracy {one['test_accuracy']:.4f} (Δ {100 * (one['test_accuracy'] - large):+.2f} pp) at "
              f"stage-2 fraction {one['test_stage2_fraction']:.3f}.", ""]
    return {"chosen": chosen, "mean_delta_pp": d, "mean_stage2_fraction": frac, "pooled_choice": one}


def build_parser():
    p = parser("model_opts.report2", "PCA, contrastive encoding and cascade tables over a har.train run.")
    p.add_argument("--model", required=True, help="har.train output directory (fold0/ ... foldK/)")
    p.add_argument("--out", default="reports/model_opts2")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="few ks, few epochs: a smoke run")
    p.add_argument("--folds", type=int, default=None, help="use only the first N folds")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--tolerance-pp", type=float, default=1.0, help="cascade threshold selection tolerance")
    p.add_argument("--latency-windows", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args))


def _run(args) -> int:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = sorted(set(parts) - set(PARTS))
    if bad or not parts:
        raise BadOptionError(f"unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    bound_threads(1)
    t0 = time.perf_counter()
    root, out, model_dir = data_root(args.data_dir), Path(args.out), Path(args.model)
    k_folds = len(sorted(model_dir.glob("fold[0-9]*"))) or 4
    n_folds = min(args.folds or k_folds, k_folds)
    pca_cfg = pca_mod.PCAConfig(epochs=8, patience=4) if args.quick else pca_mod.PCAConfig()
    ccfg = ContrastiveRunConfig().quick() if args.quick else ContrastiveRunConfig()
    ks_w, ks_f = ((4, 16), (4, 16)) if args.quick else (WINDOW_KS, FEATURE_KS)
    result: dict = {"model": str(model_dir), "quick": args.quick, "parts": parts, "versions": versions(),
                    "configs": {"pca": asdict(pca_cfg), "contrastive": ccfg.to_dict(), "thresholds": THRESHOLDS}}
    lines = [f"# model_opts II: PCA, contrastive encoding, cascade ({'quick' if args.quick else 'full'})", "",
             f"Model dir: `{model_dir}`; folds: {n_folds}; accuracy on held-out test users.", ""]
    need_folds = any(p in parts for p in ("pca", "contrastive", "cascade"))
    fold_data = [load_fold(model_dir, i, root) for i in range(n_folds)] if need_folds else []
    if "pca" in parts:
        folds = [pca_windows_fold(fd, replace(pca_cfg, seed=args.seed + i), ks_w) for i, fd in enumerate(fold_data)]
        result["pca_windows"] = folds
        cnn_acc = _mean([f["cnn"]["accuracy"] for f in folds])
        result["pca_windows_summary"] = _k_table([f["rows"] for f in folds], cnn_acc,
                                                 "PCA on flattened windows (C*T = 480) + MLP", lines)
    if "features" in parts:
        folds = pca_features(root, pca_cfg, ks_f, max(k_folds, 2), n_folds, args.seed)
        result["pca_features"] = folds
        result["pca_features_summary"] = _k_table([f["rows"] for f in folds], None,
                                                  "PCA on WISDM v1.1 transformed features (43) + MLP", lines)
    if "contrastive" in parts:
        rec = datasets.load_recording(fold_data[0].dataset, root)
        folds = []
        for i, fd in enumerate(fold_data):
            gather = fd.windows.start[:, None] + np.arange(fd.windows.config.length)[None, :]
            folds.append(run_fold(fd, to_channels(rec.xyz[gather], "raw"), replace(ccfg, seed=args.seed), i))
        result["contrastive"] = folds
        result["contrastive_summary"] = _contrastive_md(folds, lines)
    if "cascade" in parts:
        folds = [cascade_fold(fd, out / "cascade", i, args.seed, args.quick, args.latency_windows)
                 for i, fd in enumerate(fold_data)]
        result["cascade"] = folds
        result["cascade_summary"] = _cascade_md(folds, args.tolerance_pp, lines)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "report2.json", json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(out / "report2.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"-> {out / 'report2.md'} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
