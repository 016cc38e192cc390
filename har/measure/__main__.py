"""`python -m har.measure`: the Footprint of a trained fold's CNN as torch eager, ONNX Runtime fp32 and int8.

Example: `python -m har.measure --model reports/train --out reports/measure --quick`.
Steps: load the fold (`har.measure.fold_data`: saved model, windows rebuilt with the saved window config,
saved test/validation users); build the torch baseline and the ONNX Runtime peers (int8 calibrated on
training users' windows only); run every artifact single-threaded (`torch.set_num_threads(1)`, ORT
`intra_op_num_threads=1`); `measure` each on the fold's test windows; print a table; write
`footprint.json`, `footprint.csv`, `footprint_context.json` and the two .onnx files into `--out`.
`--quick` uses `MeasureConfig.quick()` (fewer repetitions: every field is still measured).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from har.cli import parser, run_main, versions
from har.measure.artifact import TorchArtifact
from har.measure.fold_data import FoldData, load_fold
from har.measure.footprint import Footprint, MeasureConfig, measure
from har.measure.peers import FP32_NAME, INT8_NAME, OrtInt8Config, PeerConfig, build_peers
from har.measure.report import table, write_outputs
from har.paths import atomic_write_bytes, data_root


def build_parser():
    p = parser("har.measure", "Measure a trained fold's CNN and its ONNX Runtime peers (bytes, heap, speed, accuracy).")
    p.add_argument("--model", required=True, help="har.train output directory (with fold0/ ...) or one fold folder")
    p.add_argument("--out", default="reports/measure", help="output directory")
    p.add_argument("--data-dir", default=None, help="data root (else $HAR_DATA_DIR, else ./data)")
    p.add_argument("--fold", type=int, default=0, help="which foldN/ to measure when --model holds several")
    p.add_argument("--dataset", default=None, help="dataset the model was trained on (default: from metrics.json)")
    p.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    p.add_argument("--flamegraphs", action="store_true", help="also write a memray flame graph per artifact")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args))


def _versions() -> dict:
    v = versions()
    for mod in ("onnx", "onnxruntime", "memray"):
        try:
            v[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            v[mod] = None
    return v


def measure_fold(fd: FoldData, out: Path, mcfg: MeasureConfig, pcfg: PeerConfig,
                 flamegraphs: bool = False) -> tuple[list[Footprint], dict]:
    x_test, y_test = fd.windows.x[fd.test_idx], fd.windows.y[fd.test_idx]
    model, norm = fd.saved.model, fd.saved.normalizer
    peers = build_peers(model, norm, fd.windows.x[fd.train_idx], pcfg)
    artifacts = [TorchArtifact(model, norm, example=x_test[0])] + list(peers.artifacts.values())
    notes = {"torch-eager": f"torch {torch.__version__} eager fp32, {torch.get_num_threads()} thread(s)"}
    for name, art in peers.artifacts.items():
        notes[name] = f"onnxruntime CPU, {pcfg.intra_op_threads} intra-op thread(s)"
        atomic_write_bytes(out / f"{name}.onnx", art.model_bytes)
    if INT8_NAME in peers.artifacts:
        c = pcfg.int8
        per_channel = " per-channel" if c.per_channel else ""
        notes[INT8_NAME] += (f"; QOperator {c.activation_type}/{c.weight_type}{per_channel}, "
                             f"{c.calibrate_method} calibration on {min(c.n_calibration_windows, len(fd.train_idx))} "
                             "training-user windows")
    if FP32_NAME in peers.artifacts:
        from har.measure.onnx_export import export_error
        fidelity = export_error(model, norm, peers.artifacts[FP32_NAME].model_bytes, x_test[:256])
        notes[FP32_NAME] += f"; max |ort - torch| score {fidelity:.1e} on 256 test windows"
    footprints = []
    for art in artifacts:
        cfg = replace(mcfg, flamegraph_path=str(out / f"flamegraph-{art.name}.html")) if flamegraphs else mcfg
        footprints.append(measure(art, x_test, y_test, cfg, notes=notes[art.name]))
    context = {"model_dir": str(fd.fold_dir), "dataset": fd.dataset, "fold": fd.saved.extra.get("fold"),
               "classes": list(fd.saved.classes), "window": fd.saved.window.to_dict(),
               "test_users": list(fd.test_users), "val_users": list(fd.val_users),
               "n_windows": {"train": len(fd.train_idx), "val": len(fd.val_idx), "test": len(fd.test_idx)},
               "measure_config": mcfg.to_dict(), "peer_config": pcfg.to_dict(), "skipped": peers.notes,
               "versions": _versions()}
    return footprints, context


def _run(args) -> int:
    t0 = time.perf_counter()
    fd = load_fold(Path(args.model), args.fold, data_root(args.data_dir), args.dataset)
    mcfg = MeasureConfig.quick() if args.quick else MeasureConfig()
    pcfg = PeerConfig(int8=OrtInt8Config(n_calibration_windows=256 if args.quick else 512))
    out = Path(args.out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # single-threaded like the ORT peers; restored for in-process callers
    try:
        footprints, context = measure_fold(fd, out, mcfg, pcfg, args.flamegraphs)
    finally:
        torch.set_num_threads(threads)
    written = write_outputs(out, footprints, context)
    print(table(footprints))
    for note in context["skipped"]:
        print(note)
    print(f"{fd.dataset} fold {context['fold']} test users {list(fd.test_users)} ({len(fd.test_idx)} windows) "
          f"-> {written[0]} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
