"""A GreenModel's power frontier (greenllm.core.frontier) against its own decision step: a point's power is
what budget.powerW's cap counts for its configuration (peak power at the burst setting, warm floor
included), so a member given that power runs the point, and at any allowance serves at least the
frontier's best point within it."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.table_source import TableSource
from tests.unit.test_planner import make_spec, source

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.burst import FloorState
from greenllm.core.decision import Decision, Demand, Observation
from greenllm.core.frontier import TTFT_UNREACHABLE, WarmFloor, power_frontier
from greenllm.core.performance import PowerSetting
from greenllm.core.plan_space import PlanSpace
from greenllm.core.planner import plan
from greenllm.core.step import initial_state, step


def _peak(spec: GreenModelSpec, variant: str, setting: PowerSetting) -> float:
    """One replica's peak power at `setting`, by hand: its prefill power or its decode curve's top."""
    perf = source().performance(spec, next(v for v in spec.variants if v.name == variant), setting)
    assert perf is not None
    return max(perf.prefill_power_w, *(w for _, w in perf.decode_curve))


def test_frontier_is_increasing_and_ends_at_the_planners_unbudgeted_choice() -> None:
    spec = make_spec()
    demand = Demand(20000.0, 3000.0)
    obs = _observation(20000.0, 3000.0, None)
    f = power_frontier(spec, demand, source(), warm=WarmFloor(FloorState(), obs, NOW))
    assert len(f) >= 3
    for a, b in itertools.pairwise(f):
        assert b.power_w > a.power_w
        assert b.served > a.served
    free = plan(spec, demand, None, source())
    # Priced as budget.powerW counts it: every replica the step runs at the setting its pods burst to, at
    # that setting's peak, above the planner's expected power.
    _, run = step(spec, initial_state(spec, 0.0), obs, NOW, source())
    burst = run.fast_tier.burst if run.fast_tier is not None else run.setting
    assert f[-1].power_w == pytest.approx(run.replicas * _peak(spec, run.variant, burst))
    assert free.expected_power_w is not None and f[-1].power_w > free.expected_power_w
    assert f[-1].served == pytest.approx(3000.0)
    assert f[-1].label == f"{free.variant} x{free.replicas} at {free.setting.label()}"
    # Point 0 is the cheapest configuration: one replica at the setting that peaks lowest (no fast tier
    # here, so each pair's pods run and burst at its own setting).
    settings_ = (PowerSetting(), PowerSetting(limit_w=300.0))
    assert f[0].power_w == pytest.approx(
        min(_peak(spec, v.name, s) for v in spec.variants for s in settings_)
    )
    assert f[0].served < 3000.0


def _observation(prompt: float, out: float, peak_arrivals: float | None) -> Observation:
    # 200 output tokens a request: what the fast tier and the warm floor size requests by.
    return Observation(
        time=NOW,
        prompt_tokens_per_s=prompt,
        output_tokens_per_s=out,
        requests_per_s=max(out / 200.0, 0.1),
        peak_arrivals=peak_arrivals,
    )


def _served_as_run(spec: GreenModelSpec, demand: Demand, d: Decision) -> float:
    """Output tokens/s within the SLO of what step() runs, as the frontier measures it: the replicas it
    keeps (warm floor included) over the SLO's need at the setting its pods serve a queue at."""
    burst = d.fast_tier.burst if d.fast_tier is not None else d.setting
    pair = PlanSpace(spec, demand, source()).find(d.variant, burst)
    assert pair is not None
    if pair.why_code == TTFT_UNREACHABLE:
        return 0.0
    share = min(d.replicas / pair.need_any, 1.0) if pair.need_any > 0 else 1.0
    return share * demand.output_tokens_per_s


def _with_power(spec: GreenModelSpec, watts: float) -> GreenModelSpec:
    return spec.model_copy(update={"budget": spec.budget.model_copy(update={"power_w": watts})})


NOW = 1000.0


@settings(max_examples=500, deadline=None)
@given(
    st.floats(0.0, 60000.0),
    st.floats(10.0, 9000.0),
    st.sampled_from([None, 5.0, 20.0]),
    st.sampled_from(["Degrade", "CapReplicas"]),
)
def test_an_allocation_of_a_points_power_runs_that_point_under_the_cap(
    prompt: float, out: float, peak_arrivals: float | None, on_exhausted: str
) -> None:
    """A member given a point's power as budget.powerW (what effective_spec does with its allocation)
    runs at least that point's replicas under the cap (core.burst.power_cap_fit) and serves what the
    point says."""
    spec = make_spec(budget={"onExhausted": on_exhausted})
    demand = Demand(prompt, out)
    obs = _observation(prompt, out, peak_arrivals)
    f = power_frontier(spec, demand, source(), warm=WarmFloor(FloorState(), obs, NOW))
    for point in f:
        capped = _with_power(spec, float(math.ceil(point.power_w)))  # the allocator's whole watts
        _, d = step(capped, initial_state(capped, 0.0), obs, NOW, source())
        assert d.replicas >= int(point.label.split(" x")[1].split(" ")[0]), (point, d.reason)
        assert _served_as_run(capped, demand, d) >= point.served * (1 - 1e-9) - 1e-9, (point, d.reason)


def test_the_frontier_prices_the_warm_floor() -> None:
    spec = make_spec()
    demand = Demand(20000.0, 3000.0)
    bare = power_frontier(spec, demand, source())
    obs = _observation(20000.0, 3000.0, 60.0)
    warm = power_frontier(spec, demand, source(), warm=WarmFloor(FloorState(), obs, NOW))
    # 60 requests arriving at once need more replicas warm than the demand alone: the top point pays for
    # them; the minimum is offered without its floor (the cap cuts the floor first).
    assert warm[-1].power_w > bare[-1].power_w
    assert warm[0].power_w == pytest.approx(bare[0].power_w)
    _, d = step(_with_power(spec, math.ceil(warm[-1].power_w)), initial_state(spec, 0.0), obs, NOW, source())
    assert "warm floor" in d.reason
    assert "warm floor cut" not in d.reason


def test_zero_demand_has_one_point_at_the_minimum() -> None:
    spec = make_spec(replicas={"min": 2, "max": 8})
    f = power_frontier(spec, Demand(0.0, 0.0), source())
    assert len(f) == 1
    assert f[0].served == 0.0
    # No request to size a fast tier by: each pair runs at its own setting, and the one peaking lowest
    # (int4 at 300 W) at replicas.min is the minimum.
    assert f[0].power_w == pytest.approx(2 * _peak(spec, "int4", PowerSetting(limit_w=300.0)))


def test_no_runnable_variant_gives_a_zero_point() -> None:
    spec = make_spec()
    f = power_frontier(spec, Demand(100.0, 100.0), TableSource((PowerSetting(),), {}))
    assert [(p.power_w, p.served) for p in f] == [(0.0, 0.0)]
    assert "no variant" in f[0].label


def test_demand_beyond_replicas_max_never_reaches_full_service() -> None:
    spec = make_spec(replicas={"min": 1, "max": 2})
    f = power_frontier(spec, Demand(0.0, 20000.0), source())
    assert f[-1].served < 20000.0
    assert all(not math.isinf(p.power_w) for p in f)


def test_ttft_unreachable_pairs_serve_nothing_within_the_slo() -> None:
    # A 1 ms TTFT SLO: no prefill is that fast, so no configuration serves anything within the SLO.
    spec = make_spec(slo={"ttftP90Ms": 1.0})
    f = power_frontier(spec, Demand(1000.0, 1000.0), source())
    assert [p.served for p in f] == [0.0]


def test_recent_demands_make_the_served_demand_concave_in_power() -> None:
    spec = make_spec()
    demand = Demand(20000.0, 3000.0)
    peak_only = power_frontier(spec, demand, source())
    moving = power_frontier(spec, demand, source(), recent_output=(500.0, 1000.0, 3000.0, 5000.0))
    # Same configurations, served measured over the demands (the peak, and 5000 clipped to the peak):
    # the top serves their mean, a configuration serves min(capacity, demand) on average.
    assert moving[-1].power_w == pytest.approx(peak_only[-1].power_w)
    assert moving[-1].served == pytest.approx((500 + 1000 + 3000 + 3000 + 3000) / 5)
    for p in moving:
        cap = next(q.served for q in peak_only if q.label == p.label)
        assert p.served == pytest.approx(sum(min(cap, x) for x in (500, 1000, 3000, 3000, 3000)) / 5)
    # The share of its capacity a configuration gets to use falls as the capacity rises (the lulls are
    # served first): diminishing returns, which the peak alone does not show.
    ratios = [p.served / q.served for p, q in zip(moving, peak_only, strict=True) if q.served > 0]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(ratios))
    assert ratios[-1] < ratios[0]


def test_priced_at_expected_power_the_frontier_ends_at_the_planners_expected_power() -> None:
    spec = make_spec()
    demand = Demand(20000.0, 3000.0)
    obs = _observation(20000.0, 3000.0, 20.0)
    peak = power_frontier(spec, demand, source(), warm=WarmFloor(FloorState(), obs, NOW))
    expected = power_frontier(spec, demand, source(), expected=True)
    free = plan(spec, demand, None, source())
    # What a member's planner counts against an average allowance: its fluid power, no floor, no burst.
    assert free.expected_power_w is not None
    assert expected[-1].power_w == pytest.approx(free.expected_power_w)
    assert expected[-1].served == pytest.approx(3000.0)
    assert expected[-1].power_w < peak[-1].power_w
    for a, b in itertools.pairwise(expected):
        assert b.power_w > a.power_w and b.served > a.served
    # Each point is cheaper at expected power than the least peak-priced point serving as much.
    for p in expected:
        dearest = min(q.power_w for q in peak if q.served >= p.served * (1 - 1e-9))
        assert p.power_w <= dearest + 1e-6


@settings(max_examples=150, deadline=None)
@given(
    st.floats(0.0, 60000.0),
    st.floats(10.0, 9000.0),
    st.sampled_from(["Degrade", "CapReplicas"]),
)
def test_an_average_allowance_of_a_points_expected_power_plans_that_point(
    prompt: float, out: float, on_exhausted: str
) -> None:
    """A member granted a point's expected power as its average allowance (core.step's
    `extra_allowance_w`, what a team budget does with its paced energy) plans within it at expected power
    and runs at least the point's replicas."""
    spec = make_spec(budget={"onExhausted": on_exhausted})
    demand = Demand(prompt, out)
    obs = _observation(prompt, out, None)
    for point in power_frontier(spec, demand, source(), expected=True):
        watts = float(math.ceil(point.power_w))
        s, d = step(spec, initial_state(spec, 0.0), obs, NOW, source(), extra_allowance_w=watts)
        assert s.allowed_power_w == pytest.approx(watts)
        assert d.expected_power_w is not None and d.expected_power_w <= watts * (1 + 1e-9), d.reason
        assert d.replicas >= int(point.label.split(" x")[1].split(" ")[0]), (point, d.reason)
