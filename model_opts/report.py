"""`python -m model_opts.report`: int8 (PTQ, QAT, peers) and structured-pruning tables over a har.train run.

Example: `python -m model_opts.report --model /tmp/m_q --out reports/model_opts [--quick]`.
Steps, per saved fold (`har.measure.fold_data.load_fold`: model, windows rebuilt with the saved window
config, saved test/validation users, train = everyone else):
1. fp32 baseline (`TorchArtifact`).
2. int8 PTQ with min/max and with percentile calibration, int8 QAT; for each, the fraction of test
   windows whose class the integer reference and the fake-quant model agree on.
3. Peers: ONNX Runtime fp32/int8 (`har.measure.peers.build_peers`) and torch.ao eager int8
   (`model_opts.quant.ao_eager`), each skipped with its reason when unavailable or failing.
4. Structured pruning for every importance x ratio (iterative prune + fine-tune), then the headline
   pruned model (`--compose-ratio`, L1) quantized by PTQ (percentile) and QAT: the "composed" rows.
5. Every artifact goes through `har.measure.measure` on the fold's test windows (static fields by
   default; `--timing` adds latency and memray heap). Only training windows calibrate, only training
   windows train, validation users early-stop; test users are only scored.
Outputs (atomic): `model_opts.json` (every Footprint per fold, agreements, notes, configs, versions),
`model_opts.md` (mean over folds: accuracy +- std, delta vs fp32 in percentage points, bytes and MACs
with their ratio to fp32), and per fold `fold<k>/fold_report.json` (written as soon as the fold ends),
the int8 artifacts (`int8.safetensors`) and pruned models (`har.model_io`) under `fold<k>/<artifact name>/`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from har import model_io
from har.cli import git_commit, parser, run_main, versions
from har.errors import BadOptionError
from har.measure.artifact import TorchArtifact
from har.measure.fold_data import FoldData, load_fold
from har.measure.footprint import MeasureConfig, measure
from har.paths import atomic_write_text, data_root
from har.splits import Fold
from har.training import bound_threads
from model_opts import prune
from model_opts.quant import ao_eager, ptq, qat
from model_opts.quant.artifact import Int8Artifact, save as save_int8
from model_opts.quant.config import QATConfig, QuantConfig
from model_opts.quant.fakequant import QuantSim, class_agreement, to_program


CONTROL = "fp32-finetune-control"


@dataclass(frozen=True)
class ReportConfig:
    ptq: tuple[QuantConfig, ...] = (QuantConfig(calibration="minmax"), QuantConfig(calibration="percentile"))
    qat: QATConfig = QATConfig()
    prune: prune.PruneConfig = prune.PruneConfig(steps=2, finetune_epochs=5, patience=3)
    prune_ratios: tuple[float, ...] = (0.2, 0.35, 0.5)
    importances: tuple[str, ...] = ("l1", "l2", "random")
    compose_ratio: float = 0.35
    peers: bool = True
    torch_ao: bool = True

    def quick(self) -> "ReportConfig":
        return replace(self, qat=replace(self.qat, epochs=1, patience=1),
                       prune=replace(self.prune, steps=1, finetune_epochs=2, patience=1),
                       prune_ratios=(self.compose_ratio,), importances=("l1", "random"))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FoldReport:
    fold: int
    footprints: list[dict] = field(default_factory=list)
    agreement: dict[str, float] = field(default_factory=dict)
    widths: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _fold_of(fd: FoldData, k: int) -> Fold:
    return Fold(k, fd.train_idx, fd.val_idx, fd.test_idx, fd.test_users, fd.val_users)


def _int8(sim: QuantSim, name: str, classes, info: dict) -> Int8Artifact:
    return Int8Artifact(to_program(sim), name, classes, info)


def run_fold(fd: FoldData, k: int, cfg: ReportConfig, mcfg: MeasureConfig, out: Path | None) -> FoldReport:
    win, fold, saved = fd.windows, _fold_of(fd, k), fd.saved
    model, norm = saved.model, saved.normalizer
    x_train, x_test, y_test = win.x[fold.train_idx], win.x[fold.test_idx], win.y[fold.test_idx]
    rep = FoldReport(k)

    def record(art, note: str = "") -> None:
        rep.footprints.append(measure(art, x_test, y_test, mcfg, notes=note).to_dict())
        if out is not None and isinstance(art, Int8Artifact):
            save_int8(out / f"fold{k}" / art.name, art)
        elif out is not None and isinstance(art, TorchArtifact) and art.name.startswith("pruned"):
            model_io.save(out / f"fold{k}" / art.name, art.model, norm, saved.window, saved.classes,
                          extra={**saved.extra, "pruned_from": saved.model.config.to_json()})

    def quantize(base, prefix: str) -> None:
        for qc in cfg.ptq:
            sim = ptq.simulate(base, norm, x_train, qc)
            art = _int8(sim, f"{prefix}int8-ptq-{qc.calibration}", saved.classes, {"config": qc.to_dict()})
            rep.agreement[art.name] = class_agreement(sim, art.program, x_test)
            record(art, f"PTQ {qc.calibration}")
        sim = qat.train_sim(base, norm, win, fold, cfg.qat)
        art = _int8(sim, f"{prefix}int8-qat", saved.classes, {"config": cfg.qat.to_dict()})
        rep.agreement[art.name] = class_agreement(sim, art.program, x_test)
        record(art, f"QAT {cfg.qat.epochs} epochs max from PTQ {cfg.qat.quant.calibration}")

    record(TorchArtifact(model, norm, "fp32", example=x_test[0]), "torch eager fp32")
    quantize(model, "")
    if cfg.peers:
        from har.measure.peers import build_peers
        peers = build_peers(model, norm, x_train)
        rep.notes += peers.notes
        for art in peers.artifacts.values():
            record(art, "onnxruntime CPU, quantize_static QOperator" if "int8" in art.name else "onnxruntime CPU")
    if cfg.torch_ao:
        art, notes = ao_eager.build(model, norm, x_train)
        rep.notes += notes
        if art is not None:
            record(art, "torch.ao eager x86 qconfig")
    control = prune.finetune_control(model, norm, win, fold, cfg.prune)
    record(TorchArtifact(control, norm, CONTROL, example=x_test[0]),
           f"fp32 fine-tuned with the pruning schedule ({cfg.prune.steps} x {cfg.prune.finetune_epochs} epochs), "
           "no channel removed")
    for imp in cfg.importances:
        for ratio in cfg.prune_ratios:
            pc = replace(cfg.prune, ratio=ratio, importance=imp)
            art = prune.apply(model, norm, win, fold, pc)
            rep.widths[art.name] = list(prune.pruned_widths(art.model))
            record(art, f"{imp} structured pruning, ratio {ratio:g}, {pc.steps} steps")
            if imp == "l1" and ratio == cfg.compose_ratio:
                quantize(art.model, f"{art.name}+")
    return rep


_COLS = ("artifact", "acc", "d acc pp", "per-fold d pp", "d vs control pp", "macro-F1", "params", "x fp32", "weight B", "x fp32",
         "MACs", "x fp32", "act peak B", "int/fq agree")


def summarise(folds: list[dict]) -> list[dict]:
    """Per artifact name, mean over folds (and accuracy std), with ratios and deltas against fp32;
    `folds` are `FoldReport`s as dicts."""
    names = list(dict.fromkeys(fp["name"] for r in folds for fp in r["footprints"]))
    rows = []
    for name in names:
        fps = [fp for r in folds for fp in r["footprints"] if fp["name"] == name]
        base = [fp for r in folds for fp in r["footprints"] if fp["name"] == "fp32"]
        acc = np.array([fp["accuracy"] for fp in fps])
        mean = {f: float(np.mean([fp[f] for fp in fps])) for f in
                ("macro_f1", "param_count", "weight_bytes", "macs", "activation_bytes_peak")}
        b = {f: float(np.mean([fp[f] for fp in base])) for f in ("accuracy", "weight_bytes", "macs", "param_count")}
        ctrl = [fp["accuracy"] for r in folds for fp in r["footprints"] if fp["name"] == CONTROL]
        agree = [r["agreement"][name] for r in folds if name in r["agreement"]]
        per_fold_pp = [100 * (fp["accuracy"] - b0["accuracy"]) for r in folds for fp in r["footprints"]
                       for b0 in r["footprints"] if fp["name"] == name and b0["name"] == "fp32"]
        rows.append({"name": name, "n_folds": len(fps), "accuracy_mean": float(acc.mean()),
                     "delta_accuracy_pp_per_fold": per_fold_pp,
                     "accuracy_std": float(acc.std()), "accuracy_per_fold": acc.tolist(),
                     "delta_accuracy_pp": 100 * (float(acc.mean()) - b["accuracy"]),
                     "delta_vs_control_pp": 100 * (float(acc.mean()) - float(np.mean(ctrl))) if ctrl else None,
                     **mean,
                     "weight_bytes_vs_fp32": mean["weight_bytes"] / b["weight_bytes"],
                     "macs_vs_fp32": mean["macs"] / b["macs"], "params_vs_fp32": mean["param_count"] / b["param_count"],
                     "agreement_min": min(agree) if agree else None,
                     "agreement_mean": float(np.mean(agree)) if agree else None,
                     **{f: (float(np.mean([fp[f] for fp in fps])) if all(fp[f] is not None for fp in fps) else None)
                        for f, _, _ in _TIMING}})
    return rows


_TIMING = (("latency_ms_p50", "p50 ms", "{:.3f}"), ("latency_ms_p95", "p95 ms", "{:.3f}"),
           ("throughput_windows_per_s", "win/s b256", "{:,.0f}"), ("peak_heap_bytes", "heap B", "{:,.0f}"),
           ("allocations_per_inference", "allocs/inf", "{:.1f}"))


def _timing_table(rows: list[dict]) -> list[str]:
    timed = [r for r in rows if r["latency_ms_p50"] is not None or r["peak_heap_bytes"] is not None]
    if not timed:
        return []
    out = ["", "Speed and heap (har.measure.measure, batch 1 unless noted, single thread, mean over folds):", "",
           "| artifact | " + " | ".join(h for _, h, _ in _TIMING) + " |", "|" + "---|" * (len(_TIMING) + 1)]
    for r in timed:
        cells = ["-" if r[f] is None else fmt.format(r[f]) for f, _, fmt in _TIMING]
        out.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return out


def _pp(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _span(values: list[float]) -> str:
    return f"{min(values):+.1f} .. {max(values):+.1f}" if values else "-"


def markdown(rows: list[dict], folds: list[dict], context: dict) -> str:
    """The summary table; `folds` are `FoldReport`s as dicts (so a saved model_opts.json re-renders)."""
    lines = [f"# model_opts report ({context['n_folds']} folds, {context['dataset']}, test users only)", "",
             f"`python -m model_opts.report` at commit {git_commit(short=True)}, {time.strftime('%Y-%m-%d')}.", "",
             "| " + " | ".join(_COLS) + " |", "|" + "---|" * len(_COLS)]
    for r in rows:
        agree = "-" if r["agreement_min"] is None else f"{100 * r['agreement_min']:.2f}% (min)"
        lines.append(f"| {r['name']} | {r['accuracy_mean']:.4f} +- {r['accuracy_std']:.4f} | "
                     f"{r['delta_accuracy_pp']:+.2f} | {_span(r['delta_accuracy_pp_per_fold'])} | "
                     f"{_pp(r['delta_vs_control_pp'])} | {r['macro_f1']:.4f} | "
                     f"{r['param_count']:,.0f} | {r['params_vs_fp32']:.3f} | "
                     f"{r['weight_bytes']:,.0f} | {r['weight_bytes_vs_fp32']:.3f} | {r['macs']:,.0f} | "
                     f"{r['macs_vs_fp32']:.3f} | {r['activation_bytes_peak']:,.0f} | {agree} |")
    lines += _timing_table(rows)
    widths = {n: w for rep in folds for n, w in rep["widths"].items()}
    if widths:
        lines += ["", "Pruned widths: " + ", ".join(f"{n} {tuple(w)}" for n, w in widths.items())]
    notes = sorted({n for rep in folds for n in rep["notes"]})
    lines += ["", "Notes:"] + [f"- {n}" for n in notes] + [
        "- params / weight B / MACs / act peak B: har.measure.measure (param_count counts every stored array "
        "element: BN statistics, normaliser, scales and zero points included).",
        "- int/fq agree: share of test windows whose class the integer-only reference and the fake-quant model agree on.",
        f"- d vs control pp: accuracy minus that of {CONTROL} (the fp32 model fine-tuned with the same schedule "
        "as pruning, no channel removed), separating the effect of extra training from that of the technique."]
    return "\n".join(lines) + "\n"


def build_parser():
    p = parser("model_opts.report", "int8 quantization and structured pruning tables over a har.train output.")
    p.add_argument("--model", required=True, help="har.train output directory (fold0/ ... foldK/)")
    p.add_argument("--out", default="reports/model_opts", help="output directory")
    p.add_argument("--data-dir", default=None, help="data root (else $HAR_DATA_DIR, else ./data)")
    p.add_argument("--folds", default=None, help="comma-separated fold indices (default: all saved; --quick: 0)")
    p.add_argument("--quick", action="store_true", help="one fold, few epochs, one pruning ratio: a smoke run")
    p.add_argument("--timing", action="store_true", help="also measure latency and memray heap (slower)")
    p.add_argument("--no-peers", action="store_true", help="skip ONNX Runtime and torch.ao peers")
    return p


def _fold_indices(model_dir: Path, flag: str | None, quick: bool) -> list[int]:
    if flag:
        try:
            return [int(s) for s in flag.split(",")]
        except ValueError:
            raise BadOptionError(f"--folds must be comma-separated integers, got {flag!r}") from None
    found = sorted(int(p.name[4:]) for p in model_dir.glob("fold*") if p.name[4:].isdigit())
    return found[:1] if quick else (found or [0])


def _run(args) -> int:
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        return _report(args, t0)
    finally:
        torch.set_num_threads(threads)  # restored for in-process callers (tests)


def _report(args, t0: float) -> int:
    bound_threads(1)  # single-threaded like the target device; extra threads only contend on 2 shared cores
    model_dir, out = Path(args.model), Path(args.out)
    cfg = ReportConfig(peers=not args.no_peers, torch_ao=not args.no_peers)
    cfg = cfg.quick() if args.quick else cfg
    mcfg = MeasureConfig.quick() if args.timing and args.quick else (
        MeasureConfig() if args.timing else MeasureConfig.static_only())
    reports, datasets_seen = [], set()
    for k in _fold_indices(model_dir, args.folds, args.quick):
        fd = load_fold(model_dir, k, data_root(args.data_dir))
        datasets_seen.add(fd.dataset)
        reports.append(run_fold(fd, k, cfg, mcfg, out))
        atomic_write_text(out / f"fold{k}" / "fold_report.json",  # a long run keeps finished folds
                          json.dumps(asdict(reports[-1]), indent=2, sort_keys=True) + "\n")
        print(f"fold {k} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    folds = [asdict(r) for r in reports]
    rows = summarise(folds)
    context = {"model_dir": str(model_dir), "dataset": ",".join(sorted(datasets_seen)), "n_folds": len(reports),
               "quick": args.quick, "config": cfg.to_dict(), "measure_config": mcfg.to_dict(), "versions": versions()}
    doc = {"context": context, "summary": rows, "folds": folds}
    atomic_write_text(out / "model_opts.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
    md = markdown(rows, doc["folds"], context)
    atomic_write_text(out / "model_opts.md", md)
    print(md)
    print(f"-> {out / 'model_opts.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())
