"""The decision step: the ONE function the operator's kopf timer and the simulator both call.

    state = initial_state(spec, now)                      # once per GreenModel (or from_status on resume)
    state, decision = step(spec, state, observation, now, source)   # every spec.scaling.interval

`LoopState` is everything the loop must remember between ticks (period accounting, the decision in
force, stability timers, recent demand). It round-trips through `status.controllerState` with
`to_status` / `from_status`, so an operator restart resumes the same period and the same timers.

What the planner is asked to serve, and why each rule is there (measurements on the reference scenario:
docs/energy-model.md, section 11):

1. Backlog-aware demand. vLLM counts tokens when it serves them, so a saturated fleet shows a token rate
   equal to its own capacity, never the demand; the excess waits in the queue
   (`vllm:num_requests_waiting`). Demand = served rate + the rate that serves the waiting requests
   within the TTFT p90 SLO: waiting x tokens per request / (slo.ttftP90Ms). The SLO is the drain time
   because a waiting request meets its TTFT only if its prefill is done within the SLO; the same
   capacity absorbs the next burst of that size on time. Tokens per request = observed token rates /
   completed-request rate (`Observation.requests_per_s`) when known, else the trace means
   (MEAN_PROMPT_TOKENS, MEAN_OUTPUT_TOKENS). A backlog therefore always raises the demand.
2. Peak of the down-window (burstiness). Rates over the metrics window hide bursts shorter than it (in
   the Azure code trace the 1-s load is 8.7x its 1-minute mean at the 99th percentile). The Kubernetes
   HPA answers a noisy signal by scaling down only to the highest recommendation of
   `scaleDownStabilization`; the step applies that rule to the demand itself: it plans on the
   per-component peak of the demands of that window (prompt and output rates each at their highest), so
   the variant, the power setting and the replica count are all sized for the recent peak, not only the
   count (a count held for a low-demand setting with less capacity per replica would not hold the
   capacity).
3. SLO feedback. When the observation says the SLO is broken (TTFT p90 > slo.ttftP90Ms or TPOT p90 >
   slo.tpotP90Ms) or requests are waiting, the planner must keep at least the capacity in force
   (the current replicas / the work of the planned demand on the current variant and setting): no
   scale-down, no slower setting, no variant with less capacity. Growth comes from rule 1 (a queue
   raises the demand) rather than from the latency itself: the latency of the metrics window describes
   the fleet that was ready then, while the decision in force may already include pods still starting,
   so raising capacity over the decision in force on every breached tick compounds for as long as pods
   take to start and the window takes to forget (measured: more energy, no better SLO).

Every decision carries its reason kind (`Decision.kind`, api.ReasonKind), set next to its reason: the
planner's (core.planner) unless a later rule decided: Hold when a stability rule changed what the planner
chose, QualityFloor when the variant in force left at once for being below slo.minQuality, Burst when the
warm floor raised the replicas, BudgetBinds when budget.powerW cut what the SLOs asked for (the warm
floor, or the planned capacity: core.burst.power_cap_fit), NoMetrics without demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from greenllm.api.controller_state import ControllerState
from greenllm.api.v1alpha1 import GreenModelSpec, OnExhausted, PowerMode, Variant
from greenllm.core import budget
from greenllm.core.burst import (
    MAX_MARGIN,
    MIN_MARGIN,
    Floor,
    FloorState,
    burst_floor,
    chunked_prefill_rate,
    fast_tier_for,
    peak_power_w,
    power_cap_fit,
    serving_budget,
    setting_performance,
)
from greenllm.core.decision import Decision, Demand, Observation, ReasonKind
from greenllm.core.fasttier import FastTier
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_alternatives import alternatives
from greenllm.core.plan_rules import MEAN_PROMPT_TOKENS, Candidate, PerformanceSource
from greenllm.core.plan_space import PlanSpace
from greenllm.core.planner import Choice, choose, to_decision
from greenllm.core.stability import gate_switch, keep_setting, saving, stabilize_replicas

STATE_VERSION = 1

# Mean output tokens of a request when the observation cannot tell (no request rate): the mean
# GeneratedTokens of the Azure LLM inference code trace (8,819 requests, DERIVED = 27.88;
# shared/data/traces/AzureLLMInferenceTrace_code_2023.csv, Patel et al., Splitwise, ISCA 2024,
# CC-BY 4.0). Its prompt counterpart is planner.MEAN_PROMPT_TOKENS (2,048).
MEAN_OUTPUT_TOKENS = 27.9

Peaks = tuple[tuple[float, float, float], ...]  # (time, prompt tok/s, output tok/s) demands still in window


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
    demand_peaks: Peaks = ()  # demands of the down-window that can still be its peak (see window_peak)
    # Last budget state.
    allowed_power_w: float | None = None  # None = no budget constrains power
    budget_met: bool = True
    # The warm floor's error budget (core.burst).
    floor: FloorState = field(default_factory=FloorState)

    def to_status(self) -> ControllerState:
        """status.controllerState. Every field is given, None included: a merge patch must delete what
        this state no longer has (a pending variant, a floor time)."""
        return ControllerState(
            version=STATE_VERSION,
            period_start=self.period_start,
            energy_kwh=self.energy_kwh,
            carbon_grams=self.carbon_grams,
            last_sample_time=self.last_sample_time,
            last_energy_j=self.last_energy_j,
            last_power_w=self.last_power_w,
            carbon_intensity_g_per_kwh=self.carbon_intensity_g_per_kwh,
            variant=self.variant,
            replicas=self.replicas,
            power_limit_w=self.setting.limit_w,
            locked_clock_mhz=self.setting.locked_clock_mhz,
            expected_power_w=self.expected_power_w,
            pending_variant=self.pending_variant,
            pending_since=self.pending_since,
            last_scale_up=self.last_scale_up,
            last_scale_down=self.last_scale_down,
            history=self.history,
            demand_peaks=self.demand_peaks,
            allowed_power_w=self.allowed_power_w,
            budget_met=self.budget_met,
            floor_margin=self.floor.margin,
            floor_raised_at=self.floor.raised_at,
            floor_lowered_at=self.floor.lowered_at,
            floor_last_attainment=self.floor.last_attainment,
            floor_prompt_per_request=self.floor.prompt_per_request,
            floor_seen_at=self.floor.seen_at,
            floor_burst_at_waiting=self.floor.burst_at_waiting,
        )

    @classmethod
    def from_status(cls, saved: ControllerState | Mapping[str, Any]) -> LoopState:
        """Inverse of `to_status`: what the wire model could not read falls back to the defaults here, and
        values are brought back into range (no negative energy, the floor margin within its bounds)."""
        data = saved if isinstance(saved, ControllerState) else ControllerState.model_validate(saved)
        per_request = data.floor_prompt_per_request
        threshold = data.floor_burst_at_waiting
        return cls(
            period_start=data.period_start if data.period_start is not None else 0.0,
            energy_kwh=max(data.energy_kwh or 0.0, 0.0),
            carbon_grams=max(data.carbon_grams or 0.0, 0.0),
            last_sample_time=data.last_sample_time,
            last_energy_j=data.last_energy_j,
            last_power_w=data.last_power_w,
            carbon_intensity_g_per_kwh=data.carbon_intensity_g_per_kwh,
            variant=data.variant,
            replicas=max(data.replicas or 0, 0),
            setting=PowerSetting(limit_w=data.power_limit_w, locked_clock_mhz=data.locked_clock_mhz),
            expected_power_w=data.expected_power_w,
            pending_variant=data.pending_variant,
            pending_since=data.pending_since,
            last_scale_up=data.last_scale_up,
            last_scale_down=data.last_scale_down,
            history=tuple(sorted(data.history)),
            demand_peaks=tuple(sorted((t, max(p, 0.0), max(o, 0.0)) for t, p, o in data.demand_peaks)),
            allowed_power_w=data.allowed_power_w,
            budget_met=data.budget_met if data.budget_met is not None else True,
            floor=FloorState(
                margin=min(max(data.floor_margin or 1.0, MIN_MARGIN), MAX_MARGIN),
                raised_at=data.floor_raised_at,
                lowered_at=data.floor_lowered_at,
                last_attainment=data.floor_last_attainment,
                prompt_per_request=per_request if per_request is not None and per_request > 0 else None,
                seen_at=data.floor_seen_at,
                burst_at_waiting=threshold if threshold is not None and threshold >= 1 else None,
            ),
        )

    @property
    def decision_in_force(self) -> tuple[str, PowerSetting, int] | None:
        return None if self.variant is None else (self.variant, self.setting, self.replicas)


def _default_setting(spec: GreenModelSpec, source: PerformanceSource) -> PowerSetting:
    if spec.power.mode is PowerMode.FIXED and spec.power.limit_w is not None:
        # The Fixed limit clamped to what the GPU accepts (the source's only setting in mode Fixed).
        return source.power_settings(spec.gpu, spec.power)[0]
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
    setting = _default_setting(spec, source)
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
    budget_tokens = serving_budget(spec, best, setting_performance(spec, best, source))
    return Decision(
        best.name,
        replicas,
        setting,
        None,
        reason,
        True,
        (),
        token_budget=budget_tokens,
        kind=ReasonKind.NO_METRICS,
    )


def _intensity(spec: GreenModelSpec, state: LoopState, observation: Observation) -> float | None:
    """Grid intensity for this tick: observed, else the spec's static value, else the last one known."""
    if observation.carbon_intensity_g_per_kwh is not None:
        return observation.carbon_intensity_g_per_kwh
    if spec.metrics.carbon_intensity.grams_per_kwh is not None:
        return spec.metrics.carbon_intensity.grams_per_kwh
    return state.carbon_intensity_g_per_kwh


@dataclass(frozen=True, slots=True)
class Signals:
    """What the observation says about the SLOs right now."""

    waiting: float  # requests waiting in the servers' queues (0 when unknown)
    breaches: tuple[str, ...]  # SLO rules the measured latencies break, human-readable

    @property
    def guarded(self) -> bool:
        """Capacity must not shrink (module doc, rule 3)."""
        return self.waiting > 0.0 or bool(self.breaches)


def slo_signals(spec: GreenModelSpec, observation: Observation) -> Signals:
    breaches: list[str] = []
    ttft, tpot = observation.ttft_p90_ms, observation.tpot_p90_ms
    if ttft is not None and ttft > spec.slo.ttft_p90_ms:
        breaches.append(f"TTFT p90 {ttft:.0f} ms > {spec.slo.ttft_p90_ms:g} ms")
    if tpot is not None and tpot > spec.slo.tpot_p90_ms:
        breaches.append(f"TPOT p90 {tpot:.0f} ms > {spec.slo.tpot_p90_ms:g} ms")
    waiting = observation.requests_waiting
    return Signals(waiting if waiting is not None and waiting > 0.0 else 0.0, tuple(breaches))


def estimate_demand(spec: GreenModelSpec, observation: Observation) -> tuple[Demand, str]:
    """Served token rates plus the rate that serves the waiting requests within the TTFT SLO (module doc,
    rule 1), with a note for the reason (empty when nothing waits)."""
    prompt = max(observation.prompt_tokens_per_s or 0.0, 0.0)
    out = max(observation.output_tokens_per_s or 0.0, 0.0)
    waiting = observation.requests_waiting
    if waiting is None or waiting <= 0.0:
        return Demand(prompt, out), ""
    rate = observation.requests_per_s
    if rate is not None and rate > 0.0 and prompt + out > 0.0:
        per_prompt, per_out, how = prompt / rate, out / rate, "observed"
    else:
        per_prompt, per_out, how = MEAN_PROMPT_TOKENS, MEAN_OUTPUT_TOKENS, "trace-mean"
    drain_s = spec.slo.ttft_p90_ms / 1000.0
    extra_prompt, extra_out = waiting * per_prompt / drain_s, waiting * per_out / drain_s
    note = (
        f"{waiting:.0f} requests waiting ({how} {per_prompt:.0f} prompt + {per_out:.0f} output tokens each) "
        f"add {extra_prompt:.0f} prompt + {extra_out:.0f} out tok/s to serve them within the TTFT SLO"
    )
    return Demand(prompt + extra_prompt, out + extra_out), note


def window_peak(history: Peaks, now: float, demand: Demand, window_s: float) -> tuple[Demand, Peaks]:
    """The per-component peak of the demands of the last `window_s` (this one included), and the entries
    a later window can still need: an entry that later ones match or exceed in both components never
    sets a later window's peak, so it is dropped (module doc, rule 2)."""
    full = (*history, (now, demand.prompt_tokens_per_s, demand.output_tokens_per_s))
    recent = [e for e in full if now - e[0] <= window_s]
    kept: list[tuple[float, float, float]] = []
    top_p, top_o = -math.inf, -math.inf
    for t, p, o in reversed(recent):
        if p > top_p or o > top_o:
            kept.append((t, p, o))
        top_p, top_o = max(top_p, p), max(top_o, o)
    kept.reverse()
    return Demand(top_p, top_o), tuple(kept)


def capacity_floor(
    spec: GreenModelSpec,
    state: LoopState,
    demand: Demand,
    source: PerformanceSource,
    signals: Signals,
) -> tuple[float, str]:
    """The least capacity, as a multiple of `demand`, the planner may choose (module doc, rule 3): the
    capacity in force while the SLO is broken or requests wait; 0 (no floor) otherwise. With a note for
    the reason."""
    if not signals.guarded or state.variant is None or state.replicas <= 0:
        return 0.0, ""
    variant = _variant(spec, state.variant)
    if variant is None or variant.quality < spec.slo.min_quality:
        return 0.0, ""
    perf = source.performance(spec, variant, state.setting)
    if perf is None:
        return 0.0, ""
    work = demand.prompt_tokens_per_s / perf.prompt_tokens_per_s
    work += demand.output_tokens_per_s / perf.output_tokens_per_s
    if work <= 0.0:
        return 0.0, ""
    in_force = state.replicas / work
    why = list(signals.breaches)
    if signals.waiting > 0.0:
        why.append(f"{signals.waiting:.0f} requests waiting")
    note = (
        f"{' and '.join(why)}: capacity kept >= the {in_force:.2f}x demand in force "
        "(no scale-down, slower setting or variant with less capacity)"
    )
    return in_force, note


def step(
    spec: GreenModelSpec,
    state: LoopState,
    observation: Observation,
    now: float,
    source: PerformanceSource,
    extra_allowance_w: float | None = None,
) -> tuple[LoopState, Decision]:
    """One tick of the loop: the plan for the observed demand (`plan_step`), then the burst rules
    (`with_burst_rules`): the warm floor under the error budget and the fast tier's two settings.
    `extra_allowance_w`: an average power granted from outside (plan_step)."""
    planned_state, decision = plan_step(spec, state, observation, now, source, extra_allowance_w)
    return with_burst_rules(spec, state, planned_state, decision, observation, now, source)


@dataclass(frozen=True, slots=True)
class BurstPlan:
    """How the burst rules run a variant this tick: its fast tier (None: one setting), its prompt-chunk
    budget, its warm floor (None when the floor does not apply), the variant's performance at each power
    setting, the burst setting (the planned one without a fast tier) and the prompt tokens of a request."""

    tier: FastTier | None
    budget_tokens: int
    floor: Floor | None
    perf: Mapping[PowerSetting, ReplicaPerformance]
    burst_setting: PowerSetting
    prompt_per_request: float

    @property
    def burst_perf(self) -> ReplicaPerformance | None:
        return self.perf.get(self.burst_setting)

    def wanted(self, planned: int) -> int:
        """The replicas these rules run for `planned`: raised to the warm floor (within replicas.max)."""
        return planned if self.floor is None else max(planned, self.floor.replicas)

    def peak_w(self, planned: int) -> float | None:
        """What `budget.powerW` counts for `planned` replicas run by these rules (core.burst.power_cap_fit's
        `peak_w` when nothing is cut): `wanted` replicas at the burst setting's peak power. None when the
        energy model has no burst setting for the variant."""
        perf = self.burst_perf
        return None if perf is None else self.wanted(planned) * peak_power_w(perf)


def burst_plan(
    spec: GreenModelSpec,
    floor_state: FloorState,
    variant: Variant,
    setting: PowerSetting,
    floor_applies: bool,
    observation: Observation,
    now: float,
    source: PerformanceSource,
) -> BurstPlan:
    """The fast tier and the warm floor (core.burst) of `variant` planned at `setting`, from the floor state
    at the start of the tick. The floor applies only when `floor_applies` (the budget pays for it)."""
    settings = source.power_settings(spec.gpu, spec.power)
    perf = setting_performance(spec, variant, source)
    budget_tokens = serving_budget(spec, variant, perf)
    per_prompt, per_output = MEAN_PROMPT_TOKENS, MEAN_OUTPUT_TOKENS
    rate = observation.requests_per_s
    if rate is not None and rate > 0 and observation.has_demand:
        per_prompt = max(observation.prompt_tokens_per_s or 0.0, 0.0) / rate or per_prompt
        per_output = max(observation.output_tokens_per_s or 0.0, 0.0) / rate or per_output
    request = (per_prompt, per_output)
    tier = fast_tier_for(spec, variant, settings, perf, request, budget_tokens, floor_state.burst_at_waiting)
    burst_setting = tier.burst if tier is not None else setting
    burst_perf = perf.get(burst_setting)
    floor = None
    if burst_perf is not None and floor_applies:
        floor = warm_floor(spec, floor_state, now, observation, per_prompt, burst_perf, budget_tokens)
    return BurstPlan(tier, budget_tokens, floor, perf, burst_setting, per_prompt)


def warm_floor(
    spec: GreenModelSpec,
    floor_state: FloorState,
    now: float,
    observation: Observation,
    prompt_per_request: float,
    burst_perf: ReplicaPerformance,
    budget_tokens: int,
    may_raise: bool = True,
) -> Floor:
    """core.burst.burst_floor for a variant at its burst setting (`may_raise` False: the margin may not
    grow this tick)."""
    return burst_floor(
        spec,
        floor_state,
        now,
        attainment=observation.attainment,
        peak_arrivals=observation.peak_arrivals,
        prompt_tokens_per_request=prompt_per_request,
        burst_prefill_tokens_per_s=chunked_prefill_rate(
            burst_perf, budget_tokens, spec.slo.tpot_p90_ms / 1000.0
        ),
        hold_s=spec.scaling.scale_down_stabilization.seconds,
        may_raise=may_raise,
    )


def with_burst_rules(
    spec: GreenModelSpec,
    before: LoopState,
    state: LoopState,
    decision: Decision,
    observation: Observation,
    now: float,
    source: PerformanceSource,
) -> tuple[LoopState, Decision]:
    """Raise the replicas to the warm floor (core.burst) and publish the efficient / burst settings, all
    within budget.powerW at their worst case: replicas x the burst setting's peak power (power_cap_fit)."""
    variant = _variant(spec, decision.variant)
    if variant is None:
        return state, decision
    cap_w = spec.budget.power_w
    # The warm floor stays off while a budget cannot pay for the SLOs, except when that budget is powerW:
    # the cap below prices the floor's replicas at their worst case, so a floor within it is always paid for
    # (without it a binding cap flips the floor off and on, starting and deleting pods: docs/energy-model.md).
    # onExhausted Hold keeps the configuration in force as it is, over the budget or not (planner doc).
    held = (
        not decision.budget_met
        and decision.kind is ReasonKind.BUDGET_BINDS
        and spec.budget.on_exhausted is OnExhausted.HOLD
    )
    capped = (
        cap_w is not None
        and not held
        and state.allowed_power_w is not None
        and state.allowed_power_w >= cap_w
    )
    run = burst_plan(
        spec, before.floor, variant, decision.setting, decision.budget_met or capped, observation, now, source
    )
    tier, budget_tokens, perf, burst_setting, burst_perf = (
        run.tier,
        run.budget_tokens,
        run.perf,
        run.burst_setting,
        run.burst_perf,
    )
    floor_state = before.floor
    replicas = decision.replicas
    kind = decision.kind
    met = decision.budget_met
    notes: list[str] = []
    slo_s = spec.slo.tpot_p90_ms / 1000.0
    floor = run.floor
    if floor is not None:
        floor_state = floor.state
        if floor.replicas > replicas:
            replicas = floor.replicas
            kind = ReasonKind.BURST
            notes.append(floor.note)
    elif burst_perf is not None and observation.attainment is not None:
        # No floor while the budget cannot pay for the SLOs: the misses of this time are the budget's, so
        # the error budget must not read them later as a floor still short (it would raise the margin).
        floor_state = replace(floor_state, last_attainment=observation.attainment)
    setting = tier.efficient if tier is not None else decision.setting
    expected = decision.expected_power_w
    if cap_w is not None and not held:
        # budget.powerW caps what the fleet can draw at once: every GPU at its burst setting's peak.

        def prefill_rate(p: ReplicaPerformance) -> float:
            return chunked_prefill_rate(p, budget_tokens, slo_s)

        fit = power_cap_fit(
            cap_w,
            decision.replicas,
            replicas,
            setting,
            burst_setting,
            perf,
            lambda p: 0 if floor is None else floor.at_rate(prefill_rate(p), spec.replicas.max),
            prefill_rate,
            spec.replicas.min,
        )
        if fit.setting != setting or fit.replicas < decision.replicas:
            expected = _expected_power(decision, perf.get(fit.setting), fit.replicas)
        replicas, setting = fit.replicas, fit.setting
        if tier is not None:
            tier = None if fit.burst == fit.setting else replace(tier, efficient=fit.setting, burst=fit.burst)
        if fit.note:
            notes.append(fit.note)
        if fit.lost:
            met = False
            # A move off a variant below the quality floor says why the variant changed; else the budget.
            if kind is not ReasonKind.QUALITY_FLOOR:
                kind = ReasonKind.BUDGET_BINDS
            if floor is not None and burst_perf is not None and floor.state.margin > before.floor.margin:
                # Misses while the cap cuts the floor are the budget's, not a floor margin too small.
                kept = warm_floor(
                    spec,
                    before.floor,
                    now,
                    observation,
                    run.prompt_per_request,
                    burst_perf,
                    budget_tokens,
                    False,
                )
                floor_state = kept.state
                notes = [kept.note if n == floor.note else n for n in notes]
        elif replicas <= decision.replicas and kind is ReasonKind.BURST:
            kind = decision.kind
    if tier is not None:
        notes.append(
            f"fast tier: {tier.efficient.label()} while fewer than {tier.rule.burst_at_waiting:.0f} requests "
            f"wait on a pod, {tier.burst.label()} from then on"
        )
    # The threshold in force, which the next tick keeps against its rates' jitter (burst.held_threshold).
    floor_state = replace(floor_state, burst_at_waiting=None if tier is None else tier.rule.burst_at_waiting)
    new = replace(
        decision,
        replicas=replicas,
        setting=setting,
        expected_power_w=expected,
        budget_met=met,
        fast_tier=tier,
        token_budget=budget_tokens,
        reason=_join(decision.reason, *notes),
        kind=kind,
    )
    new_state = replace(
        state,
        replicas=replicas,
        setting=setting,
        floor=floor_state,
        budget_met=met,
        expected_power_w=expected,
    )
    if replicas > state.replicas:
        new_state = replace(new_state, last_scale_up=now)
    return new_state, new


def _expected_power(decision: Decision, perf: ReplicaPerformance | None, replicas: int) -> float | None:
    """The planner's expected power (fluid model) of `replicas` at `perf` for the planned demand."""
    demand = decision.planned_demand
    if perf is None or demand is None or replicas <= 0:
        return decision.expected_power_w
    share = (demand.prompt_tokens_per_s / replicas, demand.output_tokens_per_s / replicas)
    return replicas * perf.power_w(*share)


def plan_step(
    spec: GreenModelSpec,
    state: LoopState,
    observation: Observation,
    now: float,
    source: PerformanceSource,
    extra_allowance_w: float | None = None,
) -> tuple[LoopState, Decision]:
    """The plan for the observed demand. In order:

    1. Accounting (budget.record/roll): energy since the last sample from the energy counter (a decrease
       is a reset), else from power; carbon = energy x intensity; the period rolls over at its end.
    2. Allowance (budget.allowed_power): the power, paced energy and paced carbon budgets, and
       `extra_allowance_w` (an average power granted from outside: a team EnergyBudget's share of its
       paced energy and carbon; None: none), the smallest. Like the paced energy it is met at expected
       power, not as a cap on the peak (that is budget.powerW, with_burst_rules).
    3. Missing demand (observation.has_demand False): keep the decision in force (never scale down or
       switch); only a spec change that makes it impossible (variant removed or below the quality
       floor, replicas below replicas.min) is repaired, by moving up.
    4. Demand (module doc): served rates + the waiting queue (rule 1), at its peak over
       scaling.scaleDownStabilization (rule 2); the capacity floor of the SLO feedback (rule 3).
    5. Plan (planner.choose) under the allowance, then stability (module stability): the variant switch
       gate (on the two fleets as the burst rules will run them: `run_candidate`), the HPA up-window on
       replica counts (the down-window acts on demand, step 4), setting hysteresis.
    """
    period_s = spec.budget.period.seconds
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
    allowance = budget.with_average_grant(
        allowance, extra_allowance_w, f"team energy allowance {extra_allowance_w or 0.0:.0f} W (average)"
    )
    down_s = spec.scaling.scale_down_stabilization.seconds
    current_demand, backlog = estimate_demand(spec, observation)
    demand, peaks = current_demand, state.demand_peaks
    if observation.has_demand:
        demand, peaks = window_peak(state.demand_peaks, now, current_demand, down_s)
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
        demand_peaks=peaks,
    )
    notes = list(allowance.notes)
    if not observation.has_demand:
        return _without_demand(spec, base, observation, now, source, allowance, notes)
    signals = slo_signals(spec, observation)
    floor, guard = capacity_floor(spec, state, demand, source, signals)
    peak = ""
    if demand != current_demand:
        peak = (
            f"planned on the peak of the last {down_s:.0f}s (scaleDownStabilization): {demand.label()}, "
            f"now {current_demand.label()}"
        )
    notes = [backlog, peak, guard, *notes]
    space = PlanSpace(spec, demand, source, floor)
    allowed = allowance.power_w
    current = state.decision_in_force
    in_force = _variant(spec, state.variant)
    usable = in_force is not None and in_force.quality >= spec.slo.min_quality
    # A variant the spec no longer allows is never held or capped (the switch below happens at once).
    choice = choose(space, allowed, allowance.binding, current if usable else None)
    if current is None or choice.candidate is None:
        new_state, decision = _plain(base, space, choice, allowed, now, notes, current is None)
    else:

        def as_run(c: Candidate) -> Candidate:
            return run_candidate(spec, state.floor, space, c, allowed, observation, now, source)

        new_state, decision = _stabilized(spec, base, space, choice, allowed, now, notes, as_run)
    return new_state, replace(decision, planned_demand=demand)


def run_candidate(
    spec: GreenModelSpec,
    floor_state: FloorState,
    space: PlanSpace,
    planned: Candidate,
    allowed: float | None,
    observation: Observation,
    now: float,
    source: PerformanceSource,
) -> Candidate:
    """`planned` as the burst rules will run it (`with_burst_rules`): at least its variant's warm floor of
    replicas, at its fast tier's efficient setting, priced by the same fluid model at that count. The
    planner sizes a fleet for the demand; when the floor raises it, the energy goes where the floor's
    replicas each serve a share of the demand at a small batch, so a switch is judged on that fleet."""
    variant = _variant(spec, planned.variant)
    if variant is None:
        return planned
    met = planned.within(allowed)
    run = burst_plan(spec, floor_state, variant, planned.setting, met, observation, now, source)
    setting = run.tier.efficient if run.tier is not None else planned.setting
    n = planned.replicas
    if run.floor is not None and run.floor.replicas > n:
        n = min(run.floor.replicas, spec.replicas.max)
    if (n, setting) == (planned.replicas, planned.setting):
        return planned
    pair = space.find(planned.variant, setting)
    return planned if pair is None else space.candidate(pair, n)


def _finish(
    state: LoopState,
    decision: Decision,
    now: float,
    history: tuple[tuple[float, int], ...] | None = None,
    pending: tuple[str | None, float | None] | None = None,
) -> tuple[LoopState, Decision]:
    """Record `decision` as the one in force, stamping scale times, the recommendation history and (when
    given) the pending variant switch."""
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
        pending_variant=state.pending_variant if pending is None else pending[0],
        pending_since=state.pending_since if pending is None else pending[1],
    )
    return new, decision


def _breach(power_w: float | None, allowed: float | None) -> str:
    power = "unknown power" if power_w is None else f"{power_w:.0f} W"
    return f"budget breached: {power} > {allowed or 0.0:.0f} W allowed"


def _breach_text(power_w: float | None, allowed: float | None) -> str:
    """The breach note when `power_w` is over (or not known to be within) `allowed`; else empty."""
    if allowed is None or (power_w is not None and power_w <= allowed * (1.0 + 1e-9) + 1e-9):
        return ""
    return _breach(power_w, allowed)


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
        # A variant in force that is still in the spec left only because slo.minQuality rose above it.
        kind = ReasonKind.NO_METRICS if variant is None else ReasonKind.QUALITY_FLOOR
        decision = replace(first, reason=reason, budget_met=met, kind=kind)
        return _finish(state, decision, now, ((now, decision.replicas),), (None, None))
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
        kind=ReasonKind.NO_METRICS,
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
        current = Decision(
            state.variant,
            state.replicas,
            state.setting,
            state.expected_power_w,
            "",
            True,
            kind=ReasonKind.HOLD,
        )
    decision = to_decision(choice, space, allowed, current)
    reason = _join("first plan" if first else "", choice.reason, *notes)
    if not decision.budget_met:
        reason = _join(reason, _breach_text(decision.expected_power_w, allowed))
    decision = replace(decision, reason=reason)
    return _finish(state, decision, now, ((now, decision.replicas),), (None, None))


def _stabilized(
    spec: GreenModelSpec,
    state: LoopState,
    space: PlanSpace,
    choice: Choice,
    allowed: float | None,
    now: float,
    notes: list[str],
    as_run: Callable[[Candidate], Candidate] | None = None,
) -> tuple[LoopState, Decision]:
    """The planner's choice under the stability rules. `as_run` (run_candidate): a configuration as the
    burst rules will run it; a variant switch is judged on the two fleets as they run."""
    assert state.variant is not None
    scaling = spec.scaling
    threshold = scaling.switch_threshold
    current_pair = space.find(state.variant, state.setting)
    if choice.hold:
        # onExhausted Hold: the configuration in force stays exactly as it is.
        # budget_met is False: the budget cannot pay for what the SLOs need (planner module doc).
        power = None if current_pair is None else space.power(current_pair, state.replicas)
        holding = Decision(
            state.variant,
            state.replicas,
            state.setting,
            power,
            _join(choice.reason, *notes, _breach_text(power, allowed)),
            False,
            alternatives(space, None, allowed),
            kind=choice.kind,
        )
        return _finish(state, holding, now, None, (None, None))

    target = choice.candidate
    assert target is not None
    stability: list[str] = []
    below_floor = False  # the variant in force left at once because it is below slo.minQuality
    pending_variant, pending_since = None, None
    cur_pairs = space.variant_pairs(state.variant)
    if target.variant != state.variant:
        cur_best = space.best_of(cur_pairs, allowed) if cur_pairs else None
        if cur_best is None:
            why = space.unusable.get(state.variant, "cannot meet the SLOs within the budget")
            in_force = _variant(spec, state.variant)
            below_floor = in_force is not None and in_force.quality < spec.slo.min_quality
            stability.append(
                f"switched variant {state.variant} -> {target.variant} at once: {state.variant} {why}"
            )
        else:
            # The saving of a switch is the saving of the fleet that will run (warm floor, fast tier),
            # not of the fluid plan the burst rules then raise.
            cur_run = cur_best if as_run is None else as_run(cur_best)
            target_run = target if as_run is None else as_run(target)
            gate = gate_switch(
                state.variant,
                cur_run.power_w,
                target.variant,
                target_run.power_w,
                threshold,
                scaling.switch_hold.seconds,
                state.pending_since,
                now,
            )
            stability.append(gate.reason)
            if (cur_run, target_run) != (cur_best, target):
                stability.append(
                    f"as run: {cur_run.label()} = {cur_run.power_w:.0f} W, {target_run.label()} = "
                    f"{target_run.power_w:.0f} W"
                )
            pending_variant, pending_since = gate.pending_variant, gate.pending_since
            if not gate.switch:
                target = cur_best
    if target.variant != state.variant:
        final = target
        history: tuple[tuple[float, int], ...] = ((now, final.replicas),)
    else:
        # The down-window already acts on the demand (module doc, rule 2): the target is sized for the
        # window's peak and falls only when the peak leaves it. Holding replica counts for the window
        # again would make a scale-down wait two windows, so only the up-window applies to counts.
        stab = stabilize_replicas(
            state.replicas,
            target.replicas,
            state.history,
            now,
            scaling.scale_up_stabilization.seconds,
            0.0,
        )
        history = stab.history
        n = min(max(stab.replicas, spec.replicas.min), spec.replicas.max)
        if stab.reason:
            stability.append(stab.reason)
        if n != stab.replicas:
            stability.append(f"replicas moved into spec.replicas [{spec.replicas.min}, {spec.replicas.max}]")
        final = target
        if n != target.replicas:  # a scale-up held by the up-window: the best setting at n replicas
            held = space.best_at(target.variant, n, allowed)
            assert held is not None
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
        reason, kind = _join(choice.reason, *stability, *notes), choice.kind
    else:  # a stability rule kept (part of) the configuration in force
        reason, kind = _join(applied, *stability, f"planner: {choice.reason}", *notes), ReasonKind.HOLD
    if below_floor:
        kind = ReasonKind.QUALITY_FLOOR
    # onExhausted acting means the budget cannot pay for the SLOs: BudgetMet is False even when the
    # configuration it chose fits the budget (planner module doc).
    met = final.within(allowed) and not choice.exhausted
    if not final.within(allowed):
        reason = _join(reason, _breach(final.power_w, allowed))
    decision = Decision(
        final.variant,
        final.replicas,
        final.setting,
        final.power_w,
        reason,
        met,
        alternatives(space, final, allowed),
        kind=kind,
    )
    return _finish(state, decision, now, history, (pending_variant, pending_since))
