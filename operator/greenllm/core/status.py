"""A GreenModel's status as the api models say it: built from a decision, an observation and a Deployment,
read back from what is stored, and written as a merge patch of only the fields a writer sets. Pure.

Three writers share the status (reconcile, the loop's tick, the Deployment watcher): each builds an
`api.GreenModelStatus` with the fields it owns and `patch()` dumps exactly those (`exclude_unset`), so one
never overwrites another's fields, and a field set to None is written as null, which deletes it.
`read_as`, `patch` and `set_condition` serve an EnergyBudget's status too (core.budget_status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from greenllm.api import v1alpha1 as api
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting

# Condition messages are for `kubectl describe` and `get -o wide`: a raw client error (a URL with its
# encoded PromQL) belongs in the operator's log, the condition keeps its start.
MESSAGE_MAX = 200
EVENT_MESSAGE_MAX = 1000  # the API server refuses an Event message over 1 KiB

# Status fields that only carry accounting or measurements (they change every tick): written at most every
# --accounting-write-period. Everything else is what a reader acts on, written when it changes.
ACCOUNTING_FIELDS = frozenset({"observed", "period", "controllerState", "energyText"})


def short(message: str, limit: int = MESSAGE_MAX) -> str:
    """`message` on one line, cut to at most `limit` characters with an ellipsis."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"


# ------------------------------------------------------------------------------------------ read, write


def read(raw: Mapping[str, Any] | None) -> api.GreenModelStatus:
    """The stored status of a GreenModel, read leniently (`read_as`)."""
    return read_as(api.GreenModelStatus, raw)


Status = TypeVar("Status", bound=BaseModel)


def read_as(model: type[Status], raw: Mapping[str, Any] | None) -> Status:
    """The stored status as `model`. A field that does not parse (a hand edit of the status subresource)
    reads as unset and is rewritten by its owner; the rest is kept, lists (conditions, an EnergyBudget's
    members) item by item."""
    data = dict(raw or {})
    try:
        return model.model_validate(data)
    except ValidationError:
        pass
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if _parses(model, {key: value}):
            kept[key] = value
        elif isinstance(value, list):
            items = [item for item in value if _parses(model, {key: [item]})]
            if _parses(model, {key: items}):
                kept[key] = items
    return model.model_validate(kept)


def _parses(model: type[BaseModel], value: Any) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def patch(status: BaseModel) -> dict[str, Any]:
    """The merge patch that writes the fields `status` was built with, and only those."""
    return status.model_dump(by_alias=True, mode="json", exclude_unset=True)


def merged(stored: api.GreenModelStatus, written: api.GreenModelStatus) -> api.GreenModelStatus:
    """`stored` after a merge patch of `written` (as `patch` makes it) is applied: the fields it set win."""
    return stored.model_copy(update={name: getattr(written, name) for name in written.model_fields_set})


def reader_view(status: Mapping[str, Any]) -> object:
    """What a reader of the status (in its wire form) would see change: the fields outside
    ACCOUNTING_FIELDS, and each condition's type, status and reason (not its message, which carries the
    measurements)."""
    # Compared as plain values (dict equality is deep and ignores key order): serialising both sides to
    # JSON to compare them was an eighth of the operator's event-loop time at 1,000 GreenModels.
    view = {k: v for k, v in status.items() if k not in ACCOUNTING_FIELDS | {"conditions"}}
    conditions = sorted(
        (str(c.get("type")), str(c.get("status")), str(c.get("reason")))
        for c in status.get("conditions") or ()
    )
    return _without_nulls(view), tuple(conditions)


def _without_nulls(value: Any) -> Any:
    """A merge patch's null deletes the field: stored status has no key where the written one said null."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------- conditions


def find_condition(conditions: Sequence[api.Condition], type_: StrEnum) -> api.Condition | None:
    return next((c for c in conditions if c.type == type_.value), None)


def condition(status: api.GreenModelStatus, type_: api.ConditionType) -> api.Condition | None:
    return find_condition(status.conditions, type_)


def condition_status(status: api.GreenModelStatus, type_: api.ConditionType) -> str | None:
    found = condition(status, type_)
    return None if found is None else found.status


def set_condition(
    conditions: Sequence[api.Condition],
    type_: StrEnum,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[api.Condition]:
    """Conditions with `type_` (a GreenModel's or an EnergyBudget's condition type) set;
    lastTransitionTime moves only when the status itself changes. The message is cut to MESSAGE_MAX
    characters."""
    value = "Unknown" if status is None else ("True" if status else "False")
    previous = find_condition(conditions, type_)
    moved = previous is None or previous.status != value
    new = api.Condition(
        type=type_.value,
        status=value,
        reason=reason,
        message=short(message),
        last_transition_time=now if moved or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, new]
    return [new if c is previous else c for c in conditions]


def with_ready(
    conditions: Sequence[api.Condition], deployment: Mapping[str, Any], now: str, generation: int | None
) -> list[api.Condition]:
    """Conditions with Ready taken from the Deployment: all of its wanted replicas ready."""
    meta = deployment.get("metadata") or {}
    want = (deployment.get("spec") or {}).get("replicas") or 0
    ready_replicas = deployment_ready_replicas(deployment)
    ready = ready_replicas >= want
    return set_condition(
        conditions,
        api.ConditionType.READY,
        ready,
        "Available" if ready else "Progressing",
        f"{ready_replicas}/{want} replicas ready ({meta.get('namespace')}/{meta.get('name')})",
        now,
        generation,
    )


def deployment_ready_replicas(deployment: Mapping[str, Any]) -> int:
    ready: int = (deployment.get("status") or {}).get("readyReplicas") or 0
    return ready


def budget_condition(
    spec: api.GreenModelSpec,
    decision: Decision,
    energy_kwh: float,
    carbon_grams: float,
    power_w: float | None,
    measured: bool,
) -> tuple[bool | None, str, str]:
    """BudgetMet as (status, reason, message): Unknown/NoMetrics until power or energy was measured once,
    then the decision's verdict, always with a message saying what was measured against what."""
    if not measured:
        return None, "NoMetrics", "no power or energy measured yet for this GreenModel's GPUs"
    if not decision.budget_met:
        return False, "BudgetExceeded", decision.reason
    b = spec.budget
    parts = []
    if b.energy_kwh is not None:
        parts.append(f"{_kwh(energy_kwh)} of {b.energy_kwh:g} kWh used this {b.period} period")
    if b.carbon_grams is not None:
        parts.append(f"{carbon_grams:.3g} of {b.carbon_grams:g} gCO2 this {b.period} period")
    if b.power_w is not None:
        now = "power unknown now" if power_w is None else f"{power_w:.0f} W now"
        parts.append(f"{now}, cap {b.power_w:g} W")
    if not parts:
        return True, "NoBudget", "spec.budget sets no power, energy or carbon budget"
    return True, "WithinBudget", "; ".join(parts)


# ------------------------------------------------------------------------------------------------ fields


def decision_record(decision: Decision, now: str) -> api.DecisionRecord:
    """status.lastDecision: what was decided at `now`, why, and what else was weighed."""
    return api.DecisionRecord(
        time=now,
        variant=decision.variant,
        replicas=decision.replicas,
        power_limit_w=decision.setting.limit_w,
        locked_clock_mhz=decision.setting.locked_clock_mhz,
        token_budget=decision.token_budget,
        expected_power_w=None if decision.expected_power_w is None else round(decision.expected_power_w, 1),
        reason=decision.reason,
        reason_kind=decision.kind.value,
        alternatives=[
            api.Alternative(
                variant=o.variant,
                replicas=o.replicas,
                power_limit_w=o.setting.limit_w,
                power_w=round(o.power_w, 1),
                why_not=o.why_not,
            )
            for o in decision.alternatives
        ],
    )


def same_decision(decision: Decision, last: api.DecisionRecord | None) -> bool:
    """Whether `last` (status.lastDecision) already records this decision, so no Event is due."""
    return (
        last is not None
        and last.variant == decision.variant
        and last.replicas == decision.replicas
        and last.power_limit_w == decision.setting.limit_w
        and last.locked_clock_mhz == decision.setting.locked_clock_mhz
    )


def replicas_text(ready: int | None, wanted: int) -> str:
    """The `kubectl get gm` Replicas column, "ready/wanted"."""
    return f"{ready or 0}/{wanted}"


def _kwh(value: float) -> str:
    return f"{value:.3g}" if value >= 0.001 or value == 0 else f"{value:.2g}"


def energy_text(energy_kwh: float, budget_kwh: float | None) -> str:
    """The Energy column: "1.2/40 kWh" (used this period / budget), or "1.2 kWh" without an energy budget."""
    used = _kwh(energy_kwh)
    return f"{used} kWh" if budget_kwh is None else f"{used}/{budget_kwh:g} kWh"


def _setting_status(setting: PowerSetting) -> api.SettingStatus:
    return api.SettingStatus(power_limit_w=setting.limit_w, locked_clock_mhz=setting.locked_clock_mhz)


def fast_tier_status(decision: Decision) -> api.FastTierStatus | None:
    """status.fastTier: the two settings the node agent switches between and its rule; None = no switching
    (the agent applies powerLimitW / lockedClockMhz as they are)."""
    tier = decision.fast_tier
    if tier is None:
        return None
    return api.FastTierStatus(
        efficient=_setting_status(tier.efficient),
        burst=_setting_status(tier.burst),
        rule=api.SwitchRuleStatus(burst_at_waiting=tier.rule.burst_at_waiting, hold_seconds=tier.rule.hold_s),
    )


def carried_fast_tier(
    spec: api.GreenModelSpec, decision: Decision, recorded: api.FastTierStatus | None
) -> api.FastTierStatus | None:
    """status.fastTier to keep beside a decision carried over from status.lastDecision (which records no
    fast tier): the recorded one while it still fits, i.e. the power mode is still Auto and its efficient
    setting is the carried decision's; else None, so a spec edit (say, power mode Off) never leaves the
    agent a burst setting the spec no longer allows until the next tick."""
    if recorded is None or spec.power.mode is not api.PowerMode.AUTO:
        return None
    return recorded if recorded.efficient == _setting_status(decision.setting) else None


def observed_status(observation: Observation, stamp: str) -> api.Observed:
    """status.observed: what the tick at `stamp` saw (null = unknown)."""
    power, output = observation.power_w, observation.output_tokens_per_s
    # Joules per generated token, as ML.ENERGY reports it (prefill energy is included in the power).
    per_token = power / output if power is not None and output else None
    return api.Observed(
        time=stamp,
        power_w=power,
        output_tokens_per_second=output,
        prompt_tokens_per_second=observation.prompt_tokens_per_s,
        joules_per_token=None if per_token is None else round(per_token, 4),
        carbon_intensity_g_per_kwh=observation.carbon_intensity_g_per_kwh,
        tpot_p90_ms=observation.tpot_p90_ms,
        ttft_p90_ms=observation.ttft_p90_ms,
        attainment=None if observation.attainment is None else round(observation.attainment, 6),
        peak_waiting_requests=observation.peak_waiting_requests,
        peak_arrivals=observation.peak_arrivals,
    )


# ------------------------------------------------------------------ what reconcile and the watcher write


def reconciled(
    spec: api.GreenModelSpec,
    decision: Decision,
    fast_tier: api.FastTierStatus | None,
    deployment: Mapping[str, Any],
    current: api.GreenModelStatus,
    now: str,
    generation: int | None,
) -> api.GreenModelStatus:
    """What reconcile writes once the workloads of `decision` are applied: the spec is valid, Ready from
    the Deployment, BudgetMet Unknown until the loop measures, and lastDecision when the decision or its
    reason is new."""
    conditions = set_condition(
        current.conditions, api.ConditionType.SPEC_VALID, True, "Valid", "spec accepted", now, generation
    )
    conditions = with_ready(conditions, deployment, now, generation)
    if condition(current, api.ConditionType.BUDGET_MET) is None:
        unknown = budget_condition(spec, decision, 0.0, 0.0, None, measured=False)
        conditions = set_condition(conditions, api.ConditionType.BUDGET_MET, *unknown, now, generation)
    ready = deployment_ready_replicas(deployment)
    fields: dict[str, Any] = {}
    last = current.last_decision
    if not same_decision(decision, last) or (last is not None and last.reason != decision.reason):
        fields["last_decision"] = decision_record(decision, now)
    return decided(
        decision,
        ready_replicas=ready,
        replicas_text=replicas_text(ready, decision.replicas),
        energy_text=energy_text(current.period.energy_kwh, spec.budget.energy_kwh),
        fast_tier=fast_tier,
        observed_generation=generation,
        conditions=conditions,
        **fields,
    )


def decided(decision: Decision, **fields: Any) -> api.GreenModelStatus:
    """A status with the decision's fields (what the node agent and `kubectl get gm` read) and `fields`."""
    return api.GreenModelStatus(
        variant=decision.variant,
        replicas=decision.replicas,
        power_limit_w=decision.setting.limit_w,
        locked_clock_mhz=decision.setting.locked_clock_mhz,
        setting_text=decision.setting.label(),
        **fields,
    )


def invalid(
    current: api.GreenModelStatus, message: str, now: str, generation: int | None
) -> api.GreenModelStatus:
    """SpecValid=False with the reason; nothing else changes (the workloads stay as they are)."""
    conditions = set_condition(
        current.conditions, api.ConditionType.SPEC_VALID, False, "InvalidSpec", message, now, generation
    )
    return api.GreenModelStatus(conditions=conditions)


def deployment_seen(
    current: api.GreenModelStatus, deployment: Mapping[str, Any], now: str, generation: int | None
) -> api.GreenModelStatus | None:
    """What the Deployment watcher writes: Ready and the ready replicas as the Deployment shows them;
    None when nothing changed."""
    conditions = with_ready(current.conditions, deployment, now, generation)
    wanted = current.replicas
    if wanted is None:
        wanted = (deployment.get("spec") or {}).get("replicas") or 0
    ready = deployment_ready_replicas(deployment)
    fields: dict[str, Any] = {}
    if conditions != current.conditions:
        fields["conditions"] = conditions
    if current.ready_replicas != ready or current.replicas_text != replicas_text(ready, wanted):
        fields.update(ready_replicas=ready, replicas_text=replicas_text(ready, wanted))
    return api.GreenModelStatus(**fields) if fields else None
