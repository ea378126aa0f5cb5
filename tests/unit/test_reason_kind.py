"""Decision.kind (api.ReasonKind): every kind from a real planner or step call for a spec that causes it,
its round trip through status.lastDecision, and the operator's bounded metrics for it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from tests.table_source import TableSource
from tests.unit.test_step import CAP, DEFAULT, make_spec, perf

from greenllm.api import v1alpha1 as api
from greenllm.controller.exporter import OperatorMetrics
from greenllm.core import render
from greenllm.core import status as st
from greenllm.core.continuity import adopt_deployed, carried_decision
from greenllm.core.decision import Decision, Demand, Observation, ReasonKind
from greenllm.core.planner import plan
from greenllm.core.step import LoopState, initial_decision, initial_state, plan_step, step

CORE = Path(__file__).resolve().parents[2] / "operator" / "greenllm" / "core"


def fp16_cheaper() -> TableSource:
    return TableSource(
        (DEFAULT,),
        {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0), ("int4", DEFAULT): perf(1000.0, 100.0, 600.0)},
    )


def int4_cheaper(factor: float) -> TableSource:
    return TableSource(
        (DEFAULT,),
        {
            ("fp16", DEFAULT): perf(1000.0, 100.0, 500.0),
            ("int4", DEFAULT): perf(1000.0, 100.0 * factor, 500.0 * factor),
        },
    )


def obs(t: float, out: float | None = 2000.0, **kw: Any) -> Observation:
    return Observation(
        time=t, prompt_tokens_per_s=None if out is None else 0.0, output_tokens_per_s=out, **kw
    )


def started(spec: api.GreenModelSpec, src: TableSource, out: float = 2000.0) -> LoopState:
    state, decision = step(spec, initial_state(spec, 0.0), obs(0.0, out), 0.0, src)
    assert decision.kind is ReasonKind.LEAST_ENERGY
    return state


def in_force(variant: str, replicas: int = 2) -> LoopState:
    return initial_state(make_spec(), 0.0, Decision(variant, replicas, DEFAULT, None, "seed", True))


# ------------------------------------------------------------------------------------------ the planner


def test_least_energy_when_the_cheapest_slo_configuration_fits() -> None:
    spec = make_spec(budget={"powerW": 100000})
    d = plan(spec, Demand(0.0, 2000.0), 100000.0, fp16_cheaper())
    assert (d.variant, d.kind) == ("fp16", ReasonKind.LEAST_ENERGY)
    assert "least power meeting SLOs" in d.reason
    _, first = step(spec, initial_state(spec, 0.0), obs(0.0), 0.0, fp16_cheaper())
    assert first.kind is ReasonKind.LEAST_ENERGY


def test_fixed_power_when_the_spec_sets_the_limit() -> None:
    spec = make_spec(power={"mode": "Fixed", "limitW": 300})
    src = TableSource(
        (CAP,), {("fp16", CAP): perf(800.0, 100.0, 300.0), ("int4", CAP): perf(800.0, 80.0, 280.0)}
    )
    assert plan(spec, Demand(0.0, 2000.0), None, src).kind is ReasonKind.FIXED_POWER
    state, d = step(spec, initial_state(spec, 0.0), obs(0.0), 0.0, src)
    assert (d.setting, d.kind) == (CAP, ReasonKind.FIXED_POWER)
    _, d = step(spec, state, obs(15.0), 15.0, src)
    assert d.kind is ReasonKind.FIXED_POWER


@pytest.mark.parametrize("mode", ["Degrade", "CapReplicas", "Hold"])
def test_budget_binds_whatever_on_exhausted_does(mode: str) -> None:
    current = Decision("fp16", 3, DEFAULT, None, "running", True)
    spec = make_spec(budget={"powerW": 700, "onExhausted": mode})
    d = plan(spec, Demand(0.0, 6000.0), 700.0, fp16_cheaper(), current)
    assert (d.budget_met, d.kind) == (False, ReasonKind.BUDGET_BINDS)
    assert f"onExhausted {mode}" in d.reason
    # The same through the step, with a decision in force (Hold keeps it: the step's own path).
    s = started(spec.model_copy(update={"budget": api.Budget()}), fp16_cheaper())
    _, d = step(spec, s, obs(15.0, 6000.0), 15.0, fp16_cheaper())
    assert (d.budget_met, d.kind) == (False, ReasonKind.BUDGET_BINDS)


def test_slo_unreachable_beyond_replicas_max() -> None:
    spec = make_spec(replicas={"min": 1, "max": 2})
    d = plan(spec, Demand(0.0, 6000.0), None, fp16_cheaper())
    assert (d.replicas, d.kind) == (2, ReasonKind.SLO_UNREACHABLE)
    assert "SLOs unreachable" in d.reason
    s = started(spec, fp16_cheaper(), out=1000.0)
    _, d = step(spec, s, obs(15.0, 6000.0), 15.0, fp16_cheaper())
    assert d.kind is ReasonKind.SLO_UNREACHABLE


def test_slo_unreachable_when_no_variant_can_run() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    nothing = TableSource((DEFAULT,), {})  # no variant meets the TPOT SLO at any setting
    _, d = step(spec, s, obs(15.0), 15.0, nothing)
    assert d.variant == "fp16"  # kept
    assert "no variant can run" in d.reason
    assert d.kind is ReasonKind.SLO_UNREACHABLE


# ------------------------------------------------------------------------------------------ the step


def test_hold_while_a_variant_switch_waits_then_least_energy_when_it_happens() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    for t in (15.0, 150.0):
        s, d = step(spec, s, obs(t), t, int4_cheaper(0.5))
        assert (d.variant, d.kind) == ("fp16", ReasonKind.HOLD)
        assert "pending" in d.reason
    s, d = step(spec, s, obs(315.0), 315.0, int4_cheaper(0.5))
    assert (d.variant, d.kind) == ("int4", ReasonKind.LEAST_ENERGY)  # switched: the plan applied as it is


def test_hold_for_a_saving_under_the_switch_threshold() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    _, d = step(spec, s, obs(15.0), 15.0, int4_cheaper(0.95))
    assert (d.variant, d.kind) == ("fp16", ReasonKind.HOLD)
    assert "switchThreshold" in d.reason


def test_hold_for_a_power_setting_kept_by_hysteresis() -> None:
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "vllm"}])
    s = started(spec, TableSource((DEFAULT, CAP), {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0)}))
    slightly = TableSource(
        (DEFAULT, CAP),
        {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0), ("fp16", CAP): perf(1000.0, 100.0, 480.0)},
    )
    _, d = plan_step(spec, s, obs(15.0), 15.0, slightly)
    assert (d.setting, d.kind) == (DEFAULT, ReasonKind.HOLD)
    assert "kept default power" in d.reason


def test_hold_for_a_scale_up_held_by_the_up_window() -> None:
    spec = make_spec(scaling={"scaleUpStabilization": "1m", "scaleDownStabilization": "5m"})
    s = started(spec, fp16_cheaper())
    _, d = step(spec, s, obs(15.0, 5000.0), 15.0, fp16_cheaper())
    assert (d.replicas, d.kind) == (3, ReasonKind.HOLD)
    assert "scaleUpStabilization" in d.reason


def test_quality_floor_moves_off_the_variant_in_force_at_once() -> None:
    raised = make_spec(slo={"minQuality": 0.95})
    _, d = step(raised, in_force("int4"), obs(15.0), 15.0, int4_cheaper(0.5))
    assert (d.variant, d.kind) == ("fp16", ReasonKind.QUALITY_FLOOR)
    assert "at once" in d.reason
    # Even when the budget binds as well: the floor is why the variant changed now.
    tight = make_spec(slo={"minQuality": 0.95}, budget={"powerW": 10, "onExhausted": "Hold"})
    _, d = step(tight, in_force("int4"), obs(15.0), 15.0, int4_cheaper(0.5))
    assert (d.variant, d.budget_met, d.kind) == ("fp16", False, ReasonKind.QUALITY_FLOOR)
    # Without metrics too: the step repairs the decision and says why.
    _, d = step(raised, in_force("int4"), obs(15.0, out=None), 15.0, int4_cheaper(0.5))
    assert (d.variant, d.kind) == ("fp16", ReasonKind.QUALITY_FLOOR)


def test_a_variant_that_cannot_serve_any_more_is_not_the_quality_floor() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    src = TableSource((DEFAULT,), {("int4", DEFAULT): perf(1000.0, 100.0, 600.0)})  # fp16 now misses TPOT
    _, d = step(spec, s, obs(15.0), 15.0, src)
    assert (d.variant, d.kind) == ("int4", ReasonKind.LEAST_ENERGY)
    assert "at once" in d.reason


def test_burst_when_the_warm_floor_raises_the_replicas() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    _, calm = step(spec, s, obs(15.0, peak_arrivals=0.0), 15.0, fp16_cheaper())
    assert (calm.replicas, calm.kind) == (3, ReasonKind.LEAST_ENERGY)
    _, d = step(spec, s, obs(15.0, peak_arrivals=50.0), 15.0, fp16_cheaper())
    assert d.replicas > 3
    assert "warm floor" in d.reason
    assert d.kind is ReasonKind.BURST


def test_no_metrics_first_held_and_repaired() -> None:
    spec, src = make_spec(), fp16_cheaper()
    assert initial_decision(spec, src).kind is ReasonKind.NO_METRICS
    _, d = step(spec, initial_state(spec, 0.0), obs(0.0, out=None), 0.0, src)
    assert d.kind is ReasonKind.NO_METRICS
    s = started(spec, src)
    _, d = step(spec, s, obs(15.0, out=None, power_w=100.0), 15.0, src)
    assert (d.kind, "metrics missing" in d.reason) == (ReasonKind.NO_METRICS, True)
    only_int4 = make_spec(variants=[{"name": "int4", "precision": "int4", "image": "vllm", "quality": 0.9}])
    _, d = step(only_int4, s, obs(15.0, out=None), 15.0, src)  # removed from the spec: not the floor
    assert (d.variant, d.kind) == ("int4", ReasonKind.NO_METRICS)


def test_every_decision_the_core_builds_says_its_kind() -> None:
    """Decision.kind has a default (old records, tests); the core never relies on it."""
    missing = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            call = (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Decision"
            )
            if call and "kind" not in {k.arg for k in node.keywords}:
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"Decision(...) without kind= at {missing}"


# ------------------------------------------------------------------------------------------ lastDecision


def test_the_kind_round_trips_through_last_decision() -> None:
    spec = make_spec()
    _, d = step(spec, in_force("fp16"), obs(15.0), 15.0, int4_cheaper(0.5))
    assert d.kind is ReasonKind.HOLD
    record = st.decision_record(d, "2026-01-01T00:00:00Z")
    assert record.model_dump(by_alias=True)["reasonKind"] == "Hold"
    _, burst = step(spec, started(spec, fp16_cheaper()), obs(15.0, peak_arrivals=50.0), 15.0, fp16_cheaper())
    carried = carried_decision(spec, st.decision_record(burst, "t"))
    assert carried is not None and carried.kind is ReasonKind.BURST


@pytest.mark.parametrize("recorded", [None, "", "SomethingNewer", "least-energy"])
def test_a_record_without_a_known_kind_reads_as_hold(recorded: str | None) -> None:
    record: dict[str, Any] = {"time": "t", "variant": "fp16", "replicas": 2, "reason": "old"}
    if recorded is not None:
        record["reasonKind"] = recorded
    carried = carried_decision(make_spec(), api.DecisionRecord.model_validate(record))
    assert carried is not None
    assert (carried.reason, carried.kind) == ("old", ReasonKind.HOLD)


def test_a_clamped_or_adopted_decision_is_a_hold() -> None:
    record = api.DecisionRecord(time="t", variant="fp16", replicas=6, reason="r", reason_kind="BudgetBinds")
    kept = carried_decision(make_spec(), record)
    assert kept is not None and kept.kind is ReasonKind.BUDGET_BINDS
    clamped = carried_decision(make_spec(replicas={"min": 1, "max": 4}), record)
    assert clamped is not None and clamped.kind is ReasonKind.HOLD
    owner = {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}}
    running = render.deployment(owner, make_spec(), Decision("int4", 2, DEFAULT, None, "t"))
    adopted = adopt_deployed(make_spec(), kept, running, "u")
    assert (adopted.variant, adopted.kind) == ("int4", ReasonKind.HOLD)


# ------------------------------------------------------------------------------------------ telemetry


def _samples(t: OperatorMetrics, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[k] for k in ("namespace", "greenmodel", "reason")): s.value
        for family in t.registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_the_reason_gauge_keeps_one_series_per_green_model() -> None:
    t = OperatorMetrics()
    t.set_reason("ns", "a", ReasonKind.NO_METRICS)
    t.set_reason("ns", "b", ReasonKind.HOLD)
    t.set_reason("ns", "a", ReasonKind.LEAST_ENERGY)  # replaces a's NoMetrics series
    t.set_reason("ns", "a", ReasonKind.LEAST_ENERGY)
    assert _samples(t, "greenllm_decision_reason_info") == {
        ("ns", "a", "LeastEnergy"): 1.0,
        ("ns", "b", "Hold"): 1.0,
    }
    t.forget("ns", "a")
    assert _samples(t, "greenllm_decision_reason_info") == {("ns", "b", "Hold"): 1.0}
    t.forget("ns", "a")  # twice: nothing left to drop
    t.set_reason("ns", "a", ReasonKind.BURST)  # a GreenModel of the same name again
    assert _samples(t, "greenllm_decision_reason_info")[("ns", "a", "Burst")] == 1.0


def test_decisions_are_counted_by_kind_and_labels_stay_bounded() -> None:
    t = OperatorMetrics()
    t.count_decision("ns", "a", ReasonKind.BUDGET_BINDS)
    t.count_decision("ns", "a", ReasonKind.BUDGET_BINDS)
    t.count_decision("ns", "a", ReasonKind.HOLD)
    assert _samples(t, "greenllm_decisions_total") == {
        ("ns", "a", "BudgetBinds"): 2.0,
        ("ns", "a", "Hold"): 1.0,
    }
    free_text = "least power meeting SLOs: fp16 x3 at default power = 1500 W"
    with pytest.raises(ValueError):
        t.count_decision("ns", "a", free_text)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        t.set_reason("ns", "a", free_text)  # type: ignore[arg-type]
    assert all(labels[2] in set(ReasonKind) for labels in _samples(t, "greenllm_decisions_total"))
