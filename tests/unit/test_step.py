"""The decision step (greenllm.core.step): accounting, budgets, stability and missing metrics together."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.table_source import TableSource

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.decision import Decision, Demand, Observation
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_rules import MEAN_PROMPT_TOKENS
from greenllm.core.step import (
    MEAN_OUTPUT_TOKENS,
    LoopState,
    estimate_demand,
    initial_decision,
    initial_state,
    plan_step,
    step,
    window_peak,
)

DEFAULT = PowerSetting()
CAP = PowerSetting(limit_w=300.0)
HOUR = 3600.0


def perf(out_tps: float, idle_w: float, full_w: float, prompt_tps: float = 1e6) -> ReplicaPerformance:
    return ReplicaPerformance(out_tps, prompt_tps, full_w, ((0.0, idle_w), (out_tps, full_w)))


def make_spec(**overrides: Any) -> GreenModelSpec:
    doc: dict[str, Any] = {
        "model": {"name": "m"},
        "variants": [
            {"name": "fp16", "precision": "fp16", "image": "vllm", "quality": 1.0},
            {"name": "int4", "precision": "int4", "image": "vllm", "quality": 0.9},
        ],
        "replicas": {"min": 1, "max": 8},
        "scaling": {"switchHold": "5m", "switchThreshold": 0.1, "scaleDownStabilization": "5m"},
    }
    doc.update(overrides)
    return GreenModelSpec.model_validate(doc)


def fp16_cheaper() -> TableSource:
    return TableSource(
        (DEFAULT,),
        {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0), ("int4", DEFAULT): perf(1000.0, 100.0, 600.0)},
    )


def int4_cheaper(factor: float = 0.5) -> TableSource:
    return TableSource(
        (DEFAULT,),
        {
            ("fp16", DEFAULT): perf(1000.0, 100.0, 500.0),
            ("int4", DEFAULT): perf(1000.0, 100.0 * factor, 500.0 * factor),
        },
    )


def obs(t: float, out: float | None = 2000.0, **kw: Any) -> Observation:
    prompt = None if out is None else 0.0
    return Observation(time=t, prompt_tokens_per_s=prompt, output_tokens_per_s=out, **kw)


def started(spec: GreenModelSpec, src: TableSource, now: float = 0.0, out: float = 2000.0) -> LoopState:
    state, _ = step(spec, initial_state(spec, now), obs(now, out), now, src)
    return state


# ------------------------------------------------------------------------- initial decision and state


def test_initial_decision_is_the_best_quality_at_min_replicas() -> None:
    spec = make_spec(replicas={"min": 0, "max": 4})
    d = initial_decision(spec, fp16_cheaper())
    assert (d.variant, d.replicas, d.setting) == ("fp16", 1, DEFAULT)
    assert d.expected_power_w is None
    assert "no metrics yet" in d.reason


def test_initial_decision_prefers_a_runnable_variant_and_the_fixed_limit() -> None:
    spec = make_spec(power={"mode": "Fixed", "limitW": 300}, replicas={"min": 2, "max": 4})
    src = TableSource((CAP,), {("int4", CAP): perf(1000.0, 100.0, 300.0)})
    d = initial_decision(spec, src)
    assert (d.variant, d.replicas, d.setting) == ("int4", 2, CAP)
    floor = make_spec(slo={"minQuality": 0.95})
    assert initial_decision(floor, int4_cheaper()).variant == "fp16"


def wire(state: LoopState) -> dict[str, Any]:
    """status.controllerState as the API server stores it: JSON."""
    data: dict[str, Any] = json.loads(json.dumps(state.to_status().model_dump(by_alias=True, mode="json")))
    return data


def test_state_round_trips_through_json() -> None:
    spec = make_spec()
    state = started(spec, fp16_cheaper())
    state, _ = step(spec, state, obs(15.0, 3000.0, power_w=900.0, energy_j_total=5.0), 15.0, fp16_cheaper())
    data = wire(state)
    assert LoopState.from_status(data) == state


def test_state_times_are_rfc3339_and_legacy_floats_still_read() -> None:
    spec = make_spec()
    state = started(spec, fp16_cheaper())
    state, _ = step(spec, state, obs(15.0, 3000.0, power_w=900.0, energy_j_total=5.0), 15.0, fp16_cheaper())
    data = wire(state)
    assert data["periodStart"] == "1970-01-01T00:00:00Z"
    assert data["lastSampleTime"] == "1970-01-01T00:00:15Z"
    assert all(isinstance(t, str) and t.endswith("Z") for t, _ in data["history"])
    # What an operator before RFC 3339 wrote: epoch floats. An upgrade resumes the same state.
    legacy = {
        **data,
        "periodStart": 0.0,
        "lastSampleTime": 15.0,
        "history": [[t, n] for t, n in state.history],
        "demandPeaks": [[t, p, o] for t, p, o in state.demand_peaks],
    }
    assert LoopState.from_status(legacy) == state


def test_state_from_old_or_broken_status() -> None:
    assert LoopState.from_status({}) == LoopState(period_start=0.0)
    junk = {"periodStart": "x", "replicas": -3, "history": [[1, 2], "bad", [None, 3]], "budgetMet": "yes"}
    s = LoopState.from_status(junk)
    assert s.replicas == 0
    assert s.history == ((1.0, 2),)
    assert s.budget_met is True
    assert s.variant is None


def test_initial_state_with_an_applied_decision() -> None:
    d = Decision("int4", 3, CAP, 900.0, "seed", True)
    s = initial_state(make_spec(), 50.0, d)
    assert (s.variant, s.replicas, s.setting, s.period_start) == ("int4", 3, CAP, 50.0)


# ------------------------------------------------------------------------- accounting


def test_energy_from_the_counter_with_a_reset() -> None:
    spec, src = make_spec(), fp16_cheaper()
    s = initial_state(spec, 0.0)
    s, _ = step(spec, s, obs(0.0, energy_j_total=1.0e6), 0.0, src)
    s, _ = step(spec, s, obs(60.0, energy_j_total=1.0e6 + 3.6e6), 60.0, src)
    assert s.energy_kwh == pytest.approx(1.0)
    s, _ = step(spec, s, obs(120.0, energy_j_total=7.2e5), 120.0, src)  # exporter restarted
    assert s.energy_kwh == pytest.approx(1.2)


def test_energy_from_power_and_carbon_from_intensity() -> None:
    spec, src = make_spec(), fp16_cheaper()
    s = initial_state(spec, 0.0)
    s, _ = step(spec, s, obs(0.0, power_w=1000.0, carbon_intensity_g_per_kwh=400.0), 0.0, src)
    s, _ = step(spec, s, obs(360.0, power_w=1000.0, carbon_intensity_g_per_kwh=400.0), 360.0, src)
    assert s.energy_kwh == pytest.approx(0.1)
    assert s.carbon_grams == pytest.approx(40.0)
    # The intensity query failed this tick: the last known value is used.
    s, _ = step(spec, s, obs(720.0, power_w=1000.0), 720.0, src)
    assert s.carbon_grams == pytest.approx(80.0)


def test_static_intensity_from_the_spec() -> None:
    spec = make_spec(metrics={"carbonIntensity": {"gramsPerKwh": 100}})
    s = initial_state(spec, 0.0)
    s, _ = step(spec, s, obs(0.0, energy_j_total=0.0), 0.0, fp16_cheaper())
    s, _ = step(spec, s, obs(10.0, energy_j_total=3.6e6), 10.0, fp16_cheaper())
    assert s.carbon_grams == pytest.approx(100.0)


def test_period_rolls_over() -> None:
    spec, src = make_spec(budget={"energyKwh": 10, "period": "1h"}), fp16_cheaper()
    s = initial_state(spec, 0.0)
    s, _ = step(spec, s, obs(0.0, energy_j_total=0.0), 0.0, src)
    s, _ = step(spec, s, obs(1800.0, energy_j_total=3.6e6), 1800.0, src)
    assert (s.period_start, s.energy_kwh) == (0.0, pytest.approx(1.0))
    s, _ = step(spec, s, obs(3700.0, energy_j_total=3.6e6 + 1.9e5), 3700.0, src)
    assert s.period_start == 3600.0
    assert s.energy_kwh == pytest.approx(1.9e5 / 3.6e6 * 100.0 / 1900.0)
    # No sample at all for two periods: the period still rolls on the clock.
    s, _ = step(spec, s, obs(3700.0, out=None), 3 * 3600.0 + 5, src)
    assert (s.period_start, s.energy_kwh) == (3 * 3600.0, 0.0)


# ------------------------------------------------------------------------- budgets


def test_energy_budget_pacing_sets_the_allowed_power() -> None:
    # 10 kWh per 10 h, 5 kWh used in the first 2 h: 5 kWh over 8 h = 625 W allowed.
    spec = make_spec(budget={"energyKwh": 10, "period": "10h", "onExhausted": "Degrade"})
    src = fp16_cheaper()
    s = initial_state(spec, 0.0)
    s, _ = step(spec, s, obs(0.0, energy_j_total=0.0), 0.0, src)
    s, d = step(spec, s, obs(2 * HOUR, 2000.0, energy_j_total=5 * 3.6e6), 2 * HOUR, src)
    assert s.allowed_power_w == pytest.approx(625.0)
    assert "energy budget paced" in d.reason
    assert d.expected_power_w is not None
    assert d.expected_power_w <= 625.0 + 1e-6
    # Degrade fits the allowance, but the budget cannot pay for the SLOs: BudgetMet is False.
    assert not d.budget_met
    assert "onExhausted Degrade" in d.reason
    assert "budget breached" not in d.reason


def test_carbon_budget_converts_through_intensity_in_the_step() -> None:
    spec = make_spec(budget={"carbonGrams": 1000, "period": "10h", "onExhausted": "Hold"})
    src = fp16_cheaper()
    s = started(spec, src)
    # 1000 g at 500 g/kWh = 2 kWh over the 10 h left = 200 W; the plan needs more: Hold keeps it, breached.
    s2, d = step(spec, s, obs(0.5, 2000.0, carbon_intensity_g_per_kwh=500.0), 0.5, src)
    assert s2.allowed_power_w == pytest.approx(2.0 * 3.6e6 / (10 * HOUR - 0.5))
    assert (d.variant, d.replicas) == (s.variant, s.replicas)
    assert not d.budget_met
    assert "onExhausted Hold" in d.reason


def test_budget_met_false_when_nothing_fits() -> None:
    spec = make_spec(budget={"powerW": 50, "onExhausted": "Degrade"})
    _, d = step(spec, initial_state(spec, 0.0), obs(0.0, 2000.0), 0.0, fp16_cheaper())
    assert not d.budget_met
    assert d.replicas == 1
    assert "budget breached" in d.reason


def test_a_tighter_budget_caps_replicas_at_once_and_reports_budget_not_met() -> None:
    spec = make_spec(budget={"powerW": 100000, "onExhausted": "CapReplicas"})
    src = fp16_cheaper()
    s = started(spec, src, out=6000.0)  # 6000 x 1.2 / 1000 -> 8 replicas
    assert s.replicas == 8
    tight = make_spec(budget={"powerW": 1500, "onExhausted": "CapReplicas"})
    s, d = step(tight, s, obs(15.0, 6000.0), 15.0, src)
    assert d.variant == "fp16"
    assert d.expected_power_w is not None
    assert d.expected_power_w <= 1500.0
    assert d.replicas < 8  # no down-window: the budget acts at once
    assert not d.budget_met
    assert "onExhausted CapReplicas" in d.reason


# ------------------------------------------------------------------------- stability


def test_variant_switch_waits_for_the_hold() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    assert s.variant == "fp16"
    cheap = int4_cheaper(0.5)
    for t in (15.0, 150.0, 299.0):
        s, d = step(spec, s, obs(t), t, cheap)
        assert d.variant == "fp16"
        assert "pending" in d.reason
        assert s.pending_since == 15.0
    s, d = step(spec, s, obs(315.0), 315.0, cheap)
    assert d.variant == "int4"
    assert "switched variant fp16 -> int4" in d.reason
    assert s.pending_since is None


def test_a_tick_without_saving_resets_the_hold() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    s, _ = step(spec, s, obs(15.0), 15.0, int4_cheaper(0.5))
    s, _ = step(spec, s, obs(30.0), 30.0, fp16_cheaper())
    assert s.pending_since is None
    s, d = step(spec, s, obs(320.0), 320.0, int4_cheaper(0.5))
    assert d.variant == "fp16"
    assert s.pending_since == 320.0


def test_small_saving_never_switches() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    for i in range(1, 60):
        s, d = step(spec, s, obs(i * 15.0), i * 15.0, int4_cheaper(0.95))
        assert d.variant == "fp16"
    assert "switchThreshold" in d.reason


def test_switch_at_once_when_the_current_variant_cannot_serve() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    src = TableSource((DEFAULT,), {("int4", DEFAULT): perf(1000.0, 100.0, 600.0)})  # fp16 now misses TPOT
    s, d = step(spec, s, obs(15.0), 15.0, src)
    assert d.variant == "int4"
    assert "at once" in d.reason


def test_removed_variant_is_replaced() -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    only_int4 = make_spec(variants=[{"name": "int4", "precision": "int4", "image": "vllm", "quality": 0.9}])
    s, d = step(only_int4, s, obs(15.0), 15.0, fp16_cheaper())
    assert d.variant == "int4"


def test_scale_down_waits_for_the_window_and_scale_up_does_not() -> None:
    spec, src = make_spec(), fp16_cheaper()
    s = started(spec, src, out=2000.0)
    assert s.replicas == 3  # 2000 x 1.2 / 1000 = 2.4 -> 3
    s, d = step(spec, s, obs(15.0, 5000.0), 15.0, src)
    assert d.replicas == 6  # up at once
    s, d = step(spec, s, obs(30.0, 2000.0), 30.0, src)
    assert d.replicas == 6
    assert "scaleDownStabilization" in d.reason
    s, d = step(spec, s, obs(315.0, 2000.0), 315.0, src)
    assert d.replicas == 6  # the 6 recommended at t=15 is still in the window
    s, d = step(spec, s, obs(316.0, 2000.0), 316.0, src)
    assert d.replicas == 3
    assert s.last_scale_down == 316.0
    assert s.last_scale_up == 15.0


def test_setting_hysteresis_keeps_a_setting_that_is_nearly_as_good() -> None:
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "vllm"}])
    src = TableSource((DEFAULT, CAP), {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0)})
    s = started(spec, src)
    assert s.setting == DEFAULT
    slightly = TableSource(
        (DEFAULT, CAP),
        {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0), ("fp16", CAP): perf(1000.0, 100.0, 480.0)},
    )
    s, d = plan_step(spec, s, obs(15.0), 15.0, slightly)
    assert d.setting == DEFAULT
    assert "kept default power" in d.reason
    much = TableSource(
        (DEFAULT, CAP),
        {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0), ("fp16", CAP): perf(1000.0, 100.0, 300.0)},
    )
    s, d = plan_step(spec, s, obs(30.0), 30.0, much)
    assert d.setting == CAP


# ------------------------------------------------------------------------- missing metrics


def test_missing_metrics_keep_the_decision() -> None:
    spec, src = make_spec(), fp16_cheaper()
    s = started(spec, src, out=5000.0)
    before = (s.variant, s.replicas, s.setting)
    for t in (15.0, 400.0, 4000.0):
        s, d = step(spec, s, obs(t, out=None, power_w=100.0), t, int4_cheaper(0.1))
        assert (d.variant, d.replicas, d.setting) == before
        assert "metrics missing" in d.reason


def test_missing_metrics_before_any_decision_give_the_initial_one() -> None:
    spec, src = make_spec(), fp16_cheaper()
    s, d = step(spec, initial_state(spec, 0.0), obs(0.0, out=None), 0.0, src)
    assert (d.variant, d.replicas) == ("fp16", 1)
    assert "metrics missing" in d.reason
    assert s.variant == "fp16"


def test_missing_metrics_still_raise_to_a_new_replicas_min() -> None:
    spec, src = make_spec(), fp16_cheaper()
    s = started(spec, src, out=500.0)
    assert s.replicas == 1
    bigger = make_spec(replicas={"min": 3, "max": 8})
    s, d = step(bigger, s, obs(15.0, out=None), 15.0, src)
    assert d.replicas == 3


# ------------------------------------------------------------------------- no flapping


@settings(max_examples=40, deadline=None)
@given(
    low=st.floats(min_value=100.0, max_value=3000.0),
    high=st.floats(min_value=3000.0, max_value=6500.0),
    half_period_ticks=st.integers(min_value=1, max_value=10),
    noise=st.lists(st.floats(min_value=-0.05, max_value=0.05), min_size=240, max_size=240),
)
def test_oscillating_demand_changes_replicas_a_bounded_number_of_times(
    low: float, high: float, half_period_ticks: int, noise: list[float]
) -> None:
    """Demand flips between low and high (with 5% noise) faster than the 5 min down-window: replicas never
    drop back to the low level, noise moves them by at most one step and at most once up and once down per
    window, and the variant never switches."""
    spec, src = make_spec(), fp16_cheaper()
    s = initial_state(spec, 0.0)
    changes, switches = 0, 0
    previous: Decision | None = None
    high_floor = math.ceil(high * 0.95 * 1.2 / 1000.0 - 1e-9)  # fewest replicas any high tick needs
    for i, e in enumerate(noise):
        t = i * 15.0
        level = high if (i // half_period_ticks) % 2 else low
        s, d = step(spec, s, obs(t, level * (1 + e)), t, src)
        if previous is not None:
            changes += d.replicas != previous.replicas
            switches += d.variant != previous.variant
        if i >= half_period_ticks:  # a high tick has been seen
            assert d.replicas >= high_floor
        previous = d
    assert switches == 0
    windows = len(noise) * 15.0 / 300.0
    assert changes <= 2 * (windows + 1) + 1


@settings(max_examples=25, deadline=None)
@given(flips=st.lists(st.booleans(), min_size=100, max_size=100))
def test_variant_choice_flipping_every_tick_never_switches(flips: list[bool]) -> None:
    spec = make_spec()
    s = started(spec, fp16_cheaper())
    variants = set()
    for i, cheap in enumerate(flips, start=1):
        src = int4_cheaper(0.5) if cheap else fp16_cheaper()
        s, d = step(spec, s, obs(i * 15.0), i * 15.0, src)
        variants.add(d.variant)
    # A switch needs 5 min (20 ticks) of int4 being cheaper on every tick.
    longest, run = 0, 0
    for cheap in flips:
        run = run + 1 if cheap else 0
        longest = max(longest, run)
    assert variants == ({"fp16", "int4"} if longest > 20 else {"fp16"})
    assert math.isfinite(s.energy_kwh)


def test_hold_never_keeps_a_variant_the_spec_dropped() -> None:
    spec = make_spec(budget={"powerW": 10, "onExhausted": "Hold"})
    s = started(spec, fp16_cheaper())
    assert s.variant == "fp16"
    floor = make_spec(budget={"powerW": 10, "onExhausted": "Hold"}, slo={"minQuality": 0.95})
    no_fp16 = make_spec(
        budget={"powerW": 10, "onExhausted": "Hold"},
        variants=[{"name": "int4", "precision": "int4", "image": "vllm", "quality": 0.9}],
    )
    _, d = step(no_fp16, s, obs(15.0), 15.0, fp16_cheaper())
    assert d.variant == "int4"
    assert not d.budget_met
    _, d = step(floor, s, obs(15.0), 15.0, fp16_cheaper())
    assert d.variant == "fp16"  # still allowed: held
    assert "onExhausted Hold" in d.reason


def test_hold_never_keeps_a_variant_below_a_new_quality_floor() -> None:
    spec = make_spec(budget={"powerW": 10, "onExhausted": "Hold"}, slo={"minQuality": 0.95})
    s = initial_state(spec, 0.0, Decision("int4", 2, DEFAULT, None, "seed", True))
    _, d = step(spec, s, obs(15.0), 15.0, int4_cheaper())
    assert d.variant == "fp16"
    assert "at once" in d.reason


# ------------------------------------------------------------------------- demand: backlog, peak, SLO guard


def test_a_backlog_raises_the_demand_with_observed_request_sizes() -> None:
    """Served 2000 out tok/s at 20 requests/s (100 output tokens each), 30 requests waiting: serving them
    within the 2 s TTFT SLO adds 30 x 100 / 2 = 1500 out tok/s, so 3500 x 1.2 / 1000 -> 5 replicas."""
    spec, src = make_spec(), fp16_cheaper()
    _, calm = step(spec, initial_state(spec, 0.0), obs(0.0, 2000.0), 0.0, src)
    assert calm.replicas == 3
    queued = obs(0.0, 2000.0, requests_waiting=30.0, requests_per_s=20.0)
    _, d = step(spec, initial_state(spec, 0.0), queued, 0.0, src)
    assert d.replicas == 5
    assert "30 requests waiting (observed 0 prompt + 100 output tokens each)" in d.reason


def test_a_backlog_without_a_request_rate_uses_the_trace_means() -> None:
    spec, src = make_spec(), fp16_cheaper()
    demand, note = estimate_demand(spec, obs(0.0, 2000.0, requests_waiting=10.0))
    assert demand.output_tokens_per_s == pytest.approx(2000.0 + 10 * MEAN_OUTPUT_TOKENS / 2.0)
    assert demand.prompt_tokens_per_s == pytest.approx(10 * MEAN_PROMPT_TOKENS / 2.0)
    assert "trace-mean" in note
    assert estimate_demand(spec, obs(0.0, 2000.0, requests_waiting=0.0)) == (Demand(0.0, 2000.0), "")
    _, d = step(spec, initial_state(spec, 0.0), obs(0.0, 2000.0, requests_waiting=10.0), 0.0, src)
    assert "requests waiting" in d.reason


def test_the_setting_is_sized_for_the_window_peak_not_just_the_replica_count() -> None:
    """A 300 W setting halves a replica's capacity but is cheaper at low load. After a peak, the plan keeps
    capacity for the peak until it leaves the down-window; a replica count held for a slower setting
    would not."""
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "vllm"}])
    src = TableSource(
        (DEFAULT, CAP),
        {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0), ("fp16", CAP): perf(500.0, 60.0, 200.0)},
    )
    capacity = {DEFAULT: 1000.0, CAP: 500.0}
    s = started(spec, src, out=5000.0)
    for t in range(15, 301, 15):
        s, d = plan_step(spec, s, obs(float(t), 300.0), float(t), src)
        assert d.replicas * capacity[d.setting] >= 5000.0 * 1.2, t
        assert "peak of the last 300s" in d.reason
    s, d = plan_step(spec, s, obs(301.0, 300.0), 301.0, src)
    assert (d.setting, d.replicas) == (CAP, 1)


@settings(max_examples=100, deadline=None)
@given(
    samples=st.lists(
        st.tuples(st.floats(0.0, 1e5), st.floats(0.0, 1e4), st.floats(1.0, 120.0)), min_size=1, max_size=40
    ),
    window=st.floats(0.0, 600.0),
)
def test_window_peak_keeps_what_any_later_window_needs(
    samples: list[tuple[float, float, float]], window: float
) -> None:
    """The pruned history gives the same per-component peak as the whole history, on every tick."""
    history: tuple[tuple[float, float, float], ...] = ()
    full: list[tuple[float, float, float]] = []
    t = 0.0
    for prompt, out, gap in samples:
        t += gap
        full.append((t, prompt, out))
        peak, history = window_peak(history, t, Demand(prompt, out), window)
        recent = [e for e in full if t - e[0] <= window]
        assert peak == Demand(max(e[1] for e in recent), max(e[2] for e in recent))
        assert len(history) <= len(recent)


def test_waiting_requests_or_a_breached_slo_hold_the_capacity() -> None:
    """After a peak has left the window, a queue or a TTFT p90 over the SLO keeps the capacity in force;
    once both are gone, the fleet scales down."""
    spec, src = make_spec(), fp16_cheaper()
    s = started(spec, src, out=5000.0)
    assert s.replicas == 6
    s, d = step(spec, s, obs(400.0, 2000.0, requests_waiting=1.0), 400.0, src)
    assert d.replicas == 6
    assert "1 requests waiting: capacity kept" in d.reason
    s, d = step(spec, s, obs(800.0, 2000.0, ttft_p90_ms=5000.0), 800.0, src)
    assert d.replicas == 6
    assert "TTFT p90 5000 ms > 2000 ms" in d.reason
    s, d = step(spec, s, obs(820.0, 2000.0, tpot_p90_ms=80.0), 820.0, src)
    assert d.replicas == 6
    assert "TPOT p90 80 ms > 50 ms" in d.reason
    s, d = step(spec, s, obs(1200.0, 2000.0, ttft_p90_ms=1500.0), 1200.0, src)
    assert d.replicas == 3


def test_a_breached_slo_never_moves_to_a_slower_setting() -> None:
    """The 300 W setting is cheaper for this demand with the same replicas but has half the capacity:
    with the TTFT SLO broken it is refused, without the breach it is taken."""
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "vllm"}])
    fast = TableSource((DEFAULT,), {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0)})
    s = started(spec, fast, out=1300.0)
    assert (s.setting, s.replicas) == (DEFAULT, 2)
    both = TableSource(
        (DEFAULT, CAP),
        {("fp16", DEFAULT): perf(1000.0, 100.0, 500.0), ("fp16", CAP): perf(800.0, 60.0, 200.0)},
    )
    _, held = step(spec, s, obs(15.0, 1300.0, ttft_p90_ms=4000.0), 15.0, both)
    assert held.replicas * (1000.0 if held.setting == DEFAULT else 800.0) >= 2 * 1000.0
    _, moved = step(spec, s, obs(15.0, 1300.0), 15.0, both)
    assert (moved.setting, moved.replicas) == (CAP, 2)


def test_demand_peaks_survive_a_restart() -> None:
    spec, src = make_spec(), fp16_cheaper()
    s = started(spec, src, out=5000.0)
    s, _ = step(spec, s, obs(15.0, 2000.0), 15.0, src)
    restored = LoopState.from_status(wire(s))
    assert restored.demand_peaks == s.demand_peaks == ((0.0, 0.0, 5000.0), (15.0, 0.0, 2000.0))
    _, d = step(spec, restored, obs(30.0, 2000.0), 30.0, src)
    assert d.replicas == 6
    broken = LoopState.from_status({"demandPeaks": [[1, 2, 3], [None, 1, 1], "x", [4, -5, 6]]})
    assert broken.demand_peaks == ((1.0, 2.0, 3.0), (4.0, 0.0, 6.0))


# ------------------------------------------------------------------------- a team's average allowance


def test_an_average_allowance_is_planned_at_expected_power_and_is_no_peak_cap() -> None:
    # 2000 tok/s needs 3 fp16 replicas (x1.2 headroom): expected 3 x (100 + 400 x 2/3) = 1100 W, peak
    # 3 x 500 = 1500 W. A team's average allowance (its share of the paced energy) of 1200 W pays for
    # them at expected power; the same 1200 W as budget.powerW (a cap on the peak) does not.
    spec = make_spec(budget={"onExhausted": "CapReplicas"})
    src = fp16_cheaper()
    s, d = step(spec, initial_state(spec, 0.0), obs(0.0, 2000.0), 0.0, src, extra_allowance_w=1200.0)
    assert (d.variant, d.replicas) == ("fp16", 3)
    assert d.expected_power_w == pytest.approx(1100.0)
    assert d.budget_met
    assert s.allowed_power_w == pytest.approx(1200.0)
    capped = make_spec(budget={"powerW": 1200, "onExhausted": "CapReplicas"})
    _, c = step(capped, initial_state(capped, 0.0), obs(0.0, 2000.0), 0.0, src)
    assert c.replicas == 2 and not c.budget_met
    # Obeyed exactly as the member's own energy budget paced to the same power (12 kWh over 10 h).
    own = make_spec(budget={"energyKwh": 12, "period": "10h", "onExhausted": "CapReplicas"})
    s_own, d_own = step(own, initial_state(own, 0.0), obs(0.0, 2000.0), 0.0, src)
    assert s_own.allowed_power_w == pytest.approx(1200.0)
    assert (d_own.variant, d_own.replicas, d_own.budget_met) == (d.variant, d.replicas, d.budget_met)


def test_a_tight_average_allowance_binds_and_the_tightest_wins() -> None:
    spec = make_spec(budget={"onExhausted": "CapReplicas"})
    src = fp16_cheaper()
    s, d = step(spec, initial_state(spec, 0.0), obs(0.0, 2000.0), 0.0, src, extra_allowance_w=800.0)
    assert s.allowed_power_w == pytest.approx(800.0)
    assert d.expected_power_w is not None and d.expected_power_w <= 800.0
    assert d.replicas < 3 and not d.budget_met
    assert "team energy allowance 800 W (average)" in d.reason
    # The member's own tighter budget wins over a looser grant; no grant (None) changes nothing.
    own = make_spec(budget={"energyKwh": 6, "period": "10h", "onExhausted": "CapReplicas"})
    s_own, _ = step(own, initial_state(own, 0.0), obs(0.0, 2000.0), 0.0, src, extra_allowance_w=5000.0)
    assert s_own.allowed_power_w == pytest.approx(600.0)
    plain = step(spec, initial_state(spec, 0.0), obs(0.0, 2000.0), 0.0, src)
    assert step(spec, initial_state(spec, 0.0), obs(0.0, 2000.0), 0.0, src, extra_allowance_w=None) == plain
