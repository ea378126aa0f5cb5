"""Decision -> the Kubernetes objects and status that express it. Pure: dicts in, dicts out."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from greenllm.api import v1alpha1 as api
from greenllm.core.burst import budget_flags
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting

MODEL_LABEL = "greenllm.io/model"
VARIANT_LABEL = "greenllm.io/variant"
TEMPLATE_HASH_ANNOTATION = "greenllm.io/template-hash"
MANAGED_BY = {"app.kubernetes.io/managed-by": "greenllm"}
CONTAINER_NAME = "server"
PORT_NAME = "http"


# The GreenModel's name names its Service, so it must be a DNS-1035 label (also a valid label value).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63


def name_problem(name: str) -> str | None:
    """Why `name` cannot name the GreenModel's Service and label its pods, or None."""
    if len(name) <= NAME_MAX and re.fullmatch(NAME_PATTERN, name):
        return None
    return (
        f"metadata.name {name!r} cannot name a Service: use at most {NAME_MAX} lowercase letters, digits "
        "and '-', starting with a letter and ending with a letter or digit"
    )


def workload_name(owner_name: str) -> str:
    """Deployment and Service share the GreenModel's name: one of each per GreenModel."""
    return owner_name


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _selector(owner_name: str) -> dict[str, str]:
    # The selector is immutable in a Deployment, so it holds only the model label: changing the variant
    # rolls the pods instead of forcing a delete and re-create.
    return {MODEL_LABEL: owner_name}


def serving_args(variant: api.Variant, token_budget: int | None) -> list[str]:
    """The variant's args, plus the prompt-chunk budget greenllm chose when the variant sets none (it keeps
    a decode step within the TPOT SLO while prompts are chunked: core.burst.token_budget, budget_flags)."""
    return [*variant.args, *budget_flags(variant, token_budget)]


def _pod_template(
    owner_name: str, spec: api.GreenModelSpec, variant: api.Variant, token_budget: int | None = None
) -> dict[str, Any]:
    gpu_count = str(spec.gpu.count)
    requests = {**variant.resources.requests, spec.gpu.resource_name: gpu_count}
    limits = {**variant.resources.limits, spec.gpu.resource_name: gpu_count}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": variant.image,
        "args": serving_args(variant, token_budget),
        "env": [{"name": e.name, "value": e.value} for e in variant.env],
        "ports": [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "resources": {"requests": requests, "limits": limits},
        # vLLM's OpenAI server answers /health once the model is loaded.
        "readinessProbe": {"httpGet": {"path": "/health", "port": PORT_NAME}, "periodSeconds": 10},
    }
    return {
        "metadata": {
            "labels": {**_selector(owner_name), VARIANT_LABEL: variant.name, **MANAGED_BY},
            "annotations": {"greenllm.io/precision": variant.precision.value},
        },
        # A serving container needs no Kubernetes API access: no service-account token in the pod.
        "spec": {"automountServiceAccountToken": False, "containers": [container]},
    }


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def deployment(owner: Mapping[str, Any], spec: api.GreenModelSpec, decision: Decision) -> dict[str, Any]:
    name = workload_name(owner["metadata"]["name"])
    template = _pod_template(
        owner["metadata"]["name"], spec, spec.variant(decision.variant), decision.token_budget
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": {MODEL_LABEL: owner["metadata"]["name"], VARIANT_LABEL: decision.variant, **MANAGED_BY},
            "annotations": {TEMPLATE_HASH_ANNOTATION: template_hash(template)},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "replicas": decision.replicas,
            "selector": {"matchLabels": _selector(owner["metadata"]["name"])},
            "template": template,
        },
    }


def deployment_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that turns `current` into `desired`, or None when nothing we own differs."""
    cur_meta = current.get("metadata", {})
    cur_hash = (cur_meta.get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
    want_hash = desired["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    patch: dict[str, Any] = {}
    if cur_hash != want_hash:
        patch = {
            "metadata": {
                "labels": desired["metadata"]["labels"],
                "annotations": desired["metadata"]["annotations"],
            },
            "spec": {"template": desired["spec"]["template"]},
        }
    if current.get("spec", {}).get("replicas") != desired["spec"]["replicas"]:
        patch.setdefault("spec", {})["replicas"] = desired["spec"]["replicas"]
    return patch or None


def service(owner: Mapping[str, Any], spec: api.GreenModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": workload_name(owner["metadata"]["name"]),
            "namespace": owner["metadata"]["namespace"],
            "labels": {MODEL_LABEL: owner["metadata"]["name"], **MANAGED_BY},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(owner["metadata"]["name"]),
            "ports": [{"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def service_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    cur = current.get("spec", {})
    want = desired["spec"]
    if cur.get("selector") == want["selector"] and _ports(cur.get("ports")) == _ports(want["ports"]):
        return None
    return {"spec": {"selector": want["selector"], "ports": want["ports"]}}


def _ports(ports: Sequence[Mapping[str, Any]] | None) -> list[tuple[Any, ...]]:
    return [(p.get("name"), p.get("port"), p.get("targetPort")) for p in ports or []]


# ---------------------------------------------------------------------------------------------- status


# Condition messages are for `kubectl describe` and `get -o wide`: a raw client error (a URL with its
# encoded PromQL) belongs in the operator's log, the condition keeps its start.
MESSAGE_MAX = 200


def short(message: str, limit: int = MESSAGE_MAX) -> str:
    """`message` on one line, cut to at most `limit` characters with an ellipsis."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: api.ConditionType,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Conditions with `type_` set; lastTransitionTime moves only when the status itself changes. The
    message is cut to MESSAGE_MAX characters."""
    value = "Unknown" if status is None else ("True" if status else "False")
    message = short(message)
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_.value:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != value
        out.append(
            {
                "type": type_.value,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now if changed else cond.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    if not found:
        out.append(
            {
                "type": type_.value,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "observedGeneration": generation,
            }
        )
    return out


def with_ready(
    conditions: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any], now: str, generation: int | None
) -> list[dict[str, Any]]:
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


def decision_record(decision: Decision, now: str) -> dict[str, Any]:
    record = api.DecisionRecord(
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
    return record.model_dump(by_alias=True, mode="json")


# Status fields that only carry accounting or measurements (they change every tick): written at most every
# --accounting-write-period. Everything else is what a reader acts on, written when it changes.
ACCOUNTING_FIELDS = frozenset({"observed", "period", "controllerState", "energyText"})


def reader_view(status: Mapping[str, Any]) -> object:
    """What a reader of the status would see change: the fields outside ACCOUNTING_FIELDS, and each
    condition's type, status and reason (not its message, which carries the measurements)."""
    view = {k: v for k, v in status.items() if k not in ACCOUNTING_FIELDS | {"conditions"}}
    conditions = sorted(
        (c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or ()
    )
    return json.dumps(_without_nulls(view), sort_keys=True, default=str), tuple(conditions)


def _without_nulls(value: Any) -> Any:
    """A merge patch's null deletes the field: stored status has no key where the written one said null."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def decision_status(decision: Decision) -> dict[str, Any]:
    """The status fields the node agent and `kubectl get gm` read."""
    return {
        "variant": decision.variant,
        "replicas": decision.replicas,
        "powerLimitW": decision.setting.limit_w,
        "lockedClockMhz": decision.setting.locked_clock_mhz,
        "settingText": decision.setting.label(),
    }


def replicas_status(ready: int | None, wanted: int) -> dict[str, Any]:
    """status.readyReplicas and the `kubectl get gm` Replicas column, "ready/wanted"."""
    ready = ready or 0
    return {"readyReplicas": ready, "replicasText": f"{ready}/{wanted}"}


def deployment_ready_replicas(deployment: Mapping[str, Any]) -> int:
    ready: int = (deployment.get("status") or {}).get("readyReplicas") or 0
    return ready


def _kwh(value: float) -> str:
    return f"{value:.3g}" if value >= 0.001 or value == 0 else f"{value:.2g}"


def energy_text(energy_kwh: float, budget_kwh: float | None) -> str:
    """The Energy column: "1.2/40 kWh" (used this period / budget), or "1.2 kWh" without an energy budget."""
    used = _kwh(energy_kwh)
    return f"{used} kWh" if budget_kwh is None else f"{used}/{budget_kwh:g} kWh"


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


def _setting_status(setting: PowerSetting) -> api.SettingStatus:
    return api.SettingStatus(power_limit_w=setting.limit_w, locked_clock_mhz=setting.locked_clock_mhz)


def fast_tier_status(decision: Decision) -> dict[str, Any] | None:
    """status.fastTier: the two settings the node agent switches between and its rule; None = no switching
    (the agent applies powerLimitW / lockedClockMhz as they are)."""
    tier = decision.fast_tier
    if tier is None:
        return None
    status = api.FastTierStatus(
        efficient=_setting_status(tier.efficient),
        burst=_setting_status(tier.burst),
        rule=api.SwitchRuleStatus(burst_at_waiting=tier.rule.burst_at_waiting, hold_seconds=tier.rule.hold_s),
    )
    return status.model_dump(by_alias=True, mode="json")


def carried_fast_tier(
    spec: api.GreenModelSpec, decision: Decision, recorded: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """status.fastTier to keep beside a decision carried over from status.lastDecision (which records no
    fast tier): the recorded one while it still fits, i.e. the power mode is still Auto and its efficient
    setting is the carried decision's; else None, so a spec edit (say, power mode Off) never leaves the
    agent a burst setting the spec no longer allows until the next tick."""
    if not recorded or spec.power.mode is not api.PowerMode.AUTO:
        return None
    try:
        tier = api.FastTierStatus.model_validate(recorded)
    except ValueError:
        return None
    if tier.efficient != _setting_status(decision.setting):
        return None
    return tier.model_dump(by_alias=True, mode="json")


def observed_status(observation: Observation, stamp: str) -> dict[str, Any]:
    """status.observed: what the tick at `stamp` saw (null = unknown)."""
    power, output = observation.power_w, observation.output_tokens_per_s
    # Joules per generated token, as ML.ENERGY reports it (prefill energy is included in the power).
    per_token = power / output if power is not None and output else None
    observed = api.Observed(
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
    return observed.model_dump(by_alias=True, mode="json")


def same_decision(decision: Decision, last: Mapping[str, Any] | None) -> bool:
    """Whether `last` (status.lastDecision) already records this decision, so no Event is due."""
    if not last:
        return False
    return (
        last.get("variant") == decision.variant
        and last.get("replicas") == decision.replicas
        and last.get("powerLimitW") == decision.setting.limit_w
        and last.get("lockedClockMhz") == decision.setting.locked_clock_mhz
    )
