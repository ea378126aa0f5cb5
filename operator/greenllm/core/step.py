"""The decision step: the ONE function the operator's kopf timer and the simulator both call.

    state = initial_state(spec, now)                      # once per GreenModel (or from_status on resume)
    state, decision = step(spec, state, observation, now, source)   # every spec.scaling.interval

`LoopState` is everything the loop must remember between ticks (period accounting, the decision in
force, stability timers). It round-trips through `status.controllerState` with `to_status` /
`from_status`, so an operator restart resumes the same period and the same timers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting
from greenllm.core.planner import PerformanceSource

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class LoopState:
    """Memory of the decision loop for one GreenModel. Times are epoch seconds."""

    period_start: float
    energy_kwh: float = 0.0  # energy used in the current budget period
    carbon_grams: float = 0.0  # carbon emitted in the current budget period
    last_sample_time: float | None = None  # time of the last observation used for accounting
    last_energy_j: float | None = None  # energy counter at that time (None: it had none)
    last_power_w: float | None = None  # power at that time (for trapezoid integration)
    carbon_intensity_g_per_kwh: float | None = None  # last known grid intensity
    # The decision in force (variant None = nothing decided yet).
    variant: str | None = None
    replicas: int = 0
    setting: PowerSetting = field(default_factory=PowerSetting)
    expected_power_w: float | None = None
    # Stability timers.
    pending_variant: str | None = None  # a cheaper variant waiting out spec.scaling.switchHold
    pending_since: float | None = None
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    history: tuple[tuple[float, int], ...] = ()  # (time, recommended replicas) for the current variant
    # Last budget state.
    allowed_power_w: float | None = None  # None = no budget constrains power
    budget_met: bool = True

    def to_status(self) -> dict[str, Any]:
        """JSON-able form for status.controllerState (camelCase keys, floats and ints only)."""
        return {
            "version": STATE_VERSION,
            "periodStart": self.period_start,
            "energyKwh": self.energy_kwh,
            "carbonGrams": self.carbon_grams,
            "lastSampleTime": self.last_sample_time,
            "lastEnergyJ": self.last_energy_j,
            "lastPowerW": self.last_power_w,
            "carbonIntensityGPerKwh": self.carbon_intensity_g_per_kwh,
            "variant": self.variant,
            "replicas": self.replicas,
            "powerLimitW": self.setting.limit_w,
            "lockedClockMhz": self.setting.locked_clock_mhz,
            "expectedPowerW": self.expected_power_w,
            "pendingVariant": self.pending_variant,
            "pendingSince": self.pending_since,
            "lastScaleUp": self.last_scale_up,
            "lastScaleDown": self.last_scale_down,
            "history": [[t, n] for t, n in self.history],
            "allowedPowerW": self.allowed_power_w,
            "budgetMet": self.budget_met,
        }

    @classmethod
    def from_status(cls, data: Mapping[str, Any]) -> LoopState:
        """Inverse of `to_status`; missing, null or malformed keys fall back to their defaults."""
        raise NotImplementedError


def initial_state(spec: GreenModelSpec, now: float, decision: Decision | None = None) -> LoopState:
    """A fresh loop: the budget period starts `now`; `decision` (if given) is the one already applied."""
    raise NotImplementedError


def initial_decision(spec: GreenModelSpec, source: PerformanceSource) -> Decision:
    """The decision before any metrics: highest-quality variant meeting slo.minQuality (one the source says
    can meet the TPOT SLO if any), at replicas.min but at least 1, default power (or the Fixed limit)."""
    raise NotImplementedError


def step(
    spec: GreenModelSpec, state: LoopState, observation: Observation, now: float, source: PerformanceSource
) -> tuple[LoopState, Decision]:
    """Account energy and carbon, compute the budget-allowed power, plan, apply stability, decide."""
    raise NotImplementedError
