"""C hygiene of the int8 kernels: warning-free under -Wall -Wextra -Werror, no sanitizer finding over a
few thousand fuzzed op tables, and sanitizers that are live (planted bugs are caught, with their line)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware import hygiene
from har.errors import BadOptionError

FUZZ_RUNS = 3000  # ~0.5 s under ASan + UBSan; `python -m firmware.hygiene` does the 1,000,000


@pytest.mark.parametrize("opt", ["-O1", "-O2", "-Os"])
def test_kernels_compile_warning_free_with_werror(tmp_path: Path, opt: str):
    obj = hygiene.sanitizer_build([hygiene.KERNEL_SOURCE], tmp_path / "har_int8.o", compile_only=True, opt=opt)
    assert obj.stat().st_size > 0


# har_int8_config.h of a device export: only the kernels its table uses (the host build enables all)
EXPORT_CONFIGS = {
    "dot": ("QUANTIZE", "GEMM_DOT"),
    "im2col16": ("QUANTIZE", "GEMM_IM2COL16", "DEQUANTIZE"),
    "time-major+strided-pool": ("GEMM_TIME_MAJOR", "MAXPOOL_STRIDED"),
}


def export_kernels(folder: Path, enabled: tuple[str, ...]) -> Path:
    for name in ("har_int8.c", "har_int8.h", "har_fixedpoint.h"):
        (folder / name).write_bytes((hygiene.KERNEL_DIR / name).read_bytes())
    (folder / "har_int8_config.h").write_text("".join(f"#define HAR_WITH_{k} 1\n" for k in enabled))
    return folder


@pytest.mark.parametrize("name", sorted(EXPORT_CONFIGS))
def test_export_configs_compile_warning_free(tmp_path: Path, name: str):
    kdir = export_kernels(tmp_path, EXPORT_CONFIGS[name])
    assert hygiene.sanitizer_build([kdir / "har_int8.c"], tmp_path / "k.o", compile_only=True, opt="-Os").exists()


def test_fuzz_target_has_no_findings():
    res = hygiene.run_fuzz(FUZZ_RUNS, seed=0, max_findings=3)
    assert (res.findings, res.first_error) == (0, ""), f"input {res.first_input}: {res.first_error} ({res.sites})"
    assert res.runs == FUZZ_RUNS


def test_kernels_left_out_of_an_export_are_refused_without_findings(tmp_path: Path):
    # the target expects -1 from every kind or gemm mode the config leaves out, and 0 findings otherwise
    res = hygiene.run_fuzz(1000, seed=1, max_findings=3, kernel_dir=export_kernels(tmp_path, EXPORT_CONFIGS["dot"]))
    assert (res.findings, res.first_error) == (0, ""), f"input {res.first_input}: {res.first_error}"


def test_a_warning_fails_the_build(tmp_path: Path):
    src = tmp_path / "warn.c"
    src.write_text("int f(int x) { int unused; return x; }\n")
    with pytest.raises(hygiene.BuildFailed, match="unused"):
        hygiene.sanitizer_build([src], tmp_path / "warn.o", compile_only=True)


@pytest.mark.parametrize("bug, report", [
    ("volatile char *p = malloc(7 + argc); p[7 + argc] = 1; free((void *)p);", "heap-buffer-overflow"),
    ("volatile int big = 2147483647; big += argc; (void)big;", "signed integer overflow"),
    ("volatile float f = 1e30f * argc; volatile int i = (int)f; (void)i;", "outside the range"),
], ids=["asan", "ubsan", "float-cast"])
def test_planted_bug_in_a_tiny_program_is_caught(tmp_path: Path, bug: str, report: str):
    src = tmp_path / "planted.c"
    src.write_text("#include <stdlib.h>\nint main(int argc, char **argv) {\n    (void)argv;\n"
                   f"    {bug}\n    return 0;\n}}\n")
    exe = hygiene.sanitizer_build([src], tmp_path / "planted")
    done = subprocess.run([str(exe)], capture_output=True, text=True, env=hygiene.sanitizer_env(), timeout=60)
    assert done.returncode != 0
    assert report in done.stderr
    assert "planted.c:4" in done.stderr  # the report names the planted line


# har_int8.c with one bug planted in front of every op of one kind (line 6), so it is found whatever the
# real kernels do (a finding of theirs in the same input may come first: hence several findings per run)
PLANTED_KERNEL = """#include <stdint.h>
#define har_op_run real_har_op_run
#include "{kernel}"
#undef har_op_run
int har_op_run(const struct har_op *op) {{
    if (op->kind == {kind}) {{ {bug} }}
    return real_har_op_run(op);
}}
"""
PLANTED_SITE = "har_int8.c:6"


def planted(folder: Path, kind: str, bug: str) -> Path:  # includes the real har_int8.c (and its headers)
    (folder / "har_int8.c").write_text(PLANTED_KERNEL.format(kernel=hygiene.KERNEL_SOURCE, kind=kind, bug=bug))
    return folder


OVERRUN = "((int8_t *)op->p[1])[op->i[1]] = 0;"  # global pool: one byte past its C-byte output


@pytest.mark.parametrize("kind, bug, report", [
    ("HAR_GAP", OVERRUN, "heap-buffer-overflow"),
    ("HAR_GEMM", "volatile int32_t a = INT32_MAX; a += op->i[5]; (void)a;", "signed integer overflow"),
    ("HAR_DEQUANTIZE", "volatile int8_t q = (int8_t)(op->f[0] * 1e30f); (void)q;", "outside the range"),
], ids=["overrun", "int-overflow", "nan-to-int"])
def test_fuzz_run_catches_a_planted_kernel_bug(tmp_path: Path, kind: str, bug: str, report: str):
    res = hygiene.run_fuzz(300, seed=0, max_findings=6, kernel_dir=planted(tmp_path, kind, bug))
    assert 0 < res.findings <= 6 and 0 <= res.first_input < res.runs <= 300
    assert PLANTED_SITE in res.sites
    assert report in res.site_errors[res.sites.index(PLANTED_SITE)]


def test_fuzz_result_is_deterministic_and_independent_of_jobs(tmp_path: Path):
    planted(tmp_path, "HAR_GAP", OVERRUN)
    one = hygiene.run_fuzz(30, seed=7, jobs=1, max_findings=1000, kernel_dir=tmp_path)
    two = hygiene.run_fuzz(30, seed=7, jobs=2, max_findings=1000, kernel_dir=tmp_path)
    assert one.runs == two.runs == 30
    assert (one.findings, one.first_input, one.first_error, one.sites, one.site_errors) == \
        (two.findings, two.first_input, two.first_error, two.sites, two.site_errors)
    assert 0 < one.findings < 30


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert hygiene.main(["--runs", "0"]) == 2
    assert hygiene.main(["--runs", "10", "--kernel-dir", str(tmp_path)]) == 2  # no har_int8.c there
    assert "no har_int8.c" in capsys.readouterr().err
    planted(tmp_path, "HAR_GAP", OVERRUN)
    assert hygiene.main(["--runs", "20", "--kernel-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "har-fuzz: 20 runs" in out
    assert any(ln.startswith(PLANTED_SITE) and "heap-buffer-overflow" in ln for ln in out.splitlines())
    with pytest.raises(BadOptionError):
        hygiene.run_fuzz(10, seed=-1)


# no arithmetic, only what the fuzzer's invariants check, and one bug (the global pool writes one byte past its
# output): libFuzzer stops at its first finding, so no other may come first
FAKE_KERNEL = """#include <string.h>
#include "har_int8.h"
int har_op_run(const struct har_op *op) {
    if (op->kind < HAR_QUANTIZE || op->kind > HAR_DWCONV || op->kind == HAR_DECODE) return -1;
    if (op->kind == HAR_GEMM && (op->i[11] < HAR_GEMM_DOT || op->i[11] > HAR_GEMM_PALETTE4)) return -1;
    if (op->kind == HAR_DWCONV) {  /* i: n_in, c, k, pad, rows, phases, zp_in, zp_out, lo: halo and output */
        int8_t *x = op->p[0];
        memset(x, op->i[6], (size_t)(op->i[3] * op->i[1]));
        memset(x + (op->i[3] + op->i[0]) * op->i[1], op->i[6], (size_t)(op->i[3] * op->i[1]));
        memset(op->p[1], op->i[8], (size_t)(op->i[4] * op->i[1]));
        return 0;
    }
    if (op->kind == HAR_GEMM) {
        const int32_t n_in = op->i[0], c_in = op->i[1], pad = op->i[3];
        int8_t *x = op->p[0];
        memset(x, op->i[7], (size_t)(pad * c_in));
        memset(x + (pad + n_in) * c_in, op->i[7], (size_t)(pad * c_in));
        memset(op->p[1], op->i[9], (size_t)(op->i[4] * op->i[5]));
    }
    if (op->kind == HAR_GAP) ((int8_t *)op->p[1])[op->i[1]] = 0;
    return 0;
}
int har_run(const struct har_op *ops, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        if (har_op_run(ops + i)) return -1 - i;
    return 0;
}
int har_run_repeat(const struct har_op *ops, int32_t n, int32_t repeats) {
    for (int32_t r = 0; r < repeats; r++)
        if (har_run(ops, n)) return har_run(ops, n);
    return 0;
}
"""


def test_libfuzzer_engine_catches_a_planted_bug(tmp_path: Path):
    if hygiene.libfuzzer_compiler() is None:  # .ci/run installs clang and libFuzzer: CI runs this for real
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"no clang with -fsanitize=fuzzer: {hygiene.LIBFUZZER_INSTALL}")
    (tmp_path / "har_int8.c").write_text(FAKE_KERNEL)
    res = hygiene.run_libfuzzer(5000, seed=0, kernel_dir=tmp_path)
    assert res.findings == 1 and 0 < res.runs <= 5000
    planted = 1 + next(i for i, line in enumerate(FAKE_KERNEL.splitlines()) if "HAR_GAP)" in line)
    assert "heap-buffer-overflow" in res.first_error and res.sites == (f"har_int8.c:{planted}",)


def test_libfuzzer_runs_the_real_target_without_findings():
    if hygiene.libfuzzer_compiler() is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"no clang with -fsanitize=fuzzer: {hygiene.LIBFUZZER_INSTALL}")
    res = hygiene.run_libfuzzer(3000, seed=0)
    assert (res.findings, res.runs) == (0, 3000), res.first_error


def test_preloaded_runtimes_sanitize_a_library_loaded_by_python(tmp_path: Path):
    src = tmp_path / "lib.c"
    src.write_text("#include <stdlib.h>\nint poke(int n) {\n    volatile char *p = malloc(n);\n"
                   "    p[n] = 1;\n    free((void *)p);\n    return 0;\n}\n")
    lib = tmp_path / "libpoke.so"
    subprocess.run([hygiene.compiler(), *hygiene.FLAGS, "-fPIC", "-shared", "-o", str(lib), str(src)], check=True)
    code = f"import ctypes; ctypes.CDLL({str(lib)!r}).poke(8)"
    done = subprocess.run([sys.executable, "-c", code], env=hygiene.sanitizer_env(preload=True),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "heap-buffer-overflow" in done.stderr and "lib.c:4" in done.stderr
