"""Instruction counts of one function on the target CPU, by running the test firmware in Unicorn.

Steps of `emulate()`:
1. Map the target's flash and RAM (same addresses as the QEMU board) plus the System Control Space page
   (as plain RAM, so startup's CPACR write does not fault), load the ELF's PT_LOAD segments at their load
   addresses, take SP from vector 0 and start at Reset_Handler (Thumb, M-profile CPU model).
2. Emulate the harness's semihosting (`bkpt 0xAB`: open, close, read, write, write0, exit) in Python over
   an in-memory file system seeded with `workdir_files`; files the firmware writes are returned.
3. Count instructions with one UC_HOOK_BLOCK: each translated block's instruction count is decoded once
   (a Thumb halfword whose top five bits are 0b11101, 0b11110 or 0b11111 starts a 32-bit instruction)
   and cached. A call of `function` starts at the block at its entry (return address = LR there) and
   ends at the block at that return address: count = instructions from the entry up to the return,
   nested calls included. UC_HOOK_CODE would miss IT instructions on M4 (it under-counts); block mode
   equals QEMU's `-d exec,nochain -singlestep` log exactly (see `qemu_trace_counts`, used by a test).
4. Optionally (`track_stack`) record the lowest stack address written while a public library call is
   active: an independent check of the harness's painted stack measurement.
Limits: Unicorn is a counter, not a board: no NVIC/SysTick, no FPU-disabled faults, no cycle timing.
Counts are data dependent (clamps, rounding branches), so keep inputs fixed when comparing.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from firmware import qemu
from firmware.elfsize import Elf
from firmware.toolchain import target as get_target, tool_path
from har.errors import BadDataError, HarError

PUBLIC_API = ("har_init", "har_reset", "har_push", "har_classify", "har_weights_crc32")
SCS = (0xE000E000, 0x1000)
EXCP_BKPT, SEMIHOST_BKPT = 7, 0xBEAB
SYS_OPEN, SYS_CLOSE, SYS_WRITE0, SYS_WRITE, SYS_READ, SYS_EXIT, SYS_EXIT_EXTENDED = 1, 2, 4, 5, 6, 0x18, 0x20
ADP_APPLICATION_EXIT = 0x20026


class EmulationError(HarError):
    """The firmware did not run to its semihosting exit under Unicorn."""


@dataclass(frozen=True)
class UcResult:
    exit_code: int
    files: dict[str, bytes]          # every file the firmware opened for writing
    calls: tuple[int, ...]           # instructions per call of `function`, in call order
    total_instructions: int
    stack_depth_bytes: int | None    # deepest library stack write below the caller's SP (track_stack)
    stderr_text: str
    seconds: float


def _insn_count(code: bytes) -> int:
    n = i = 0
    while i < len(code):
        hw = code[i] | code[i + 1] << 8
        i += 4 if (hw >> 11) in (0b11101, 0b11110, 0b11111) else 2
        n += 1
    return n


def _read_files(workdir_files: Mapping[str, bytes | os.PathLike] | str | os.PathLike) -> dict[str, bytearray]:
    if isinstance(workdir_files, (str, os.PathLike)):
        d = Path(workdir_files)
        return {p.name: bytearray(p.read_bytes()) for p in d.iterdir() if p.is_file()}
    out = {}
    for name, v in workdir_files.items():
        out[name] = bytearray(v if isinstance(v, (bytes, bytearray)) else Path(v).read_bytes())
    return out


def emulate(target: str, elf: str | os.PathLike, workdir_files, function: str = "har_classify",
            timeout_s: float = 600.0, track_stack: bool = False) -> UcResult:
    from unicorn import UC_ARCH_ARM, UC_HOOK_BLOCK, UC_HOOK_INTR, UC_HOOK_MEM_WRITE, UC_MODE_MCLASS, UC_MODE_THUMB
    from unicorn import Uc, UcError
    from unicorn import arm_const as A

    tgt = get_target(target)
    image = Elf(elf)
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_M4 if tgt.name == "cortex-m4" else A.UC_CPU_ARM_CORTEX_M0)
    for base, size in ((tgt.flash_origin, tgt.flash_bytes), (tgt.ram_origin, tgt.ram_bytes), SCS):
        uc.mem_map(base, size)
    for paddr, _vaddr, blob in image.segments:
        uc.mem_write(paddr, blob)
    sp, reset = struct.unpack("<II", bytes(uc.mem_read(tgt.flash_origin, 8)))
    uc.reg_write(A.UC_ARM_REG_SP, sp)

    fs = _read_files(workdir_files)
    written: set[str] = set()
    handles: dict[int, list] = {}  # handle -> [name, position, writable]
    console: list[str] = []
    state = {"total": 0, "exit": None, "error": None}

    def words(addr: int, n: int) -> tuple[int, ...]:
        return struct.unpack(f"<{n}I", bytes(uc.mem_read(addr, 4 * n)))

    def cstr(addr: int) -> str:
        out = bytearray()
        while True:
            chunk = bytes(uc.mem_read(addr, 64 - addr % 64))  # never crosses into an unmapped page
            z = chunk.find(b"\0")
            out += chunk if z < 0 else chunk[:z]
            if z >= 0:
                return out.decode("utf-8", "replace")
            addr += len(chunk)

    def semihost(op: int, arg: int) -> int | None:
        if op == SYS_OPEN:
            name_ptr, mode, length = words(arg, 3)
            name = bytes(uc.mem_read(name_ptr, length)).decode()
            if name == ":tt":
                return 1
            if mode >= 4:
                if mode < 8 or name not in fs:
                    fs[name] = bytearray()
                written.add(name)
            elif name not in fs:
                return 0xFFFFFFFF
            h = max(handles, default=99) + 1
            handles[h] = [name, len(fs[name]) if mode >= 8 else 0, mode >= 4]
            return h
        if op == SYS_CLOSE:
            return 0 if handles.pop(words(arg, 1)[0], None) is not None else 0xFFFFFFFF
        if op == SYS_WRITE0:
            console.append(cstr(arg))
            return 0
        if op in (SYS_READ, SYS_WRITE):
            h, buf, n = words(arg, 3)
            if h == 1 and op == SYS_WRITE:
                console.append(bytes(uc.mem_read(buf, n)).decode("utf-8", "replace"))
                return 0
            if h not in handles:
                return n
            name, pos, writable = handles[h]
            if op == SYS_WRITE:
                if not writable:
                    return n
                fs[name][pos:pos + n] = bytes(uc.mem_read(buf, n))
                handles[h][1] = pos + n
                return 0
            data = bytes(fs[name][pos:pos + n])
            uc.mem_write(buf, data)
            handles[h][1] = pos + len(data)
            return n - len(data)
        if op == SYS_EXIT_EXTENDED:
            reason, code = words(arg, 2)
            state["exit"] = code if reason == ADP_APPLICATION_EXIT else 1
            return None
        if op == SYS_EXIT:
            state["exit"] = 0 if arg == ADP_APPLICATION_EXIT else 1
            return None
        state["error"] = f"unsupported semihosting operation {op:#x}"
        return None

    def on_intr(uc, intno, _):
        pc = uc.reg_read(A.UC_ARM_REG_PC)
        insn = struct.unpack("<H", bytes(uc.mem_read(pc, 2)))[0] if intno == EXCP_BKPT else None
        if insn != SEMIHOST_BKPT:
            state["error"] = f"exception {intno} at pc={pc:#x}"
            uc.emu_stop()
            return
        r0 = semihost(uc.reg_read(A.UC_ARM_REG_R0), uc.reg_read(A.UC_ARM_REG_R1))
        if r0 is None:
            uc.emu_stop()
            return
        uc.reg_write(A.UC_ARM_REG_R0, r0 & 0xFFFFFFFF)
        uc.reg_write(A.UC_ARM_REG_PC, (pc + 2) | 1)  # Unicorn leaves PC on the bkpt

    entry = image.address(function)
    lib_entries = {image.address(f) for f in PUBLIC_API if f in image.symbols}
    cache: dict[tuple[int, int], int] = {}
    pending: list[tuple[int, int]] = []   # (return address, total at entry) of open calls of `function`
    calls: list[int] = []
    lib = {"ret": None, "sp": 0, "low": None, "depth": 0}

    def on_block(uc, addr, size, _):
        n = cache.get((addr, size))
        if n is None:
            n = cache[(addr, size)] = _insn_count(bytes(uc.mem_read(addr, size)))
        total = state["total"]
        if pending and addr == pending[-1][0]:
            calls.append(total - pending.pop()[1])
        if addr == entry:
            pending.append((uc.reg_read(A.UC_ARM_REG_LR) & ~1, total))
        if track_stack:
            if lib["ret"] is not None and addr == lib["ret"]:
                if lib["low"] is not None:
                    lib["depth"] = max(lib["depth"], lib["sp"] - (lib["low"] & ~3))
                lib["ret"], lib["low"] = None, None
            elif lib["ret"] is None and addr in lib_entries:
                lib["ret"], lib["sp"] = uc.reg_read(A.UC_ARM_REG_LR) & ~1, uc.reg_read(A.UC_ARM_REG_SP)
        state["total"] = total + n

    def on_write(uc, access, addr, size, value, _):
        if lib["ret"] is not None and addr < lib["sp"] and (lib["low"] is None or addr < lib["low"]):
            lib["low"] = addr

    uc.hook_add(UC_HOOK_INTR, on_intr)
    uc.hook_add(UC_HOOK_BLOCK, on_block)
    if track_stack:
        lo = image.address("_stack_bottom") if "_stack_bottom" in image.symbols else tgt.ram_origin
        uc.hook_add(UC_HOOK_MEM_WRITE, on_write, begin=lo, end=tgt.ram_origin + tgt.ram_bytes - 1)
    t0 = time.perf_counter()
    try:
        uc.emu_start(reset | 1, 0xFFFFFFFF, timeout=int(timeout_s * 1e6))
    except UcError as e:
        state["error"] = f"{e} at pc={uc.reg_read(A.UC_ARM_REG_PC):#x}"
    seconds = time.perf_counter() - t0
    if state["exit"] is None:
        why = state["error"] or f"no semihosting exit within {timeout_s:g} s"
        raise EmulationError(f"{Path(elf).name} under Unicorn ({tgt.name}): {why}")
    return UcResult(state["exit"], {n: bytes(fs[n]) for n in sorted(written)}, tuple(calls), state["total"],
                    lib["depth"] if track_stack else None, "".join(console), seconds)


def count_calls(target: str, elf: str | os.PathLike, workdir_files, function: str = "har_classify",
                timeout_s: float = 600.0) -> list[int]:
    """Instructions of every call of `function` while the test firmware runs on `workdir_files`
    (a directory, or a mapping file name -> bytes/path, e.g. {"windows.bin": ...}). Raises if the
    firmware does not exit 0."""
    res = emulate(target, elf, workdir_files, function, timeout_s)
    if res.exit_code != 0:
        raise EmulationError(f"{Path(elf).name} exited {res.exit_code} under Unicorn "
                             f"({qemu.EXIT_CODES.get(res.exit_code, 'unknown')}): {res.stderr_text.strip()}")
    return list(res.calls)


_TRACE = re.compile(rb"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def _one_insn_per_tb_args() -> tuple[str, ...]:
    out = subprocess.run([tool_path("qemu-system-arm"), "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    new = m is not None and (int(m.group(1)), int(m.group(2))) >= (8, 1)
    return ("-accel", "tcg,one-insn-per-tb=on") if new else ("-singlestep",)


def qemu_trace_counts(target: str, elf: str | os.PathLike, function: str, workdir: str | os.PathLike,
                      timeout_s: float = 60.0) -> list[int]:
    """The same per-call counts from QEMU's exec log (one translated block per instruction, no chaining,
    so one `Trace` line per executed instruction). The log is ~67 bytes per instruction: for small
    programs only. A call's return address is the instruction after the one that entered `function`."""
    image = Elf(elf)
    entry = image.address(function)
    log = Path(workdir).resolve() / "qemu-exec.log"
    res = qemu.run(target, elf, workdir, timeout_s,
                   extra_args=("-d", "exec,nochain", *_one_insn_per_tb_args(), "-D", str(log)))
    if res.exit_code != 0:
        raise EmulationError(f"{Path(elf).name} exited {res.exit_code} under QEMU: {res.stderr_text.strip()}")
    code = {paddr: blob for paddr, _v, blob in image.segments}

    def insn_bytes(pc: int) -> int:
        for base, blob in code.items():
            if base <= pc < base + len(blob) - 1:
                hw = blob[pc - base] | blob[pc - base + 1] << 8
                return 4 if (hw >> 11) in (0b11101, 0b11110, 0b11111) else 2
        raise BadDataError(f"pc {pc:#x} is outside the ELF's code")

    calls, pending, prev, i = [], [], None, 0
    with open(log, "rb") as fh:
        for line in fh:
            m = _TRACE.match(line)
            if not m:
                continue
            pc = int(m.group(1), 16)
            if pending and pc == pending[-1][0]:
                calls.append(i - pending.pop()[1])
            if pc == entry and prev is not None:
                pending.append((prev + insn_bytes(prev), i))
            prev, i = pc, i + 1
    log.unlink()
    return calls
