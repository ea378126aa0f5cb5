"""A GreenModel's status as api models (core.status) and the tick that writes it (loop.tick): built from a
decision and an observation, read back leniently, and written as a patch of only the fields set."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_render import OWNER, decision, spec
from tests.unit.test_step import fp16_cheaper, make_spec

from greenllm.api import v1alpha1 as api
from greenllm.core import render
from greenllm.core import status as st
from greenllm.core.decision import Decision, Observation
from greenllm.core.fasttier import FastTier, SwitchRule
from greenllm.core.performance import PowerSetting
from greenllm.core.step import initial_decision, initial_state
from greenllm.loop.tick import MetricsVerdict, Notice, loop_status, stamp, tick

T = "2026-01-01T00:00:00Z"


# ------------------------------------------------------------------------------------------- conditions


def test_condition_transition_time_moves_only_on_a_status_change() -> None:
    first = st.set_condition([], api.ConditionType.READY, False, "Progressing", "0/2", "t1", 1)
    same = st.set_condition(first, api.ConditionType.READY, False, "Progressing", "1/2", "t2", 1)
    flipped = st.set_condition(same, api.ConditionType.READY, True, "Available", "2/2", "t3", 1)
    assert [c.last_transition_time for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert [c.message for c in (first[0], same[0], flipped[0])] == ["0/2", "1/2", "2/2"]
    both = st.set_condition(flipped, api.ConditionType.SPEC_VALID, None, "Unknown", "", "t4", 1)
    assert [(c.type, c.status) for c in both] == [("Ready", "True"), ("SpecValid", "Unknown")]


def test_ready_follows_the_deployment() -> None:
    deploy = render.deployment(OWNER, spec(), decision())
    ready = st.with_ready([], deploy, "t", 3)[0]
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "Progressing",
        "0/2 replicas ready (team/llama)",
    )
    deploy["status"] = {"readyReplicas": 2}
    assert st.with_ready([], deploy, "t", 3)[0].status == "True"


def test_condition_messages_are_cut_to_200_characters_with_an_ellipsis() -> None:
    error = (
        "HTTPConnectionPool(host='127.0.0.1', port=9090): Max retries exceeded with url: /api/v1/query?query="
        + "sum%28rate%28DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION%7Bnamespace%3D%22team%22%7D%5B1m%5D%29%29" * 5
    )
    [cond] = st.set_condition([], api.ConditionType.METRICS_AVAILABLE, False, "Down", error, "t", 1)
    assert len(cond.message) == st.MESSAGE_MAX
    assert cond.message.endswith("\u2026")
    assert cond.message.startswith("HTTPConnectionPool(host='127.0.0.1', port=9090)")
    assert st.short("fits\nas it is") == "fits as it is"


def test_budget_met_is_unknown_until_power_or_energy_was_measured() -> None:
    s = spec(budget={"energyKwh": 40})
    d = Decision("bf16", 2, PowerSetting(), None, "planned")
    assert st.budget_condition(s, d, 0.0, 0.0, None, measured=False) == (
        None,
        "NoMetrics",
        "no power or energy measured yet for this GreenModel's GPUs",
    )
    met, reason, message = st.budget_condition(s, d, 1.25, 0.0, 800.0, measured=True)
    assert (met, reason) == (True, "WithinBudget")
    assert message == "1.25 of 40 kWh used this 24h period"
    met, reason, message = st.budget_condition(spec(), d, 1.25, 0.0, 800.0, measured=True)
    assert (met, reason) == (True, "NoBudget") and message
    over = Decision("bf16", 2, PowerSetting(), None, "budget breached: 900 W > 500 W allowed", False)
    assert st.budget_condition(s, over, 1.25, 0.0, 900.0, measured=True) == (
        False,
        "BudgetExceeded",
        "budget breached: 900 W > 500 W allowed",
    )


# ------------------------------------------------------------------------------------------------ fields


def test_same_decision_compares_what_the_agent_and_kubectl_read() -> None:
    recorded = st.decision_record(decision(limit=400.0), "t")
    assert st.same_decision(decision(limit=400.0), recorded)
    assert not st.same_decision(decision(limit=350.0), recorded)
    assert not st.same_decision(decision(), None)


TIER = FastTier(
    efficient=PowerSetting(limit_w=400.0),
    burst=PowerSetting(locked_clock_mhz=1980),
    rule=SwitchRule(burst_at_waiting=1.0, hold_s=3.0),
)


def test_fast_tier_status_is_the_api_model_on_the_wire() -> None:
    decided = Decision("bf16", 2, PowerSetting(limit_w=400.0), None, "r", fast_tier=TIER)
    status = st.fast_tier_status(decided)
    assert status is not None
    assert status.model_dump(by_alias=True, mode="json") == {
        "efficient": {"powerLimitW": 400.0, "lockedClockMhz": None},
        "burst": {"powerLimitW": None, "lockedClockMhz": 1980},
        "rule": {"burstAtWaiting": 1.0, "holdSeconds": 3.0},
    }
    assert st.fast_tier_status(Decision("bf16", 2, PowerSetting(), None, "r")) is None  # null: no switching


def test_a_carried_decision_keeps_the_recorded_fast_tier_only_while_it_fits() -> None:
    carried = Decision("bf16", 2, PowerSetting(limit_w=400.0), None, "r")
    recorded = st.fast_tier_status(
        Decision("bf16", 2, PowerSetting(limit_w=400.0), None, "r", fast_tier=TIER)
    )
    assert st.carried_fast_tier(spec(), carried, recorded) == recorded
    assert st.carried_fast_tier(spec(), carried, None) is None
    assert st.carried_fast_tier(spec(power={"mode": "Off"}), carried, recorded) is None
    other = Decision("bf16", 2, PowerSetting(limit_w=350.0), None, "r")  # not the recorded efficient setting
    assert st.carried_fast_tier(spec(), other, recorded) is None
    # A fastTier edited into garbage reads as none (and the carried decision keeps no burst setting).
    assert st.read({"fastTier": {"efficient": "garbage"}}).fast_tier is None


def test_observed_status_carries_attainment_and_the_peak_queue() -> None:
    obs = Observation(
        time=0.0, power_w=800.0, output_tokens_per_s=400.0, attainment=0.9876543, peak_waiting_requests=12.0
    )
    observed = st.observed_status(obs, T).model_dump(by_alias=True, mode="json")
    assert observed["attainment"] == 0.987654 and observed["peakWaitingRequests"] == 12.0
    assert observed["joulesPerToken"] == 2.0 and observed["time"] == T
    unknown = st.observed_status(Observation(time=0.0), "t")
    assert unknown.attainment is None and unknown.peak_waiting_requests is None  # null, never 0


def test_texts_for_the_printer_columns() -> None:
    assert st.replicas_text(3, 4) == "3/4"
    assert st.replicas_text(None, 2) == "0/2"
    assert st.energy_text(1.2, 40.0) == "1.2/40 kWh"
    assert st.energy_text(0.000123, None) == "0.00012 kWh"
    assert st.energy_text(0.0, 0.5) == "0/0.5 kWh"
    assert st.decided(Decision("bf16", 1, PowerSetting(limit_w=300.0), None, "")).setting_text == "300 W/GPU"


# ----------------------------------------------------------------------------------------- read, patch


def test_a_patch_writes_the_fields_set_and_nulls_the_ones_set_to_none() -> None:
    written = st.patch(st.decided(decision(), fast_tier=None))
    assert written == {
        "variant": "bf16",
        "replicas": 2,
        "powerLimitW": None,
        "lockedClockMhz": None,
        "settingText": "default power",
        "fastTier": None,  # deletes a fast tier the agent would otherwise keep switching to
    }
    assert "lastDecision" not in written and "conditions" not in written  # other writers' fields


def test_merged_is_what_the_merge_patch_leaves_stored() -> None:
    stored = api.GreenModelStatus(last_decision=st.decision_record(decision(), T), replicas=5)
    after = st.merged(stored, st.decided(decision(replicas=3)))
    assert after.replicas == 3 and after.last_decision == stored.last_decision


def test_reading_keeps_what_parses_and_drops_what_a_hand_edit_broke() -> None:
    good = st.patch(st.invalid(api.GreenModelStatus(), "bad spec", T, 2))["conditions"][0]
    raw: dict[str, Any] = {
        "replicas": "three",  # broken
        "variant": "bf16",
        "conditions": [good, {"type": "Ready", "status": "Maybe"}],
        "lastDecision": st.decision_record(decision(), T).model_dump(by_alias=True, mode="json"),
        "futureField": {"from": "a newer operator"},
    }
    status = st.read(raw)
    assert status.replicas is None and status.variant == "bf16"
    assert [c.type for c in status.conditions] == ["SpecValid"]
    assert status.last_decision is not None and status.last_decision.variant == "bf16"
    assert st.read(None) == api.GreenModelStatus()


def test_reading_keeps_the_items_of_a_list_that_parse() -> None:
    status = st.read({"boundBy": ["team", 3], "replicas": [2], "variant": "bf16"})
    assert status.bound_by == ["team"] and status.replicas is None and status.variant == "bf16"
    # Written back, a list is written whole: a dropped item does not come back.
    assert st.patch(api.GreenModelStatus(bound_by=status.bound_by)) == {"boundBy": ["team"]}


def test_the_reader_view_ignores_accounting_and_condition_messages() -> None:
    base = {
        "variant": "bf16",
        "observed": {"powerW": 1.0},
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    moved = {**base, "observed": {"powerW": 2.0}, "period": {"energyKwh": 1.0}}
    assert st.reader_view(base) == st.reader_view(moved)
    assert st.reader_view(base) != st.reader_view({**base, "variant": "int4"})
    assert st.reader_view({**base, "fastTier": None}) == st.reader_view(base)  # null = absent


# ------------------------------------------------------------------------------------------- the tick


def test_the_tick_records_a_new_decision_and_says_what_it_saw() -> None:
    s = make_spec(budget={"energyKwh": 40})
    source = fp16_cheaper()
    first = initial_decision(s, source)
    current = api.GreenModelStatus(last_decision=st.decision_record(first, T), ready_replicas=1)
    obs = Observation(time=60.0, prompt_tokens_per_s=5000.0, output_tokens_per_s=1500.0, power_w=1400.0)
    result = tick(s, initial_state(s, 0.0, first), obs, MetricsVerdict.of(obs), 60.0, source, current, 4)
    assert result.changed == (not st.same_decision(result.decision, current.last_decision))
    status = result.status
    assert (status.variant, status.replicas) == (result.decision.variant, result.decision.replicas)
    assert status.observed.power_w == 1400.0 and status.observed.time == stamp(60.0)
    assert status.replicas_text == f"1/{result.decision.replicas}"
    assert status.controller_state == result.state.to_status()
    kinds = {c.type: (c.status, c.reason, c.observed_generation) for c in status.conditions}
    assert kinds["MetricsAvailable"] == ("True", "Observed", 4)
    assert kinds["BudgetMet"][0] in ("True", "False")
    if result.changed:
        assert status.last_decision is not None and status.last_decision.variant == result.decision.variant
    else:
        assert "last_decision" not in status.model_fields_set


@pytest.mark.parametrize(
    ("was", "verdict", "events"),
    [
        (None, MetricsVerdict.of(Observation(time=0.0)), []),  # pods starting: no Warning yet
        (
            "True",
            MetricsVerdict.unavailable("refused " + "%7B" * 600),
            [Notice(True, "MetricsUnavailable", "")],
        ),
        ("False", MetricsVerdict.unavailable("refused"), []),  # still down: said once
        ("False", MetricsVerdict(True, "Observed", ""), [Notice(False, "MetricsAvailable", "")]),
    ],
)
def test_metrics_events_only_on_a_transition(
    was: str | None, verdict: MetricsVerdict, events: list[Notice]
) -> None:
    s = make_spec()
    conditions = (
        []
        if was is None
        else st.set_condition([], api.ConditionType.METRICS_AVAILABLE, was == "True", "X", "", T, 1)
    )
    current = api.GreenModelStatus(conditions=conditions)
    d = initial_decision(s, fp16_cheaper())
    _, notices = loop_status(
        s, initial_state(s, 0.0, d), d, False, Observation(time=0.0), verdict, 0.0, current, 1
    )
    assert [(n.warning, n.reason) for n in notices] == [(e.warning, e.reason) for e in events]
    assert all(len(n.message) <= st.EVENT_MESSAGE_MAX for n in notices)  # the API server refuses more


def test_budget_events_on_breach_and_recovery_only() -> None:
    s = make_spec(budget={"powerW": 500})
    ok = Decision("fp16", 1, PowerSetting(), 400.0, "fits")
    over = Decision("fp16", 1, PowerSetting(), 900.0, "900 W > 500 W", budget_met=False)
    state = initial_state(s, 0.0, ok)
    measured = Observation(time=0.0, power_w=450.0)
    verdict = MetricsVerdict(True, "Observed", "")

    def after(decided: Decision, current: api.GreenModelStatus) -> tuple[api.GreenModelStatus, list[str]]:
        status, notices = loop_status(s, state, decided, False, measured, verdict, 0.0, current, 1)
        return status, [n.reason for n in notices if n.reason.startswith("Budget")]

    met, first = after(ok, api.GreenModelStatus())
    assert first == []  # no event for a first "met"
    breached, events = after(over, met)
    assert events == ["BudgetExceeded"]
    assert after(over, breached)[1] == []
    assert after(ok, breached)[1] == ["BudgetMet"]
