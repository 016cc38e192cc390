"""Board files, cross build, QEMU, accounting and instruction counting, on a STUB library.

The stub implements the public API of har_model.h with trivial integer arithmetic (label = sum of all
samples mod K; scores from per-axis sums, one float scaling, the weights and the op table), which numpy
reproduces exactly, and defines the accounting symbols (har_weights, har_ops, har_arena, har_ring,
har_state), so everything the real export will go through is exercised without the real model.
Sentinels in a window's first x sample: -32768 makes har_classify fail, -32767 makes it fault.
"""
from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from firmware import cross, elfsize, icount, qemu
from firmware.toolchain import TARGETS, TOOLS, require
from har.errors import BadOptionError

T, STEP, K = 16, 5, 5
WEIGHTS = np.array([3, -7, 11, 100, -128, 5, 6, 7], np.int8)
OPS = np.array([1, -2, 30, 4], np.int32)
ARENA_BYTES = 96
SCALE = np.float32(0.01)

STUB = {
    "har_model.h": f"""#ifndef HAR_MODEL_H
#define HAR_MODEL_H
#include <stdint.h>
#define HAR_T {T}
#define HAR_STEP {STEP}
#define HAR_N_CLASSES {K}
#define HAR_ARENA_BYTES {ARENA_BYTES}
#define HAR_SAMPLE_SCALE 0.01f
typedef struct {{ int32_t label; int8_t scores[HAR_N_CLASSES]; }} har_result;
enum {{ HAR_OK = 0, HAR_READY = 1, HAR_ERR_CRC = -1, HAR_ERR_STATE = -2, HAR_ERR_ARG = -3, HAR_ERR_RUN = -4 }};
int har_init(void);
void har_reset(void);
int har_push(const int16_t xyz[3], har_result *out);
int har_classify(const int16_t *xyz, har_result *out);
uint32_t har_weights_crc32(void);
#endif
""",
    "stub_internal.h": """#include <stdint.h>
struct stub_weights { int8_t w[8]; };
extern const struct stub_weights har_weights;
extern const int32_t har_ops[4];
extern const uint32_t stub_weights_crc;
extern int16_t har_arena[];
extern int16_t har_ring[];
void har_pre_sums(const int16_t *xyz, int32_t sums[4]);
void har_kernel_scores(const int32_t sums[4], har_result *out);
""",
    "har_model.c": f"""#include "har_model.h"
#include "stub_internal.h"
const struct stub_weights har_weights = {{{{{', '.join(map(str, WEIGHTS))}}}}};
const int32_t har_ops[4] = {{{', '.join(map(str, OPS))}}};
const uint32_t stub_weights_crc = @CRC@u;
int16_t har_arena[HAR_ARENA_BYTES / 2];
int16_t har_ring[HAR_T * 3];
""",
    "har_pre.c": """#include "har_model.h"
#include "stub_internal.h"
void har_pre_sums(const int16_t *xyz, int32_t sums[4]) {
    int32_t s0 = 0, s1 = 0, s2 = 0;
    for (int i = 0; i < HAR_T; i++) { s0 += xyz[3 * i]; s1 += xyz[3 * i + 1]; s2 += xyz[3 * i + 2]; }
    sums[0] = s0; sums[1] = s1; sums[2] = s2;
    sums[3] = (int32_t)((float)s0 * HAR_SAMPLE_SCALE);
}
""",
    "har_int8.c": """#include "har_model.h"
#include "stub_internal.h"
void har_kernel_scores(const int32_t s[4], har_result *out) {
    int32_t m = (s[0] + s[1] + s[2]) % HAR_N_CLASSES;
    out->label = m < 0 ? m + HAR_N_CLASSES : m;
    for (int k = 0; k < HAR_N_CLASSES; k++)
        out->scores[k] = (int8_t)(uint8_t)((uint32_t)(s[0] * (k + 1) + s[1] * (k + 2) - s[2] + s[3]
                                                      + har_weights.w[k] + har_ops[k % 4]) & 0xFFu);
}
""",
    "har_runtime.c": """#include "har_model.h"
#include "stub_internal.h"
static struct { uint32_t pushed, head; int32_t ready; } har_state;
uint32_t stub_magic = 0x1234u; /* .data: checks startup's copy and its accounting */
uint32_t har_weights_crc32(void) {
    const uint8_t *p = (const uint8_t *)&har_weights;
    uint32_t crc = 0xFFFFFFFFu;
    for (uint32_t i = 0; i < sizeof har_weights; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}
int har_init(void) {
    har_state.ready = 0;
    if (stub_magic != 0x1234u) return HAR_ERR_RUN;
    if (har_weights_crc32() != stub_weights_crc) return HAR_ERR_CRC;
    har_state.ready = 1;
    har_state.pushed = har_state.head = 0;
    return HAR_OK;
}
void har_reset(void) { har_state.pushed = har_state.head = 0; }
int har_classify(const int16_t *xyz, har_result *out) {
    int32_t sums[4];
    if (!har_state.ready) return HAR_ERR_STATE;
    if (xyz[0] == -32768) return HAR_ERR_ARG;
    if (xyz[0] == -32767) return (int)*(volatile uint32_t *)0x30000000u; /* unmapped: a bus fault */
    har_pre_sums(xyz, sums);
    har_kernel_scores(sums, out);
    return HAR_OK;
}
int har_push(const int16_t xyz[3], har_result *out) {
    if (!har_state.ready) return HAR_ERR_STATE;
    for (int c = 0; c < 3; c++) har_ring[3 * har_state.head + c] = xyz[c];
    har_state.head = (har_state.head + 1) % HAR_T;
    har_state.pushed++;
    if (har_state.pushed < HAR_T || (har_state.pushed - HAR_T) % HAR_STEP) return HAR_OK;
    for (int i = 0; i < HAR_T; i++)
        for (int c = 0; c < 3; c++) har_arena[3 * i + c] = har_ring[3 * ((har_state.head + i) % HAR_T) + c];
    int rc = har_classify(har_arena, out);
    return rc < 0 ? rc : HAR_READY;
}
""",
}
LOOP_C = """#include <stdint.h>
#include "semihost.h"
volatile uint32_t sink;
__attribute__((noinline)) uint32_t work(uint32_t n) {
    uint32_t s = 0;
    for (uint32_t i = 0; i < n; i++) { s += i ^ (s >> 3); if (s & 1) s ^= 0x55; __asm__ volatile(""); }
    return s;
}
int main(void) { sink = work(100); sink = work(1000); sink = work(37); return 0; }
"""


def reference(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stub's arithmetic in numpy: (labels, int8 scores)."""
    s = windows.astype(np.int64).sum(axis=1)
    scaled = np.trunc(s[:, 0].astype(np.float32) * SCALE).astype(np.int64)
    k = np.arange(K)
    raw = s[:, :1] * (k + 1) + s[:, 1:2] * (k + 2) - s[:, 2:3] + scaled[:, None] + WEIGHTS[k] + OPS[k % 4]
    return s.sum(axis=1) % K, (raw & 0xFF).astype(np.uint8).view(np.int8)


def stream_reference(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ends = [j + 1 for j in range(len(samples)) if j + 1 >= T and (j + 1 - T) % STEP == 0]
    return reference(np.stack([samples[e - T:e] for e in ends]))


def write_stub(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    crc = zlib.crc32(WEIGHTS.tobytes())  # IEEE 802.3 reflected, as har_weights_crc32 must be
    for name, text in STUB.items():
        (root / name).write_text(text.replace("@CRC@", f"{crc:#010x}"))
    return sorted(root.glob("*.c"))


@pytest.fixture(scope="module")
def tools():
    for tool in TOOLS:
        require(tool)


@pytest.fixture(scope="module")
def stub(tools, tmp_path_factory) -> list[Path]:
    return write_stub(tmp_path_factory.mktemp("stub"))


@pytest.fixture(scope="module")
def builds(stub, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("build")
    done = {(t, h): cross.build(t, stub, out / f"{h}-{t}.elf", harness=h) for t in TARGETS for h in ("test", "app")}
    assert all(b.warnings == () for b in done.values()), [b.warnings for b in done.values()]  # -Wall -Wextra clean
    return done


def make_inputs(workdir: Path, n_windows: int, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    windows = rng.integers(-2000, 2000, size=(n_windows, T, 3)).astype(np.int16)
    samples = rng.integers(-2000, 2000, size=(n_samples, 3)).astype(np.int16)
    workdir.mkdir(parents=True, exist_ok=True)
    qemu.write_windows(workdir, windows)
    qemu.write_stream(workdir, samples)
    return windows, samples


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A few hundred windows, for runs that are compared between QEMU and Unicorn."""
    d = tmp_path_factory.mktemp("small")
    return d, *make_inputs(d, 200, 300, seed=1)


@pytest.mark.parametrize("target", TARGETS)
def test_qemu_scores_and_stream_match_numpy(builds, target, tmp_path):
    windows, samples = make_inputs(tmp_path, 3000, 2500, seed=0)
    res = qemu.run(target, builds[target, "test"].elf, tmp_path, timeout_s=30)
    assert res.exit_code == 0, res.stderr_text
    got = qemu.read_records(tmp_path / qemu.SCORES_FILE, K)
    labels, scores = reference(windows)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.scores, scores)
    got = qemu.read_records(tmp_path / qemu.STREAM_SCORES_FILE, K)
    labels, scores = stream_reference(samples)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.scores, scores)
    assert qemu.read_stack_bytes(tmp_path / qemu.STACK_FILE) > 0
    print(f"{target}: 3000 windows + 2500 streamed samples in {res.seconds:.2f} s")


@pytest.mark.parametrize("target", TARGETS)
def test_unicorn_repeats_exactly_and_agrees_with_qemu(builds, small, target, tmp_path):
    workdir, windows, samples = small
    elf = builds[target, "test"].elf
    files = {n: workdir / n for n in (qemu.WINDOWS_FILE, qemu.STREAM_FILE)}
    first = icount.emulate(target, elf, files, track_stack=True)
    second = icount.count_calls(target, elf, files)
    assert first.exit_code == 0 and list(first.calls) == second
    # har_push runs har_classify for every completed window: nested calls are counted too
    assert len(second) == len(windows) + len(stream_reference(samples)[0])
    assert all(n > 0 for n in second)
    for name in (qemu.WINDOWS_FILE, qemu.STREAM_FILE):
        shutil.copy(workdir / name, tmp_path / name)
    assert qemu.run(target, elf, tmp_path).exit_code == 0
    for name in (qemu.SCORES_FILE, qemu.STREAM_SCORES_FILE, qemu.STACK_FILE):
        assert first.files[name] == (tmp_path / name).read_bytes(), name
    # the painted measurement equals the lowest stack write Unicorn saw inside library calls
    assert qemu.read_stack_bytes(tmp_path / qemu.STACK_FILE) == first.stack_depth_bytes > 0


@pytest.mark.parametrize("target", TARGETS)
def test_unicorn_block_counts_equal_qemu_exec_trace(tools, target, tmp_path):
    (tmp_path / "loop.c").write_text(LOOP_C)
    elf = cross.build(target, [tmp_path / "loop.c"], tmp_path / "loop.elf", harness="none").elf
    counts = icount.count_calls(target, elf, {}, "work")
    assert counts == icount.qemu_trace_counts(target, elf, "work", tmp_path)
    assert len(counts) == 3 and counts[1] > counts[0] > counts[2]


@pytest.mark.parametrize("target", TARGETS)
def test_exit_codes(builds, small, target, tmp_path):
    workdir, windows, _ = small
    elf = builds[target, "test"].elf

    def run(win=None, elf_path=elf):
        for f in tmp_path.glob("*.bin"):
            f.unlink()
        if win is not None:
            (tmp_path / qemu.WINDOWS_FILE).write_bytes(qemu.windows_bytes(win))
        return qemu.run(target, elf_path, tmp_path, timeout_s=20).exit_code

    assert run(windows[:3]) == 0
    assert run(None) == 4                        # no windows.bin
    (tmp_path / qemu.WINDOWS_FILE).write_bytes(qemu.windows_bytes(windows[:3])[:-2])
    assert qemu.run(target, elf, tmp_path).exit_code == 4  # truncated
    assert run(np.zeros((2, T + 1, 3), np.int16)) == 5
    bad = windows[:3].copy()
    bad[1, 0, 0] = -32768
    assert run(bad) == 3                         # har_classify returned an error
    bad[1, 0, 0] = -32767
    assert run(bad) == 99                        # fault handler
    image = elfsize.Elf(elf)
    data = bytearray(image.data)
    data[image.file_offset("har_weights") + 3] ^= 0x01
    (tmp_path / "corrupt.elf").write_bytes(bytes(data))
    assert run(windows[:3], tmp_path / "corrupt.elf") == 2


def test_app_firmware_never_exits(builds, tmp_path):
    with pytest.raises(qemu.QemuTimeoutError, match="did not exit"):
        qemu.run("cortex-m0plus", builds["cortex-m0plus", "app"].elf, tmp_path, timeout_s=1.0)


@pytest.mark.parametrize("target", TARGETS)
def test_accounting_covers_every_byte(builds, target):
    sizes = {h: elfsize.nm_sizes(builds[target, h].elf) for h in ("test", "app")}
    fps = {h: elfsize.from_build(builds[target, h], stack_bytes=100) for h in ("test", "app")}
    for h, fp in fps.items():
        cats = fp.categories()
        assert sum(b.flash_bytes for b in cats.values()) == fp.elf_flash_bytes
        assert sum(b.ram_bytes for b in cats.values()) == fp.elf_ram_bytes
        assert fp.weights == elfsize.Bytes(sizes[h]["har_weights"], 0)
        assert fp.op_table == elfsize.Bytes(sizes[h]["har_ops"], 0)
        assert fp.arena == elfsize.Bytes(0, sizes[h]["har_arena"]) and fp.arena.ram_bytes == ARENA_BYTES
        assert fp.ring_buffer == elfsize.Bytes(0, sizes[h]["har_ring"])
        # .data counts twice: its load image in flash and its copy in RAM
        assert fp.runtime_state == elfsize.Bytes(sizes[h]["stub_magic"],
                                                 sizes[h]["har_state"] + sizes[h]["stub_magic"])
        assert fp.startup.flash_bytes >= sizes[h]["har_vectors"] + sizes[h]["Reset_Handler"]
        assert fp.library_flash_bytes + fp.startup.flash_bytes + fp.padding.flash_bytes == fp.elf_flash_bytes
        assert fp.library_ram_with_stack_bytes == fp.library_ram_bytes + 100
    # the same library objects cost the same in both firmwares; the harness is not library
    for c in ("weights", "op_table", "kernel_code", "preprocessing", "arena", "ring_buffer", "runtime_state"):
        assert getattr(fps["test"], c) == getattr(fps["app"], c), c
    assert fps["test"].startup.ram_bytes > fps["app"].startup.ram_bytes  # the harness's IO buffers
    if target == "cortex-m0plus":  # soft float and no divide instruction: libgcc helpers
        assert fps["app"].helpers.flash_bytes > 0


def test_accounting_rejects_a_map_that_does_not_add_up(builds, tmp_path):
    b = builds["cortex-m4", "app"]
    text = b.map.read_text()
    i = text.index(".rodata.har_weights")
    j = text.index("0x", text.index("0x", i) + 2)  # the input section's size field
    bad = tmp_path / "bad.map"
    bad.write_text(text[:j] + "0x7fff" + text[j + 6:])
    with pytest.raises(elfsize.AccountingError):
        elfsize.account(b.elf, bad, "cortex-m4")


def test_builds_are_deterministic(tools, tmp_path):
    for target in TARGETS:
        a = cross.build(target, write_stub(tmp_path / "a"), tmp_path / "x" / "one.elf")
        b = cross.build(target, write_stub(tmp_path / "b" / "deeper"), tmp_path / "y" / "two.elf")
        assert a.elf.read_bytes() == b.elf.read_bytes()
        assert str(tmp_path).encode() not in a.elf.read_bytes()  # no build paths in the ELF


def test_build_errors_name_the_problem(stub, tmp_path):
    broken = tmp_path / "har_pre.c"
    broken.write_text("int f(void) { return }\n")
    srcs = [p for p in stub if p.name != "har_pre.c"] + [broken]
    with pytest.raises(cross.BuildError, match=r"har_pre\.c.*error"):
        cross.build("cortex-m4", srcs, tmp_path / "x.elf")
    with pytest.raises(cross.BuildError, match="undefined reference to .har_pre_sums"):
        cross.build("cortex-m4", [p for p in stub if p.name != "har_pre.c"], tmp_path / "x.elf")
    big = tmp_path / "big.c"  # leaves under 2 KiB of the microbit's 16 KiB for the stack
    big.write_text("char big[15 * 1024];\nint main(void) { big[0] = 1; return big[1]; }\n")
    with pytest.raises(cross.BuildError, match="less than _min_stack_bytes"):
        cross.build("cortex-m0plus", [big], tmp_path / "big.elf", harness="none")
    with pytest.raises(BadOptionError):
        cross.build("cortex-m7", stub, tmp_path / "x.elf")


def test_require_skips_or_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get"):
        require("no-such-tool-for-har")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get"):
        require("no-such-tool-for-har")
