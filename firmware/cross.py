"""Cross-compile a firmware ELF for one target: the given library sources + the board files.

Steps of `build()`:
1. Check the target, harness kind, optimisation flag and sources.
2. Compile every source separately (in parallel) into `<out>.obj/<stem>.o`, with the project's flags plus
   -fstack-usage (a `.su` file beside each object). Board files (startup.c, semihost.c, mem.c and the
   harness: harness.c for "test", app_min.c for "app", graph_harness.c for "graph" (a graph library), none for "none" = the sources bring main) go to
   `<out>.obj/boards/`, so their names never collide with the library's. (GCC's file symbol is the
   source's base name; -ffile-prefix-map keeps directories out of any __FILE__.)
3. Link with -nostdlib -nostartfiles --gc-sections, the board's linker script and the target's libs
   (-lm -lgcc), writing the map file; ELF and map are written beside the objects, then renamed into place.
Determinism: no -g (no debug info, so no paths), no timestamps, fixed object order: the same inputs give a
byte-identical ELF, whatever the output directory (checked by tests/integration/test_firmware_boards.py).
Include path: `include_dirs`, then the boards directory, then every source's directory (so the harness
finds the library's har_model.h).
Limits: one language (C99); errors report only the compiler's first error line (the full text is in the
exception's `details`).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from firmware.toolchain import BOARDS_DIR, target as get_target, tool_path
from har.errors import BadOptionError, HarError

FLAGS = ("-std=c99", "-ffreestanding", "-fno-strict-aliasing", "-ffp-contract=off", "-fno-math-errno",
         "-fno-tree-loop-distribute-patterns", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra")
LINK_FLAGS = ("-nostdlib", "-nostartfiles", "-Wl,--gc-sections")
BOARD_SOURCES = ("startup.c", "semihost.c", "mem.c")
HARNESSES = {"test": ("harness.c",), "app": ("app_min.c",), "graph": ("graph_harness.c",), "none": ()}
OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-Og")
COMPILE_TIMEOUT_S = 300


class BuildError(HarError):
    """Compiling or linking the firmware failed; the message is the tool's first error line."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class BuildResult:
    target: str
    elf: Path
    map: Path
    objects: tuple[Path, ...]
    stack_usage: tuple[Path, ...]          # one .su file per object (GCC -fstack-usage)
    commands: tuple[tuple[str, ...], ...]  # every compile command, then the link command
    warnings: tuple[str, ...] = ()         # compiler/linker diagnostics of a successful build (lines)


_ERROR = re.compile(r"error:|undefined reference|multiple definition|cannot find|will not fit|overflowed")


def _first_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    overflow = [ln for ln in lines if "overflowed by" in ln]  # says by how much, unlike "will not fit"
    return next(iter(overflow), next((ln for ln in lines if _ERROR.search(ln)), lines[0] if lines else "no output"))


def _run(cmd: Sequence[str], cwd: Path, what: str) -> str:
    try:
        done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"{what} failed: {e}") from None
    if done.returncode != 0:
        raise BuildError(f"{what} failed: {_first_error(done.stderr)}", done.stderr)
    return done.stderr


def _define_flags(defines: Mapping[str, object] | None) -> list[str]:
    out = []
    for name, value in (defines or {}).items():
        out.append(f"-D{name}" if value is None else f"-D{name}={value}")
    return out


def build(target: str, sources: Sequence[str | os.PathLike], out_elf: str | os.PathLike,
          include_dirs: Sequence[str | os.PathLike] = (), defines: Mapping[str, object] | None = None,
          opt: str = "-Os", harness: str = "test", opt_overrides: Mapping[str, str] | None = None) -> BuildResult:
    """Build `out_elf` for `target` ("cortex-m4" | "cortex-m0plus") from `sources` + the board files;
    `opt_overrides` maps a source file name (e.g. "har_int8.c") to its own optimisation flag."""
    tgt = get_target(target)
    if harness not in HARNESSES:
        raise BadOptionError(f"unknown harness {harness!r}; choose one of {', '.join(HARNESSES)}")
    overrides = dict(opt_overrides or {})
    for flag in (opt, *overrides.values()):
        if flag not in OPT_LEVELS:
            raise BadOptionError(f"unknown optimisation flag {flag!r}; choose one of {', '.join(OPT_LEVELS)}")
    srcs = [Path(s).resolve() for s in sources]
    for s in srcs:
        if not s.is_file() or s.suffix != ".c":
            raise BadOptionError(f"not a C source file: {s}")
    stems = [s.stem for s in srcs]
    if len(set(stems)) != len(stems):
        raise BadOptionError(f"two sources share a file name: {sorted(stems)}")
    gcc = tool_path("arm-none-eabi-gcc")
    out_elf = Path(out_elf).resolve()
    obj_dir = out_elf.parent / (out_elf.name + ".obj")
    if obj_dir.exists():
        shutil.rmtree(obj_dir)  # never link a stale object
    (obj_dir / "boards").mkdir(parents=True)

    incs = [Path(d).resolve() for d in include_dirs] + [BOARDS_DIR.resolve()]
    incs += [d for d in dict.fromkeys(s.parent for s in srcs) if d not in incs]
    rest = [*FLAGS, "-fstack-usage", *(f"-I{d}" for d in incs), *_define_flags(defines)]
    units = [(BOARDS_DIR.resolve() / name, obj_dir / "boards" / (Path(name).stem + ".o"))
             for name in BOARD_SOURCES + HARNESSES[harness]]
    units += [(s, obj_dir / (s.stem + ".o")) for s in srcs]
    # -ffile-prefix-map: a __FILE__ in the library expands to "./name.c", not a path of this machine
    compiles = [(gcc, *tgt.cpu_flags, overrides.get(src.name, opt), *rest, f"-ffile-prefix-map={src.parent}=.",
                 "-c", str(src), "-o", str(obj)) for src, obj in units]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs = [pool.submit(_run, cmd, obj_dir, f"compiling {src.name}")
                for cmd, (src, _) in zip(compiles, units)]
        diagnostics = [job.result() for job in jobs]  # the first failing unit (in source order) raises

    tmp_elf, tmp_map = obj_dir / "link.elf", obj_dir / "link.map"
    link = (gcc, *tgt.cpu_flags, opt, *LINK_FLAGS, f"-L{BOARDS_DIR.resolve()}", "-T", str(tgt.linker_script),
            f"-Wl,-Map={tmp_map}", "-o", str(tmp_elf), *(str(obj) for _, obj in units), *tgt.libs)
    diagnostics.append(_run(link, obj_dir, f"linking {out_elf.name}"))
    map_path = out_elf.with_suffix(".map")
    os.replace(tmp_map, map_path)
    os.replace(tmp_elf, out_elf)
    objects = tuple(obj for _, obj in units)
    return BuildResult(target, out_elf, map_path, objects, tuple(o.with_suffix(".su") for o in objects),
                       (*compiles, link), tuple(ln for d in diagnostics for ln in d.splitlines() if ln.strip()))


def stack_usage(result: BuildResult) -> dict[str, int]:
    """Per-function static stack frame in bytes from the .su files (`file:line:col:function  bytes  kind`).
    A frame is a function's own use, not its callees'; 'dynamic' frames are reported at their static part."""
    frames: dict[str, int] = {}
    for su in result.stack_usage:
        if not su.exists():
            continue
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1].strip().isdigit():
                frames[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    return frames
