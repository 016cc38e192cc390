"""Where a firmware's flash and RAM go: every byte of the ELF's allocated sections, by category.

Steps of `account()`:
1. Read the ELF's section headers (allocated? NOBITS? address) and `arm-none-eabi-size -A`'s sizes; the two
   must agree. Flash = every allocated section with contents (.vectors, .text, .rodata, .ARM.exidx and the
   .data load image); RAM = every allocated section whose address is in the target's RAM (.data, .bss).
2. Parse the linker map ("Linker script and memory map" part): for each allocated output section, its
   input sections (address, size, object) and `*fill*` entries. With -ffunction-sections/-fdata-sections
   every function and object is its own input section, so the input section's name names the symbol.
3. Categorise each input section: the accounting symbols by name (har_weights -> weights, har_ops -> op
   table, har_arena -> arena, har_ring -> ring buffer, har_state -> runtime state); then by object:
   har_int8.o kernel code, har_decode.o decoder code, har_pre.o preprocessing, har_runtime.o and har_model.o (its code and constants
   other than the named symbols) runtime code, any other .data/.bss of those objects runtime state, archive
   members (libgcc.a, libm.a, libc.a) compiler/libm helpers, board objects (boards/*.o) startup/harness.
   An object that is none of these raises (pass it in `objects`).
4. Tile every output section with its entries in address order: gaps and fill are alignment padding,
   overlapping bytes (merged strings) are counted once. Check: map and ELF agree on every allocated section,
   every accounting symbol's nm size equals its input section, and the categories + startup + padding sum to
   the ELF's flash and RAM exactly (else AccountingError).
Library totals exclude startup/harness and padding. Flash and RAM are never summed together. The stack is
not a section: pass the painted measurement as `stack_bytes` to get RAM including stack.
Limits: GNU ld map format (binutils 2.40 checked); an object's category is decided by its file name.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from firmware.toolchain import Target, target as get_target, tool_path
from har.errors import BadDataError, HarError

SYMBOL_CATEGORIES = {"har_weights": "weights", "har_ops": "op_table", "har_arena": "arena",
                     "har_ring": "ring_buffer", "har_state": "runtime_state"}
LIBRARY_OBJECTS = {"har_int8.o": "kernel_code", "har_decode.o": "decoder_code", "har_pre.o": "preprocessing",
                   "har_runtime.o": "runtime_code", "har_ring.o": "runtime_code", "har_model.o": "runtime_code"}
LIBRARY_CATEGORIES = ("weights", "op_table", "kernel_code", "decoder_code", "preprocessing", "runtime_code", "helpers",
                      "arena", "ring_buffer", "runtime_state")
SHF_ALLOC, SHT_NOBITS, SHT_SYMTAB = 0x2, 8, 2


class AccountingError(HarError):
    """The map, the ELF and the categories disagree: the accounting cannot be trusted."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int

    @property
    def allocated(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def has_contents(self) -> bool:
        return self.type != SHT_NOBITS


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    type: int  # 0 NOTYPE, 1 OBJECT, 2 FUNC


class Elf:
    """Just enough of an ELF32 little-endian file: sections, symbols, PT_LOAD segments."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.data = data = self.path.read_bytes()
        if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
            raise BadDataError(f"{path}: not a 32-bit little-endian ELF")
        self.entry, phoff, shoff = struct.unpack_from("<III", data, 24)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 42)
        raw = [struct.unpack_from("<10I", data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx][4]
        self.sections = [Section(self._str(names, s[0]), s[1], s[2], s[3], s[4], s[5]) for s in raw]
        # (paddr = load address, vaddr, file bytes) of every PT_LOAD segment with contents
        self.segments = []
        for i in range(phnum):
            p_type, off, vaddr, paddr, filesz, _ = struct.unpack_from("<6I", data, phoff + i * phentsize)
            if p_type == 1 and filesz:
                self.segments.append((paddr, vaddr, data[off:off + filesz]))
        self.symbols: dict[str, Symbol] = {}
        for s in raw:
            if s[1] != SHT_SYMTAB:
                continue
            strtab = raw[s[6]][4]
            for j in range(1, s[5] // 16):
                st_name, value, size, info = struct.unpack_from("<IIIB", data, s[4] + 16 * j)
                kind = info & 0xF
                if st_name and kind in (0, 1, 2):
                    name = self._str(strtab, st_name)
                    if name not in self.symbols or kind == 2:  # a function beats a same-named label
                        self.symbols[name] = Symbol(name, value, size, kind)

    def _str(self, table_off: int, off: int) -> str:
        end = self.data.index(b"\0", table_off + off)
        return self.data[table_off + off:end].decode()

    def address(self, name: str) -> int:
        """A symbol's address (Thumb bit cleared for functions)."""
        if name not in self.symbols:
            raise BadDataError(f"{self.path.name}: no symbol {name!r}")
        sym = self.symbols[name]
        return sym.value & ~1 if sym.type == 2 else sym.value

    def file_offset(self, name: str) -> int:
        """Where a symbol's initial bytes are in the file (to patch an ELF, e.g. corrupt the weights)."""
        addr = self.address(name)
        for s in self.sections:
            if s.allocated and s.has_contents and s.addr <= addr < s.addr + s.size:
                return s.offset + addr - s.addr
        raise BadDataError(f"{self.path.name}: {name!r} has no bytes in the file")


@dataclass(frozen=True)
class Bytes:
    flash_bytes: int = 0
    ram_bytes: int = 0


@dataclass(frozen=True)
class Footprint:
    """Flash/RAM per category of one linked firmware (bytes). `stack_bytes` is measured, not linked."""
    target: str
    weights: Bytes
    op_table: Bytes
    kernel_code: Bytes
    decoder_code: Bytes  # har_decode.c: weight streams -> arena (0 when no layer is stored compressed)
    preprocessing: Bytes
    runtime_code: Bytes
    helpers: Bytes
    arena: Bytes
    ring_buffer: Bytes
    runtime_state: Bytes
    startup: Bytes   # board files (vector table, startup, semihosting, mem*, harness/app): not library
    padding: Bytes   # alignment gaps, *fill*, linker stubs
    elf_flash_bytes: int
    elf_ram_bytes: int
    stack_bytes: int | None = None

    @property
    def library_flash_bytes(self) -> int:
        return sum(getattr(self, c).flash_bytes for c in LIBRARY_CATEGORIES)

    @property
    def library_ram_bytes(self) -> int:
        return sum(getattr(self, c).ram_bytes for c in LIBRARY_CATEGORIES)

    @property
    def library_ram_with_stack_bytes(self) -> int | None:
        return None if self.stack_bytes is None else self.library_ram_bytes + self.stack_bytes

    def categories(self) -> dict[str, Bytes]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Bytes)}

    def to_dict(self) -> dict:
        out = {name: {"flash_bytes": b.flash_bytes, "ram_bytes": b.ram_bytes}
               for name, b in self.categories().items()}
        out.update(target=self.target, elf_flash_bytes=self.elf_flash_bytes, elf_ram_bytes=self.elf_ram_bytes,
                   library_flash_bytes=self.library_flash_bytes, library_ram_bytes=self.library_ram_bytes,
                   stack_bytes=self.stack_bytes, library_ram_with_stack_bytes=self.library_ram_with_stack_bytes)
        return out


def size_sections(elf: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """`arm-none-eabi-size -A`: section -> (size, address)."""
    out = subprocess.run([tool_path("arm-none-eabi-size"), "-A", str(elf)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            rows[parts[0]] = (int(parts[1]), int(parts[2]))
    return rows


def nm_sizes(elf: str | os.PathLike) -> dict[str, int]:
    """`arm-none-eabi-nm -S`: symbol -> size, for symbols that have one."""
    out = subprocess.run([tool_path("arm-none-eabi-nm"), "-S", str(elf)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


_OUT = re.compile(r"^(\S+)(?:\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+))?")
_IN = re.compile(r"^ (\S+)?\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*?)\s*$")
_FILL = re.compile(r"^ \*fill\*\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)")
_ADDR_SIZE = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s*$")


def parse_map(map_text: str, wanted: set[str]) -> dict[str, tuple[int, int, list]]:
    """Output section -> (address, size, [(address, size, input name, file)]) for the `wanted` sections.
    Fill entries have input name '*fill*' and file ''."""
    start = map_text.find("Linker script and memory map")
    if start < 0:
        raise BadDataError("not a GNU ld map file (no 'Linker script and memory map')")
    out: dict[str, tuple[int, int, list]] = {}
    cur = pending_out = pending_in = None
    for line in map_text[start:].splitlines()[1:]:
        if line and not line[0].isspace():
            m = _OUT.match(line)
            name = m.group(1)
            cur, pending_out, pending_in = None, None, None
            if name in wanted:
                if m.group(2) is None:
                    pending_out = name
                else:
                    cur = name
                    out[name] = (int(m.group(2), 16), int(m.group(3), 16), [])
            continue
        if pending_out:
            m = _ADDR_SIZE.match(line)
            if m:
                cur, pending_out = pending_out, None
                out[cur] = (int(m.group(1), 16), int(m.group(2), 16), [])
            continue
        if cur is None:
            continue
        m = _FILL.match(line)
        if m:
            out[cur][2].append((int(m.group(1), 16), int(m.group(2), 16), "*fill*", ""))
            continue
        m = _IN.match(line)
        if m and (m.group(1) or pending_in):
            out[cur][2].append((int(m.group(2), 16), int(m.group(3), 16), m.group(1) or pending_in, m.group(4)))
            pending_in = None
            continue
        stripped = line.strip()
        if line.startswith(" ") and not line.startswith("  ") and stripped and not stripped.startswith("*"):
            pending_in = stripped  # a long input-section name; its address/size/file follow on the next line
    return out


def _category(input_name: str, file: str, in_ram: bool, objects: Mapping[str, str]) -> str:
    if input_name == "*fill*" or file == "linker stubs":
        return "padding"
    symbol = re.sub(r"^\.(text|rodata|data|bss)\.", "", input_name)
    if symbol in SYMBOL_CATEGORIES:
        return SYMBOL_CATEGORIES[symbol]
    if file.endswith(")") and ".a(" in file:
        return "helpers"  # an archive member: libgcc/libm/libc
    path = Path(file)
    if path.parent.name == "boards":
        return "startup"
    if path.name in objects:
        return "runtime_state" if in_ram else objects[path.name]
    raise AccountingError(f"object {path.name} is neither a library object ({', '.join(objects)}), "
                          f"a board object nor an archive member")


def account(elf: str | os.PathLike, map_path: str | os.PathLike, target: str | Target,
            stack_bytes: int | None = None, objects: Mapping[str, str] = LIBRARY_OBJECTS) -> Footprint:
    tgt = get_target(target) if isinstance(target, str) else target
    image = Elf(elf)
    sizes = size_sections(elf)
    alloc = [s for s in image.sections if s.allocated]
    for s in alloc:
        if sizes.get(s.name) != (s.size, s.addr):
            raise AccountingError(f"size -A and the ELF disagree on {s.name}: {sizes.get(s.name)} vs {s.size}")
    sections = parse_map(Path(map_path).read_text(), {s.name for s in alloc})
    totals = {c: [0, 0] for c in (*LIBRARY_CATEGORIES, "startup", "padding")}
    seen: dict[str, int] = {}
    for s in alloc:
        if s.size == 0:
            continue
        if s.name not in sections or sections[s.name][:2] != (s.addr, s.size):
            raise AccountingError(f"the map and the ELF disagree on section {s.name}")
        flash, ram = s.has_contents, tgt.in_ram(s.addr)
        if not (flash or ram):
            raise AccountingError(f"allocated section {s.name} at {s.addr:#x} is neither flash nor RAM")

        def add(category: str, n: int) -> None:
            totals[category][0] += n if flash else 0
            totals[category][1] += n if ram else 0

        cur, end = s.addr, s.addr + s.size
        for addr, size, name, file in sections[s.name][2]:
            if size == 0:
                continue
            if addr + size > end or addr < s.addr:
                raise AccountingError(f"{name} from {file} lies outside {s.name}")
            if addr > cur:
                add("padding", addr - cur)
            category = _category(name, file, ram, objects)
            add(category, addr + size - max(addr, cur) if addr + size > cur else 0)
            cur = max(cur, addr + size)
            if name != "*fill*":
                seen[re.sub(r"^\.(text|rodata|data|bss)\.", "", name)] = size
        add("padding", end - cur)
    for name, size in nm_sizes(elf).items():
        if name in SYMBOL_CATEGORIES and seen.get(name) != size:
            raise AccountingError(f"{name} ({size} bytes) is not its own input section in the map "
                                  f"(build with -fdata-sections)")
    flash_total = sum(s.size for s in alloc if s.has_contents)
    ram_total = sum(s.size for s in alloc if tgt.in_ram(s.addr))
    if sum(v[0] for v in totals.values()) != flash_total or sum(v[1] for v in totals.values()) != ram_total:
        raise AccountingError(f"categories do not add up to the ELF's flash {flash_total} / RAM {ram_total} bytes")
    return Footprint(tgt.name, **{c: Bytes(*v) for c, v in totals.items()}, elf_flash_bytes=flash_total,
                     elf_ram_bytes=ram_total, stack_bytes=stack_bytes)


def from_build(result, stack_bytes: int | None = None, objects: Mapping[str, str] = LIBRARY_OBJECTS) -> Footprint:
    """`account()` of a `firmware.cross.BuildResult`."""
    return account(result.elf, result.map, result.target, stack_bytes, objects)
