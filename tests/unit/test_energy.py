"""firmware.energy: arithmetic against a hand computation, monotonicity, reductions, refusals, MCU table sanity."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from firmware import energy
from firmware.energy import CpiModel, EnergyEstimate, Mcu, estimate, reduction, table_md
from har.errors import BadOptionError

# a made-up MCU with round numbers so the hand computation below is exact in decimal
TOY = Mcu("toy", "cortex-m4", 10_000_000, 2.0, 5.0, 4.0, "stop", "synthetic test MCU")
TOY_CPI = CpiModel("cortex-m4", 1.5, 1.0, 2.0)


def test_arithmetic_matches_hand_computation():
    n, period = 1_000_000, 1.0
    e = estimate(n, TOY, period, TOY_CPI)
    # by hand: cycles = 1e6 * 1.5 = 1.5e6; t = 1.5e6 / 1e7 = 0.15 s; P_run = 5 mA * 2 V = 10 mW
    t = n * 1.5 / 10e6
    assert math.isclose(e.active_s, t)
    assert math.isclose(e.active_uj, t * 10e-3 * 1e6)                      # 0.15 s * 10 mW = 1500 uJ
    assert math.isclose(e.sleep_uj, (period - t) * 4e-6 * 2.0 * 1e6)        # 0.85 s * 8 uW = 6.8 uJ
    assert math.isclose(e.period_uj, e.active_uj + e.sleep_uj)
    assert math.isclose(e.avg_power_uw, e.period_uj / period)
    # range: same formula at CPI 1.0 and 2.0
    assert math.isclose(e.active_uj_low, n * 1.0 / 10e6 * 10e-3 * 1e6)
    assert math.isclose(e.active_uj_high, n * 2.0 / 10e6 * 10e-3 * 1e6)
    assert e.active_uj_low <= e.active_uj <= e.active_uj_high
    assert e.period_uj_low <= e.period_uj <= e.period_uj_high
    assert e.avg_power_uw_low <= e.avg_power_uw <= e.avg_power_uw_high
    assert "estimate" in e.label


def test_period_helper():
    assert energy.period_from_step(20, 20.0) == 1.0
    assert energy.period_from_step(10, 20.0) * 2 == energy.period_from_step(20, 20.0)
    for bad in ((0, 20.0), (20, 0.0), (-1, 20.0), (2.5, 20.0)):
        with pytest.raises(BadOptionError):
            energy.period_from_step(*bad)


@pytest.mark.parametrize("name", sorted(energy.MCUS))
def test_more_instructions_more_energy(name):
    m = energy.MCUS[name]
    counts = [1_000, 108_000, 661_000, 2_000_000]
    es = [estimate(n, m, 1.0) for n in counts]
    for a, b in zip(es, es[1:]):
        assert a.active_s < b.active_s
        assert a.active_uj < b.active_uj
        assert a.period_uj < b.period_uj          # running beats sleeping, so the total grows too
        assert a.sleep_uj > b.sleep_uj            # less time left to sleep
    # active energy is linear in instructions
    assert math.isclose(es[2].active_uj / es[1].active_uj, counts[2] / counts[1])


def test_higher_cpi_more_energy():
    lo = estimate(500_000, TOY, 1.0, CpiModel("cortex-m4", 1.1, 1.1, 1.1))
    hi = estimate(500_000, TOY, 1.0, CpiModel("cortex-m4", 1.4, 1.4, 1.4))
    assert hi.active_uj > lo.active_uj and hi.period_uj > lo.period_uj


def test_reduction_of_equal_inputs_is_zero():
    for m in energy.MCUS.values():
        e = estimate(108_000, m, 1.0)
        r = reduction(e, e)
        assert r.active == 0.0 and r.period == 0.0 and r.period_low == 0.0 and r.period_high == 0.0


def test_reduction_direction_and_dilution():
    m = energy.MCUS["STM32L476"]
    ours, ref = estimate(108_000, m, 1.0), estimate(661_000, m, 1.0)
    r = reduction(ours, ref)
    # CPI cancels: the active saving is the instruction saving
    assert math.isclose(r.active, 1 - 108_000 / 661_000)
    # sleep energy is common to both, so the per-period saving is smaller but still positive
    assert 0 < r.period < r.active
    assert r.period_low <= r.period <= r.period_high
    back = reduction(ref, ours)
    assert back.active < 0 and back.period < 0    # the reference costs more than ours
    # a longer period adds sleep to both and dilutes the saving further
    r10 = reduction(estimate(108_000, m, 10.0), estimate(661_000, m, 10.0))
    assert r10.period < r.period and math.isclose(r10.active, r.active)


def test_reduction_refuses_mismatched_estimates():
    a = estimate(108_000, energy.MCUS["STM32L476"], 1.0)
    with pytest.raises(BadOptionError):
        reduction(a, estimate(661_000, energy.MCUS["nRF52840"], 1.0))
    with pytest.raises(BadOptionError):
        reduction(a, estimate(661_000, energy.MCUS["STM32L476"], 2.0))


def test_bad_inputs_refused():
    m = energy.MCUS["STM32L476"]
    for n in (0, -5, 1.5, True):
        with pytest.raises(BadOptionError):
            estimate(n, m, 1.0)
    for p in (0.0, -1.0, float("nan"), float("inf"), "1.0", None):
        with pytest.raises(BadOptionError):
            estimate(1000, m, p)
    # active time longer than the period: the count that needs just over the period at CPI high
    too_many = int(m.clock_hz * 1.0 / energy.DEFAULT_CPI[m.core].high) + 10
    with pytest.raises(BadOptionError):
        estimate(too_many, m, 1.0)
    estimate(too_many // 2, m, 1.0)                # half of it fits
    with pytest.raises(BadOptionError):             # a CPI model of the other core
        estimate(1000, m, 1.0, energy.DEFAULT_CPI["cortex-m0plus"])
    with pytest.raises(BadOptionError):             # non-positive MCU figures
        estimate(1000, replace(m, active_ma=0.0), 1.0)
    with pytest.raises(BadOptionError):
        CpiModel("cortex-m4", 1.0, 1.2, 1.5)        # nominal below low
    with pytest.raises(BadOptionError):
        CpiModel("cortex-m7", 1.0, 1.0, 1.0)
    with pytest.raises(BadOptionError):
        energy.get_mcu("no-such-mcu")


@pytest.mark.parametrize("name", sorted(energy.MCUS))
def test_mcu_table_plausible(name):
    m = energy.get_mcu(name)
    assert m.name == name and m.core in energy.CORES
    assert len(m.source.strip()) > 40 and m.sleep_mode.strip()
    # either a checked citation or an explicit "from memory, not verified", never silence
    assert ("not verified" in m.source) != ("verified with" in m.source or "verified:" in m.source)
    assert 1e6 <= m.clock_hz <= 200e6
    assert 1.6 <= m.supply_v <= 3.6
    assert 0 < m.active_ma < 50
    assert 0 < m.sleep_ua < 100 and m.sleep_ua * 1e-3 < m.active_ma / 100   # sleep far below run
    assert m.active_power_mw < 50                                          # product limit at full activity
    assert 10 < m.active_ua_per_mhz < 500
    cpi = energy.DEFAULT_CPI[m.core]
    assert 1.0 <= cpi.low <= cpi.nominal <= cpi.high <= 3.0 and "assumption" in cpi.note
    # full activity for a whole period stays under the limit too
    e = estimate(int(m.clock_hz * 0.5 / cpi.high), m, 1.0)
    assert e.avg_power_uw_high < 50_000


def test_json_round_trip_and_determinism():
    e = estimate(108_000, energy.MCUS["nRF52840"], 1.0)
    text = json.dumps(e.to_dict(), sort_keys=True)
    back = EnergyEstimate.from_dict(json.loads(text))
    assert back == e
    assert json.dumps(estimate(108_000, energy.MCUS["nRF52840"], 1.0).to_dict(), sort_keys=True) == text
    r = reduction(e, estimate(661_000, energy.MCUS["nRF52840"], 1.0))
    assert json.loads(json.dumps(r.to_dict())) == r.to_dict()
    with pytest.raises(BadOptionError):
        EnergyEstimate.from_dict({**e.to_dict(), "extra": 1})


def test_table_md():
    rows = []
    for name in ("STM32L476", "STM32L072"):
        m = energy.MCUS[name]
        rows += [("int8 unpruned", estimate(661_000, m, 1.0)), ("hybrid", estimate(108_000, m, 1.0))]
    md = table_md(rows, reference="int8 unpruned")
    lines = md.splitlines()
    assert "estimate" in lines[0]
    header = [i for i, line in enumerate(lines) if line.startswith("| variant")][0]
    body = lines[header + 2: header + 2 + len(rows)]
    assert len(body) == len(rows) and all(line.startswith("| ") for line in body)
    # the reference rows save nothing; the hybrid rows save the instruction fraction on each MCU
    ref_rows = [line for line in body if line.startswith("| int8 unpruned")]
    assert all(" 0.0 " in line for line in ref_rows)
    want = f"{100 * (1 - 108_000 / 661_000):.1f}"
    assert all(want in line for line in body if line.startswith("| hybrid"))
    assert "| - | - |" in table_md(rows[:1])
    with pytest.raises(BadOptionError):
        table_md(rows, reference="missing")
