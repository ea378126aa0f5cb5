"""One tick of a GreenModel's decision loop, pure: the spec (validated once per generation), the loop state
and what Prometheus answered (an Observation) in; the new state, the decision and the typed status out.

The operator's fleet loop (`controller.handlers.autoscale`) and the simulator (`sim.policies.GreenllmPolicy`)
both call `tick`; what is around it is theirs: asking Prometheus, applying a changed decision to the
Deployment, writing the status, posting the Events the tick names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from greenllm.api import v1alpha1 as api
from greenllm.api.timestamps import rfc3339
from greenllm.core import status as st
from greenllm.core.decision import Decision, Observation
from greenllm.core.plan_rules import PerformanceSource
from greenllm.core.step import LoopState, step


def stamp(epoch: float) -> str:
    """A status time: RFC 3339 UTC, whole seconds (as `kubectl describe` shows them)."""
    return rfc3339(math.floor(epoch))


@dataclass(frozen=True, slots=True)
class MetricsVerdict:
    """MetricsAvailable as this tick found it: ok, the reason and a message for the condition."""

    ok: bool
    reason: str
    message: str

    @classmethod
    def of(cls, observation: Observation) -> MetricsVerdict:
        if observation.has_demand:
            return cls(True, "Observed", "")
        return cls(False, "NoData", "no vLLM token rates for this GreenModel's pods")

    @classmethod
    def unavailable(cls, message: str) -> MetricsVerdict:
        return cls(False, "PrometheusUnavailable", message)


@dataclass(frozen=True, slots=True)
class Notice:
    """An Event on the GreenModel that a condition's transition is worth."""

    warning: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class TickResult:
    state: LoopState
    decision: Decision
    changed: bool  # differs from status.lastDecision: apply it, record it, post a Decision Event
    status: api.GreenModelStatus  # the fields the tick writes (see core.status.patch)
    notices: tuple[Notice, ...]  # Events for the conditions this status moves


def tick(
    spec: api.GreenModelSpec,
    state: LoopState,
    observation: Observation,
    metrics: MetricsVerdict,
    now: float,
    source: PerformanceSource,
    current: api.GreenModelStatus,
    generation: int | None,
    extra_allowance_w: float | None = None,
) -> TickResult:
    """Decide (`core.step`) and say it in the status, against the status as it is now (`current`).
    `extra_allowance_w`: the average power team EnergyBudgets grant it (core.step.plan_step)."""
    new_state, decision = step(spec, state, observation, now, source, extra_allowance_w)
    changed = not st.same_decision(decision, current.last_decision)
    status, notices = loop_status(
        spec, new_state, decision, changed, observation, metrics, now, current, generation
    )
    return TickResult(new_state, decision, changed, status, notices)


def loop_status(
    spec: api.GreenModelSpec,
    state: LoopState,
    decision: Decision,
    changed: bool,
    observation: Observation,
    metrics: MetricsVerdict,
    now: float,
    current: api.GreenModelStatus,
    generation: int | None,
) -> tuple[api.GreenModelStatus, tuple[Notice, ...]]:
    """The tick's status over `current` (also called again when a concurrent write made the first one
    stale), and the Events its condition changes are worth."""
    at = stamp(now)
    metrics_was = st.condition_status(current, api.ConditionType.METRICS_AVAILABLE)
    conditions = st.set_condition(
        current.conditions,
        api.ConditionType.METRICS_AVAILABLE,
        metrics.ok,
        metrics.reason,
        metrics.message,
        at,
        generation,
    )
    budget_was = st.condition(current, api.ConditionType.BUDGET_MET)
    # Measured once = this tick saw power or energy, or an earlier one did (BudgetMet left NoMetrics).
    measured = observation.power_w is not None or observation.energy_j_total is not None
    measured = measured or (budget_was is not None and budget_was.reason != "NoMetrics")
    budget = st.budget_condition(
        spec, decision, state.energy_kwh, state.carbon_grams, observation.power_w, measured
    )
    conditions = st.set_condition(conditions, api.ConditionType.BUDGET_MET, *budget, at, generation)
    recorded = {"last_decision": st.decision_record(decision, at)} if changed else {}
    status = st.decided(
        decision,
        ready_replicas=current.ready_replicas or 0,
        replicas_text=st.replicas_text(current.ready_replicas, decision.replicas),
        energy_text=st.energy_text(state.energy_kwh, spec.budget.energy_kwh),
        fast_tier=st.fast_tier_status(decision),
        observed=st.observed_status(observation, at),
        period=api.PeriodAccount(
            start=stamp(state.period_start),
            energy_kwh=round(state.energy_kwh, 6),
            carbon_grams=round(state.carbon_grams, 3),
            last_sample_time=None if state.last_sample_time is None else stamp(state.last_sample_time),
        ),
        controller_state=state.to_status(),
        conditions=conditions,
        **recorded,
    )
    notices = _budget_notices(budget[0], budget_was, decision) + _metrics_notices(metrics_was, metrics)
    return status, notices


def _budget_notices(met: bool | None, was: api.Condition | None, decision: Decision) -> tuple[Notice, ...]:
    was_status = None if was is None else was.status
    if met is False and was_status != "False":
        return (Notice(True, "BudgetExceeded", st.short(decision.reason, st.EVENT_MESSAGE_MAX)),)
    if met is True and was_status == "False":  # no event for a first "met"
        return (Notice(False, "BudgetMet", "back within budget"),)
    return ()


def _metrics_notices(was: str | None, metrics: MetricsVerdict) -> tuple[Notice, ...]:
    """One Warning when MetricsAvailable turns False, one Normal when it turns True again; none while it
    stays. A first tick without token rates (pods still starting) is not a transition worth a Warning."""
    if not metrics.ok and was != "False" and not (was is None and metrics.reason == "NoData"):
        text = st.short(f"metrics unavailable ({metrics.reason}): {metrics.message}", st.EVENT_MESSAGE_MAX)
        return (Notice(True, "MetricsUnavailable", text),)
    if metrics.ok and was == "False":
        return (Notice(False, "MetricsAvailable", "metrics are available again"),)
    return ()
