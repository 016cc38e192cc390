"""Linker-map parsing and categorisation of firmware.elfsize on a hand-written GNU ld map (no toolchain)."""
from __future__ import annotations

import pytest

from firmware import elfsize

MAP = """Archive member included to satisfy reference by file (symbol)

Discarded input sections

 .text.unused   0x00000000       0x40 /b/x.elf.obj/har_int8.o

Memory Configuration

Name             Origin             Length             Attributes
FLASH            0x00000000         0x00040000         xr

Linker script and memory map

LOAD /b/x.elf.obj/boards/startup.o
.vectors        0x00000000       0x40
 *(.vectors)
 .vectors       0x00000000       0x40 /b/x.elf.obj/boards/startup.o
                0x00000000                har_vectors

.text           0x00000040       0x70
 *(.text .text.*)
 .text.har_op_run_with_a_long_name
                0x00000040       0x22 /b/x.elf.obj/har_int8.o
                0x00000040                har_op_run_with_a_long_name
 *fill*         0x00000062        0x2 
 .text.har_init
                0x00000064       0x10 /b/x.elf.obj/har_runtime.o
 .text          0x00000074       0x30 /usr/lib/gcc/arm-none-eabi/12.2.1/thumb/v6-m/nofp/libgcc.a(_divsi3.o)
                0x00000074                __divsi3
                0x000000a4                        . = ALIGN (0x4)

.rodata         0x000000b0       0x20
 .rodata.har_weights
                0x000000b0        0x8 /b/x.elf.obj/har_model.o
 .rodata.main.str1.1
                0x000000b8        0x9 /b/x.elf.obj/boards/harness.o
                                  0xc (size before relaxing)
 .rodata.har_init.str1.1
                0x000000b8        0x9 /b/x.elf.obj/har_runtime.o
 .rodata.har_ops
                0x000000c4        0x8 /b/x.elf.obj/har_model.o

.ARM.attributes
                0x00000000       0x2c
 .ARM.attributes
                0x00000000       0x2c /b/x.elf.obj/boards/startup.o

.bss            0x20000000       0x70 load address 0x000000d0
 .bss.har_arena
                0x20000000       0x60 /b/x.elf.obj/har_model.o
 .bss.har_state
                0x20000060        0xc /b/x.elf.obj/har_runtime.o
 .bss.counter   0x2000006c        0x4 /b/x.elf.obj/har_pre.o
"""


def test_parse_map_reads_only_the_memory_map_and_wanted_sections():
    secs = elfsize.parse_map(MAP, {".vectors", ".text", ".rodata", ".bss"})
    assert set(secs) == {".vectors", ".text", ".rodata", ".bss"}  # .ARM.attributes not wanted
    addr, size, entries = secs[".text"]
    assert (addr, size) == (0x40, 0x70)
    names = [e[2] for e in entries]
    assert names == [".text.har_op_run_with_a_long_name", "*fill*", ".text.har_init", ".text"]
    assert ".text.unused" not in str(secs)  # the discarded part is skipped
    assert secs[".rodata"][2][1][:2] == (0xB8, 0x9)  # not the "size before relaxing"


def test_categories_by_symbol_then_object():
    cat = elfsize._category
    objs = elfsize.LIBRARY_OBJECTS
    assert cat(".rodata.har_weights", "/b/har_model.o", False, objs) == "weights"
    assert cat(".bss.har_arena", "/b/har_model.o", True, objs) == "arena"
    assert cat(".text.har_op_run", "/b/har_int8.o", False, objs) == "kernel_code"
    assert cat(".bss.counter", "/b/har_pre.o", True, objs) == "runtime_state"
    assert cat(".text", "/usr/lib/libgcc.a(_divsi3.o)", False, objs) == "helpers"
    assert cat(".text.main", "/b/x.elf.obj/boards/harness.o", False, objs) == "startup"
    assert cat("*fill*", "", False, objs) == "padding"
    with pytest.raises(elfsize.AccountingError, match="user.o"):
        cat(".text.f", "/b/user.o", False, objs)


def test_footprint_totals_exclude_startup_and_padding():
    b = elfsize.Bytes
    fp = elfsize.Footprint("cortex-m0plus", weights=b(8, 0), op_table=b(8, 0), kernel_code=b(34, 0),
                           decoder_code=b(0, 0), preprocessing=b(0, 0), runtime_code=b(25, 0), helpers=b(48, 0), arena=b(0, 96),
                           ring_buffer=b(0, 0), runtime_state=b(0, 16), startup=b(129, 0), padding=b(4, 0),
                           elf_flash_bytes=256, elf_ram_bytes=112, stack_bytes=40)
    assert fp.library_flash_bytes == 8 + 8 + 34 + 25 + 48
    assert fp.library_ram_bytes == 112 and fp.library_ram_with_stack_bytes == 152
    assert fp.to_dict()["startup"] == {"flash_bytes": 129, "ram_bytes": 0}
