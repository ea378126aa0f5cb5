"""The team allocator (greenllm.core.allocation): exactness against an exhaustive search, priorities,
overcommit by onExhausted, rounding, hysteresis and pacing."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.api.v1alpha1 import Budget, OnExhausted
from greenllm.core import allocation as al
from greenllm.core.allocation import FrontierPoint, Member, allocate

HOUR = 3600.0


def member(key: str, points: Sequence[tuple[float, float]], priority: int = 0) -> Member:
    return Member(key, priority, tuple(FrontierPoint(p, s) for p, s in points))


def served_by_priority(members: Sequence[Member], served: dict[str, float]) -> tuple[float, ...]:
    prios = sorted({m.priority for m in members}, reverse=True)
    return tuple(sum(served[m.key] for m in members if m.priority == p) for p in prios)


def exhaustive(members: Sequence[Member], allowance: float) -> tuple[float, ...] | None:
    """Best lexicographic (highest priority first) served vector over every combination of points whose
    whole-watt costs fit the whole-watt allowance; None when even the minimums do not fit."""
    best: tuple[float, ...] | None = None
    cap = math.floor(allowance + 1e-6)
    for combo in itertools.product(*(m.frontier for m in members)):
        if sum(al._watts_up(p.power_w) for p in combo) > cap:
            continue
        vec = served_by_priority(members, {m.key: p.served for m, p in zip(members, combo, strict=True)})
        if best is None or _lex_better(vec, best):
            best = vec
    return best


def _lex_better(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    for x, y in zip(a, b, strict=True):
        if x > y + 1e-6:
            return True
        if x < y - 1e-6:
            return False
    return False


@st.composite
def frontiers(draw: st.DrawFn, *, concave: bool = False, step: int | None = None) -> tuple[Member, ...]:
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        k = draw(st.integers(1, 5))
        base_p = draw(st.integers(0, 400))
        base_s = draw(st.floats(0, 50, allow_nan=False))
        pts = [(float(base_p), base_s)]
        incs = sorted(draw(st.lists(st.floats(0.5, 100), min_size=k - 1, max_size=k - 1)), reverse=concave)
        for inc in incs:
            dp = step if step is not None else draw(st.integers(1, 300))
            pts.append((pts[-1][0] + dp, pts[-1][1] + inc))
        prio = draw(st.integers(0, 2))
        out.append(member(f"ns/m{i}", pts, prio))
    return tuple(out)


@settings(max_examples=400, deadline=None)
@given(frontiers(), st.integers(0, 2500))
def test_allocation_equals_exhaustive_search(members: tuple[Member, ...], allowance: int) -> None:
    a = allocate(members, allowance)
    best = exhaustive(members, allowance)
    if best is None:
        assert a.overcommitted
        return
    assert not a.overcommitted
    assert a.exact
    assert served_by_priority(members, dict(a.served)) == pytest.approx(best, abs=1e-6)
    assert sum(a.power_w.values()) <= allowance
    # Every member's allocation pays for the point it serves.
    for m in members:
        costs = [al._watts_up(p.power_w) for p in m.frontier if p.served >= a.served[m.key] - 1e-9]
        assert a.power_w[m.key] >= min(costs)


@settings(max_examples=200, deadline=None)
@given(frontiers(concave=True, step=50), st.integers(0, 2500))
def test_greedy_alone_is_exact_on_concave_frontiers_with_equal_steps(
    members: tuple[Member, ...], allowance: int
) -> None:
    # The documented exact case: the greedy's own answer (no fallback) equals the exhaustive optimum.
    same = [m for m in members if m.priority == members[0].priority]
    pts = [al._points(m) for m in same]
    left = allowance - sum(p[0].cost for p in pts)
    best = exhaustive(same, allowance)
    if left < 0 or best is None:
        return
    _chosen, gained, _ = al._greedy(pts, left)
    assert sum(p[0].served for p in pts) + gained == pytest.approx(best[0], abs=1e-6)
    assert al._divisible_concave(pts)


def test_greedy_alone_is_not_exact_on_a_non_concave_frontier_and_the_fallback_is() -> None:
    # A: one big step worth 100 for 100 W; B: two steps of 60 W worth 55 and 50 (concave).
    # With 120 W the greedy takes A's segment (slope 1.0) and cannot fit B; B's two steps serve 105.
    members = [member("ns/a", [(0, 0), (100, 100)]), member("ns/b", [(0, 0), (60, 55), (120, 105)])]
    pts = [al._points(m) for m in members]
    _, gained, bound = al._greedy(pts, 120)
    assert gained == pytest.approx(100.0)
    assert bound > gained
    a = allocate(members, 120)
    assert a.served == {"ns/a": 0.0, "ns/b": 105.0}
    assert a.exact


def test_higher_priority_is_served_first_even_at_a_worse_rate() -> None:
    hi = member("ns/hi", [(100, 10), (600, 60)], priority=5)  # 0.1 tokens/s per W
    lo = member("ns/lo", [(100, 10), (600, 500)], priority=0)  # ~1 token/s per W
    a = allocate([hi, lo], 700)
    assert a.served == {"ns/hi": 60.0, "ns/lo": 10.0}
    # Same priority: the better rate wins.
    a = allocate([member("ns/hi", [(100, 10), (600, 60)]), lo], 700)
    assert a.served == {"ns/hi": 10.0, "ns/lo": 500.0}


def test_within_a_priority_marginal_demand_per_watt_orders_the_upgrades() -> None:
    a = member("ns/a", [(0, 0), (100, 50), (200, 60)])  # 0.5 then 0.1 per W
    b = member("ns/b", [(0, 0), (100, 30), (200, 55)])  # 0.3 then 0.25 per W
    assert allocate([a, b], 200).served == {"ns/a": 50.0, "ns/b": 30.0}
    assert allocate([a, b], 300).served == {"ns/a": 50.0, "ns/b": 55.0}
    assert allocate([a, b], 400).served == {"ns/a": 60.0, "ns/b": 55.0}


def test_whole_watts_never_exceed_the_allowance_and_pay_for_each_point() -> None:
    a = member("ns/a", [(100.2, 10), (300.4, 40)])
    b = member("ns/b", [(99.9, 10), (250.0000001, 30)])  # 1e-7 over: noise
    # The points cost 301 W and 250 W in whole watts (float noise the planner ignores is not a watt).
    got = allocate([a, b], 551.2)
    assert got.served == {"ns/a": 40.0, "ns/b": 30.0}
    assert got.power_w == {"ns/a": 301.0, "ns/b": 250.0}
    assert all(float(w).is_integer() for w in got.power_w.values())
    # Each allocation pays for its point as the planner checks it.
    assert got.power_w["ns/a"] >= 300.4
    assert got.power_w["ns/b"] * (1 + 1e-9) + 1e-9 >= 250.0000001


def test_rounding_down_the_allowance_can_rule_a_point_out() -> None:
    a = member("ns/a", [(100.2, 10), (300.4, 40)])
    b = member("ns/b", [(100.0, 10), (250.5, 30)])
    # 301 + 251 = 552 whole watts: 551.9 W allows 551, so one of them stays at its minimum.
    got = allocate([a, b], 551.9)
    assert sum(got.power_w.values()) <= 551.9
    assert got.served in ({"ns/a": 40.0, "ns/b": 10.0}, {"ns/a": 10.0, "ns/b": 30.0})
    assert got.served == {"ns/a": 40.0, "ns/b": 10.0}  # 30 more served beats 20


def test_spare_watts_are_shared_without_changing_a_point() -> None:
    a = member("ns/a", [(100, 10), (300, 40)])
    b = member("ns/b", [(100, 10), (250, 30)])
    got = allocate([a, b], 1000)
    assert got.served == {"ns/a": 40.0, "ns/b": 30.0}
    assert sum(got.power_w.values()) == 1000.0
    assert got.power_w["ns/a"] - 300 == pytest.approx(got.power_w["ns/b"] - 250, abs=1)


def test_no_limit_gives_every_member_all_it_needs() -> None:
    got = allocate([member("ns/a", [(100, 10), (300, 40)])], math.inf)
    assert got.power_w == {"ns/a": math.inf}
    assert got.served == {"ns/a": 40.0}


def test_overcommit_degrade_cuts_the_lowest_priority_first_and_says_why() -> None:
    hi = member("ns/hi", [(400, 10), (600, 20)], priority=2)
    mid = member("ns/mid", [(300, 10), (500, 20)], priority=1)
    lo = member("ns/lo", [(300, 10), (500, 20)], priority=0)
    got = allocate([hi, mid, lo], 800, on_exhausted=OnExhausted.DEGRADE)
    assert got.overcommitted
    assert [k for k, _ in got.degraded] == ["ns/lo"]
    assert "1000 W" in got.degraded[0][1] and "800 W" in got.degraded[0][1]
    assert "Degrade" in got.degraded[0][1]
    assert got.power_w["ns/hi"] >= 400 and got.power_w["ns/mid"] >= 300
    assert got.power_w["ns/lo"] < 300
    assert sum(got.power_w.values()) <= 800
    # Tighter: both lower priorities cut, lowest first.
    got = allocate([hi, mid, lo], 500, on_exhausted=OnExhausted.CAP_REPLICAS)
    assert [k for k, _ in got.degraded] == ["ns/lo", "ns/mid"]
    assert all("CapReplicas" in why for _, why in got.degraded)
    assert got.power_w["ns/hi"] >= 400 and sum(got.power_w.values()) <= 500


def test_overcommit_with_nothing_left_cuts_everyone() -> None:
    got = allocate([member("ns/a", [(100, 1)]), member("ns/b", [(100, 1)], 1)], 0)
    assert got.overcommitted
    assert [k for k, _ in got.degraded] == ["ns/a", "ns/b"]
    assert got.power_w == {"ns/a": 0.0, "ns/b": 0.0}


def test_overcommit_hold_keeps_the_allocation_in_force_over_the_budget() -> None:
    a = member("ns/a", [(300, 10), (500, 20)])
    b = member("ns/b", [(300, 10), (500, 20)])
    got = allocate([a, b], 500, previous={"ns/a": 500.0, "ns/b": 300.0}, on_exhausted=OnExhausted.HOLD)
    assert got.overcommitted
    assert got.power_w == {"ns/a": 500.0, "ns/b": 300.0}
    assert {k for k, _ in got.degraded} == {"ns/a", "ns/b"}
    assert all("Hold" in why for _, why in got.degraded)
    # Nothing in force: every member at its minimum, like one GreenModel starting with nothing running.
    got = allocate([a, b], 500, on_exhausted=OnExhausted.HOLD)
    assert got.power_w == {"ns/a": 300.0, "ns/b": 300.0}


def test_hysteresis_keeps_the_allocation_on_an_oscillating_input() -> None:
    # Two members whose marginal rates cross back and forth by 2% every interval.
    previous: dict[str, float] | None = None
    changes = 0
    last: dict[str, float] | None = None
    for t in range(40):
        wiggle = 1.02 if t % 2 else 0.98
        a = member("ns/a", [(100, 10), (400, 10 + 300 * wiggle)])
        b = member("ns/b", [(100, 10), (400, 310)])
        got = allocate([a, b], 500, previous=previous)
        if last is not None and dict(got.power_w) != last:
            changes += 1
        last = dict(got.power_w)
        previous = dict(got.power_w)
        assert sum(got.power_w.values()) <= 500
    assert changes == 0
    # Without hysteresis the same input flips every interval.
    previous, changes, last = None, 0, None
    for t in range(40):
        wiggle = 1.02 if t % 2 else 0.98
        a = member("ns/a", [(100, 10), (400, 10 + 300 * wiggle)])
        b = member("ns/b", [(100, 10), (400, 310)])
        got = allocate([a, b], 500, previous=previous, hysteresis=0.0)
        if last is not None and dict(got.power_w) != last:
            changes += 1
        last = dict(got.power_w)
        previous = dict(got.power_w)
    assert changes >= 30


def test_hysteresis_yields_to_a_large_gain_or_a_smaller_allowance() -> None:
    a = member("ns/a", [(100, 10), (400, 310)])
    b = member("ns/b", [(100, 10), (400, 200)])
    first = allocate([a, b], 500)
    assert first.served == {"ns/a": 310.0, "ns/b": 10.0}
    # b's demand rises a lot: the gain (600 vs 320) is far over 5%, so watts move.
    b2 = member("ns/b", [(100, 10), (400, 600)])
    moved = allocate([a, b2], 500, previous=dict(first.power_w))
    assert not moved.kept and moved.served == {"ns/a": 10.0, "ns/b": 600.0}
    # The allowance falls under the allocation in force: it is recomputed within the new allowance.
    shrunk = allocate([a, b], 450, previous=dict(first.power_w))
    assert not shrunk.kept and sum(shrunk.power_w.values()) <= 450
    # A member joins: it starts unprotected, the others keep their parts.
    c = member("ns/c", [(0, 0), (50, 5)])
    joined = allocate([a, b, c], 500, previous=dict(first.power_w))
    assert joined.kept and joined.power_w == {"ns/a": 400.0, "ns/b": 100.0, "ns/c": 0.0}
    kept = allocate([a, b], 500, previous=dict(first.power_w))
    assert kept.kept and kept.power_w == first.power_w


def test_a_rising_demand_is_served_from_the_slack_without_cutting_anyone() -> None:
    a = member("ns/a", [(100, 10), (300, 100)])
    b = member("ns/b", [(100, 10), (300, 100)])
    first = allocate([a, b], 1000)
    assert first.served == {"ns/a": 100.0, "ns/b": 100.0}
    assert sum(first.power_w.values()) == 1000.0  # 400 W of slack shared: 500 W each
    # b's demand triples: it needs 700 W; a still needs 300 W. b gets the slack, a keeps what it uses.
    b3 = member("ns/b", [(100, 10), (300, 100), (700, 300)])
    got = allocate([a, b3], 1000, previous=dict(first.power_w))
    assert got.served == {"ns/a": 100.0, "ns/b": 300.0}
    assert got.power_w["ns/a"] >= 300 and got.power_w["ns/b"] >= 700
    # Both short (a 4x, b 3x): the protected parts (a's 300 W of 500 in force, b's 700) are not moved for
    # a gain in the band, though the unprotected optimum would split differently.
    a4 = member("ns/a", [(100, 10), (300, 100), (620, 340)])
    b4 = member("ns/b", [(100, 10), (300, 100), (700, 330)])
    again = allocate([a4, b4], 1000, previous=dict(got.power_w))
    fresh = allocate([a4, b4], 1000)
    assert fresh.served == {"ns/a": 340.0, "ns/b": 100.0}  # 440 served
    assert again.kept and again.served == {"ns/a": 100.0, "ns/b": 330.0}  # 430: within 5% of 440


def test_bad_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unique"):
        allocate([member("ns/a", [(1, 1)]), member("ns/a", [(1, 1)])], 10)
    with pytest.raises(ValueError, match=">= 0"):
        allocate([member("ns/a", [(1, 1)])], -1)
    with pytest.raises(ValueError, match="empty frontier"):
        allocate([Member("ns/a", 0, ())], 10)
    assert allocate([], 10).power_w == {}


def test_team_allowances_keep_the_power_cap_apart_from_the_paced_energy() -> None:
    budget = Budget(power_w=6000, energy_kwh=40, period="24h")
    # 16 kWh used by noon: 24 kWh over 12 h = 2 kW on average; the 6 kW peak cap stays its own allowance
    # (a peak and an average are divided apart, each over frontiers priced as it is spent).
    peak, average = al.team_allowances_w(budget, 16.0, 0.0, 0.0, 12 * HOUR, None)
    assert peak == 6000 and average == pytest.approx(2000.0)
    # Nothing used at the start: 40 kWh / 24 h = 1667 W.
    assert al.team_allowances_w(budget, 0.0, 0.0, 0.0, 0.0, None)[1] == pytest.approx(40000 / 24)
    # Plentiful energy does not lower the cap, nor the cap the paced energy.
    assert al.team_allowances_w(Budget(power_w=6000, energy_kwh=400), 0.0, 0.0, 0.0, 0.0, None) == (
        6000,
        pytest.approx(400000 / 24),
    )
    assert al.team_allowances_w(Budget(), 0.0, 0.0, 0.0, 0.0, None) == (None, None)
    assert al.team_allowances_w(Budget(power_w=900), 0.0, 0.0, 0.0, 0.0, None) == (900, None)
    # Spent: nothing allowed on average.
    assert al.team_allowances_w(budget, 40.0, 0.0, 0.0, HOUR, None) == (6000, 0.0)
    # Carbon converted through the intensity; the smaller of energy and carbon.
    carbon = Budget(carbon_grams=4000, period="1h")
    assert al.team_allowances_w(carbon, 0.0, 0.0, 0.0, 0.0, 400.0) == (None, pytest.approx(10000.0))
    both = Budget(energy_kwh=5, carbon_grams=4000, period="1h")
    assert al.team_allowances_w(both, 0.0, 0.0, 0.0, 0.0, 400.0)[1] == pytest.approx(5000.0)


def test_a_large_team_keeps_the_greedy_within_the_work_limit_and_says_so() -> None:
    # 16 members with 50-point non-concave frontiers within 60 kW: the exact fallback would take seconds.
    rng = random.Random(1)
    members = []
    for i in range(16):
        p, s, pts = 200.0, 50.0, []
        for _ in range(50):
            pts.append((p, s))
            p += rng.uniform(20, 300)
            s += rng.uniform(5, 200)
        members.append(member(f"ns/m{i}", pts))
    started = time.perf_counter()
    got = allocate(members, 60000)
    assert time.perf_counter() - started < 5.0  # about half a second; generous for a loaded machine
    assert not got.exact
    assert sum(got.power_w.values()) <= 60000
    # The greedy on the hulls is close to the LP relaxation's bound (which no choice of points exceeds).
    pts = [al._points(m) for m in members]
    left = 60000 - sum(p[0].cost for p in pts)
    _, gained, bound = al._greedy(pts, left)
    base = sum(p[0].served for p in pts)
    assert sum(got.served.values()) == pytest.approx(base + gained)
    assert base + gained >= 0.99 * (base + bound)


@settings(max_examples=200, deadline=None)
@given(frontiers(), st.integers(0, 2500), st.data())
def test_protecting_the_allocation_in_force_stays_within_the_allowance_and_the_band(
    members: tuple[Member, ...], allowance: int, data: st.DataObject
) -> None:
    previous = {m.key: float(data.draw(st.integers(0, 1500))) for m in members}
    got = allocate(members, allowance, previous=previous)
    fresh = allocate(members, allowance)
    if fresh.overcommitted:
        assert got.overcommitted
        return
    assert sum(got.power_w.values()) <= allowance
    # Lexicographic over priorities: at the first priority where they differ, the optimum gains at most
    # the hysteresis over what is kept.
    a = served_by_priority(members, dict(got.served))
    b = served_by_priority(members, dict(fresh.served))
    if not got.kept:
        assert a == pytest.approx(b)
        return
    for kept_p, fresh_p in zip(a, b, strict=True):
        if abs(kept_p - fresh_p) > 1e-6:
            assert fresh_p <= kept_p * (1 + al.DEFAULT_HYSTERESIS) + 1e-6
            break
