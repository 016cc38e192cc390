"""Cross tools and the two target boards.

Steps: `tool_path(name)` finds a tool on PATH (`shutil.which`), `have(name)` says whether it is there,
`require(name)` is what target tests call first: it skips the test with one line naming the install
command, except under CI (environment variable CI set and non-empty), where a missing tool fails the test:
a green CI run must mean the firmware really was built and run.

Targets (memory maps checked against QEMU 7.2's `info mtree -f`):
- "cortex-m4": Cortex-M4F (hard float, FPv4-SP) on QEMU `-M mps2-an386`: 4 MiB code RAM at 0x0 standing in
  for flash, 4 MiB data RAM at 0x20000000.
- "cortex-m0plus": Cortex-M0+ (soft float) on QEMU `-M microbit` (nRF51822), 256 KiB flash, 16 KiB RAM.
  QEMU's microbit is a Cortex-M0, not an M0+: both implement the same ARMv6-M Thumb instruction set, and
  GCC emits the same instructions for -mcpu=cortex-m0plus, so the code and its instruction counts are the
  same; only cycle timings (not modelled by QEMU anyway) differ.
Limits: tools are found on PATH only; the versions used while writing this were arm-none-eabi-gcc 12.2
(newlib 3.3) and qemu-system-arm 7.2.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from har.errors import BadOptionError, HarError

INSTALL_HINT = ("apt-get update && apt-get install -y --no-install-recommends "
                "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")
BOARDS_DIR = Path(__file__).with_name("boards")


class ToolMissingError(HarError):
    """A cross tool is not installed; the message names the install command."""


@dataclass(frozen=True)
class Target:
    """A CPU + QEMU board. Addresses and sizes in bytes; `libs` are linked after the objects."""
    name: str
    cpu_flags: tuple[str, ...]
    machine: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    libs: tuple[str, ...]

    @property
    def linker_script(self) -> Path:
        return BOARDS_DIR / f"{self.machine}.ld"

    def in_flash(self, addr: int) -> bool:
        return self.flash_origin <= addr < self.flash_origin + self.flash_bytes

    def in_ram(self, addr: int) -> bool:
        return self.ram_origin <= addr < self.ram_origin + self.ram_bytes


TARGETS = {
    "cortex-m4": Target("cortex-m4", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                        "mps2-an386", 0x0, 4 << 20, 0x20000000, 4 << 20, ("-lm", "-lgcc")),
    "cortex-m0plus": Target("cortex-m0plus", ("-mcpu=cortex-m0plus", "-mthumb"),
                            "microbit", 0x0, 256 << 10, 0x20000000, 16 << 10, ("-lm", "-lgcc")),
}


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise BadOptionError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}") from None


def tool_path(tool: str) -> str:
    """Absolute path of `tool`, or ToolMissingError naming the install command."""
    found = shutil.which(tool)
    if not found:
        raise ToolMissingError(f"{tool} missing: install with {INSTALL_HINT}")
    return found


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def require(tool: str) -> str:
    """For tests: the tool's path; skip the test if it is missing, fail instead when $CI is set."""
    import pytest  # only tests call this; keep pytest out of the library's imports

    if have(tool):
        return tool_path(tool)
    message = f"{tool} missing: install with {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
