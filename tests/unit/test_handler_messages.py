"""What the operator tells people: a kept decision's reason after a spec edit, and the MetricsAvailable
Events (one per transition). The handlers' helpers, without a cluster."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from greenllm.api import v1alpha1 as api
from greenllm.controller import handlers
from greenllm.core.continuity import carried_decision
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting
from greenllm.core.status import EVENT_MESSAGE_MAX


def spec(**overrides: Any) -> api.GreenModelSpec:
    body: dict[str, Any] = {
        "model": {"name": "m", "paramsBillions": 8},
        "variants": [
            {"name": "bf16", "precision": "bf16", "image": "img", "quality": 1.0},
            {"name": "int4", "precision": "int4", "image": "img", "quality": 0.95},
        ],
        "slo": {"minQuality": 0.5},
        "replicas": {"min": 1, "max": 6},
    }
    body.update(overrides)
    return api.GreenModelSpec.model_validate(body)


def test_a_kept_decision_is_explained_against_the_new_spec() -> None:
    old = "no metrics yet: highest-quality variant bf16 (quality 1 >= slo.minQuality 0.5) x1 at default power"
    record = api.DecisionRecord(time="t", variant="bf16", replicas=1, reason=old)
    raised = spec(slo={"minQuality": 0.99})
    carried = carried_decision(raised, record)
    assert carried is not None and carried.reason == old  # what used to stay in lastDecision
    reason = handlers._kept_reason(raised, carried, 2)
    assert "slo.minQuality 0.99" in reason and "0.5" not in reason
    assert reason.startswith("spec changed (generation 2): kept bf16")


def test_a_kept_decision_keeps_the_clamping_note() -> None:
    narrow = spec(replicas={"min": 1, "max": 2})
    carried = carried_decision(narrow, api.DecisionRecord(time="t", variant="bf16", replicas=5, reason="old"))
    assert carried is not None
    reason = handlers._kept_reason(narrow, carried, 3)
    assert "replicas clamped from 5 to 2" in reason


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    events: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        kopf, "warn", lambda _o, *, reason, message: events.append(("Warning", reason, message))
    )
    monkeypatch.setattr(
        kopf, "info", lambda _o, *, reason, message: events.append(("Normal", reason, message))
    )
    return events


def test_event_messages_fit_an_event() -> None:
    decision = Decision("bf16", 1, PowerSetting(), None, "x" * 5000)
    assert len(handlers._event_message(decision)) <= EVENT_MESSAGE_MAX
