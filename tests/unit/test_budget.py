"""Budget accounting, pacing and carbon conversion (greenllm.core.budget)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.api.v1alpha1 import Budget
from greenllm.core import budget as b

HOUR = 3600.0
DAY = 24 * HOUR


def test_counter_delta_rises_and_handles_reset() -> None:
    assert b.counter_delta_j(1000.0, 1500.0) == 500.0
    assert b.counter_delta_j(1500.0, 1500.0) == 0.0
    # Reset: the counter restarted from zero, so everything it shows now was used since.
    assert b.counter_delta_j(1_000_000.0, 300.0) == 300.0


def test_integrate_power_trapezoid_rectangle_and_empty_interval() -> None:
    assert b.integrate_power_j(100.0, 300.0, 10.0) == pytest.approx(2000.0)
    assert b.integrate_power_j(None, 300.0, 10.0) == pytest.approx(3000.0)
    assert b.integrate_power_j(100.0, 300.0, 0.0) == 0.0
    assert b.integrate_power_j(100.0, 300.0, -5.0) == 0.0


def test_carbon_conversions() -> None:
    assert b.joules_to_kwh(3.6e6) == 1.0
    assert b.carbon_grams(2.0, 400.0) == 800.0
    assert b.carbon_to_energy_kwh(800.0, 400.0) == 2.0
    assert math.isinf(b.carbon_to_energy_kwh(800.0, 0.0))


def test_periods_and_split() -> None:
    assert b.current_period_start(0.0, DAY, DAY - 1) == 0.0
    assert b.current_period_start(0.0, DAY, DAY) == DAY
    assert b.current_period_start(100.0, DAY, 100.0 + 3.5 * DAY) == 100.0 + 3 * DAY
    assert b.split_at(0.0, 10.0, 4.0, 100.0) == pytest.approx((40.0, 60.0))
    assert b.split_at(0.0, 10.0, 20.0, 100.0) == (100.0, 0.0)
    assert b.split_at(5.0, 10.0, 0.0, 100.0) == (0.0, 100.0)


def test_pacing_spreads_the_remaining_energy_over_the_remaining_time() -> None:
    assert b.paced_power_w(1.0, HOUR) == pytest.approx(1000.0)
    assert b.paced_power_w(12.0, 12 * HOUR) == pytest.approx(1000.0)
    assert b.paced_power_w(0.0, HOUR) == 0.0
    assert b.paced_power_w(-1.0, HOUR) == 0.0
    assert math.isinf(b.paced_power_w(math.inf, HOUR))


def test_no_budget_allows_anything() -> None:
    a = b.allowed_power(Budget(), 5.0, 5.0, 0.0, HOUR, 300.0)
    assert a.power_w is None
    assert a.binding == ""
    assert not a.exhausted


def test_power_budget_is_a_plain_cap() -> None:
    a = b.allowed_power(Budget(power_w=900.0), 0.0, 0.0, 0.0, HOUR, None)
    assert a.power_w == 900.0
    assert "power budget" in a.binding


def test_energy_budget_is_paced_over_the_rest_of_the_period() -> None:
    # 24 kWh per day, 12 used, 12 h left: 12 kWh / 12 h = 1 kW.
    a = b.allowed_power(Budget(energy_kwh=24.0, period="24h"), 12.0, 0.0, 0.0, 12 * HOUR, None)
    assert a.power_w == pytest.approx(1000.0)
    assert "energy" in a.binding
    # Spent faster: 18 used with 12 h left leaves 6 kWh / 12 h = 500 W.
    a = b.allowed_power(Budget(energy_kwh=24.0, period="24h"), 18.0, 0.0, 0.0, 12 * HOUR, None)
    assert a.power_w == pytest.approx(500.0)


def test_energy_budget_exhausted_allows_zero() -> None:
    a = b.allowed_power(Budget(energy_kwh=10.0), 10.5, 0.0, 0.0, HOUR, None)
    assert a.power_w == 0.0
    assert a.exhausted


def test_carbon_budget_converts_through_the_current_intensity() -> None:
    # 5000 g allowed, 1000 used: 4000 g at 400 g/kWh = 10 kWh over the 10 h left = 1 kW.
    budget = Budget(carbon_grams=5000.0, period="24h")
    a = b.allowed_power(budget, 0.0, 1000.0, 0.0, 14 * HOUR, 400.0)
    assert a.power_w == pytest.approx(1000.0)
    assert "carbon" in a.binding
    # A dirtier grid halves what the same grams buy.
    a2 = b.allowed_power(budget, 0.0, 1000.0, 0.0, 14 * HOUR, 800.0)
    assert a2.power_w == pytest.approx(500.0)


def test_carbon_budget_on_a_clean_grid_or_unknown_intensity() -> None:
    budget = Budget(carbon_grams=5000.0)
    clean = b.allowed_power(budget, 0.0, 0.0, 0.0, HOUR, 0.0)
    assert clean.power_w is None
    unknown = b.allowed_power(budget, 0.0, 0.0, 0.0, HOUR, None)
    assert unknown.power_w is None
    assert any("intensity unknown" in n for n in unknown.notes)
    spent = b.allowed_power(budget, 0.0, 6000.0, 0.0, HOUR, 0.0)
    assert spent.power_w == 0.0


def test_the_tightest_budget_binds() -> None:
    budget = Budget(power_w=2000.0, energy_kwh=24.0, carbon_grams=2400.0, period="24h")
    # Energy: 24 kWh / 24 h = 1000 W. Carbon: 2400 g / 400 g/kWh = 6 kWh / 24 h = 250 W.
    a = b.allowed_power(budget, 0.0, 0.0, 0.0, 0.0, 400.0)
    assert a.power_w == pytest.approx(250.0)
    assert "carbon" in a.binding
    a = b.allowed_power(budget, 0.0, 0.0, 0.0, 0.0, 50.0)  # carbon: 48 kWh -> 2000 W; energy binds
    assert a.power_w == pytest.approx(1000.0)
    assert "energy" in a.binding


def test_record_first_sample_is_a_baseline() -> None:
    acc = b.record(b.Account(0.0), DAY, 10.0, 5000.0, 300.0, 400.0)
    assert acc.energy_kwh == 0.0
    assert acc.last_sample_time == 10.0
    assert acc.last_energy_j == 5000.0


def test_record_counter_then_reset_then_power() -> None:
    acc = b.record(b.Account(0.0), DAY, 0.0, 1.0e6, None, 500.0)
    acc = b.record(acc, DAY, 60.0, 1.0e6 + 3.6e6, None, 500.0)  # +1 kWh
    assert acc.energy_kwh == pytest.approx(1.0)
    assert acc.carbon_grams == pytest.approx(500.0)
    acc = b.record(acc, DAY, 120.0, 1.8e6, None, 500.0)  # reset: 0.5 kWh since
    assert acc.energy_kwh == pytest.approx(1.5)
    acc = b.record(acc, DAY, 180.0, None, 1000.0, None)  # counter gone: power, no intensity
    assert acc.energy_kwh == pytest.approx(1.5 + 1000.0 * 60 / 3.6e6)
    assert acc.carbon_grams == pytest.approx(750.0)
    acc = b.record(acc, DAY, 240.0, None, 3000.0, None)  # trapezoid of 1000 and 3000 W
    assert acc.energy_kwh == pytest.approx(1.5 + (1000.0 * 60 + 2000.0 * 60) / 3.6e6)


def test_record_ignores_stale_samples() -> None:
    acc = b.record(b.Account(0.0), DAY, 100.0, 0.0, None, None)
    acc = b.record(acc, DAY, 200.0, 3.6e6, None, None)
    again = b.record(acc, DAY, 200.0, 7.2e6, None, None)
    older = b.record(acc, DAY, 150.0, 7.2e6, None, None)
    assert again == acc
    assert older == acc


def test_record_with_nothing_measured_counts_nothing() -> None:
    acc = b.record(b.Account(0.0), DAY, 0.0, None, None, None)
    acc = b.record(acc, DAY, 60.0, None, None, None)
    assert acc.energy_kwh == 0.0
    assert acc.last_sample_time == 60.0


def test_record_splits_an_interval_across_the_period_end() -> None:
    period = HOUR
    acc = b.Account(0.0, energy_kwh=0.7, carbon_grams=7.0)
    acc = b.record(acc, period, HOUR - 100.0, 0.0, None, None)
    acc = b.record(acc, period, HOUR + 300.0, 400.0 * 3600.0, None, 100.0)  # 0.4 kWh over 400 s
    assert acc.period_start == HOUR
    assert acc.energy_kwh == pytest.approx(0.3)  # the 300 s after the boundary
    assert acc.carbon_grams == pytest.approx(30.0)


def test_record_skips_whole_periods_without_samples() -> None:
    acc = b.record(b.Account(0.0, energy_kwh=5.0), HOUR, 10.0, 0.0, None, None)
    acc = b.record(acc, HOUR, 3 * HOUR + 10.0, 3.6e6, None, None)
    assert acc.period_start == 3 * HOUR
    assert acc.energy_kwh == pytest.approx(10.0 / (3 * HOUR) * 1.0)


def test_roll_resets_totals_at_the_period_end_only() -> None:
    acc = b.Account(0.0, energy_kwh=3.0, carbon_grams=30.0, last_sample_time=50.0, last_energy_j=9.0)
    assert b.roll(acc, HOUR, HOUR - 1) == acc
    rolled = b.roll(acc, HOUR, HOUR + 1)
    assert (rolled.period_start, rolled.energy_kwh, rolled.carbon_grams) == (HOUR, 0.0, 0.0)
    assert rolled.last_energy_j == 9.0


@given(st.lists(st.floats(min_value=0.0, max_value=1e7), min_size=2, max_size=30))
def test_counter_accounting_sums_to_the_counter_rise(increments: list[float]) -> None:
    acc = b.Account(0.0)
    total = 0.0
    for i, inc in enumerate(increments):
        total += inc
        acc = b.record(acc, 1e9, float(i), total, None, None)
    assert acc.energy_kwh == pytest.approx((total - increments[0]) / 3.6e6, rel=1e-9, abs=1e-12)
