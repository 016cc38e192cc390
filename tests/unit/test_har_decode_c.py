"""The freestanding C weight decoders (system_opts/csrc/har_decode.c) against the Python formats
(model_opts/compress): identical output on every format, -1 and no write past dst on truncated or malformed
streams, the same accept/refuse verdict on random bytes, the same again under ASan + UBSan, and a -Werror
cross build for Cortex-M0+ and M4 that needs no library symbol."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from har.errors import BadDataError
from model_opts.compress import bitmask, huffman, layer, palette

CSRC = Path(__file__).resolve().parents[2] / "system_opts" / "csrc"
SOURCE = CSRC / "har_decode.c"
WARN = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-ffreestanding")
HOST = (*WARN, "-O2", "-fPIC", "-shared", f"-I{CSRC}")
SANITIZE = ("-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-g")
GUARD = 16
SENTINEL = 0x5A
SIZES = (1, 2, 7, 8, 9, 63, 200, 1001)
FMT = {"palette": 1, "huffman": 2, "bitmask": 3}
P = ctypes.c_void_p
I32 = ctypes.c_int32


class HarOp(ctypes.Structure):
    """struct har_op (har_int8.h), mirrored here rather than imported from system_opts.cbuild: importing
    the system_opts package loads torch, which takes ~10 s under the preloaded sanitizer runtimes (the
    mirror is checked against cbuild.HarOp below)."""
    _fields_ = [("kind", ctypes.c_int32), ("i", ctypes.c_int32 * 12), ("f", ctypes.c_float * 2),
                ("p", ctypes.c_void_p * 8)]


def build(out: Path, extra: tuple[str, ...] = ()) -> Path:
    from system_opts.cbuild import compile_shared
    return compile_shared([*HOST, *extra], [SOURCE], out, f"compiling {SOURCE.name}")


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.har_decode_palette.argtypes = [P, I32, I32, P, I32, P, I32]
    lib.har_decode_huffman.argtypes = [P, I32, P, P, I32, P, I32, P, I32]
    lib.har_decode_bitmask.argtypes = [P, I32, P, I32]
    lib.har_decode_op.argtypes = [ctypes.POINTER(HarOp)]
    for f in ("har_decode_palette", "har_decode_huffman", "har_decode_bitmask", "har_decode_op"):
        getattr(lib, f).restype = ctypes.c_int
    return lib


def c_decode(lib, fmt: str, src: bytes, n: int, bits=0, codebook=None, count=None, symbols=None,
             src_bytes: int | None = None, via_op: bool = False) -> tuple[int, np.ndarray]:
    """(return code, dst[0..n)) of the C decoder; asserts the guard bytes around dst are untouched. `src`
    is copied into an exact-size malloc'd array (ASan sees a read past it); `src_bytes` may be smaller."""
    buf = np.frombuffer(src, np.uint8).copy()
    sb = len(src) if src_bytes is None else src_bytes
    dst = np.full(n + 2 * GUARD, SENTINEL, np.int8)
    out = dst.ctypes.data + GUARD
    cb = None if codebook is None or len(codebook) == 0 else np.ascontiguousarray(codebook, np.int8)
    k = 0 if cb is None else cb.size
    cnt = None if count is None else np.ascontiguousarray(count, np.uint16)
    sym = None if symbols is None else np.ascontiguousarray(symbols, np.uint8)
    addr = (lambda a: None if a is None else a.ctypes.data)
    if via_op:
        op = HarOp()
        op.i[0], op.i[1], op.i[2], op.i[3] = FMT[fmt], n, sb, bits
        op.i[4], op.i[5] = (0 if sym is None else sym.size), k
        for j, a in enumerate((buf, None, cb, cnt, sym)):
            op.p[j] = addr(a)
        op.p[1] = out
        rc = lib.har_decode_op(ctypes.byref(op))
    elif fmt == "palette":
        rc = lib.har_decode_palette(addr(buf), sb, bits, addr(cb), k, out, n)
    elif fmt == "huffman":
        rc = lib.har_decode_huffman(addr(buf), sb, addr(cnt), addr(sym), sym.size, addr(cb), k, out, n)
    else:
        rc = lib.har_decode_bitmask(addr(buf), sb, out, n)
    assert np.all(dst[:GUARD] == SENTINEL) and np.all(dst[GUARD + n:] == SENTINEL), "write outside dst"
    return rc, dst[GUARD:GUARD + n].copy()


def c_layer(lib, enc: layer.EncodedLayer, **kw) -> tuple[int, np.ndarray]:
    return c_decode(lib, enc.format, enc.stream, enc.n, enc.bits, enc.codebook,
                    enc.count if enc.format == "huffman" else None,
                    enc.symbols if enc.format == "huffman" else None, **kw)


def layers():
    """Every format on skewed, uniform and all-zero data, several n, palettes of k = 1..16."""
    for n in SIZES:
        rng = np.random.default_rng(n)
        wide = [rng.integers(-128, 128, n).astype(np.int8),
                np.clip(np.round(rng.laplace(0, 4, n)), -128, 127).astype(np.int8), np.zeros(n, np.int8)]
        for v in wide:
            yield layer.encode(v, "bitmask"), v
            yield layer.encode(v, "huffman"), v
        for k in range(1, 17):
            levels = np.sort(rng.choice(np.arange(-128, 128), k, replace=False)).astype(np.int8)
            p = rng.dirichlet(np.full(k, 0.3)) if k % 2 else np.full(k, 1.0 / k)  # skewed / uniform
            v = levels[rng.choice(k, n, p=p)]
            yield layer.encode(v, "palette"), v
            yield layer.encode(v, "huffman", over_indices=True), v


def check_matches_python(lib) -> int:
    checked = 0
    for enc, values in layers():
        for via_op in (False, True):
            rc, out = c_layer(lib, enc, via_op=via_op)
            assert rc == 0 and np.array_equal(out, values) and np.array_equal(out, layer.decode(enc)), \
                (enc.format, enc.n, enc.codebook.size, via_op)
        checked += 1
    return checked


def check_truncated(lib) -> int:
    """One byte short (the missing byte still in memory right after src: it must not be used), and every
    shorter length for small layers: -1, and no write past dst."""
    checked = 0
    for enc, _ in layers():
        full = len(enc.stream)
        for sb in range(full - 1, -1, -1) if enc.n <= 9 else (full - 1,):
            rc, _ = c_layer(lib, enc, src_bytes=sb)
            assert rc == -1, (enc.format, enc.n, full, sb)
            checked += 1
    return checked


def check_malformed(lib) -> None:
    # palette: k = 5 needs 3 bits, so index 7 can be stored but is outside the codebook
    cb = np.array([-2, -1, 0, 1, 2], np.int8)
    assert c_decode(lib, "palette", palette.pack_indices(np.array([0, 4, 1], np.uint8), 3), 3, 3, cb)[0] == 0
    assert c_decode(lib, "palette", palette.pack_indices(np.array([0, 7, 1], np.uint8), 3), 3, 3, cb)[0] == -1
    for bits in (0, 9):
        assert c_decode(lib, "palette", b"\0" * 4, 3, bits, cb)[0] == -1
    # huffman over indices: a table naming symbol 5 with a codebook of 5 entries
    count = np.zeros(16, np.uint16)
    count[1] = 2
    assert c_decode(lib, "huffman", b"\x02", 2, 3, cb, count, np.array([0, 5]))[0] == -1  # bits 0,1: 0 then 5
    assert c_decode(lib, "huffman", b"\x00", 2, 3, cb, count, np.array([0, 5]))[0] == 0
    over = count.copy()
    over[1] = 3  # three 1-bit codes: over-subscribed
    assert c_decode(lib, "huffman", b"\x00", 1, 0, None, over, np.array([0, 1, 2]))[0] == -1
    assert c_decode(lib, "huffman", b"\x00", 1, 0, None, count, np.array([0]))[0] == -1  # 2 counted, 1 symbol
    one = np.zeros(16, np.uint16)
    one[1] = 1  # incomplete code: "0" only; a 1 bit starts no code
    assert c_decode(lib, "huffman", b"\xfe", 1, 0, None, one, np.array([9]))[0] == 0
    assert c_decode(lib, "huffman", b"\x01\xff", 1, 0, None, one, np.array([9]))[0] == -1
    op = HarOp()
    op.i[0] = 4  # unknown format
    assert lib.har_decode_op(ctypes.byref(op)) == -1


def python_verdict(fmt, data, n, bits, codebook, code):
    try:
        if fmt == "palette":
            return palette.decode_palette(data, bits, codebook, n)
        if fmt == "bitmask":
            return bitmask.decode_bitmask(data, n)
        s = huffman.decode(code, data, n)
        return codebook[s] if codebook is not None else s.view(np.int8)
    except BadDataError:
        return None


def check_random_bytes(lib, runs: int = 600) -> int:
    """Random streams: C returns 0 exactly when Python decodes, with the same values."""
    rng = np.random.default_rng(2026)
    accepted = 0
    for r in range(runs):
        fmt = ("palette", "huffman", "bitmask")[r % 3]
        n = int(rng.integers(1, 80))
        data = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        k = int(rng.integers(1, 17))
        codebook = np.sort(rng.choice(np.arange(-128, 128), k, replace=False)).astype(np.int8)
        bits, code, count, symbols = palette.index_bits(k), None, None, None
        if fmt == "huffman":
            over = bool(r % 2)
            alphabet = k if over else 256
            code = huffman.HuffmanCode.fit(rng.integers(0, alphabet, int(rng.integers(1, 50))), alphabet)
            count, symbols = code.count, code.symbols
            codebook, bits = (codebook, bits) if over else (None, 0)
        want = python_verdict(fmt, data, n, bits, codebook, code)
        rc, out = c_decode(lib, fmt, data, n, bits, codebook, count, symbols)
        assert (rc == 0) == (want is not None), (r, fmt, n, len(data))
        if want is not None:
            assert np.array_equal(out, want), (r, fmt)
            accepted += 1
    assert 0 < accepted < runs  # both verdicts were exercised
    return accepted


def run_all(lib_path: str) -> None:
    """Every check on one built library (the sanitized run calls this in a subprocess)."""
    lib = load(Path(lib_path))
    check_matches_python(lib)
    check_truncated(lib)
    check_malformed(lib)
    check_random_bytes(lib)
    print("har-decode checks: ok")


def read_past_src(lib_path: str) -> None:
    """A deliberate misuse (src_bytes larger than src): the sanitized run must report it (liveness)."""
    c_decode(load(Path(lib_path)), "bitmask", b"\xff" * 4 + b"\1" * 31, 32, src_bytes=40)


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> ctypes.CDLL:
    return load(build(tmp_path_factory.mktemp("har_decode") / "har_decode.so"))


def test_c_decodes_every_format_as_python_does(lib):
    assert check_matches_python(lib) == len(SIZES) * (6 + 2 * 16)


def test_truncated_streams_return_minus_one_without_writing_past_dst(lib):
    assert check_truncated(lib) > len(SIZES) * 38


def test_malformed_tables_and_indices_return_minus_one(lib):
    check_malformed(lib)


def test_random_streams_get_the_same_verdict_as_python(lib):
    check_random_bytes(lib)


def test_op_record_mirror_matches_cbuild():
    from system_opts import cbuild
    assert ctypes.sizeof(HarOp) == ctypes.sizeof(cbuild.HarOp)
    for name, _ in cbuild.HarOp._fields_:
        assert getattr(HarOp, name).offset == getattr(cbuild.HarOp, name).offset
        assert getattr(HarOp, name).size == getattr(cbuild.HarOp, name).size


def test_same_checks_under_address_and_undefined_sanitizers(tmp_path: Path):
    from firmware import hygiene
    from system_opts.cbuild import BuildError
    try:
        path = build(tmp_path / "har_decode_asan.so", SANITIZE)
        env = hygiene.sanitizer_env(preload=True)
    except BuildError as e:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no sanitizer build on this host: {e}")
    def run(call: str) -> subprocess.CompletedProcess:
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"import {Path(__file__).stem} as t; t.{call}({str(path)!r})")
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).resolve().parents[2])
    done = run("run_all")
    assert done.returncode == 0 and "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, \
        done.stderr[-1500:]
    assert "har-decode checks: ok" in done.stdout
    planted = run("read_past_src")  # the sanitizers are live: a read past src is reported, in har_decode.c
    assert planted.returncode != 0 and "heap-buffer-overflow" in planted.stderr and "har_decode.c:" in planted.stderr


@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m4"])
def test_cross_builds_freestanding_with_werror_and_no_library_calls(cpu: str, tmp_path: Path):
    from firmware import toolchain
    gcc = toolchain.require("arm-none-eabi-gcc")
    nm = toolchain.require("arm-none-eabi-nm")
    obj = tmp_path / f"har_decode-{cpu}.o"
    done = subprocess.run([gcc, *toolchain.target(cpu).cpu_flags, *WARN, "-Os", f"-I{CSRC}", "-c", str(SOURCE),
                           "-o", str(obj)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
    assert undefined == []  # no libc, no libgcc helper (no division, no 64-bit arithmetic)
    defined = subprocess.run([nm, str(obj)], capture_output=True, text=True, check=True).stdout
    for name in ("har_decode_palette", "har_decode_huffman", "har_decode_bitmask", "har_decode_op"):
        assert f" T {name}" in defined
