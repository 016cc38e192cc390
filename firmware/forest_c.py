"""The forest firmware's C on the host (ctypes): the features the device computes, and the built library.

`features_library()` compiles csrc/har_pre.c + csrc/har_features.c once per source version into
`<cache>/forest/` (keyed by the sources' bytes and the flags; built into a temporary file and renamed, so
concurrent builds are safe); `c_channels` / `c_features` call `har_features_channels` / `har_features` per
window: the very code a device runs, so the forest is trained on the device's own inputs.
`host_library(out_dir)` builds a firmware directory's library sources (firmware.forest.LIBRARY_SOURCES) the
same way into `<out_dir>/build-host/`, `host_classify` calls `har_forest_classify` per window.
`soft_sqrt=True` compiles the features with -DHAR_SOFT_SQRT: the M0+'s integer square root on the host.
Flags: -O1 (the trees are integer compares and the features float32 steps in a fixed order, SSE without
contraction, so every level computes the same; -O2 on the ~28 MB generated model only costs compile time).
Limits: needs gcc (`$CC`) on PATH; Linux/macOS shared libraries; one ctypes call per window (~5 us).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from firmware.preprocess import CHANNEL_SETS
from har.errors import BadOptionError, HarError
from har.paths import cache_dir
from system_opts.cbuild import compile_shared, compiler

CSRC = Path(__file__).with_name("csrc")
KERNELS = Path(__file__).resolve().parents[1] / "system_opts" / "csrc"
LIBRARY_SOURCES = ("har_pre.c", "har_features.c", "har_forest.c", "har_forest_api.c", "har_ring.c",
                   "har_forest_model.c")
HOST_FLAGS = ("-std=c99", "-O1", "-fPIC", "-shared", "-fno-strict-aliasing", "-ffp-contract=off",
              "-fno-math-errno", "-Wall", "-Wextra")


class ForestBuildError(HarError):
    """The host library could not be built, or refused a window."""


def _compile(sources: list[Path], includes: list[Path], out: Path, defines: tuple[str, ...] = ()) -> Path:
    return compile_shared([*HOST_FLAGS, *defines, *(f"-I{d}" for d in includes)], sources, out, "host build",
                          ForestBuildError)


def _key(paths, defines: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256(" ".join((*HOST_FLAGS, *defines)).encode())
    for p in paths:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


_I16, _F32 = np.ctypeslib.ndpointer(np.int16, flags="C"), np.ctypeslib.ndpointer(np.float32, flags="C")


@lru_cache(maxsize=None)
def features_library(soft_sqrt: bool = False) -> ctypes.CDLL:
    """har_pre.c + har_features.c as a host library (no model), built once per source version."""
    srcs = [CSRC / "har_pre.c", CSRC / "har_features.c"]
    deps = srcs + [CSRC / "har_pre.h", CSRC / "har_features.h", KERNELS / "har_int8.h"]
    defines = ("-DHAR_SOFT_SQRT",) if soft_sqrt else ()
    path = cache_dir() / "forest" / f"libharfeatures-{_key(deps, defines)}.so"
    if not path.exists():
        _compile(srcs, [CSRC, KERNELS], path, defines)
    lib = ctypes.CDLL(str(path))
    lib.har_features_channels.argtypes = [_I16, ctypes.c_int32, ctypes.c_int32, ctypes.c_float, ctypes.c_int32, _F32]
    lib.har_features_channels.restype = ctypes.c_int32
    lib.har_features.argtypes = [_F32, ctypes.c_int32, ctypes.c_int32, _F32]
    lib.har_features.restype = ctypes.c_int32
    lib.har_features_n_channels.argtypes = [ctypes.c_int32]
    lib.har_features_n_channels.restype = ctypes.c_int32
    return lib


def _counts(counts: np.ndarray) -> np.ndarray:
    c = np.ascontiguousarray(counts, dtype=np.int16)
    if c.ndim != 3 or c.shape[2] != 3:
        raise BadOptionError(f"expected (N, T, 3) int16 counts, got {c.shape}")
    return c


def c_channels(counts: np.ndarray, channels: str, scale_m_s2: float, soft_sqrt: bool = False) -> np.ndarray:
    """(N, T, 3) counts -> (N, C', T) float32 statistics channels as the firmware computes them
    (har_pre_channels_f32, plus the magnitude for `raw`)."""
    lib, c = features_library(soft_sqrt), _counts(counts)
    n, t, _ = c.shape
    n_ch = lib.har_features_n_channels(CHANNEL_SETS[channels])
    out = np.zeros((n, n_ch, t), np.float32)
    for i in range(n):
        lib.har_features_channels(c[i], 0, t, scale_m_s2, CHANNEL_SETS[channels], out[i].reshape(-1))
    return out


def c_features(counts: np.ndarray, channels: str, scale_m_s2: float, soft_sqrt: bool = False) -> np.ndarray:
    """(N, T, 3) counts -> (N, F) float32: `har_features` of `c_channels`, window_stats' order."""
    lib = features_library(soft_sqrt)
    ch = c_channels(counts, channels, scale_m_s2, soft_sqrt)
    n, n_ch, t = ch.shape
    out = np.zeros((n, n_ch * 12 + 3), np.float32)
    for i in range(n):
        if lib.har_features(ch[i].reshape(-1), n_ch, t, out[i]) != 0:
            raise BadOptionError(f"har_features refused a window of {t} samples (max HAR_FEATURES_MAX_T)")
    return out


def host_library(out_dir: str | Path) -> tuple[ctypes.CDLL, tuple[str, ...]]:
    """The directory's library sources built with gcc for the host (cached by content); (library, command)."""
    d = Path(out_dir)
    t = json.loads((d / "forest.json").read_text())["window"]["length"]
    deps = sorted(d.glob("*.[ch]"))
    out = d / "build-host" / f"libharforest-{_key(deps)}.so"
    defines = (f"-DHAR_FEATURES_MAX_T={t}",)
    cmd = (compiler(), *HOST_FLAGS, *defines, f"-I{d}", "-o", str(out), *(str(d / s) for s in LIBRARY_SOURCES))
    if not out.exists():
        _compile([d / s for s in LIBRARY_SOURCES], [d], out, defines)
    lib = ctypes.CDLL(str(out))
    lib.har_forest_classify.argtypes = [_I16, ctypes.c_int32, ctypes.c_float, ctypes.c_int32]
    lib.har_forest_classify.restype = ctypes.c_int
    lib.har_forest_window_features.argtypes = [_I16, ctypes.c_int32, ctypes.c_float, ctypes.c_int32, _F32]
    lib.har_forest_window_features.restype = ctypes.c_int
    return lib, cmd


def host_classify(lib: ctypes.CDLL, counts: np.ndarray, channels: str, scale_m_s2: float) -> np.ndarray:
    c = _counts(counts)
    labels = np.array([lib.har_forest_classify(w, c.shape[1], scale_m_s2, CHANNEL_SETS[channels]) for w in c],
                      dtype=np.int64)
    if len(labels) and labels.min() < 0:
        raise ForestBuildError("har_forest_classify refused a window (wrong length or channel set)")
    return labels
