"""Energy per inference: an ESTIMATE from emulated instruction counts and datasheet currents, not a measurement.

Steps of `estimate(instructions, mcu, period_s, cpi)`:
1. cycles = instructions * CPI. The instruction count comes from Unicorn (`firmware.icount`), which counts
   instructions, not cycles; the CPI is an assumption (`CpiModel`, nominal with a low/high range).
2. active time t_a = cycles / clock_hz; active energy = t_a * I_run * V, with I_run the datasheet's typical
   run-mode current executing from flash at that clock (the current already includes flash, regulator and
   clock tree; peripherals off).
3. sleep energy = (period_s - t_a) * I_sleep * V, with I_sleep the typical current of the low-power mode the
   device waits in between windows (RAM retained, RTC or wake-up timer running).
4. period energy = active + sleep; average power = period energy / period_s. The same arithmetic at CPI low
   and CPI high gives the range. Refused (BadOptionError): non-positive inputs, a CPI model of another core,
   and an active time at CPI high longer than the period (the device could not keep up; the range would be
   meaningless).
`reduction(ours, reference)` compares two estimates on the same MCU and period: the fraction of active
energy per inference saved (CPI cancels, so it equals the fraction of instructions saved) and the fraction
of energy per period saved (sleep is the same for both, so it dilutes the saving), the latter with the range
from evaluating both at CPI low and both at CPI high (same core, same assumption for both).
`table_md(rows)` renders a markdown table labelled "estimate".

Limits (why these are estimates): datasheet figures are TYPICAL values (25 degC, nominal supply, the vendor's
benchmark code: Dhrystone / CoreMark), not maxima and not our kernels; the int8 kernels' real current can
differ by tens of percent. CPI is assumed (see `CpiModel`). Not modelled: wake-up time and its energy, the
20 per-period sample pushes and sensor / ADC / radio energy, voltage-regulator efficiency beyond what the
datasheet condition includes, temperature. Instructions per inference must be counted on the same core as the
MCU (M4 counts for M4 MCUs, M0+ counts for M0+ MCUs): the caller's responsibility.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Sequence

from har.errors import BadOptionError

CORES = ("cortex-m4", "cortex-m0plus")
LABEL = "estimate (typical datasheet currents x assumed CPI; not measured)"


@dataclass(frozen=True)
class Mcu:
    """One MCU at one operating point. Currents are TYPICAL datasheet values (not max)."""
    name: str
    core: str                # "cortex-m4" | "cortex-m0plus"
    clock_hz: int
    supply_v: float          # the datasheet condition's VDD
    active_ma: float         # ABSOLUTE run-mode current (mA) at clock_hz, executing from flash
    sleep_ua: float          # low-power mode between windows, RAM retained, RTC / wake-up timer on (uA)
    sleep_mode: str
    source: str              # document, revision, table/section, condition; "from memory" where unverified

    @property
    def active_ua_per_mhz(self) -> float:
        return self.active_ma * 1000.0 / (self.clock_hz / 1e6)

    @property
    def active_power_mw(self) -> float:
        return self.active_ma * self.supply_v


# Figures: typical, 25 degC, VDD = 3.0 V (the vendors' typical-value condition for all three).
MCUS: dict[str, Mcu] = {m.name: m for m in (
    Mcu("STM32L476", "cortex-m4", 80_000_000, 3.0, 10.2, 1.4, "Stop 2 with RTC",
        "ST DS10198 (STM32L476xx datasheet), section 'Supply current characteristics', table 'Current "
        "consumption in Run ... modes, code with data processing running from Flash, ART enable (Cache ON "
        "Prefetch OFF)', Range 1, fHCLK = 80 MHz, typ 25 degC: 10.2 mA; Stop 2 with RTC typ 1.4 uA "
        "(front-page feature list). Both from memory, not verified (the datasheet table was not found with "
        "the search tool; revision not checked). Cross-check: the front page's '100 uA/MHz run mode' gives "
        "8 mA at 80 MHz."),
    Mcu("nRF52840", "cortex-m4", 64_000_000, 3.0, 3.3, 3.16, "System ON idle, full RAM retention, wake on RTC",
        "Nordic nRF52840 Product Specification v1.x, section 'Current consumption' > 'CPU running': ICPU0 "
        "'CPU running CoreMark @64 MHz from flash, Clock = HFXO, Regulator = DC/DC' typ 3.3 mA; 'Sleep': "
        "ION_RAMON_RTC 'System ON, full 256 kB RAM retention, wake on RTC' typ 3.16 uA. Both from memory, "
        "not verified (the tables were not found with the search tool; exact revision 1.x not checked)."),
    Mcu("STM32L072", "cortex-m0plus", 32_000_000, 3.0, 93 * 32 / 1000, 0.86,
        "Stop with RTC, 20 KB RAM retained",
        "ST STM32L072x8/xB/xZ datasheet DocID027100 Rev 4 (September 2017), front-page 'Features' list "
        "(verified with the search tool): 'Down to 93 uA/MHz in Run mode' (stored here as 93 uA/MHz x 32 MHz "
        "= 2.976 mA) and '0.86 uA Stop mode + RTC + 20 KB RAM retention'. Caveat: 'down to' is the best "
        "operating point; the section 6.3.4 Run-from-Flash table value at 32 MHz Range 1 (Dhrystone) is "
        "likely higher (not read), so this active energy is optimistic."),
)}


def period_from_step(step_samples: int, rate_hz: float) -> float:
    """Seconds between inferences: one result per window step (20 samples at 20 Hz -> 1.0 s)."""
    if isinstance(step_samples, bool) or not isinstance(step_samples, int) or step_samples <= 0 \
            or not rate_hz > 0:
        raise BadOptionError(f"need a positive int step and rate, got {step_samples!r}, {rate_hz!r}")
    return step_samples / rate_hz


def get_mcu(name: str) -> Mcu:
    try:
        return MCUS[name]
    except KeyError:
        raise BadOptionError(f"unknown MCU {name!r}; choose one of {', '.join(MCUS)}") from None


@dataclass(frozen=True)
class CpiModel:
    """Cycles per instruction for one core running our int8 kernels from flash. An ASSUMPTION, not measured.

    Why a CPI at all: Unicorn/QEMU count retired instructions, not cycles; the energy needs cycles.
    Cortex-M4 (ARM Cortex-M4 TRM, instruction timings): data processing, MUL/MLA and the DSP MACs
    (SMLAD, SXTB16) take 1 cycle; LDR 2 cycles (1 when pipelined behind another load); taken branches 1 + P
    (P = 1..3, pipeline refill). Int8 gemm inner loops are roughly a third loads plus a loop branch, so a
    zero-wait-state CPI is ~1.2-1.4. Flash: STM32L476 at 80 MHz needs 4 wait states, hidden for loop code by
    the ART instruction cache, but weight reads stream through the small data cache and can stall; the
    nRF52840 runs flash with its instruction cache enabled. Nominal 1.3, range 1.1 (everything cached,
    loads pipelined) to 1.6 (frequent weight-read stalls).
    Cortex-M0+ (ARM Cortex-M0+ TRM): 2-stage pipeline, most instructions 1 cycle, LDR/STR 2, taken branch 2
    (1 + P, P = 1), MULS 1 cycle with the fast multiplier (STM32L0 has it). STM32L0 flash at 32 MHz
    (Range 1) needs 1 wait state; prefetch and the 32-bit fetch of two Thumb instructions hide most of it for
    straight-line code but not for branches and weight loads. Nominal 1.4, range 1.2 to 1.8.
    """
    core: str
    nominal: float
    low: float
    high: float
    note: str = "assumption: not measured (emulators count instructions, not cycles)"

    def __post_init__(self):
        if self.core not in CORES:
            raise BadOptionError(f"CpiModel.core must be one of {CORES}, got {self.core!r}")
        if not 0 < self.low <= self.nominal <= self.high:
            raise BadOptionError(f"CpiModel needs 0 < low <= nominal <= high, got "
                                 f"{self.low}, {self.nominal}, {self.high}")


DEFAULT_CPI: dict[str, CpiModel] = {
    "cortex-m4": CpiModel("cortex-m4", 1.3, 1.1, 1.6),
    "cortex-m0plus": CpiModel("cortex-m0plus", 1.4, 1.2, 1.8),
}


@dataclass(frozen=True)
class EnergyEstimate:
    """One variant on one MCU: energy per inference and per period. Energies in uJ, power in uW."""
    mcu: str
    core: str
    instructions: int
    period_s: float
    cpi: float
    cpi_low: float
    cpi_high: float
    active_s: float
    active_uj: float
    sleep_uj: float
    period_uj: float
    avg_power_uw: float
    active_uj_low: float
    active_uj_high: float
    period_uj_low: float
    period_uj_high: float
    avg_power_uw_low: float
    avg_power_uw_high: float
    label: str = LABEL

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyEstimate":
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise BadOptionError(f"EnergyEstimate fields differ: {sorted(set(d) ^ names)}")
        return cls(**d)


def _energy_uj(instructions: int, m: Mcu, period_s: float, cpi: float) -> tuple[float, float, float]:
    """(active_s, active_uj, sleep_uj) at one CPI. mA * V * s = mJ; * 1000 -> uJ. uA * V * s = uJ."""
    active_s = instructions * cpi / m.clock_hz
    active_uj = active_s * m.active_ma * m.supply_v * 1000.0
    sleep_uj = (period_s - active_s) * m.sleep_ua * m.supply_v
    return active_s, active_uj, sleep_uj


def estimate(instructions: int, mcu: Mcu, period_s: float, cpi: CpiModel | None = None) -> EnergyEstimate:
    if isinstance(instructions, bool) or not isinstance(instructions, int) or instructions <= 0:
        raise BadOptionError(f"instructions must be a positive int, got {instructions!r}")
    if isinstance(period_s, bool) or not isinstance(period_s, (int, float)) \
            or not 0 < period_s < math.inf:
        raise BadOptionError(f"period_s must be > 0, got {period_s!r}")
    if mcu.clock_hz <= 0 or mcu.supply_v <= 0 or mcu.active_ma <= 0 or mcu.sleep_ua < 0:
        raise BadOptionError(f"MCU {mcu.name!r} has a non-positive clock, supply or current")
    cpi = cpi or DEFAULT_CPI.get(mcu.core)
    if cpi is None or cpi.core != mcu.core:
        raise BadOptionError(f"CPI model for {getattr(cpi, 'core', None)!r} does not fit {mcu.name} "
                             f"({mcu.core})")
    # the worst case must fit in the period, else the device falls behind the sensor and the range is void
    worst_s = instructions * cpi.high / mcu.clock_hz
    if worst_s > period_s:
        raise BadOptionError(f"{instructions} instructions at CPI {cpi.high} take {worst_s:.4f} s on "
                             f"{mcu.name}, longer than the {period_s} s period")
    out = {}
    for tag, c in (("", cpi.nominal), ("_low", cpi.low), ("_high", cpi.high)):
        active_s, active_uj, sleep_uj = _energy_uj(instructions, mcu, period_s, c)
        out[tag] = (active_s, active_uj, sleep_uj, active_uj + sleep_uj)
    a_s, a_uj, s_uj, p_uj = out[""]
    return EnergyEstimate(
        mcu=mcu.name, core=mcu.core, instructions=instructions, period_s=float(period_s),
        cpi=cpi.nominal, cpi_low=cpi.low, cpi_high=cpi.high,
        active_s=a_s, active_uj=a_uj, sleep_uj=s_uj, period_uj=p_uj, avg_power_uw=p_uj / period_s,
        active_uj_low=out["_low"][1], active_uj_high=out["_high"][1],
        period_uj_low=out["_low"][3], period_uj_high=out["_high"][3],
        avg_power_uw_low=out["_low"][3] / period_s, avg_power_uw_high=out["_high"][3] / period_s)


@dataclass(frozen=True)
class Reduction:
    """Fractions saved by `ours` relative to `reference` (0.35 = 35 % less energy). Negative = costs more."""
    active: float            # per inference, active energy (CPI-independent: same core, same CPI)
    period: float            # per period, active + sleep
    period_low: float        # the smaller of the two CPI-bound savings
    period_high: float
    label: str = LABEL

    def to_dict(self) -> dict:
        return asdict(self)


def reduction(ours: EnergyEstimate, reference: EnergyEstimate) -> Reduction:
    if (ours.mcu, ours.period_s, ours.cpi, ours.cpi_low, ours.cpi_high) != \
            (reference.mcu, reference.period_s, reference.cpi, reference.cpi_low, reference.cpi_high):
        raise BadOptionError("reduction compares estimates of the same MCU, period and CPI model only")
    at_low = 1.0 - ours.period_uj_low / reference.period_uj_low
    at_high = 1.0 - ours.period_uj_high / reference.period_uj_high
    return Reduction(active=1.0 - ours.active_uj / reference.active_uj,
                     period=1.0 - ours.period_uj / reference.period_uj,
                     period_low=min(at_low, at_high), period_high=max(at_low, at_high))


def table_md(rows: Sequence[tuple[str, EnergyEstimate]], reference: str | None = None) -> str:
    """Markdown table of (variant, estimate) rows. With `reference` (a variant name), the last two columns
    give each row's active-energy and per-period saving against that variant's row on the same MCU."""
    refs = {e.mcu: e for v, e in rows if v == reference}
    if reference is not None and not refs:
        raise BadOptionError(f"reference variant {reference!r} is not among the rows")
    head = ["variant", "MCU", "instructions", "active us", "active uJ (CPI range)",
            "avg power uW (CPI range)", "saved vs reference: active %", "saved vs reference: per period %"]
    lines = [f"Energy per inference, {LABEL}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, e in rows:
        ref = refs.get(e.mcu)
        if ref is None:
            vs_active = vs_period = "-"
        else:
            r = reduction(e, ref)
            vs_active = f"{100 * r.active:.1f}"
            vs_period = f"{100 * r.period:.1f} ({100 * r.period_low:.1f}-{100 * r.period_high:.1f})"
        lines.append(f"| {variant} | {e.mcu} | {e.instructions} | {e.active_s * 1e6:.0f} | "
                     f"{e.active_uj:.1f} ({e.active_uj_low:.1f}-{e.active_uj_high:.1f}) | "
                     f"{e.avg_power_uw:.1f} ({e.avg_power_uw_low:.1f}-{e.avg_power_uw_high:.1f}) | "
                     f"{vs_active} | {vs_period} |")
    lines += ["", "saved vs reference: fraction of the reference's energy saved on the same MCU (negative = "
              "costs more; CPI cancels in the active column, the per-period range is both at CPI low / high). "
              "Currents are typical datasheet values; see firmware.energy.MCUS for sources."]
    return "\n".join(lines) + "\n"
