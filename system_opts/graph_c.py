"""Host session of the graph kernels (`system_opts/csrc/har_graph.c`): build them as a shared library and
run a `GraphProgram` on a batch, one window or image per call, in a planned arena.

Steps: `library()` compiles har_graph.c (keyed by its sources, the compiler and the flags, like
`system_opts.cbuild`) once per process; `run(program, q)` copies each int8 (H, W, C) input into the arena
at the input's planned offset, runs the op table (`har_g_run`) and copies out the int8 output. The arena
is one numpy buffer of exactly `arena_bytes`; the weights are the program's blob bytes, as on a device.
Limits: one sample per call (ctypes overhead per sample; the kernels are reference loops).
"""
from __future__ import annotations

import ctypes
import hashlib
import platform
from functools import lru_cache
from pathlib import Path

import numpy as np

from har.errors import BadDataError
from har.paths import cache_dir
from system_opts.cbuild import FLAGS, BuildError, _compiler_id, compile_shared, compiler
from system_opts.graph_program import OP_WORDS, GraphProgram

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("har_graph.c", "har_graph.h", "har_fixedpoint.h", "har_int8.h")
ABI_VERSION = 1


def library_path() -> Path:
    h = hashlib.sha256(b"".join((CSRC / s).read_bytes() for s in SOURCES))
    h.update(f"{_compiler_id(compiler())}|{' '.join(FLAGS)}|{platform.machine()}".encode())
    return cache_dir() / "cbuild" / f"har_graph-{h.hexdigest()[:16]}.so"


@lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    path = library_path()
    if not path.exists():
        compile_shared([*FLAGS, f"-I{CSRC}"], [CSRC / "har_graph.c"], path, "compiling har_graph.c")
    lib = ctypes.CDLL(str(path))
    lib.har_g_abi_version.restype = ctypes.c_int32
    if lib.har_g_abi_version() != ABI_VERSION:
        raise BuildError(f"{path.name}: ABI version {lib.har_g_abi_version()}, expected {ABI_VERSION}")
    lib.har_g_run.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
    lib.har_g_run.restype = ctypes.c_int32
    lib.har_g_crc32.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.har_g_crc32.restype = ctypes.c_uint32
    return lib


def run(program: GraphProgram, q: np.ndarray) -> np.ndarray:
    """Int8 outputs (N, output_bytes) of int8 inputs (N, H, W, C) (or (N, input_bytes))."""
    lib = library()
    q = np.ascontiguousarray(q, dtype=np.int8).reshape(len(q), -1)
    if q.shape[1] != program.input_bytes:
        raise BadDataError(f"input of {q.shape[1]} values per sample; the program takes {program.input_bytes}")
    ops = np.ascontiguousarray(program.ops, dtype=np.int32)
    assert ops.shape[1] == OP_WORDS
    blob = np.frombuffer(program.blob, dtype=np.uint8).copy() if program.blob else np.zeros(1, np.uint8)
    arena = np.zeros(max(program.arena_bytes, 1), dtype=np.uint8)
    out = np.empty((len(q), program.output_bytes), dtype=np.int8)
    a_in = arena[program.input_offset:program.input_offset + program.input_bytes].view(np.int8)
    a_out = arena[program.output_offset:program.output_offset + program.output_bytes].view(np.int8)
    for k in range(len(q)):
        a_in[:] = q[k]
        if lib.har_g_run(ops.ctypes.data, len(ops), blob.ctypes.data, arena.ctypes.data):
            raise BuildError("har_g_run: an op kind the library does not hold")
        out[k] = a_out
    return out
