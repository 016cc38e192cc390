"""`measure_firmware`: export an int8 network, run it on the host and on emulated Cortex-M, read its costs.

Steps of `measure_firmware(prog, window, counts, labels, out_dir, config)` (counts: the test windows as the
device sees them, (N, T, 3) int16 from `firmware.preprocess.to_counts`):
1. Reference: `firmware.preprocess.channels` -> `intref.run`: the int8 logits every runtime must equal.
2. Host: export for the host, build it (`firmware.host`), `har_classify` every window: equal or not.
3. Per target (Cortex-M4F on QEMU mps2-an386, Cortex-M0+ on QEMU microbit), when the toolchain is there:
   export for the target; build the TEST firmware (semihosting harness) and the APP firmware (a minimal
   app: init, then push samples from a sensor register: what a user links); run the test firmware in QEMU
   on every window and on a stream of `n_stream_windows` windows back to back (ring buffer), compare with
   the reference; its painted stack depth is the stack figure; `firmware.elfsize` accounts the app ELF's
   flash and RAM per category; `firmware.icount` (unicorn, block hooks) counts the instructions of
   `har_classify` on the first `n_count_windows` windows, twice (the two lists must be equal), and its
   run must write the same scores as QEMU's (the counter runs the program QEMU ran).
4. TFLM (`firmware.tflm`, when importable): the network as .tflite, run on the same int8 inputs, equal or
   not; its smallest working arena (64-bit host build: its tail is larger than on an MCU).
Build flags: every file at `config.opt`, the kernels and weight decoders (har_int8.c, har_decode.c) at
`config.kernel_opt` (their inner loops need -O2's register allocation; -Os spills them), as the exported
Makefile and CMake snippet build them.
Limits: instruction counts are data-dependent (requantisation and clamp branches), so they are given as
mean / min / max over the counted windows; QEMU is a functional model (no cycle timing).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from firmware import cross, export, preprocess, toolchain
from firmware.host import HostFirmware
from firmware.storage import WeightStorage
from model_opts.quant import intref

TARGETS = ("cortex-m4", "cortex-m0plus")


@dataclass(frozen=True)
class FirmwareConfig:
    targets: tuple[str, ...] = TARGETS
    opt: str = "-Os"
    kernel_opt: str = "-O2"
    n_count_windows: int = 8
    n_stream_windows: int = 4
    tflm: bool = True
    qemu_timeout_s: float = 600.0
    sample: preprocess.SampleFormat = field(default_factory=preprocess.SampleFormat)
    storage: WeightStorage = field(default_factory=WeightStorage)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TargetResult:
    target: str
    n_windows: int
    mismatched_windows: int  # windows whose int8 logits differ from the reference (must be 0)
    stream_mismatched: int
    accuracy: float | None
    flash: dict  # category -> bytes (library categories, then startup and padding)
    ram: dict
    library_flash_bytes: int
    library_ram_bytes: int  # static: .data + .bss of the library
    stack_bytes: int  # painted high-water mark of the library calls
    arena_bytes: int
    instructions: tuple[int, ...]  # per counted window
    instructions_repeat_equal: bool
    qemu_seconds: float
    elf_sha256: str
    storage: str = "dense"
    layers: dict = field(default_factory=dict)  # gemm op -> its weight storage (firmware.storage.LayerStorage)

    @property
    def ram_with_stack_bytes(self) -> int:
        return self.library_ram_bytes + self.stack_bytes

    @property
    def instructions_per_inference(self) -> float:
        return float(np.mean(self.instructions))

    def to_dict(self) -> dict:
        return {**asdict(self), "ram_with_stack_bytes": self.ram_with_stack_bytes,
                "instructions_per_inference": self.instructions_per_inference}


@dataclass(frozen=True)
class FirmwareResult:
    macs: int
    n_windows: int
    host_mismatched_windows: int
    host_accuracy: float | None
    targets: dict  # target -> TargetResult
    tflm: dict | None  # mismatched_windows, arena_min_bytes, arena_reported_bytes, model_bytes, note
    skipped: tuple[str, ...] = ()  # what could not run here, and why

    def to_dict(self) -> dict:
        return {"macs": self.macs, "n_windows": self.n_windows, "host_mismatched_windows": self.host_mismatched_windows,
                "host_accuracy": self.host_accuracy, "targets": {k: v.to_dict() for k, v in self.targets.items()},
                "tflm": self.tflm, "skipped": list(self.skipped)}


def _accuracy(pred: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float(np.mean(pred == labels))


def _mismatched(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape:
        return max(len(a), len(b))
    return int(np.any(a != b, axis=1).sum())


def _target(prog, window, counts, labels, ref, out: Path, target: str, cfg: FirmwareConfig) -> TargetResult:
    from firmware import elfsize, icount, qemu
    ex = export.convert(prog, window, out / "lib", export.ExportConfig(target=target, sample=cfg.sample, tflite=False,
                                                                        storage=cfg.storage))
    sources = [ex.out_dir / s for s in ex.library_sources]
    overrides = {"har_int8.c": cfg.kernel_opt, "har_decode.c": cfg.kernel_opt}
    test = cross.build(target, sources, out / "test.elf", include_dirs=[ex.out_dir], opt=cfg.opt,
                       opt_overrides=overrides)
    app = cross.build(target, sources, out / "app.elf", include_dirs=[ex.out_dir], opt=cfg.opt, harness="app",
                      opt_overrides=overrides)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    qemu.write_windows(work, counts)
    n_stream = min(cfg.n_stream_windows, len(counts))
    stream = np.concatenate(counts[:n_stream]) if n_stream else np.zeros((0, 3), np.int16)
    qemu.write_stream(work, stream)
    run = qemu.run(target, test.elf, work, timeout_s=cfg.qemu_timeout_s)
    if run.exit_code != 0:
        raise RuntimeError(f"{target}: test firmware exited {run.exit_code} "
                           f"({qemu.EXIT_CODES.get(run.exit_code, 'unknown')}): {run.stderr_text.strip()[-200:]}")
    rec = qemu.read_records(work / qemu.SCORES_FILE, ex.device.n_classes)
    srec = qemu.read_records(work / qemu.STREAM_SCORES_FILE, ex.device.n_classes)
    t, step = ex.device.length, window.step  # the export's default step: the training windows'
    starts = np.arange(0, max(len(stream) - t + 1, 0), step)
    stream_ref = intref.run(prog, preprocess.channels(np.stack([stream[s:s + t] for s in starts]),
                                                      cfg.sample.scale_m_s2, window.channels)) if len(starts) else \
        np.zeros((0, ex.device.n_classes), np.int8)
    stack = qemu.read_stack_bytes(work / qemu.STACK_FILE)
    fp = elfsize.from_build(app, stack_bytes=stack)
    n = min(cfg.n_count_windows, len(counts))
    files = {qemu.WINDOWS_FILE: qemu.windows_bytes(counts[:n])}
    emulated = icount.emulate(target, test.elf, files, "har_classify")
    if emulated.exit_code != 0 or emulated.files.get(qemu.SCORES_FILE) != (work / qemu.SCORES_FILE).read_bytes()[
            :n * (ex.device.n_classes + 1)]:
        raise RuntimeError(f"{target}: unicorn's run of the counted windows differs from QEMU's")
    first = list(emulated.calls)
    second = icount.count_calls(target, test.elf, files, "har_classify")
    cats = fp.categories()
    return TargetResult(
        target, len(counts), _mismatched(rec.scores, ref), _mismatched(srec.scores, stream_ref),
        _accuracy(rec.labels, labels), {k: b.flash_bytes for k, b in cats.items()},
        {k: b.ram_bytes for k, b in cats.items()}, fp.library_flash_bytes, fp.library_ram_bytes, stack,
        ex.arena_bytes, tuple(first), first == second, run.seconds,
        hashlib.sha256(Path(test.elf).read_bytes()).hexdigest(), cfg.storage.format,
        {name: layer.to_dict() for name, layer in ex.device.layers})


def _tflm(prog, q: np.ndarray, ref: np.ndarray) -> dict | None:
    try:
        from firmware import tflm
        model = tflm.to_tflite(prog)
        out = tflm.run(model, q)
        peer = tflm.measure_peer(prog)
    except ImportError:
        return None
    return {"mismatched_windows": _mismatched(out, ref), "arena_min_bytes": peer.arena_min_bytes,
            "arena_reported_bytes": peer.arena_reported_bytes, "arena_head_bytes": peer.arena_head_bytes,
            "arena_tail_bytes": peer.arena_tail_bytes, "model_bytes": len(model), "note": peer.note}


def measure_firmware(prog, window, counts: np.ndarray, labels: np.ndarray | None, out_dir: str | Path,
                     config: FirmwareConfig = FirmwareConfig()) -> FirmwareResult:
    """Steps 1-4 of the module docstring."""
    out = Path(out_dir)
    ch = preprocess.channels(counts, config.sample.scale_m_s2, window.channels)
    ref = intref.run(prog, ch)
    host_ex = export.convert(prog, window, out / "host", export.ExportConfig(target="host", sample=config.sample,
                                                                                    storage=config.storage))
    host_labels, host_scores = HostFirmware(host_ex.out_dir).classify(counts)
    skipped, targets = [], {}
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if not toolchain.have(t)]
    for target in config.targets:
        if missing:
            skipped.append(f"{target}: {', '.join(missing)} missing ({toolchain.INSTALL_HINT})")
            continue
        try:
            targets[target] = _target(prog, window, counts, labels, ref, out / target, target, config)
        except cross.BuildError as exc:
            if "overflowed by" not in str(exc):
                raise
            # a model too large for the board is a result, not a failure: said, and the other board still runs
            skipped.append(f"{target}: does not fit the board ({str(exc).split('ld: ')[-1].strip()})")
    tflm = _tflm(prog, intref.quantize_input(prog, ch), ref) if config.tflm else None
    if config.tflm and tflm is None:
        skipped.append("tflm: tflite_micro not importable (pip install -e '.[firmware]')")
    return FirmwareResult(intref.macs_per_window(prog), len(counts), _mismatched(host_scores, ref),
                          _accuracy(host_labels, labels), targets, tflm, tuple(skipped))
