"""The decision step: the ONE function the operator's kopf timer and the simulator both call.

    state = initial_state(spec, now)                      # once per GreenModel (or from_status on resume)
    state, decision = step(spec, state, observation, now, source)   # every spec.scaling.interval

`LoopState` is everything the loop must remember between ticks (period accounting, the decision in
force, stability timers). It round-trips through `status.controllerState` with `to_status` /
`from_status`, so an operator restart resumes the same period and the same timers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from greenllm.api.durations import parse_duration
from greenllm.api.v1alpha1 import GreenModelSpec, PowerMode, Variant
from greenllm.core import budget
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting
from greenllm.core.planner import (
    Choice,
    Demand,
    PerformanceSource,
    PlanSpace,
    alternatives,
    choose,
    to_decision,
)
from greenllm.core.stability import gate_switch, keep_setting, saving, stabilize_replicas

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
        start = _num(data.get("periodStart"))
        history: list[tuple[float, int]] = []
        raw = data.get("history")
        if isinstance(raw, list):
            for item in raw:
                if isinstance(item, list | tuple) and len(item) == 2:
                    t, n = _num(item[0]), _int(item[1])
                    if t is not None and n is not None:
                        history.append((t, n))
        limit = _num(data.get("powerLimitW"))
        clock = _int(data.get("lockedClockMhz"))
        variant = data.get("variant")
        budget_met = data.get("budgetMet")
        return cls(
            period_start=start if start is not None else 0.0,
            energy_kwh=max(_num(data.get("energyKwh")) or 0.0, 0.0),
            carbon_grams=max(_num(data.get("carbonGrams")) or 0.0, 0.0),
            last_sample_time=_num(data.get("lastSampleTime")),
            last_energy_j=_num(data.get("lastEnergyJ")),
            last_power_w=_num(data.get("lastPowerW")),
            carbon_intensity_g_per_kwh=_num(data.get("carbonIntensityGPerKwh")),
            variant=variant if isinstance(variant, str) and variant else None,
            replicas=max(_int(data.get("replicas")) or 0, 0),
            setting=PowerSetting(limit_w=limit, locked_clock_mhz=clock),
            expected_power_w=_num(data.get("expectedPowerW")),
            pending_variant=_str(data.get("pendingVariant")),
            pending_since=_num(data.get("pendingSince")),
            last_scale_up=_num(data.get("lastScaleUp")),
            last_scale_down=_num(data.get("lastScaleDown")),
            history=tuple(sorted(history)),
            allowed_power_w=_num(data.get("allowedPowerW")),
            budget_met=budget_met if isinstance(budget_met, bool) else True,
        )

    @property
    def decision_in_force(self) -> tuple[str, PowerSetting, int] | None:
        return None if self.variant is None else (self.variant, self.setting, self.replicas)


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _default_setting(spec: GreenModelSpec) -> PowerSetting:
    if spec.power.mode is PowerMode.FIXED and spec.power.limit_w is not None:
        return PowerSetting(limit_w=spec.power.limit_w)
    return PowerSetting()


def initial_state(spec: GreenModelSpec, now: float, decision: Decision | None = None) -> LoopState:
    """A fresh loop: the budget period starts `now`; `decision` (if given) is the one already applied."""
    if decision is None:
        return LoopState(period_start=now)
    return LoopState(
        period_start=now,
        variant=decision.variant,
        replicas=decision.replicas,
        setting=decision.setting,
        expected_power_w=decision.expected_power_w,
        history=((now, decision.replicas),),
    )


def initial_decision(spec: GreenModelSpec, source: PerformanceSource) -> Decision:
    """The decision before any metrics: highest-quality variant meeting slo.minQuality (preferring one the
    source says can meet the TPOT SLO at the default setting; ties: spec order), at replicas.min but at
    least 1, default power (or the Fixed limit). Expected power is unknown without a demand."""
    setting = _default_setting(spec)
    eligible = [v for v in spec.variants if v.quality >= spec.slo.min_quality]
    runnable = [v for v in eligible if source.performance(spec, v, setting) is not None]
    pool = runnable or eligible
    best = max(pool, key=lambda v: v.quality)  # max keeps the first of equal qualities
    replicas = max(spec.replicas.min, 1)
    caveat = "" if runnable else "; the energy model says no variant meets the TPOT SLO"
    reason = (
        f"no metrics yet: highest-quality variant {best.name} (quality {best.quality:g} >= slo.minQuality "
        f"{spec.slo.min_quality:g}) x{replicas} (replicas.min, at least 1) at {setting.label()}{caveat}"
    )
    return Decision(best.name, replicas, setting, None, reason, True, ())


def _intensity(spec: GreenModelSpec, state: LoopState, observation: Observation) -> float | None:
    """Grid intensity for this tick: observed, else the spec's static value, else the last one known."""
    if observation.carbon_intensity_g_per_kwh is not None:
        return observation.carbon_intensity_g_per_kwh
    if spec.metrics.carbon_intensity.grams_per_kwh is not None:
        return spec.metrics.carbon_intensity.grams_per_kwh
    return state.carbon_intensity_g_per_kwh


def step(
    spec: GreenModelSpec, state: LoopState, observation: Observation, now: float, source: PerformanceSource
) -> tuple[LoopState, Decision]:
    """One tick of the loop. In order:

    1. Accounting (budget.record/roll): energy since the last sample from the energy counter (a decrease
       is a reset), else from power; carbon = energy x intensity; the period rolls over at its end.
    2. Allowance (budget.allowed_power): the power, paced energy and paced carbon budgets.
    3. Missing demand (observation.has_demand False): keep the decision in force (never scale down or
       switch); only a spec change that makes it impossible (variant removed or below the quality
       floor, replicas below replicas.min) is repaired, by moving up.
    4. Plan (planner.choose) under the allowance, then stability (module stability): the variant switch
       gate, HPA replica windows (a breached budget overrides the down-window), setting hysteresis.
    """
    period_s = spec.budget.period_seconds
    intensity = _intensity(spec, state, observation)
    account = budget.Account(
        state.period_start,
        state.energy_kwh,
        state.carbon_grams,
        state.last_sample_time,
        state.last_energy_j,
        state.last_power_w,
    )
    account = budget.record(
        account, period_s, observation.time, observation.energy_j_total, observation.power_w, intensity
    )
    account = budget.roll(account, period_s, now)
    allowance = budget.allowed_power(
        spec.budget, account.energy_kwh, account.carbon_grams, account.period_start, now, intensity
    )
    base = replace(
        state,
        period_start=account.period_start,
        energy_kwh=account.energy_kwh,
        carbon_grams=account.carbon_grams,
        last_sample_time=account.last_sample_time,
        last_energy_j=account.last_energy_j,
        last_power_w=account.last_power_w,
        carbon_intensity_g_per_kwh=intensity,
        allowed_power_w=allowance.power_w,
    )
    notes = list(allowance.notes)
    if not observation.has_demand:
        return _without_demand(spec, base, observation, now, source, allowance, notes)
    demand = Demand(
        max(observation.prompt_tokens_per_s or 0.0, 0.0), max(observation.output_tokens_per_s or 0.0, 0.0)
    )
    space = PlanSpace(spec, demand, source)
    allowed = allowance.power_w
    current = state.decision_in_force
    in_force = _variant(spec, state.variant)
    usable = in_force is not None and in_force.quality >= spec.slo.min_quality
    # A variant the spec no longer allows is never held or capped (the switch below happens at once).
    choice = choose(space, allowed, allowance.binding, current if usable else None)
    if current is None or choice.candidate is None:
        return _plain(base, space, choice, allowed, now, notes, current is None)
    return _stabilized(spec, base, space, choice, allowed, now, notes)


def _finish(
    state: LoopState, decision: Decision, now: float, history: tuple[tuple[float, int], ...] | None = None
) -> tuple[LoopState, Decision]:
    """Record `decision` as the one in force, stamping scale times and the recommendation history."""
    up, down = state.last_scale_up, state.last_scale_down
    if state.variant is not None and decision.replicas > state.replicas:
        up = now
    elif state.variant is not None and decision.replicas < state.replicas:
        down = now
    new = replace(
        state,
        variant=decision.variant,
        replicas=decision.replicas,
        setting=decision.setting,
        expected_power_w=decision.expected_power_w,
        last_scale_up=up,
        last_scale_down=down,
        history=state.history if history is None else history,
        budget_met=decision.budget_met,
    )
    return new, decision


def _breach(power_w: float | None, allowed: float | None) -> str:
    power = "unknown power" if power_w is None else f"{power_w:.0f} W"
    return f"budget breached: {power} > {allowed or 0.0:.0f} W allowed"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _without_demand(
    spec: GreenModelSpec,
    state: LoopState,
    observation: Observation,
    now: float,
    source: PerformanceSource,
    allowance: budget.Allowance,
    notes: list[str],
) -> tuple[LoopState, Decision]:
    missing = "metrics missing (no demand observed): kept the decision in force, no scale-down or switch"
    allowed = allowance.power_w
    measured = observation.power_w
    if measured is not None:
        met = allowed is None or measured <= allowed * (1.0 + 1e-9)
    else:
        met = allowed is None or state.budget_met
    variant = _variant(spec, state.variant)
    if variant is None or variant.quality < spec.slo.min_quality:
        first = initial_decision(spec, source)
        why = "nothing decided yet" if state.variant is None else f"variant {state.variant} no longer allowed"
        reason = _join(f"metrics missing (no demand observed), {why}: {first.reason}", *notes)
        decision = replace(first, reason=reason, budget_met=met)
        return _finish(
            replace(state, pending_variant=None, pending_since=None, history=()),
            decision,
            now,
            ((now, decision.replicas),),
        )
    replicas = min(max(state.replicas, spec.replicas.min), spec.replicas.max)
    extra = (
        f"replicas {state.replicas} moved into spec.replicas [{spec.replicas.min}, {spec.replicas.max}]"
        if replicas != state.replicas
        else ""
    )
    budget_text = "" if met else "budget breached"
    decision = Decision(
        variant.name,
        replicas,
        state.setting,
        state.expected_power_w,
        _join(missing, extra, budget_text, *notes),
        met,
        (),
    )
    return _finish(state, decision, now)


def _variant(spec: GreenModelSpec, name: str | None) -> Variant | None:
    for v in spec.variants:
        if v.name == name:
            return v
    return None


def _plain(
    state: LoopState,
    space: PlanSpace,
    choice: Choice,
    allowed: float | None,
    now: float,
    notes: list[str],
    first: bool,
) -> tuple[LoopState, Decision]:
    """No stability to apply: the first plan, or nothing runnable (keep what runs)."""
    current = None
    if state.variant is not None:
        current = Decision(state.variant, state.replicas, state.setting, state.expected_power_w, "", True)
    decision = to_decision(choice, space, allowed, current)
    reason = _join("first plan" if first else "", choice.reason, *notes)
    if not decision.budget_met:
        reason = _join(reason, _breach(decision.expected_power_w, allowed))
    decision = replace(decision, reason=reason)
    return _finish(
        replace(state, pending_variant=None, pending_since=None), decision, now, ((now, decision.replicas),)
    )


def _stabilized(
    spec: GreenModelSpec,
    state: LoopState,
    space: PlanSpace,
    choice: Choice,
    allowed: float | None,
    now: float,
    notes: list[str],
) -> tuple[LoopState, Decision]:
    assert state.variant is not None
    scaling = spec.scaling
    threshold = scaling.switch_threshold
    current_pair = space.find(state.variant, state.setting)
    if choice.hold:
        # onExhausted Hold: the configuration in force stays exactly as it is.
        power = None if current_pair is None else space.power(current_pair, state.replicas)
        met = allowed is None or (power is not None and power <= allowed * (1.0 + 1e-9))
        holding = Decision(
            state.variant,
            state.replicas,
            state.setting,
            power,
            _join(choice.reason, *notes),
            met,
            alternatives(space, None, allowed),
        )
        return _finish(replace(state, pending_variant=None, pending_since=None), holding, now)

    target = choice.candidate
    assert target is not None
    stability: list[str] = []
    pending_variant, pending_since = None, None
    cur_pairs = space.variant_pairs(state.variant)
    if target.variant != state.variant:
        cur_best = space.best_of(cur_pairs, allowed) if cur_pairs else None
        if cur_best is None:
            why = space.unusable.get(state.variant, "cannot meet the SLOs within the budget")
            stability.append(
                f"switched variant {state.variant} -> {target.variant} at once: {state.variant} {why}"
            )
        else:
            gate = gate_switch(
                state.variant,
                cur_best.power_w,
                target.variant,
                target.power_w,
                threshold,
                parse_duration(scaling.switch_hold),
                state.pending_since,
                now,
            )
            stability.append(gate.reason)
            pending_variant, pending_since = gate.pending_variant, gate.pending_since
            if not gate.switch:
                target = cur_best
    if target.variant != state.variant:
        final = target
        history: tuple[tuple[float, int], ...] = ((now, final.replicas),)
    else:
        stab = stabilize_replicas(
            state.replicas,
            target.replicas,
            state.history,
            now,
            parse_duration(scaling.scale_up_stabilization),
            parse_duration(scaling.scale_down_stabilization),
        )
        history = stab.history
        n = min(max(stab.replicas, spec.replicas.min), spec.replicas.max)
        if stab.reason:
            stability.append(stab.reason)
        if n != stab.replicas:
            stability.append(f"replicas moved into spec.replicas [{spec.replicas.min}, {spec.replicas.max}]")
        final = target
        if n != target.replicas:
            held = space.best_at(target.variant, n, allowed)
            assert held is not None
            if n > target.replicas and target.within(allowed) and not held.within(allowed):
                stability.append(f"budget overrides the down-window: {held.label()} = {held.power_w:.0f} W")
            else:
                final = held
        if current_pair is not None and final.setting != state.setting:
            kept = space.candidate(current_pair, final.replicas)
            qualifies = (
                (kept.slo_met or not final.slo_met)
                and (kept.within(allowed) or not final.within(allowed))
                and kept.served >= final.served
            )
            keep = keep_setting(state.setting, kept.power_w, final.setting, final.power_w, threshold)
            if qualifies and keep:
                pct = saving(kept.power_w, final.power_w) * 100.0
                stability.append(
                    f"kept {state.setting.label()}: {final.setting.label()} would save "
                    f"{pct:.1f}% < switchThreshold {threshold * 100:.0f}%"
                )
                final = kept
    planned = choice.candidate
    applied = f"applied {final.label()} = {final.power_w:.0f} W"
    if final == planned:
        reason = _join(choice.reason, *stability, *notes)
    else:
        reason = _join(applied, *stability, f"planner: {choice.reason}", *notes)
    met = final.within(allowed)
    if not met:
        reason = _join(reason, _breach(final.power_w, allowed))
    decision = Decision(
        final.variant,
        final.replicas,
        final.setting,
        final.power_w,
        reason,
        met,
        alternatives(space, final, allowed),
    )
    new_state = replace(state, pending_variant=pending_variant, pending_since=pending_since)
    return _finish(new_state, decision, now, history)
