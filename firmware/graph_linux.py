"""The graph library on 64-bit Arm Linux (Raspberry Pi class boards): cross-built with Debian's
`aarch64-linux-gnu-gcc` (static, so `qemu-aarch64` needs no sysroot) and run under user-mode QEMU.

Steps of `run(lib_dir, q_inputs, workdir)`: compile the library's har_graph.c and har_graph_model.c with
`firmware/boards/linux_graph_harness.c` (-O2, the project's C flags: C99, -ffp-contract=off), write
inputs.bin (the Cortex-M harness's format), run `qemu-aarch64 ./graph_aarch64 inputs.bin outputs.bin`
and return the int8 outputs plus the binary's text / data / bss sizes (`aarch64-linux-gnu-size`; these
include libc, so they are not an MCU figure).
Tools: `apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user`
(`INSTALL_HINT`). Limits: user-mode emulation (no board timing); little-endian.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware.toolchain import BOARDS_DIR
from har.errors import BadDataError, HarError
from har.paths import atomic_write_bytes

CC, QEMU, SIZE = "aarch64-linux-gnu-gcc", "qemu-aarch64", "aarch64-linux-gnu-size"
TOOLS = (CC, QEMU, SIZE)
INSTALL_HINT = "apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
FLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wextra", "-static")


class LinuxBuildError(HarError):
    """The aarch64 build or run failed."""


@dataclass(frozen=True)
class LinuxRun:
    outputs: np.ndarray
    text_bytes: int
    data_bytes: int
    bss_bytes: int


def have_tools() -> bool:
    return all(shutil.which(t) for t in TOOLS)


def run(lib_dir: str | Path, q_inputs: np.ndarray, workdir: str | Path, timeout_s: float = 600) -> LinuxRun:
    from firmware.graph_export import INPUTS_FILE, OUTPUTS_FILE, inputs_bytes
    lib, work = Path(lib_dir).resolve(), Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for t in TOOLS:
        if not shutil.which(t):
            raise LinuxBuildError(f"{t} not found; install: {INSTALL_HINT}")
    exe = work / "graph_aarch64"
    cmd = [CC, *FLAGS, f"-I{lib}", str(lib / "har_graph.c"), str(lib / "har_graph_model.c"),
           str(BOARDS_DIR / "linux_graph_harness.c"), "-o", str(exe)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode:
            raise LinuxBuildError(f"aarch64 build failed: {(done.stderr.strip().splitlines() or ['?'])[0]}")
        atomic_write_bytes(work / INPUTS_FILE, inputs_bytes(q_inputs))
        r = subprocess.run([QEMU, str(exe), INPUTS_FILE, OUTPUTS_FILE], cwd=work, capture_output=True,
                           timeout=timeout_s)
        if r.returncode:
            raise BadDataError(f"graph_aarch64 exited {r.returncode} under qemu-aarch64")
        sizes = subprocess.run([SIZE, str(exe)], capture_output=True, text=True, check=True,
                               timeout=60).stdout.splitlines()[1].split()
    except subprocess.TimeoutExpired:
        raise LinuxBuildError(f"aarch64 build or run did not finish within {timeout_s:g} s") from None
    except subprocess.CalledProcessError as e:
        raise LinuxBuildError(f"{SIZE} failed (exit {e.returncode})") from None
    n_out = json.loads((lib / "export.json").read_text())["output_bytes"]
    out = np.frombuffer((work / OUTPUTS_FILE).read_bytes(), np.int8).reshape(-1, n_out)
    return LinuxRun(out, int(sizes[0]), int(sizes[1]), int(sizes[2]))
