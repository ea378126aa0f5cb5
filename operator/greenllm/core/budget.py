"""Budget accounting: energy measured per period, pacing, and carbon -> energy. Small pure functions.

Rules (each number in a Decision's budget text comes from one of these):
- Energy of an interval: the rise of the GPUs' energy counter (`counter_delta_j`); when the counter went
  down it was reset (exporter or pod restart) and, as Prometheus' `increase()` assumes, counted again
  from zero, so the interval's energy is the new reading. Without a counter: the trapezoid of the two
  power samples times the interval (`integrate_power_j`; one sample: a rectangle).
- Carbon of an interval = its energy (kWh) x grid intensity (gCO2/kWh).
- Periods are `budget.period` long and start at the first tick (`initial_state`); an interval that spans
  the end of a period is split in proportion to time (`split_at`). Periods with no samples are skipped.
- Allowed power = the smallest of: `budget.powerW`; the energy budget paced over the rest of the period
  (remaining kWh / remaining hours, in W); the carbon budget converted to energy through the current
  intensity (remaining g / (g/kWh) = kWh), paced the same way. Nothing left means 0 W allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from greenllm.api.v1alpha1 import Budget

J_PER_KWH = 3.6e6
S_PER_H = 3600.0


def joules_to_kwh(joules: float) -> float:
    return joules / J_PER_KWH


def counter_delta_j(previous_j: float, current_j: float) -> float:
    """Energy between two readings of a monotonic counter; a decrease means it was reset to zero."""
    if current_j >= previous_j:
        return current_j - previous_j
    return max(current_j, 0.0)


def integrate_power_j(previous_w: float | None, current_w: float, seconds: float) -> float:
    """Energy over `seconds` from power samples at both ends (trapezoid), or the last one alone."""
    if seconds <= 0.0:
        return 0.0
    if previous_w is None:
        return max(current_w, 0.0) * seconds
    return max((previous_w + current_w) / 2.0, 0.0) * seconds


def carbon_grams(energy_kwh: float, intensity_g_per_kwh: float) -> float:
    return energy_kwh * intensity_g_per_kwh


def carbon_to_energy_kwh(grams: float, intensity_g_per_kwh: float) -> float:
    """The energy that emits `grams` at this intensity; infinite on a carbon-free grid."""
    if intensity_g_per_kwh <= 0.0:
        return math.inf
    return grams / intensity_g_per_kwh


def period_end(start: float, period_s: float) -> float:
    return start + period_s


def current_period_start(start: float, period_s: float, now: float) -> float:
    """Start of the period containing `now`, for periods of `period_s` laid end to end from `start`."""
    if now < start + period_s:
        return start
    return start + math.floor((now - start) / period_s) * period_s


def split_at(t0: float, t1: float, boundary: float, amount: float) -> tuple[float, float]:
    """Split `amount` spread evenly over [t0, t1] into the parts before and after `boundary`."""
    if t1 <= t0 or boundary >= t1:
        return amount, 0.0
    if boundary <= t0:
        return 0.0, amount
    before = amount * (boundary - t0) / (t1 - t0)
    return before, amount - before


def paced_power_w(remaining_kwh: float, remaining_s: float) -> float:
    """Average power that spends exactly the remaining energy by the end of the period."""
    if remaining_kwh <= 0.0:
        return 0.0
    if math.isinf(remaining_kwh):
        return math.inf
    return remaining_kwh * J_PER_KWH / max(remaining_s, 1.0)


@dataclass(frozen=True, slots=True)
class Allowance:
    """What the budgets allow right now. `power_w` None = no budget limits power."""

    power_w: float | None
    binding: str  # which budget sets power_w, human-readable; "" when none
    notes: tuple[str, ...] = ()  # budgets that could not be enforced and why

    @property
    def exhausted(self) -> bool:
        return self.power_w is not None and self.power_w <= 0.0


def allowed_power(
    budget: Budget,
    energy_used_kwh: float,
    carbon_used_g: float,
    period_start: float,
    now: float,
    intensity_g_per_kwh: float | None,
) -> Allowance:
    """The smallest power allowed by the power, energy and carbon budgets (see the module rules)."""
    remaining_s = period_end(period_start, budget.period_seconds) - now
    hours = max(remaining_s, 0.0) / S_PER_H
    limits: list[tuple[float, str]] = []
    notes: list[str] = []
    if budget.power_w is not None:
        limits.append((budget.power_w, f"power budget {budget.power_w:.0f} W"))
    if budget.energy_kwh is not None:
        left = max(budget.energy_kwh - energy_used_kwh, 0.0)
        watts = paced_power_w(left, remaining_s)
        limits.append((watts, f"energy budget paced: {left:.3g} kWh left over {hours:.2f} h"))
    if budget.carbon_grams is not None:
        left_g = max(budget.carbon_grams - carbon_used_g, 0.0)
        if intensity_g_per_kwh is None:
            notes.append("carbon budget not enforced: grid carbon intensity unknown")
        else:
            kwh = carbon_to_energy_kwh(left_g, intensity_g_per_kwh)
            watts = paced_power_w(kwh, remaining_s) if left_g > 0.0 else 0.0
            limits.append(
                (
                    watts,
                    f"carbon budget paced: {left_g:.4g} g left at {intensity_g_per_kwh:.0f} g/kWh "
                    f"= {kwh:.3g} kWh over {hours:.2f} h",
                )
            )
    finite = [(w, why) for w, why in limits if not math.isinf(w)]
    if not finite:
        return Allowance(None, "", tuple(notes))
    watts, why = min(finite, key=lambda item: item[0])
    return Allowance(watts, why, tuple(notes))


def with_average_grant(allowance: Allowance, grant_w: float | None, why: str) -> Allowance:
    """`allowance` with an average-power allowance granted from outside (a team EnergyBudget's share of
    its paced energy and carbon) min'ed in: the planner obeys it as it obeys its own paced energy budget,
    at expected power. None or math.inf: no grant."""
    if grant_w is None or math.isinf(grant_w):
        return allowance
    if allowance.power_w is not None and allowance.power_w <= grant_w:
        return allowance
    return Allowance(max(grant_w, 0.0), why, allowance.notes)


@dataclass(frozen=True, slots=True)
class Account:
    """Energy and carbon used in the current period, and the last sample they were measured to."""

    period_start: float
    energy_kwh: float = 0.0
    carbon_grams: float = 0.0
    last_sample_time: float | None = None
    last_energy_j: float | None = None
    last_power_w: float | None = None


def roll(account: Account, period_s: float, now: float) -> Account:
    """Start a new period (zero totals) once `now` is past the end of the current one."""
    start = current_period_start(account.period_start, period_s, now)
    if start == account.period_start:
        return account
    return Account(start, 0.0, 0.0, account.last_sample_time, account.last_energy_j, account.last_power_w)


def record(
    account: Account,
    period_s: float,
    time: float,
    energy_j_total: float | None,
    power_w: float | None,
    intensity_g_per_kwh: float | None,
) -> Account:
    """Add the energy (and carbon) since the last sample to the period the sample falls in.

    A sample not newer than the last one is ignored. The first sample only sets the baseline. Energy
    comes from the counter when both samples have one, else from power integration; with neither it is
    unknown and not counted. Carbon is counted only when an intensity is known.
    """
    previous = account.last_sample_time
    if previous is not None and time <= previous:
        return account
    joules = 0.0
    if previous is not None:
        if energy_j_total is not None and account.last_energy_j is not None:
            joules = counter_delta_j(account.last_energy_j, energy_j_total)
        elif power_w is not None:
            joules = integrate_power_j(account.last_power_w, power_w, time - previous)
    start = current_period_start(account.period_start, period_s, time)
    energy, carbon = account.energy_kwh, account.carbon_grams
    if start != account.period_start:
        energy, carbon = 0.0, 0.0
        if previous is not None:
            joules = split_at(previous, time, start, joules)[1]
    kwh = joules_to_kwh(joules)
    energy += kwh
    if intensity_g_per_kwh is not None:
        carbon += carbon_grams(kwh, intensity_g_per_kwh)
    return Account(start, energy, carbon, time, energy_j_total, power_w)
