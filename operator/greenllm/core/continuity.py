"""Keep the last decision across restarts and spec edits, as long as the spec still allows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from greenllm.api import v1alpha1 as api
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting


def carried_decision(spec: api.GreenModelSpec, last: Mapping[str, Any] | None) -> Decision | None:
    """The decision recorded in status.lastDecision, adjusted to `spec`; None when it no longer fits.

    Replicas are clamped into the new bounds; a variant that was removed or fell below the quality floor,
    or a power setting the spec's power mode no longer allows, drops the whole decision.
    """
    if not last:
        return None
    try:
        record = api.DecisionRecord.model_validate(last)
        variant = spec.variant(record.variant)
    except (ValueError, KeyError):
        return None
    if variant.quality < spec.slo.min_quality:
        return None
    setting = PowerSetting(limit_w=record.power_limit_w, locked_clock_mhz=record.locked_clock_mhz)
    if spec.power.mode is api.PowerMode.OFF and not setting.is_default:
        return None
    if spec.power.mode is api.PowerMode.FIXED and setting.limit_w != spec.power.limit_w:
        return None
    replicas = min(max(record.replicas, spec.replicas.min), spec.replicas.max)
    reason = record.reason
    if replicas != record.replicas:
        bounds = f"[{spec.replicas.min}, {spec.replicas.max}]"
        reason = f"replicas clamped from {record.replicas} to {replicas} by spec.replicas {bounds}"
    return Decision(
        variant=variant.name,
        replicas=replicas,
        setting=setting,
        expected_power_w=record.expected_power_w,
        reason=reason,
        token_budget=record.token_budget,
    )
