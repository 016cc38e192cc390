"""The exported firmware library built for the host and called from Python (ctypes).

Steps of `HostFirmware(export_dir)`:
1. Compile the export's own sources (`Export.library_sources`: the very files a Cortex-M project links)
   with the host compiler into `<export_dir>/build-host/libhar-<key>.so`, keyed by the sources' bytes,
   the compiler and the flags; built into a temporary file and renamed (concurrent builds are safe).
   `sanitize=True` adds -fsanitize=address,undefined (the library is then run in a subprocess that
   preloads the sanitizer runtimes: `firmware.hygiene`).
2. Load it, call `har_init` (its return code is kept: a corrupt weight blob gives HAR_ERR_CRC).
3. `classify(counts)`: one `har_classify` per (T, 3) int16 window -> labels (N,) and int8 logits (N, K);
   `stream(samples)`: `har_reset` then `har_push` per sample -> every result the ring produced.
Flags: the export's C flags with -O2 and without -ffreestanding (the host library links libc), -Werror.
Limits: needs a C compiler on PATH (`$CC`, default gcc); Linux/macOS shared libraries only.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np

from har.errors import BadDataError
from system_opts.cbuild import BuildError, compile_shared, compiler

HOST_FLAGS = ("-std=c99", "-O2", "-fPIC", "-shared", "-fno-strict-aliasing", "-ffp-contract=off", "-fno-math-errno",
              "-Wall", "-Wextra", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-g")
RESULT_CODES = {0: "HAR_OK", 1: "HAR_READY", -1: "HAR_ERR_CRC", -2: "HAR_ERR_STATE", -3: "HAR_ERR_ARG",
                -4: "HAR_ERR_RUN"}


def _manifest(export_dir: Path) -> dict:
    path = export_dir / "export.json"
    if not path.exists():
        raise BadDataError(f"{export_dir}: no export.json (not a firmware export directory)")
    return json.loads(path.read_text())


def build_host_library(export_dir: str | Path, sanitize: bool = False, extra_flags: tuple[str, ...] = ()) -> Path:
    """Step 1 of the module docstring; returns the shared library's path."""
    from firmware.export import LIBRARY_SOURCES
    d = Path(export_dir)
    _manifest(d)
    sources = [d / s for s in LIBRARY_SOURCES]
    flags = (*HOST_FLAGS, *(SANITIZE_FLAGS if sanitize else ()), *extra_flags)
    h = hashlib.sha256(" ".join(flags).encode())
    for f in sorted(d.glob("*.[ch]")):
        h.update(f.name.encode() + f.read_bytes())
    try:
        version = subprocess.run([compiler(), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"the host firmware build needs a C compiler: {compiler()} failed ({e})") from None
    h.update(version.encode())
    out = d / "build-host" / f"libhar-{h.hexdigest()[:16]}.so"
    if out.exists():
        return out
    compile_shared([*flags, f"-I{d}"], sources, out, f"host build of {d}")
    return out


class HostFirmware:
    """The export's C library on the host; see the module docstring."""

    def __init__(self, export_dir: str | Path):
        self.export_dir = Path(export_dir)
        m = _manifest(self.export_dir)
        self.length, self.step = int(m["window"]["length"]), int(m["step"])
        header = (self.export_dir / "har_model.h").read_text()
        self.n_classes = int(header.split("#define HAR_N_CLASSES ")[1].split()[0])

        class Result(ctypes.Structure):
            _fields_ = [("label", ctypes.c_int32), ("scores", ctypes.c_int8 * self.n_classes)]
        self._result_type = Result
        self.lib = ctypes.CDLL(str(build_host_library(self.export_dir)))
        for name in ("har_init", "har_classify", "har_push"):
            getattr(self.lib, name).restype = ctypes.c_int
        self.lib.har_weights_crc32.restype = ctypes.c_uint32
        self.init_code = int(self.lib.har_init())

    def _windows(self, counts: np.ndarray) -> np.ndarray:
        c = np.ascontiguousarray(counts)
        if c.dtype != np.int16 or c.ndim != 3 or c.shape[1:] != (self.length, 3):
            raise BadDataError(f"expected (N, {self.length}, 3) int16 counts, got {c.dtype} {c.shape}")
        return c

    def classify(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, T, 3) int16 counts -> labels (N,) int32 and int8 logits (N, K), one har_classify each."""
        c = self._windows(counts)
        labels = np.zeros(len(c), np.int32)
        scores = np.zeros((len(c), self.n_classes), np.int8)
        res = self._result_type()
        base, stride_bytes = c.ctypes.data, 2 * self.length * 3
        for i in range(len(c)):
            rc = self.lib.har_classify(ctypes.cast(base + stride_bytes * i, ctypes.POINTER(ctypes.c_int16)),
                                       ctypes.byref(res))
            if rc != 0:
                raise BadDataError(f"har_classify returned {RESULT_CODES.get(rc, rc)}")
            labels[i] = res.label
            scores[i] = np.frombuffer(bytes(res.scores), np.int8)
        return labels, scores

    def stream(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, 3) int16 samples pushed one by one after har_reset -> labels and logits of every result."""
        s = np.ascontiguousarray(samples)
        if s.dtype != np.int16 or s.ndim != 2 or s.shape[1] != 3:
            raise BadDataError(f"expected (M, 3) int16 samples, got {s.dtype} {s.shape}")
        self.lib.har_reset()
        res = self._result_type()
        labels, scores = [], []
        base = s.ctypes.data
        for i in range(len(s)):
            rc = self.lib.har_push(ctypes.cast(base + 6 * i, ctypes.POINTER(ctypes.c_int16)), ctypes.byref(res))
            if rc < 0:
                raise BadDataError(f"har_push returned {RESULT_CODES.get(rc, rc)}")
            if rc == 1:
                labels.append(res.label)
                scores.append(np.frombuffer(bytes(res.scores), np.int8))
        return np.asarray(labels, np.int32), np.asarray(scores, np.int8).reshape(-1, self.n_classes)
