"""Keep the last decision across restarts and spec edits, as long as the spec still allows it."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from greenllm.api import v1alpha1 as api
from greenllm.core.decision import Decision, ReasonKind
from greenllm.core.performance import PowerSetting
from greenllm.core.render import VARIANT_LABEL


def carried_decision(spec: api.GreenModelSpec, record: api.DecisionRecord | None) -> Decision | None:
    """The decision recorded in status.lastDecision, adjusted to `spec`; None when it no longer fits.

    Replicas are clamped into the new bounds; a variant that was removed or fell below the quality floor,
    or a power setting the spec's power mode no longer allows, drops the whole decision.
    """
    if record is None:
        return None
    try:
        variant = spec.variant(record.variant)
    except KeyError:
        return None
    if variant.quality < spec.slo.min_quality:
        return None
    setting = PowerSetting(limit_w=record.power_limit_w, locked_clock_mhz=record.locked_clock_mhz)
    if spec.power.mode is api.PowerMode.OFF and not setting.is_default:
        return None
    if spec.power.mode is api.PowerMode.FIXED and setting.limit_w != spec.power.limit_w:
        return None
    replicas = min(max(record.replicas, spec.replicas.min), spec.replicas.max)
    reason, kind = record.reason, recorded_kind(record.reason_kind)
    if replicas != record.replicas:
        bounds = f"[{spec.replicas.min}, {spec.replicas.max}]"
        reason = f"replicas clamped from {record.replicas} to {replicas} by spec.replicas {bounds}"
        kind = ReasonKind.HOLD
    return Decision(
        variant=variant.name,
        replicas=replicas,
        setting=setting,
        expected_power_w=record.expected_power_w,
        reason=reason,
        token_budget=record.token_budget,
        kind=kind,
    )


_KNOWN_KINDS = frozenset(kind.value for kind in ReasonKind)


def recorded_kind(value: str | None) -> ReasonKind:
    """lastDecision.reasonKind as a ReasonKind: Hold (what a carried decision is) when an operator before
    the kinds recorded none, or one this operator does not know."""
    return ReasonKind(value) if value in _KNOWN_KINDS else ReasonKind.HOLD


def adopt_deployed(
    spec: api.GreenModelSpec, decision: Decision, deployment: Mapping[str, Any] | None, owner_uid: str
) -> Decision:
    """What the owned Deployment already runs, when it differs from `decision` and the spec still allows
    it. An operator stopped between patching the Deployment and recording the decision in status would
    otherwise roll the pods back to the recorded variant and forward again on its next tick (two needless
    restarts of every serving pod); the decision it had applied is the one the pods already run."""
    if deployment is None:
        return decision
    meta = deployment.get("metadata") or {}
    if not any(o.get("uid") == owner_uid for o in meta.get("ownerReferences") or []):
        return decision
    name = (meta.get("labels") or {}).get(VARIANT_LABEL)
    variant = next((v for v in spec.variants if v.name == name), None)
    if variant is None or variant.name == decision.variant or variant.quality < spec.slo.min_quality:
        return decision
    replicas = (deployment.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        replicas = decision.replicas
    replicas = min(max(replicas, spec.replicas.min), spec.replicas.max)
    return replace(
        decision,
        variant=variant.name,
        replicas=replicas,
        token_budget=_deployed_budget(deployment, variant),
        fast_tier=None,
        kind=ReasonKind.HOLD,
        reason=(
            f"adopted {variant.name} x{replicas}, which the Deployment already runs (the operator stopped "
            "after applying it and before recording it); the loop re-plans from its next observation"
        ),
    )


def _deployed_budget(deployment: Mapping[str, Any], variant: api.Variant) -> int | None:
    """The prompt-chunk budget greenllm rendered into the running pods (the flag after the variant's own
    args), so rendering the adopted decision reproduces the running template exactly."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
    if not containers or not isinstance(containers, list):
        return None
    args = containers[0].get("args") or []
    added = args[len(variant.args) :] if args[: len(variant.args)] == list(variant.args) else []
    for flag, value in itertools.pairwise(added):
        if flag == "--max-num-batched-tokens" and isinstance(value, str) and value.isdigit():
            return int(value)
    return None
