"""Build and load the C int8 kernels (`system_opts/csrc/har_int8.c`) as a host shared library.

Steps of `library()`:
1. Key the build by the source and header bytes, the compiler's `--version` line, the flags and the machine
   architecture, so an edited kernel or another compiler never reuses a stale library.
2. If `<cache_dir>/cbuild/har_int8-<key>.so` is missing, compile into a temporary file next to it and
   rename it into place (two processes building at once both end with a complete library).
3. `ctypes.CDLL` it once per process, declare the two entry points and check the ABI version.
Why by hand: the kernels are one dependency-free C file that must also build for a bare-metal target;
a compiled Python extension would tie it to CPython's ABI and the build to setuptools.
Flags: -O3 for the host (the arithmetic is integer, so the optimiser cannot change a result) and
-ffp-contract=off, so float steps round exactly as numpy's separate multiply and add do.
Known limits: needs a C compiler on PATH (`$CC`, default gcc) at first use; no Windows (.dll) support.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from har.errors import BadDataError, HarError
from har.paths import cache_dir

SOURCE = Path(__file__).with_name("csrc") / "har_int8.c"
HEADER = SOURCE.with_suffix(".h")
CONFIG = SOURCE.with_name("har_int8_config.h")
FIXEDPOINT = SOURCE.with_name("har_fixedpoint.h")
FLAGS = ("-O3", "-ffp-contract=off", "-std=c99", "-Wall", "-fPIC", "-shared")
ABI_VERSION = 1
N_INTS, N_FLOATS, N_PTRS = 12, 2, 8
GEMM_DOT, GEMM_TIME_MAJOR, GEMM_IM2COL16 = 0, 1, 2  # har_int8.h HAR_GEMM_*: gemm loop orders (i[11])
KIND = {"quantize_input": 0, "gemm": 1, "maxpool1d": 2, "global_avg_pool_q": 3, "dequantize": 4,
        "dwconv1d_q": 6}  # har_int8.h HAR_* (5, HAR_DECODE, is the firmware's)


MAX_ABS_SUM = (1 << 31) - 1


class BuildError(HarError):
    """The C kernels could not be compiled or loaded."""


class HarOp(ctypes.Structure):
    """Mirror of `struct har_op` in har_int8.c."""
    _fields_ = [("kind", ctypes.c_int32), ("i", ctypes.c_int32 * N_INTS), ("f", ctypes.c_float * N_FLOATS),
                ("p", ctypes.c_void_p * N_PTRS)]


def compiler() -> str:
    return os.environ.get("CC", "gcc")


def _compiler_id(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"the C kernels need a C compiler: `{cc} --version` failed ({e.__class__.__name__})")
    return out.stdout.splitlines()[0] if out.stdout else cc


def library_path() -> Path:
    cc = compiler()
    h = hashlib.sha256(SOURCE.read_bytes() + HEADER.read_bytes() + CONFIG.read_bytes() + FIXEDPOINT.read_bytes())
    h.update(f"{_compiler_id(cc)}|{' '.join(FLAGS)}|{platform.machine()}".encode())
    return cache_dir() / "cbuild" / f"har_int8-{h.hexdigest()[:16]}.so"


def compile_shared(args: list[str], sources: list[Path], out: Path, what: str, error=None,
                   timeout_s: float = 900) -> Path:
    """`$CC args -o <tmp> sources`, then rename the temporary file to `out` (a process building the same
    library at the same time ends with a complete one too); the first compiler error line is raised as
    `error` (default BuildError) naming `what`."""
    error = error or BuildError
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler(), *args, "-o", tmp, *map(str, sources)], capture_output=True, text=True,
                              timeout=timeout_s)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no output"])[0]
            raise error(f"{what} failed: {first}")
        os.replace(tmp, out)
    except (OSError, subprocess.SubprocessError) as e:
        raise error(f"{what} failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build(path: Path) -> Path:
    return compile_shared([*FLAGS, f"-I{SOURCE.parent}"], [SOURCE], path, f"compiling {SOURCE.name}")


@lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    """The loaded kernels, built on first use (see the module docstring)."""
    path = library_path()
    if not path.exists():
        build(path)
    lib = ctypes.CDLL(str(path))
    lib.har_abi_version.restype = ctypes.c_int32
    if lib.har_abi_version() != ABI_VERSION:
        raise BuildError(f"{path.name}: ABI version {lib.har_abi_version()}, expected {ABI_VERSION}")
    lib.har_run.argtypes = [ctypes.POINTER(HarOp), ctypes.c_int32]
    lib.har_run.restype = ctypes.c_int
    lib.har_run_repeat.argtypes = [ctypes.POINTER(HarOp), ctypes.c_int32, ctypes.c_int32]
    lib.har_run_repeat.restype = ctypes.c_int
    lib.har_op_run.argtypes = [ctypes.POINTER(HarOp)]
    lib.har_op_run.restype = ctypes.c_int
    return lib


def check_contract(program) -> None:
    """The kernels' contract (har_int8.c's header) for a flat int8 program: shifts in [-31, 30], multipliers
    >= 0, zero points and clamp bounds in int8, act_min <= act_max, finite input quantizer floats, and
    |partial sums| <= terms * 255 * 128 < 2^31 (weights may be -128). Raises BadDataError naming the op and
    the bound; the exporter and the host C session call it before any table reaches C."""
    w = program.weights
    for op in program.ops:
        if op.kind == "quantize_input":
            floats = [np.asarray(w[n]) for n in op.params]
            if not all(np.all(np.isfinite(f)) for f in floats):
                raise BadDataError(f"{op.name}: non-finite input scale or offset")
        a = op.attrs
        for key in ("input_zero_point", "output_zero_point", "act_min", "act_max"):
            if key in a and not -128 <= int(a[key]) <= 127:
                raise BadDataError(f"{op.name}: {key} {a[key]} outside int8")
        if a.get("act_min", -128) > a.get("act_max", 127):
            raise BadDataError(f"{op.name}: act_min {a['act_min']} > act_max {a['act_max']}")
        if op.kind not in ("conv1d_q", "dwconv1d_q", "linear_q", "global_avg_pool_q"):
            continue
        m, s = w[f"{op.name}.multiplier"], w[f"{op.name}.shift"]
        if np.any(m < 0) or np.any(s < -31) or np.any(s > 30):
            raise BadDataError(f"{op.name}: requantisation outside the kernels' contract (multiplier >= 0, "
                               f"shift in [-31, 30]; got {int(m.min())}, [{int(s.min())}, {int(s.max())}])")
        if op.kind == "global_avg_pool_q":
            terms = int(a["length"])
            bound = terms * 255
        else:  # conv (C_out, K * C_in), depthwise (C, K), linear (C_out, C_in)
            terms = int(w[f"{op.name}.weight"].shape[1])
            bound = terms * 255 * 128
        if bound > MAX_ABS_SUM:
            raise BadDataError(f"{op.name}: {terms} accumulated terms could overflow int32 (bound {bound})")
