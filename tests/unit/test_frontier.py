"""A GreenModel's power frontier (greenllm.core.frontier) against its own planner: at every allowance the
frontier's best point within it serves what the planner's Degrade choice under that allowance serves."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.table_source import TableSource
from tests.unit.test_planner import make_spec, source

from greenllm.core.decision import Demand
from greenllm.core.frontier import power_frontier
from greenllm.core.performance import PowerSetting
from greenllm.core.plan_space import PlanSpace
from greenllm.core.planner import plan


def test_frontier_is_increasing_and_ends_at_the_planners_unbudgeted_choice() -> None:
    spec = make_spec()
    demand = Demand(20000.0, 3000.0)
    f = power_frontier(spec, demand, source())
    assert len(f) >= 3
    for a, b in itertools.pairwise(f):
        assert b.power_w > a.power_w
        assert b.served > a.served
    free = plan(spec, demand, None, source())
    assert f[-1].power_w == pytest.approx(free.expected_power_w)
    assert f[-1].served == pytest.approx(3000.0)
    assert f[-1].label == f"{free.variant} x{free.replicas} at {free.setting.label()}"
    # Point 0 is the cheapest configuration the planner would fall back to: one replica at its least power.
    space = PlanSpace(spec, demand, source())
    cheapest = space.cheapest_at_min(space.pairs)
    assert cheapest is not None
    assert f[0].power_w == pytest.approx(cheapest.power_w)
    assert f[0].served < 3000.0


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.0, 60000.0),
    st.floats(10.0, 9000.0),
    st.floats(0.0, 1.0),
)
def test_the_frontier_within_an_allowance_matches_what_the_planner_runs(
    prompt: float, out: float, frac: float
) -> None:
    spec = make_spec(budget={"onExhausted": "Degrade"})
    demand = Demand(prompt, out)
    f = power_frontier(spec, demand, source())
    allowed = f[0].power_w + frac * (f[-1].power_w - f[0].power_w) + 1.0
    best = max((p for p in f if p.power_w <= allowed * (1 + 1e-9)), key=lambda p: p.served)
    d = plan(spec, demand, allowed, source())
    assert d.expected_power_w is not None
    if best is f[-1]:
        # The planner meets the SLOs within the allowance at the same least power.
        assert d.budget_met and d.expected_power_w == pytest.approx(best.power_w)
        return
    # Budget binds: the planner runs something within the allowance (nothing fits: its minimum) whose
    # replicas reach at most the share of the SLO's need the frontier says is served within it.
    assert not d.budget_met
    assert d.expected_power_w <= max(allowed, f[0].power_w) * (1 + 1e-9)
    space = PlanSpace(spec, demand, source())
    pair = space.find(d.variant, d.setting)
    assert pair is not None
    planner_share = min(d.replicas / pair.need_any, 1.0)
    assert planner_share * out <= best.served * (1 + 1e-6) + 1e-6


def test_zero_demand_has_one_point_at_the_minimum() -> None:
    spec = make_spec(replicas={"min": 2, "max": 8})
    f = power_frontier(spec, Demand(0.0, 0.0), source())
    assert len(f) == 1
    assert f[0].served == 0.0
    assert f[0].power_w == pytest.approx(plan(spec, Demand(0.0, 0.0), None, source()).expected_power_w)


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
