"""Run a firmware ELF under QEMU and exchange files with the test harness (firmware/boards/harness.c).

Steps of `run()`: start `qemu-system-arm -M <board> -nographic -monitor none -serial null
-semihosting-config enable=on,target=native -kernel <elf>` in `workdir` (the harness opens its files
relative to QEMU's working directory), wait at most `timeout_s`, and return the firmware's exit code (the
code it passed to SYS_EXIT_EXTENDED) with QEMU's stderr (semihosting console output goes there).
File formats (all little-endian): windows.bin = uint32 n, uint32 t, then n*t*3 int16 (x, y, z per sample);
stream.bin = uint32 n_samples, then n_samples*3 int16; scores.bin / stream_scores.bin = per result one int8
label and n_classes int8 scores; stack.txt = the library's stack depth in bytes, decimal.
Limits: a hang is only detected by the timeout (QemuTimeoutError); QEMU does not model cycle timing.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware.toolchain import target as get_target, tool_path
from har.errors import BadDataError, HarError
from har.paths import atomic_write_bytes

WINDOWS_FILE, STREAM_FILE = "windows.bin", "stream.bin"
SCORES_FILE, STREAM_SCORES_FILE, STACK_FILE = "scores.bin", "stream_scores.bin", "stack.txt"
EXIT_CODES = {0: "ok", 2: "weights CRC mismatch", 3: "library error", 4: "file/IO error",
              5: "window length != HAR_T", 6: "stack overflow", 99: "fault"}


class QemuTimeoutError(HarError):
    """The firmware did not exit in time (a hang, or far more work than expected)."""


@dataclass(frozen=True)
class QemuResult:
    exit_code: int
    stderr_text: str
    seconds: float


@dataclass(frozen=True)
class Records:
    labels: np.ndarray  # (N,) int32, widened from the int8 on the wire
    scores: np.ndarray  # (N, n_classes) int8


def command(target: str, elf: str | os.PathLike, extra_args: tuple[str, ...] = ()) -> list[str]:
    tgt = get_target(target)
    return [tool_path("qemu-system-arm"), "-M", tgt.machine, "-nographic", "-monitor", "none",
            "-serial", "null", "-semihosting-config", "enable=on,target=native", *extra_args,
            "-kernel", str(Path(elf).resolve())]


def run(target: str, elf: str | os.PathLike, workdir: str | os.PathLike, timeout_s: float = 60.0,
        extra_args: tuple[str, ...] = ()) -> QemuResult:
    cmd = command(target, elf, extra_args)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise QemuTimeoutError(f"{Path(elf).name} on QEMU -M {get_target(target).machine} did not exit "
                               f"within {timeout_s:g} s (hung, or never reached semihosting exit)") from None
    seconds = time.perf_counter() - t0
    return QemuResult(done.returncode, done.stderr.decode("utf-8", "replace"), seconds)


def _int16(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < -32768 or a.max() > 32767)):
        raise BadDataError(f"{what} must be int16 accelerometer counts")
    return np.ascontiguousarray(a, dtype="<i2")


def windows_bytes(windows: np.ndarray) -> bytes:
    w = _int16(windows, "windows")
    if w.ndim != 3 or w.shape[2] != 3:
        raise BadDataError(f"windows must be (N, T, 3), got {w.shape}")
    return np.array(w.shape[:2], dtype="<u4").tobytes() + w.tobytes()


def stream_bytes(samples: np.ndarray) -> bytes:
    s = _int16(samples, "samples")
    if s.ndim != 2 or s.shape[1] != 3:
        raise BadDataError(f"stream samples must be (N, 3), got {s.shape}")
    return np.array([s.shape[0]], dtype="<u4").tobytes() + s.tobytes()


def write_windows(workdir: str | os.PathLike, windows: np.ndarray) -> Path:
    return atomic_write_bytes(Path(workdir) / WINDOWS_FILE, windows_bytes(windows))


def write_stream(workdir: str | os.PathLike, samples: np.ndarray) -> Path:
    return atomic_write_bytes(Path(workdir) / STREAM_FILE, stream_bytes(samples))


def parse_records(data: bytes, n_classes: int) -> Records:
    width = 1 + n_classes
    if len(data) % width:
        raise BadDataError(f"{len(data)} bytes is not a whole number of {width}-byte records")
    r = np.frombuffer(data, dtype=np.int8).reshape(-1, width)
    return Records(r[:, 0].astype(np.int32), r[:, 1:].copy())


def read_records(path: str | os.PathLike, n_classes: int) -> Records:
    return parse_records(Path(path).read_bytes(), n_classes)


def read_stack_bytes(path: str | os.PathLike) -> int:
    text = Path(path).read_text().strip()
    if not text.isdigit():
        raise BadDataError(f"{path}: expected a decimal byte count, got {text[:40]!r}")
    return int(text)
