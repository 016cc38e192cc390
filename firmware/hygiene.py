"""C hygiene of the int8 and graph kernels: warning-free host builds under AddressSanitizer + UBSan, and a fuzz run.

Example: `python -m firmware.hygiene --runs 1000000 --seed 0` (exit 0: no finding, 1: findings or a build
that is not warning-free, 2: a bad option or no compiler).
- `sanitizer_build(sources, out)`: host `$CC` (default gcc) with `FLAGS`: -Werror on -Wall -Wextra, and
  -fsanitize=address,undefined,float-cast-overflow, -fno-sanitize-recover=all (the first report stops
  the process). float-cast-overflow is named because gcc's `undefined` group leaves it out, yet
  converting a NaN or out-of-range float to an integer is undefined (C99 6.3.1.4), and that is what an
  input quantizer does. Built into a temporary file and renamed (never a torn binary).
- `run_fuzz(runs, seed)`:
  1. Build `firmware/csrc/fuzz_har_int8.c` (random valid op tables on exact-size buffers; its comment
     states the kernels' contract) with the kernels (`system_opts/csrc/har_int8.c`) and
     -DHAR_FUZZ_STANDALONE, cached under `<cache_dir>/hygiene/` keyed by every source and header byte,
     the compiler's version line and the flags.
  2. Run the driver over inputs 0..runs-1 (input i is made from (seed, i) alone, so results do not
     depend on `jobs`, the number of contiguous ranges run in parallel processes).
  3. A sanitizer report or a broken invariant aborts the process after the driver named the input:
     count one finding, keep the first one's error line and input, and resume at the next input, until
     `max_findings` (then `runs` says how many inputs were executed).
  Replay input i alone: `<binary> i+1 SEED i` (the binary's path is printed with --verbose).
  `--kernels graph` (`kernels="graph"`): the same for the graph path's kernels, `fuzz_har_graph.c`
  (one random valid op of every kind, dense or palette weights, exact-size arena and blob) driving
  `system_opts/csrc/har_graph.c`; both targets share the standalone driver `fuzz_main.h`.
- `run_libfuzzer(runs, seed)` (`--engine libfuzzer`): the same target under clang's coverage-guided
  libFuzzer, when a clang that links -fsanitize=fuzzer is installed (`LIBFUZZER_INSTALL`); optional.
- `sanitizer_env(preload=...)`: the runtime options used here, and optionally LD_PRELOAD of the
  sanitizer runtimes, for loading a sanitized shared library into a Python subprocess (`firmware.host`).
Limits: host only, so the Cortex-M-only code (`__ARM_FEATURE_DSP` intrinsics) is not compiled here;
the standalone driver's inputs are random (edge-biased), not coverage-guided (gcc has no libFuzzer); no
MemorySanitizer (gcc has none): a read of uninitialised bytes inside a buffer is not detected.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from har.cli import parser, run_cli
from har.errors import BadOptionError
from har.paths import PROJECT_ROOT, cache_dir
from system_opts.cbuild import SOURCE as KERNEL_SOURCE
from system_opts.cbuild import BuildError, compiler

FUZZ_SOURCE = Path(__file__).with_name("csrc") / "fuzz_har_int8.c"
# --kernels: the fuzz target and the kernel file it drives (the graph path's kernels: fuzz_har_graph.c)
TARGETS = {"int8": ("fuzz_har_int8.c", "har_int8.c"), "graph": ("fuzz_har_graph.c", "har_graph.c")}
KERNEL_DIR = KERNEL_SOURCE.parent
FLAGS = ("-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fno-strict-aliasing",
         "-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all")
# abort_on_error: every report ends in abort(), whose handler in the driver names the input. No UBSan
# stack: its report line has file:line already, and symbolizing a stack costs ~75 ms per finding
# (replay an input with UBSAN_OPTIONS=print_stacktrace=1 for the callers)
ASAN_OPTIONS = "abort_on_error=1:detect_leaks=1:disable_coredump=1:symbolize=1"
UBSAN_OPTIONS = "abort_on_error=1:halt_on_error=1:print_stacktrace=0:disable_coredump=1"
COMPILE_TIMEOUT_S = 300
LIBFUZZER_INSTALL = "apt-get install clang-14 libfuzzer-14-dev libclang-rt-14-dev (Debian 12)"
PER_RUN_TIMEOUT_S = 0.02  # ~200x an average execution: a range that takes longer hangs (a finding)
_DIED = re.compile(r"har-fuzz: died on input (\d+)")
_DONE = re.compile(r"har-fuzz: (\d+) runs")
_SITE = re.compile(r"([\w./-]+\.[ch]):(\d+)")


class BuildFailed(BuildError):
    """The compiler rejected the sources (with -Werror, a warning is enough): a hygiene failure."""


@dataclass(frozen=True)
class FuzzResult:
    runs: int             # inputs executed
    seconds: float        # wall time of the runs (the build excluded)
    findings: int         # inputs that stopped the driver (sanitizer report, broken invariant, hang)
    first_error: str = ""  # the first finding's error line ("" when none)
    first_input: int = -1  # its input index (-1 when none or unknown)
    sites: tuple[str, ...] = ()  # distinct "file:line" of the findings, sorted
    site_errors: tuple[str, ...] = ()  # per site: "input N: <its first error line>"


def _first_line(text: str, markers: Sequence[str]) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for marker in markers:
        for ln in lines:
            if marker in ln:
                return ln
    return lines[0] if lines else ""


def _compiler_version(cc: str) -> str:
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"the sanitizer build needs a C compiler: `{cc} --version` failed ({e})") from None
    return (done.stdout.splitlines() or [cc])[0]


def _define_flags(defines: Mapping[str, object] | None) -> list[str]:
    return [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in (defines or {}).items()]


def sanitizer_build(sources: Sequence[str | os.PathLike], out: str | os.PathLike,
                    include_dirs: Sequence[str | os.PathLike] = (), defines: Mapping[str, object] | None = None,
                    *, compile_only: bool = False, opt: str = "-O1", cc: str | None = None,
                    libfuzzer: bool = False) -> Path:
    """Compile (and link, unless `compile_only`: one source to an object) with `cc` (default `$CC`) and
    `FLAGS`, `opt` replacing -O1, `libfuzzer` adding -fsanitize=fuzzer (clang); raises `BuildFailed`
    with the compiler's first error line."""
    srcs = [Path(s) for s in sources]
    if not srcs or (compile_only and len(srcs) != 1):
        raise BadOptionError("sanitizer_build needs sources (exactly one with compile_only)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    flags = [opt if f == "-O1" else f for f in FLAGS]
    if libfuzzer:
        flags = [f.replace("-fsanitize=", "-fsanitize=fuzzer,") if f.startswith("-fsanitize=") else f for f in flags]
    cmd = [cc or compiler(), *flags, *(f"-I{d}" for d in include_dirs), *_define_flags(defines),
           *(["-c"] if compile_only else []), "-o", tmp, *map(str, srcs), *([] if compile_only else ["-lm"])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            first = _first_line(done.stderr, ("undefined reference", "error", "warning"))
            raise BuildFailed(f"{' '.join(s.name for s in srcs)}: {first}")
        os.replace(tmp, out)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"sanitizer build of {srcs[0].name} failed: {e}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def fuzz_binary(kernel_dir: str | os.PathLike = KERNEL_DIR, defines: Mapping[str, object] | None = None,
                libfuzzer_cc: str | None = None, kernels: str = "int8") -> Path:
    """Step 1 of `run_fuzz`: the standalone fuzz driver with `kernel_dir`'s har_int8.c (or, with
    `libfuzzer_cc`, the libFuzzer binary; `kernels="graph"`: fuzz_har_graph.c with har_graph.c), built
    once per key."""
    if kernels not in TARGETS:
        raise BadOptionError(f"unknown --kernels {kernels!r}; choose one of {', '.join(TARGETS)}")
    fuzz_source, kernel_file = FUZZ_SOURCE.with_name(TARGETS[kernels][0]), TARGETS[kernels][1]
    kdir = Path(kernel_dir)
    cc = libfuzzer_cc or compiler()
    all_defines = {**({} if libfuzzer_cc else {"HAR_FUZZ_STANDALONE": None}), **(defines or {})}
    h = hashlib.sha256(f"{_compiler_version(cc)}|{' '.join(FLAGS)}|{sorted(all_defines.items())}".encode())
    # the kernel folder's files even when `kdir` is another one (a file there may include them)
    for f in [fuzz_source, FUZZ_SOURCE.with_name("fuzz_main.h"), *sorted(kdir.glob("*.[ch]")),
              *sorted(KERNEL_DIR.glob("*.[ch]"))]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    out = cache_dir() / "hygiene" / f"{'libfuzzer' if libfuzzer_cc else 'fuzz'}_{Path(kernel_file).stem}-{h.hexdigest()[:16]}"
    if not out.exists():
        sanitizer_build([fuzz_source, kdir / kernel_file], out, include_dirs=[kdir, KERNEL_DIR], defines=all_defines,
                        cc=cc, libfuzzer=bool(libfuzzer_cc))
    return out


def sanitizer_env(preload: bool = False, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a sanitized process: our ASan/UBSan options; with `preload`, LD_PRELOAD of the
    compiler's libasan and libubsan and no leak check (for a sanitized .so loaded by a Python process,
    whose interpreter is neither instrumented nor leak-free)."""
    env = dict(os.environ if base is None else base)
    env["ASAN_OPTIONS"], env["UBSAN_OPTIONS"] = ASAN_OPTIONS, UBSAN_OPTIONS
    if preload:
        libs = []
        for name in ("libasan.so", "libubsan.so"):
            done = subprocess.run([compiler(), f"-print-file-name={name}"], capture_output=True, text=True,
                                  timeout=60)
            path = done.stdout.strip()
            if done.returncode != 0 or not os.path.isabs(path):
                raise BuildError(f"{compiler()} does not know where {name} is (is the sanitizer runtime installed?)")
            libs.append(path)
        env["LD_PRELOAD"] = " ".join(libs)
        env["ASAN_OPTIONS"] = ASAN_OPTIONS.replace("detect_leaks=1", "detect_leaks=0")
    return env


@dataclass
class _Range:
    runs: int = 0
    findings: int = 0
    sites: dict | None = None  # "file:line" -> (order key, input or -1, error line) of its first finding

    def add(self, key: int, index: int, line: str) -> None:
        self.findings += 1
        m = _SITE.search(line)
        site = f"{Path(m.group(1)).name}:{m.group(2)}" if m else line[:80]
        self.sites.setdefault(site, (key, index, line))


def _fuzz_range(binary: Path, seed: int, start: int, end: int, max_findings: int, env: dict) -> _Range:
    """Steps 2 and 3 of `run_fuzz` for inputs start..end-1."""
    r = _Range(sites={})
    while start < end and r.findings < max_findings:
        try:
            done = subprocess.run([str(binary), str(end), str(seed), str(start)], capture_output=True, text=True,
                                  env=env, timeout=60 + PER_RUN_TIMEOUT_S * (end - start))
        except subprocess.TimeoutExpired:
            r.runs += end - start
            r.add(start, -1, f"timeout: inputs {start}..{end - 1} did not finish (a hang?)")
            return r
        ok = _DONE.search(done.stdout)
        if done.returncode == 0 and ok:
            r.runs += int(ok.group(1))
            return r
        died = _DIED.search(done.stderr)
        stop = int(died.group(1)) if died else end - 1  # no index: a leak at exit, or the driver itself
        r.runs += stop - start + 1
        line = _first_line(done.stderr, ("runtime error:", "SUMMARY:", "ERROR:", "invariant broken", "har-fuzz:")) \
            or f"exit status {done.returncode}"
        r.add(stop, stop if died else -1, line.replace(f"{PROJECT_ROOT}/", ""))
        start = stop + 1 if died else end
    return r


def run_fuzz(runs: int, seed: int, *, jobs: int = 1, max_findings: int = 100,
             kernel_dir: str | os.PathLike = KERNEL_DIR, defines: Mapping[str, object] | None = None,
             kernels: str = "int8") -> FuzzResult:
    """Build the fuzz driver and run `runs` inputs (steps of the module docstring)."""
    if runs < 1 or seed < 0 or jobs < 1 or max_findings < 1:
        raise BadOptionError(f"need runs >= 1, seed >= 0, jobs >= 1, max_findings >= 1 "
                             f"(got {runs}, {seed}, {jobs}, {max_findings})")
    binary = fuzz_binary(kernel_dir, defines, kernels=kernels)
    env = sanitizer_env()
    bounds = [runs * j // jobs for j in range(jobs + 1)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        parts = list(pool.map(lambda j: _fuzz_range(binary, seed, bounds[j], bounds[j + 1], max_findings, env),
                              range(jobs)))
    seconds = time.perf_counter() - t0
    sites: dict[str, tuple[int, int, str]] = {}
    for part in parts:  # ranges in input order: the first finding of a site is the earliest input's
        for site, found in part.sites.items():
            sites[site] = min(sites.get(site, found), found)
    first = min(sites.values(), default=(0, -1, ""))
    names = sorted(sites)
    return FuzzResult(runs=sum(p.runs for p in parts), seconds=round(seconds, 3),
                      findings=sum(p.findings for p in parts), first_error=first[2], first_input=first[1],
                      sites=tuple(names), site_errors=tuple(f"input {sites[n][1]}: {sites[n][2]}" for n in names))


@lru_cache(maxsize=None)
def libfuzzer_compiler() -> str | None:
    """A clang on PATH that links -fsanitize=fuzzer,address,undefined (`$HAR_CLANG` first), else None."""
    for cc in (os.environ.get("HAR_CLANG"), "clang", *(f"clang-{v}" for v in range(22, 13, -1))):
        if not cc or not shutil.which(cc):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "probe.c"
            src.write_text("#include <stdint.h>\n#include <stddef.h>\n"
                           "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
            try:
                sanitizer_build([src], Path(tmp) / "probe", cc=cc, libfuzzer=True)
            except BuildError:
                continue
        return cc
    return None


def run_libfuzzer(runs: int, seed: int, *, kernel_dir: str | os.PathLike = KERNEL_DIR,
                  kernels: str = "int8") -> FuzzResult:
    """Coverage-guided alternative to `run_fuzz` (clang only): libFuzzer from an empty corpus for `runs`
    executions; it stops at its first finding. libFuzzer's -seed is `seed + 1` (its 0 means "from the
    clock"). The corpus and any crash input are left in a temporary folder whose path the error names."""
    if runs < 1 or seed < 0:
        raise BadOptionError(f"need runs >= 1 and seed >= 0 (got {runs}, {seed})")
    cc = libfuzzer_compiler()
    if cc is None:
        raise BadOptionError(f"libFuzzer needs clang with -fsanitize=fuzzer: {LIBFUZZER_INSTALL}")
    binary = fuzz_binary(kernel_dir, libfuzzer_cc=cc, kernels=kernels)
    work = Path(tempfile.mkdtemp(prefix="har-libfuzzer-"))
    (work / "corpus").mkdir()
    t0 = time.perf_counter()
    done = subprocess.run([str(binary), f"-runs={runs}", f"-seed={seed + 1}", "-print_final_stats=1",
                           f"-artifact_prefix={work}/", str(work / "corpus")], capture_output=True, text=True,
                          env=sanitizer_env(), timeout=60 + PER_RUN_TIMEOUT_S * runs)
    seconds = time.perf_counter() - t0
    executed = re.search(r"stat::number_of_executed_units: (\d+)", done.stderr)
    n = int(executed.group(1)) if executed else 0
    if done.returncode == 0:
        shutil.rmtree(work, ignore_errors=True)
        return FuzzResult(runs=n, seconds=round(seconds, 3), findings=0)
    line = _first_line(done.stderr, ("runtime error:", "SUMMARY:", "ERROR:", "invariant broken")).replace(
        f"{PROJECT_ROOT}/", "")
    crash = re.search(r"Test unit written to (\S+)", done.stderr)
    m = _SITE.search(line)
    site = f"{Path(m.group(1)).name}:{m.group(2)}" if m else line[:80]
    return FuzzResult(runs=n, seconds=round(seconds, 3), findings=1, first_error=line, sites=(site,),
                      site_errors=(f"{crash.group(1) if crash else work}: {line}",))


def build_parser():
    p = parser("firmware.hygiene", "Fuzz the int8 C kernels under AddressSanitizer + UBSan.")
    p.add_argument("--runs", type=int, default=1_000_000, help="inputs to execute")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (input i depends on (seed, i) only)")
    p.add_argument("--jobs", type=int, default=1, help="parallel driver processes")
    p.add_argument("--max-findings", type=int, default=100, help="stop after this many findings")
    p.add_argument("--kernel-dir", default=str(KERNEL_DIR), help="folder with the kernel sources to fuzz")
    p.add_argument("--kernels", default="int8", help="int8 (har_int8.c, the HAR firmware's) or graph (har_graph.c, "
                   "the graph path's)")
    p.add_argument("--engine", choices=("standalone", "libfuzzer"), default="standalone",
                   help="standalone: gcc and the built-in driver; libfuzzer: clang's coverage-guided fuzzer")
    p.add_argument("--verbose", action="store_true", help="also print the driver binary's path")
    return p


def _main(args) -> int:
    kdir = Path(args.kernel_dir)
    if args.kernels not in TARGETS:
        raise BadOptionError(f"unknown --kernels {args.kernels!r}; choose one of {', '.join(TARGETS)}")
    kernel_file = TARGETS[args.kernels][1]
    if not (kdir / kernel_file).is_file():
        raise BadOptionError(f"--kernel-dir {kdir}: no {kernel_file} there")
    try:
        if args.engine == "libfuzzer":
            res = run_libfuzzer(args.runs, args.seed, kernel_dir=kdir, kernels=args.kernels)
        else:
            res = run_fuzz(args.runs, args.seed, jobs=args.jobs, max_findings=args.max_findings, kernel_dir=kdir,
                           kernels=args.kernels)
    except BuildFailed as e:
        print(f"hygiene: not warning-free under -Werror: {e}", file=sys.stderr)
        return 1
    if args.verbose and args.engine == "standalone":
        print(f"driver: {fuzz_binary(kdir, kernels=args.kernels)}")
    print(f"har-fuzz: {res.runs} runs in {res.seconds:.1f} s (seed {args.seed}), {res.findings} findings")
    for site, error in zip(res.sites, res.site_errors):
        print(f"{site}  first at {error}")
    return 1 if res.findings else 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
