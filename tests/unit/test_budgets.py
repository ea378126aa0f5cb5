"""The operator's EnergyBudget shell (controller/budgets.py) without kopf: what members read in their tick
(tightest allocation wins, boundBy), the period account (counting, rolls, departures, resuming from the
status after a restart), rises held until cuts are applied, the status and its conditions and Events."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api
from greenllm.api.timestamps import rfc3339
from greenllm.calibration import default_energy_model
from greenllm.controller import budgets
from greenllm.controller.exporter import OperatorMetrics
from greenllm.controller.memo import OperatorMemo
from greenllm.core import budget_book as bb
from greenllm.core import budget_status as bs
from greenllm.core import status as core_status
from greenllm.core.allocation import Allocation
from greenllm.core.decision import Decision, Demand, Observation
from greenllm.core.performance import PowerSetting
from greenllm.core.step import LoopState

T0 = 1_800_000_000.0
NS = "team"


def gm_spec(**extra: Any) -> api.GreenModelSpec:
    body: dict[str, Any] = {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "paramsBillions": 8},
        "variants": [{"name": "bf16", "precision": "bf16", "image": "vllm"}],
        **extra,
    }
    return api.GreenModelSpec.model_validate(body)


def budget_spec(**extra: Any) -> eb.EnergyBudgetSpec:
    return eb.EnergyBudgetSpec.model_validate({"powerW": 1000, **extra})


def memo_with(book: bb.Book) -> OperatorMemo:
    return OperatorMemo(budgets=book)


def report(
    energy: float, *, start: float = T0, at: float = T0 + 60, power: float | None = 300.0
) -> bb.MemberReport:
    return bb.MemberReport(
        spec=gm_spec(),
        time=at,
        demand=Demand(1000.0, 100.0),
        power_w=power,
        period_start=start,
        energy_kwh=energy,
        carbon_grams=energy * 400,
        intensity_g_per_kwh=400.0,
        own_allowed_w=None,
    )


# ------------------------------------------------------------------------------ what members read


def test_without_budgets_the_spec_is_unchanged() -> None:
    spec = gm_spec()
    assert budgets.effective_spec(OperatorMemo(), NS, "a", spec, T0) is spec
    assert budgets.effective_spec(memo_with(bb.Book()), NS, "a", spec, T0) is spec


def test_the_tightest_budget_wins_and_names_itself() -> None:
    book = bb.Book()
    book.grants[(NS, "wide")] = bb.Grant("wide", {"a": 900.0, "b": 100.0})
    book.grants[(NS, "narrow")] = bb.Grant("narrow", {"a": 400.0})
    book.grants[("elsewhere", "x")] = bb.Grant("x", {"a": 10.0})  # another namespace's "a"
    spec = gm_spec(budget={"energyKwh": 5})
    lowered = budgets.effective_spec(memo_with(book), NS, "a", spec, T0)
    assert lowered.budget.power_w == 400.0
    assert lowered.budget.energy_kwh == 5  # its own energy budget still paces it
    assert book.applied[(NS, "a")] == 400.0
    assert bb.bound_by(book.grants_for(NS, "a"), None) == ["narrow"]
    # Its own powerW tighter than every budget: unchanged, and no budget binds it.
    own = gm_spec(budget={"powerW": 300})
    assert budgets.effective_spec(memo_with(book), NS, "a", own, T0) is own
    assert bb.bound_by(book.grants_for(NS, "a"), 300.0) == []


def test_the_paced_energy_reaches_the_planner_as_an_average_allowance_not_as_powerw() -> None:
    # Two budgets: one with powerW and energy (a cap and an average), one with energy only. The caps
    # lower budget.powerW; the averages reach the planner (core.step's extra_allowance_w), the tightest.
    book = bb.Book()
    book.grants[(NS, "both")] = bb.Grant("both", {"a": 900.0}, average_w={"a": 350.0})
    book.grants[(NS, "energy")] = bb.Grant("energy", {"a": math.inf}, average_w={"a": 500.0})
    memo = memo_with(book)
    assert budgets.effective_spec(memo, NS, "a", gm_spec(), T0).budget.power_w == 900.0
    assert budgets.average_allowance_w(memo, NS, "a") == 350.0
    assert book.average_grants_for(NS, "a") == [("both", 350.0), ("energy", 500.0)]
    assert budgets.average_allowance_w(memo, NS, "b") is None  # not covered
    assert budgets.average_allowance_w(OperatorMemo(), NS, "a") is None  # budgets not loaded
    # A powerW-only budget grants no average: its members plan as before.
    only_cap = bb.Book()
    only_cap.grants[(NS, "cap")] = bb.Grant("cap", {"a": 900.0})
    assert budgets.average_allowance_w(memo_with(only_cap), NS, "a") is None


def test_equal_tightest_budgets_both_bind_and_no_limit_binds_nothing() -> None:
    assert bb.bound_by([("x", 500.0), ("y", 500.0), ("z", 900.0)], None) == ["x", "y"]
    assert bb.bound_by([("x", math.inf)], None) == []
    assert bb.tightest_grant([("x", math.inf)]) is None
    assert bb.bound_by([("x", 500.0)], 600.0) == ["x"]


def test_a_member_cut_to_nothing_is_lowered_to_zero() -> None:
    book = bb.Book()
    book.grants[(NS, "b")] = bb.Grant("b", {"a": 0.0})
    assert budgets.effective_spec(memo_with(book), NS, "a", gm_spec(), T0).budget.power_w == 0.0


def test_record_member_keeps_the_own_spec_and_the_planned_demand() -> None:
    book = bb.Book()
    book.grants[(NS, "b")] = bb.Grant("b", {"a": 400.0})
    own = gm_spec(budget={"powerW": 2000})
    lowered = budgets.effective_spec(memo_with(book), NS, "a", own, T0)
    planned = Demand(5000.0, 700.0)
    decision = Decision("bf16", 1, PowerSetting(), 380.0, "r", planned_demand=planned)
    observation = Observation(time=T0 + 5, prompt_tokens_per_s=100.0, output_tokens_per_s=10.0, power_w=350.0)
    state = LoopState(period_start=T0, energy_kwh=0.5, carbon_grams=200.0, carbon_intensity_g_per_kwh=400.0)
    budgets.record_member(memo_with(book), NS, "a", lowered, decision, observation, state)
    got = book.reports[(NS, "a")]
    assert got.spec is own  # the frontier is the member's own, not the one the budget lowered
    assert got.demand == planned
    assert got.power_w == 350.0
    assert got.own_allowed_w == 2000.0
    assert (got.energy_kwh, got.carbon_grams, got.period_start) == (0.5, 200.0, T0)
    # No demand planned or observed later: the last known demand stays.
    quiet = Decision("bf16", 1, PowerSetting(), None, "r")
    budgets.record_member(memo_with(book), NS, "a", lowered, quiet, Observation(time=T0 + 10), state)
    assert book.reports[(NS, "a")].demand == planned
    assert book.reports[(NS, "a")].power_w == 350.0  # the last measured power, seconds old


# ------------------------------------------------------------------------------ rises wait for cuts


def test_a_rise_waits_until_the_cut_member_has_lowered() -> None:
    previous = {"a": 700.0, "b": 300.0}
    target = {"a": 300.0, "b": 700.0}
    # b's rise waits while a still plans with 700 W ...
    assert bb.in_force(target, previous, {"a": 700.0, "b": 300.0}) == {"a": 300.0, "b": 300.0}
    # ... and is granted once a has ticked with its cut.
    assert bb.in_force(target, previous, {"a": 300.0, "b": 300.0}) == target
    # A member bound tighter elsewhere counts as lowered.
    assert bb.in_force(target, previous, {"a": 250.0}) == target
    # New members get their target at once; no previous allocation: the target.
    assert bb.in_force({"a": 300.0, "c": 200.0}, {"a": 700.0}, {}) == {"a": 300.0, "c": 200.0}
    assert bb.in_force(target, None, {}) == target


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcd"), st.floats(0, 2000), min_size=1),
    st.dictionaries(st.sampled_from("abcde"), st.floats(0, 2000)),
    st.dictionaries(st.sampled_from("abcde"), st.floats(0, 2000)),
)
def test_in_force_never_exceeds_the_target(
    target: dict[str, float], previous: dict[str, float], applied: dict[str, float]
) -> None:
    got = bb.in_force(target, previous, applied)
    assert set(got) == set(target)
    assert all(got[n] <= target[n] for n in target)
    assert sum(got.values()) <= sum(target.values()) + 1e-6


# ------------------------------------------------------------------------------------- the account


def test_the_account_counts_what_members_used_since_the_last_count() -> None:
    ledger = bs.Ledger(period_start=T0)
    ledger.count("a", report(1.0))  # first sight: what it used before joining is its own
    assert ledger.energy_kwh == 0.0
    ledger.count("a", report(1.5))
    ledger.count("a", report(1.5))  # counted once
    assert ledger.energy_kwh == pytest.approx(0.5)
    assert ledger.carbon_grams == pytest.approx(200.0)
    # The member's own period rolled: its new period's energy counts from zero.
    ledger.count("a", report(0.2, start=T0 + 3600))
    assert ledger.energy_kwh == pytest.approx(0.7)
    assert ledger.members["a"].energy_kwh == pytest.approx(0.7)
    # A counter that went down within one period is not negative energy.
    ledger.count("a", report(0.1, start=T0 + 3600))
    assert ledger.energy_kwh == pytest.approx(0.7)


def test_a_member_that_leaves_keeps_its_energy_until_the_period_ends() -> None:
    ledger = bs.Ledger(period_start=T0)
    ledger.count("a", report(0.0))
    ledger.count("a", report(2.0))
    ledger.count("b", report(0.0))
    ledger.leave("a")
    assert ledger.energy_kwh == pytest.approx(2.0)
    assert ledger.members["a"].present is False
    assert not ledger.roll(24 * 3600, T0 + 100)
    assert ledger.roll(24 * 3600, T0 + 24 * 3600 + 5)
    assert ledger.period_start == T0 + 24 * 3600
    assert ledger.energy_kwh == 0.0
    assert set(ledger.members) == {"b"}  # the one that left is forgotten; b keeps its reading
    assert ledger.members["b"].reading is not None


def test_the_account_resumes_from_the_status_after_a_restart() -> None:
    spec = budget_spec(energyKwh=10)
    ledger = bs.Ledger(period_start=T0)
    ledger.count("a", report(0.0))
    ledger.count("a", report(1.0))
    ledger.count("b", report(0.0))
    ledger.count("b", report(0.4))
    ledger.leave("b")
    status = _status(spec, ledger, [_candidate("a")])
    resumed = bs.Ledger.from_status(bs.read(status))
    assert resumed.period_start == pytest.approx(T0, abs=1e-3)
    assert resumed.energy_kwh == pytest.approx(1.4)
    assert resumed.members["b"].present is False and resumed.members["b"].energy_kwh == pytest.approx(0.4)
    # The member's next report adds only what it used since the reading the status kept.
    resumed.count("a", report(1.25))
    assert resumed.energy_kwh == pytest.approx(1.65)
    assert bs.Ledger.from_status(bs.read({"period": {"energyKwh": "lots"}})).energy_kwh == 0.0


# ------------------------------------------------------------------------------------ the status


def _candidate(name: str, **extra: Any) -> bs.Candidate:
    return bs.Candidate(name, gm_spec(**extra), ())


def _status(
    spec: eb.EnergyBudgetSpec,
    ledger: bs.Ledger,
    candidates: list[bs.Candidate],
    *,
    allocation: Allocation | None = None,
    allowance: float | None = 1000.0,
    overlaps: tuple[str, ...] = (),
    conditions: list[dict[str, Any]] | None = None,
    reports: dict[str, bb.MemberReport | None] | None = None,
) -> dict[str, Any]:
    grant = None
    if allocation is not None:
        grant = bb.Grant("team", {k.split("/")[1]: w for k, w in allocation.power_w.items()})
    built = bs.build(
        namespace=NS,
        spec=spec,
        candidates=candidates,
        reports=reports or {c.name: None for c in candidates},
        allocation=allocation,
        grant=grant,
        allowance_w=allowance,
        ledger=ledger,
        overlaps=list(overlaps),
        bound={},
        notes=[],
        budget_name="team",
        conditions=_conds({"conditions": conditions or []}),
        stamp=rfc3339(T0),
        generation=1,
    )
    status = core_status.patch(built)  # what the daemon writes
    assert eb.EnergyBudgetStatus.model_validate(status) == built
    return status


def _conds(status: dict[str, Any]) -> list[api.Condition]:
    return bs.read(status).conditions


def _cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == kind)
    return found


def test_a_hand_broken_row_is_dropped_and_the_rest_of_the_account_resumes() -> None:
    ledger = bs.Ledger(period_start=T0)
    for name, used in (("a", 1.0), ("b", 0.5)):
        ledger.count(name, report(0.0))
        ledger.count(name, report(used))
    status = _status(budget_spec(energyKwh=10), ledger, [_candidate("a"), _candidate("b")])
    status["members"][1]["energyKwh"] = "lots"  # an edit of b's row
    status["conditions"].append({"type": "Ready", "status": "Maybe"})
    stored = bs.read(status)
    assert [m.name for m in stored.members] == ["a"]
    assert [c.type for c in stored.conditions] == ["Ready", "Overcommitted", "BudgetMet"]
    resumed = bs.Ledger.from_status(stored)
    assert resumed.energy_kwh == pytest.approx(1.5) and set(resumed.members) == {"a"}
    assert resumed.members["a"].reading == ledger.members["a"].reading


def test_an_invalid_spec_writes_ready_false_and_leaves_the_account() -> None:
    allocation = Allocation({f"{NS}/a": 500.0}, {f"{NS}/a": 1.0}, False, ())
    ledger = bs.Ledger(period_start=T0, energy_kwh=0.3, last_sample_time=T0 + 5)
    stored = bs.read(_status(budget_spec(), ledger, [_candidate("a")], allocation=allocation))
    written = core_status.patch(bs.spec_invalid(stored, "powerW: must be > 0", rfc3339(T0 + 60), 2))
    assert set(written) == {"observedGeneration", "conditions"}  # the period account is not touched
    ready = next(c for c in written["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "False",
        "SpecInvalid",
        rfc3339(T0 + 60),
    )
    assert "powerW" in ready["message"]
    assert [c["type"] for c in written["conditions"]] == ["Ready", "Overcommitted", "BudgetMet"]
    assert [(t, r) for t, r, _ in bs.transition_events(stored.conditions, _conds(written))] == [
        ("Warning", "SpecInvalid")
    ]


def test_a_selector_matching_nothing_is_not_ready_and_says_which() -> None:
    spec = budget_spec(selector={"matchLabels": {"team": "nobody"}})
    status = _status(spec, bs.Ledger(period_start=T0), [])
    ready = _cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoMembers")
    assert "team=nobody" in ready["message"] and NS in ready["message"]
    assert status["memberCount"] == 0
    assert _cond(status, "BudgetMet")["status"] == "Unknown"
    everyone = _status(budget_spec(), bs.Ledger(period_start=T0), [])
    assert "an empty selector" in _cond(everyone, "Ready")["message"]


def test_overcommitted_names_the_degraded_members_in_order() -> None:
    allocation = Allocation(
        {f"{NS}/a": 700.0, f"{NS}/b": 300.0},
        {f"{NS}/a": 500.0, f"{NS}/b": 0.0},
        True,
        ((f"{NS}/b", "priority 0: its minimum 400 W does not fit"),),
    )
    status = _status(
        budget_spec(),
        bs.Ledger(period_start=T0),
        [_candidate("a"), _candidate("b")],
        allocation=allocation,
    )
    over = _cond(status, "Overcommitted")
    assert (over["status"], over["reason"]) == ("True", "MinimumsExceedBudget")
    assert "b (priority 0: its minimum 400 W does not fit)" in over["message"]
    assert status["degraded"] == [{"name": "b", "reason": "priority 0: its minimum 400 W does not fit"}]
    assert {m["name"]: m["allocatedPowerW"] for m in status["members"]} == {"a": 700.0, "b": 300.0}
    assert status["powerText"] == "1 kW/1 kW"


def test_the_status_says_which_part_is_the_cap_and_which_the_average() -> None:
    peak = Allocation({f"{NS}/a": 700.0, f"{NS}/b": 300.0}, {f"{NS}/a": 90.0, f"{NS}/b": 40.0}, False, ())
    average = Allocation({f"{NS}/a": 250.0, f"{NS}/b": 150.0}, {f"{NS}/a": 80.0, f"{NS}/b": 50.0}, False, ())
    grant = bb.Grant("team", {"a": 700.0, "b": 300.0}, average_w={"a": 250.0, "b": 150.0})

    def build(average_allocation: Allocation) -> eb.EnergyBudgetStatus:
        return bs.build(
            namespace=NS,
            spec=budget_spec(energyKwh=10),
            candidates=[_candidate("a"), _candidate("b")],
            reports={"a": None, "b": None},
            allocation=peak,
            grant=grant,
            allowance_w=1000.0,
            ledger=bs.Ledger(period_start=T0),
            overlaps=[],
            bound={},
            notes=[],
            budget_name="team",
            conditions=[],
            stamp=rfc3339(T0),
            generation=1,
            average_allocation=average_allocation,
            average_allowance_w=417.0,
        )

    built = build(average)
    status = core_status.patch(built)
    assert eb.EnergyBudgetStatus.model_validate(status) == built
    rows = {m["name"]: m for m in status["members"]}
    assert {n: (r["allocatedPowerW"], r["allocatedAverageW"]) for n, r in rows.items()} == {
        "a": (700.0, 250.0),
        "b": (300.0, 150.0),
    }
    # A member serves what both pay for: the smaller of the two allocations' served demand.
    assert {n: r["servedTokensPerSecond"] for n, r in rows.items()} == {"a": 80.0, "b": 40.0}
    assert (status["allowancePowerW"], status["allocatedPowerW"]) == (1000.0, 1000.0)
    assert (status["allowanceAverageW"], status["allocatedAverageW"]) == (417.0, 400.0)
    assert status["powerText"] == "1 kW/1 kW, avg 400 W/417 W"
    ready = _cond(status, "Ready")
    assert ready["reason"] == "Allocated"
    assert "1000 W of powerW 1000 W (peak" in ready["message"]
    assert "400 W of 417 W of energy/carbon paced (average" in ready["message"]
    # The average allocation overcommitted alone: Overcommitted says so, with what is allowed.
    cut = Allocation(average.power_w, average.served, True, ((f"{NS}/b", "its minimum does not fit"),))
    over = core_status.patch(build(cut))
    message = _cond(over, "Overcommitted")["message"]
    assert _cond(over, "Overcommitted")["status"] == "True"
    assert "powerW 1000 W, energy/carbon paced 417 W average" in message and "b (its minimum" in message


def test_budget_met_follows_energy_and_power() -> None:
    spec = budget_spec(energyKwh=1.0)
    ledger = bs.Ledger(period_start=T0, energy_kwh=0.4, last_sample_time=T0 + 5)
    ok = _status(spec, ledger, [_candidate("a")], reports={"a": report(0.0, power=600.0)})
    assert (_cond(ok, "BudgetMet")["status"], _cond(ok, "BudgetMet")["reason"]) == ("True", "WithinBudget")
    assert ok["remaining"]["energyKwh"] == pytest.approx(0.6)
    ledger.energy_kwh = 1.0
    spent = _status(spec, ledger, [_candidate("a")], reports={"a": report(0.0, power=600.0)})
    assert _cond(spent, "BudgetMet")["reason"] == "EnergyExhausted"
    assert spent["remaining"]["energyKwh"] == 0.0
    hot = _status(budget_spec(), ledger, [_candidate("a")], reports={"a": report(0.0, power=1200.0)})
    assert (_cond(hot, "BudgetMet")["status"], _cond(hot, "BudgetMet")["reason"]) == (
        "False",
        "PowerExceeded",
    )


def test_overlaps_are_reported() -> None:
    allocation = Allocation({f"{NS}/a": 500.0}, {f"{NS}/a": 1.0}, False, ())
    status = _status(
        budget_spec(),
        bs.Ledger(period_start=T0),
        [_candidate("a")],
        allocation=allocation,
        overlaps=("other",),
    )
    assert status["overlaps"] == ["other"]
    assert "also covered by other" in _cond(status, "Ready")["message"]


def test_events_mark_condition_transitions_only() -> None:
    ledger = bs.Ledger(period_start=T0)
    none = _status(budget_spec(selector={"matchLabels": {"t": "x"}}), ledger, [])
    events = bs.transition_events([], _conds(none))
    assert ("Warning", "NoMembers") in [(t, r) for t, r, _ in events]
    assert bs.transition_events(_conds(none), _conds(none)) == []
    allocation = Allocation({f"{NS}/a": 500.0}, {f"{NS}/a": 1.0}, False, ())
    ready = _status(
        budget_spec(), ledger, [_candidate("a")], allocation=allocation, conditions=none["conditions"]
    )
    assert [(t, r) for t, r, _ in bs.transition_events(_conds(none), _conds(ready))] == [
        ("Normal", "Allocated")
    ]
    # The first good state of a new budget posts nothing.
    fresh = _status(budget_spec(), ledger, [_candidate("a")], allocation=allocation)
    assert bs.transition_events([], _conds(fresh)) == []


def test_only_what_readers_act_on_forces_a_write() -> None:
    allocation = Allocation({f"{NS}/a": 500.0}, {f"{NS}/a": 1.0}, False, ())
    ledger = bs.Ledger(period_start=T0)
    first = _status(
        budget_spec(), ledger, [_candidate("a")], allocation=allocation, reports={"a": report(0.1)}
    )
    ledger.energy_kwh = 0.3
    ledger.count("a", report(0.2))
    later = _status(
        budget_spec(),
        ledger,
        [_candidate("a")],
        allocation=allocation,
        reports={"a": report(0.2, power=350.0)},
    )
    assert bs.reader_view(first) == bs.reader_view(later)  # accounting only
    moved = Allocation({f"{NS}/a": 450.0}, {f"{NS}/a": 1.0}, False, ())
    again = _status(budget_spec(), ledger, [_candidate("a")], allocation=moved)
    assert bs.reader_view(first) != bs.reader_view(again)


def test_members_are_selected_by_labels_and_invalid_specs_are_noted() -> None:
    entries = [
        {"name": "b", "labels": {"team": "x"}},
        {"name": "a", "labels": {"team": "x"}},
        {"name": "c", "labels": {"team": "y"}},
        {"name": "d", "labels": {"team": "x"}},
    ]
    specs: dict[str, api.GreenModelSpec | None] = {"a": gm_spec(priority=3), "b": gm_spec(), "d": None}
    found, notes = budgets.members_of(
        eb.LabelSelector.model_validate({"matchLabels": {"team": "x"}}), entries, specs
    )
    assert [c.name for c in found] == ["a", "b"]
    assert found[0].spec.priority == 3
    assert notes == ["d: invalid spec, not allocated"]
    assert budgets.budget_interval_s(found) == 15.0
    assert budgets.budget_interval_s([]) == budgets.DEFAULT_INTERVAL_S


class FakeKube:
    """The one read member_specs makes: a GreenModel by name (a stand-in for the API server)."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    async def get_green_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        return self.objects.get(name)


async def test_specs_come_from_ticks_else_one_read_per_generation() -> None:
    book = bb.Book()
    ticked = gm_spec(priority=1)
    book.own_specs[(NS, "a")] = ticked
    kube = FakeKube(
        {"b": {"spec": gm_spec(priority=2).model_dump(by_alias=True)}, "c": {"spec": {"model": {}}}}
    )
    entries = [
        {"name": "a", "labels": {}, "generation": 1},
        {"name": "b", "labels": {}, "generation": 1},
        {"name": "c", "labels": {}, "generation": 4},
    ]
    selector = eb.LabelSelector()
    specs = await budgets.member_specs(kube, book, NS, selector, entries)  # type: ignore[arg-type]
    assert specs["a"] is ticked and specs["b"] is not None and specs["b"].priority == 2 and specs["c"] is None
    assert kube.reads == ["b", "c"]
    await budgets.member_specs(kube, book, NS, selector, entries)  # type: ignore[arg-type]
    assert kube.reads == ["b", "c"]  # same generations: not read again
    entries[1]["generation"] = 2
    await budgets.member_specs(kube, book, NS, selector, entries)  # type: ignore[arg-type]
    assert kube.reads == ["b", "c", "b"]


def _fields(r: bb.MemberReport) -> dict[str, Any]:
    return {f: getattr(r, f) for f in bb.MemberReport.__dataclass_fields__}


def test_frontiers_come_from_fresh_demand_only() -> None:
    book = bb.Book()
    high = report(0.0, at=T0)
    book.reports[(NS, "a")] = bb.MemberReport(**{**_fields(high), "demand": Demand(60000.0, 1000.0)})
    source = default_energy_model()
    candidates = [_candidate("a", replicas={"min": 1, "max": 8}), _candidate("b")]
    members, reports, notes = budgets.frontier_members(NS, candidates, book, source, T0 + 1)
    assert notes == [] and reports["b"] is None
    by_key = {m.key: m for m in members}
    a = by_key[f"{NS}/a"].frontier
    assert len(a) > 1 and a[-1].served == pytest.approx(1000.0)  # more power serves more of its demand
    assert by_key[f"{NS}/b"].frontier[-1].served == 0.0  # no report: no demand, its minimum only
    # An hour later the report is stale (the member's loop stopped): no demand moves watts to it.
    members, _, _ = budgets.frontier_members(NS, candidates, book, source, T0 + 3600)
    assert {m.key: m for m in members}[f"{NS}/a"].frontier[-1].served == 0.0


def test_the_warm_floor_a_member_saw_prices_its_frontier() -> None:
    """record_member keeps the floor's inputs of the tick (LoopState.floor and the observation, whose
    burst sizes the warm floor) and frontier_members prices the member's configurations with it: the
    configuration serving all of the demand then keeps more replicas at their peak, so more watts (the
    minimum is offered without its floor, which the cap cuts first: the demand here needs 2 replicas)."""
    book = bb.Book()
    spec = gm_spec(replicas={"min": 1, "max": 8})
    state = LoopState(period_start=T0)
    decision = Decision("bf16", 1, PowerSetting(), 300.0, "r", planned_demand=Demand(40000.0, 100.0))
    source = default_energy_model()
    tops = []
    for arrivals in (None, 100.0):
        observation = Observation(
            time=T0,
            prompt_tokens_per_s=40000.0,
            output_tokens_per_s=100.0,
            requests_per_s=20.0,
            peak_arrivals=arrivals,
        )
        budgets.record_member(memo_with(book), NS, "a", spec, decision, observation, state)
        got = book.reports[(NS, "a")].warm
        assert got is not None and got.observation is observation and got.state == state.floor
        members, _, _ = budgets.frontier_members(
            NS, [_candidate("a", replicas={"min": 1, "max": 8})], book, source, T0 + 1
        )
        tops.append(members[0].frontier[-1])
    assert tops[1].served == pytest.approx(tops[0].served)
    assert tops[1].power_w > tops[0].power_w  # 100 requests at once: more replicas kept warm
    assert tops[0].label == tops[1].label


def test_the_average_frontier_is_priced_at_expected_power() -> None:
    book = bb.Book()
    book.reports[(NS, "a")] = bb.MemberReport(
        **{**_fields(report(0.0, at=T0)), "demand": Demand(60000.0, 1000.0)}
    )
    source = default_energy_model()
    candidates = [_candidate("a", replicas={"min": 1, "max": 8})]
    peak, _, _ = budgets.frontier_members(NS, candidates, book, source, T0 + 1)
    expected, _, _ = budgets.frontier_members(NS, candidates, book, source, T0 + 1, expected=True)
    assert expected[0].frontier[-1].served == pytest.approx(peak[0].frontier[-1].served)
    assert expected[0].frontier[-1].power_w < peak[0].frontier[-1].power_w


def test_recent_demand_is_kept_for_the_scale_down_window() -> None:
    book = bb.Book()
    spec = gm_spec(scaling={"scaleDownStabilization": "30s"})
    state = LoopState(period_start=T0)
    decision = Decision("bf16", 1, PowerSetting(), 300.0, "r")
    for t, out in ((0, 100.0), (20, 300.0), (40, 200.0)):
        observation = Observation(time=T0 + t, prompt_tokens_per_s=1000.0, output_tokens_per_s=out)
        budgets.record_member(memo_with(book), NS, "a", spec, decision, observation, state)
    # The tick 40 s ago fell out of the 30 s window.
    assert [o for _, o in book.reports[(NS, "a")].recent] == [300.0, 200.0]


def _samples(metrics: OperatorMetrics, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels.values()): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_budget_metrics_follow_the_allocation_and_go_with_the_budget() -> None:
    metrics = OperatorMetrics()
    metrics.set_budget(NS, "search", 1000.0, {"a": 700.0, "b": 300.0}, 1.5, 600.0)
    assert _samples(metrics, "greenllm_energybudget_allocated_watts") == {
        (NS, "search", "a"): 700.0,
        (NS, "search", "b"): 300.0,
    }
    assert _samples(metrics, "greenllm_energybudget_allowance_watts") == {(NS, "search"): 1000.0}
    assert _samples(metrics, "greenllm_energybudget_period_energy_kwh") == {(NS, "search"): 1.5}
    # b left, a has no limit (a carbon budget without an intensity): neither has a series.
    metrics.set_budget(NS, "search", None, {"a": math.inf}, 1.6, 640.0)
    assert _samples(metrics, "greenllm_energybudget_allocated_watts") == {}
    assert _samples(metrics, "greenllm_energybudget_allowance_watts") == {}
    metrics.set_budget(NS, "search", 900.0, {"a": 900.0}, 1.7, 680.0)
    metrics.forget_budget(NS, "search")
    for name in (
        "greenllm_energybudget_allocated_watts",
        "greenllm_energybudget_allowance_watts",
        "greenllm_energybudget_period_energy_kwh",
        "greenllm_energybudget_period_carbon_grams",
    ):
        assert _samples(metrics, name) == {}, name
