"""What a GreenModel's tick reads of its stored status (controller.handlers.tick_status): the fields it
writes over and decides from, the loop state only when it resumes, and what the full read would give."""

from __future__ import annotations

from greenllm.api import v1alpha1 as api
from greenllm.controller.handlers import tick_status
from greenllm.core import status as st
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting

T = "2026-01-01T00:00:00Z"


def _stored() -> dict[str, object]:
    decision = Decision("bf16", 2, PowerSetting(limit_w=400.0), 900.0, "planned")
    status = st.decided(
        decision,
        ready_replicas=1,
        conditions=st.set_condition([], api.ConditionType.SPEC_VALID, True, "Valid", "", T, 3),
        last_decision=st.decision_record(decision, T),
        observed=st.observed_status(Observation(time=0.0, power_w=800.0), T),
        controller_state=api.ControllerState(period_start=0.0, replicas=2),
    )
    return st.patch(status)


def test_a_tick_reads_what_it_decides_from_and_writes_over() -> None:
    raw = _stored()
    full = st.read(raw)
    read = tick_status(raw, resume=False)
    assert (read.conditions, read.last_decision, read.ready_replicas) == (
        full.conditions,
        full.last_decision,
        full.ready_replicas,
    )
    assert read.controller_state is None and read.observed == api.Observed()  # not read: not used
    assert tick_status(raw, resume=True).controller_state == full.controller_state
    assert tick_status(None, resume=True) == api.GreenModelStatus()
