"""Team budgets: divide one allowance of power among the GreenModels an EnergyBudget covers. Pure.

Each member offers its frontier (core.frontier): points (power W, demand served within the SLO in output
tokens/s), increasing in both; point 0 is its minimum configuration (replicas.min at its cheapest), the
last serves all of its demand. A member runs one point, so it is given at least that point's power.

Objective (lexicographic over priorities, which is the priority-weighted sum with weights far apart):
1. Every member's minimum configuration first. When the minimums alone exceed the allowance the budget
   is overcommitted and `onExhausted` acts in priority order (section "Overcommit").
2. Then the highest priority: the most demand served within the SLO (sum of tokens/s over its members)
   with what is left, using the least power among the ways to serve that much; then the next priority
   with what is left after it; and so on.
3. Within a priority, upgrades go by marginal served demand per watt: greedy on the concave hull of each
   frontier, taking hull segments by falling slope while they fit.

Exactness. The greedy is exact (equal to an exhaustive search over every combination of points) when
every frontier is concave (all its points on its hull) and all steps of all members of the priority cost
the same power (divisible steps): then any choice takes at most k = floor(left / step) steps and the k
best increments are a prefix of each member's (concave) steps. It is also exact whenever no watt is
left when the first segment that does not fit comes up (the LP relaxation's bound is then reached, and
no choice of points beats that bound). In every other case (non-concave frontiers, steps that do not
divide) the allocator checks the greedy against the LP bound and, when it falls short, solves the
priority exactly by dynamic programming
over whole watts (the Pareto set of (power, served) over the members, dominated states dropped), which
is exact; beyond `EXACT_WORK_LIMIT` it keeps the greedy and says so in `Allocation.exact`.

Rounding. All powers are whole watts: a point costs ceil(power) and the allowance is floor(allowance), so
the sum of the allocations never exceeds the allowance and every member's allocation pays for its chosen
point. The whole watts left over are shared equally among the members (as slack for demand moving within
the interval); they never buy a point, so they change no configuration.

Stability (hysteresis). With `previous` (the allocation in force, W per member), each member keeps the
part of it that it still uses: the best point of its new frontier within min(its allocation in force,
its new top), and only what is left over is divided as above (a member whose demand rises is served from
the slack at once, nobody is cut for it). This protected allocation is used unless the unprotected
optimum serves, at the highest priority where they differ, more than `hysteresis` (relative) more demand,
or the protections no longer fit the allowance. Moving watts from one member to another costs more than
the frontiers show (the member given more starts pods, which take a minute; the one given less sheds them
at once), so demand oscillating within that band moves no watts between members, and a member only loses
watts it no longer needs, or for a clear gain. New members start unprotected. Hold times: a member's
frontier is taken at the demand its step plans for (core.frontier), the peak of its
scaleDownStabilization window, so what it needs, and with it the part of its allocation it keeps, falls
only once that window has passed: the allocation holds what the member's own scale-down would hold.

Overcommit (the minimums alone exceed the allowance), by `onExhausted` (as for one GreenModel's budget):
- Degrade and CapReplicas: members are cut from the lowest priority up (within a priority the one whose
  minimum serves least per watt first, then by key) until the remaining minimums fit. The members kept
  get their minimum and share what is left as above; the members cut share the rest, highest priority
  first, each up to its minimum, so they sit below their minimum: their own planner then acts by the same
  onExhausted (Degrade: the cheapest configuration; CapReplicas: fewer replicas of the variant in force).
  `degraded` names each member cut and why, in the order they were cut.
- Hold: change nothing: the allocation in force is kept as it is (or, with none, every member gets its
  minimum, like a single GreenModel that starts with nothing running); this is the one case the sum may
  exceed the allowance, and `degraded` names every member, held over the budget.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from greenllm.api.v1alpha1 import Budget, OnExhausted
from greenllm.core import budget as budget_rules
from greenllm.core.plan_rules import EPS as PLAN_EPS

# Relative gain in served demand (at any priority) below which the allocation in force is kept.
DEFAULT_HYSTERESIS = 0.05
# Most (state, point) pairs the exact fallback may combine before it keeps the greedy: at most about half
# a second of Python per priority (8 members with 50-point frontiers within 20 kW take a tenth of one).
EXACT_WORK_LIMIT = 200_000
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class FrontierPoint:
    power_w: float  # expected fleet power of the member's best configuration within this allowance
    served: float  # demand it then serves within the SLO, output tokens/s (<= the member's demand)
    label: str = ""  # the configuration, for reasons (e.g. "v-fp8 x2 @ 300 W/GPU")


@dataclass(frozen=True, slots=True)
class Member:
    key: str  # "namespace/name"
    priority: int  # higher is served first
    frontier: tuple[FrontierPoint, ...]  # increasing power_w and served; [0] = its minimum configuration


@dataclass(frozen=True, slots=True)
class Allocation:
    power_w: Mapping[str, float]  # per member key; sum <= allowance (except onExhausted Hold, see module)
    served: Mapping[str, float]  # demand the chosen point serves within the SLO, tokens/s
    overcommitted: bool  # the members' minimum configurations alone exceed the allowance
    degraded: tuple[tuple[str, str], ...]  # (key, why) members cut below their minimum, in the order cut
    reasons: Mapping[str, str] = field(default_factory=dict)  # per member: what it got and why
    kept: bool = False  # the allocation in force was kept (hysteresis)
    exact: bool = True  # False only when the exact fallback was too large and the greedy was kept


def _watts_up(power_w: float) -> int:
    """Whole watts that pay for `power_w` as the planner checks it (plan_rules: within a relative 1e-9)."""
    return max(math.ceil(power_w / (1.0 + PLAN_EPS) - PLAN_EPS), 0)


@dataclass(frozen=True, slots=True)
class _Point:
    cost: int  # whole watts
    served: float
    label: str


def _points(member: Member) -> tuple[_Point, ...]:
    """The member's frontier in whole watts, dominated points dropped (more power, no more served)."""
    if not member.frontier:
        raise ValueError(f"{member.key}: empty frontier")
    pts = sorted(
        (_Point(_watts_up(p.power_w), max(p.served, 0.0), p.label) for p in member.frontier),
        key=lambda p: (p.cost, -p.served),
    )
    out = [pts[0]]
    for p in pts[1:]:
        if p.served > out[-1].served + _EPS:
            out.append(p)
    return tuple(out)


def _hull(points: Sequence[_Point]) -> list[int]:
    """Indices of the upper concave hull of the points, from the first (the minimum) to the last."""
    hull: list[int] = [0]
    for i in range(1, len(points)):
        while len(hull) >= 2:
            a, b = points[hull[-2]], points[hull[-1]]
            c = points[i]
            # b lies strictly below the segment a-c: drop it (collinear points stay, so equal steps stay
            # steps and the greedy can stop between them).
            if (b.served - a.served) * (c.cost - a.cost) < (c.served - a.served) * (b.cost - a.cost) - _EPS:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _greedy(frontiers: Sequence[Sequence[_Point]], left: int) -> tuple[list[int], float, float]:
    """Greedy over hull segments by falling slope. Returns (chosen index per member, served gained, LP
    bound on the gain): the bound adds the fraction of the first segment that did not fit.

    A heap holds each member's next hull segment, so a member's segments are taken in order even when
    float noise makes a later one look a hair steeper; a member whose next segment does not fit stops
    there (its later segments cannot follow it), others go on: a flatter, cheaper one may still fit."""
    hulls = [_hull(pts) for pts in frontiers]
    pos = [0] * len(frontiers)  # position in the member's hull
    heap: list[tuple[float, int]] = []

    def push(m: int) -> None:
        hull, pts = hulls[m], frontiers[m]
        if pos[m] + 1 < len(hull):
            a, b = pts[hull[pos[m]]], pts[hull[pos[m] + 1]]
            dc = b.cost - a.cost
            slope = math.inf if dc <= 0 else (b.served - a.served) / dc
            heapq.heappush(heap, (-slope, m))

    for m in range(len(frontiers)):
        push(m)
    gained = 0.0
    bound: float | None = None
    while heap:
        neg_slope, m = heapq.heappop(heap)
        hull, pts = hulls[m], frontiers[m]
        a, b = pts[hull[pos[m]]], pts[hull[pos[m] + 1]]
        dc = b.cost - a.cost
        if dc <= left:
            left -= dc
            gained += b.served - a.served
            pos[m] += 1
            push(m)
        elif bound is None:
            bound = gained + (-neg_slope) * left
    chosen = [hulls[m][pos[m]] for m in range(len(frontiers))]
    return chosen, gained, gained if bound is None else max(bound, gained)


def _divisible_concave(frontiers: Sequence[Sequence[_Point]]) -> bool:
    """Every frontier concave (all points on its hull) and every step of every member the same cost: the
    case where the greedy is exact at any allowance (module doc)."""
    steps: set[int] = set()
    for pts in frontiers:
        if len(_hull(pts)) != len(pts):
            return False
        steps.update(b.cost - a.cost for a, b in itertools.pairwise(pts))
    return len(steps) <= 1


def _exact(frontiers: Sequence[Sequence[_Point]], left: int) -> tuple[list[int], float] | None:
    """The most served gain within `left` whole watts over the members' points (upgrades over each
    member's point 0), least power among equals; None when that takes more than EXACT_WORK_LIMIT."""
    # state: cost -> (served, choices); kept as a Pareto list sorted by cost with served increasing.
    states: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
    work = 0
    for pts in frontiers:
        work += len(states) * len(pts)
        if work > EXACT_WORK_LIMIT:
            return None
        base = pts[0]
        nxt: list[tuple[int, float, tuple[int, ...]]] = []
        for cost, served, picks in states:
            for i, p in enumerate(pts):
                c = cost + p.cost - base.cost
                if c > left:
                    break
                nxt.append((c, served + p.served - base.served, (*picks, i)))
        nxt.sort(key=lambda s: (s[0], -s[1]))
        states = []
        for s in nxt:
            if not states or s[1] > states[-1][1] + _EPS:
                states.append(s)
    # States are sorted by cost with served rising: the last serves most; take the cheapest as good.
    top = states[-1][1]
    cheapest = min((s for s in states if s[1] >= top - _EPS), key=lambda s: s[0])
    return list(cheapest[2]), cheapest[1]


def _serve_priority(frontiers: Sequence[Sequence[_Point]], left: int) -> tuple[list[int], bool]:
    """Choose one point per member within `left` extra whole watts (module doc, steps 2-3)."""
    chosen, gained, bound = _greedy(frontiers, left)
    if bound <= gained + _EPS * max(1.0, abs(bound)) or _divisible_concave(frontiers):
        return chosen, True
    exact = _exact(frontiers, left)
    if exact is None:
        return chosen, False
    picks, served = exact
    if served + _EPS < gained:  # cannot happen (the DP is exact); keep the better one regardless
        return chosen, True
    return picks, True


def _value_at(points: Sequence[_Point], watts: float) -> int | None:
    """Index of the best point within `watts`, None when even the minimum does not fit."""
    best: int | None = None
    for i, p in enumerate(points):
        if p.cost <= watts + _EPS:
            best = i
    return best


def _by_priority(members: Sequence[Member]) -> list[int]:
    return sorted({m.priority for m in members}, reverse=True)


def _cut_order(members: Sequence[Member], pts: Mapping[str, tuple[_Point, ...]]) -> list[Member]:
    """Who is cut first when the minimums do not fit: lowest priority, then least served per watt at the
    minimum, then by key."""

    def per_watt(m: Member) -> float:
        p = pts[m.key][0]
        return p.served / p.cost if p.cost > 0 else math.inf

    return sorted(members, key=lambda m: (m.priority, per_watt(m), m.key))


def allocate(
    members: Sequence[Member],
    allowance_w: float,
    *,
    previous: Mapping[str, float] | None = None,
    hysteresis: float = DEFAULT_HYSTERESIS,
    on_exhausted: OnExhausted = OnExhausted.DEGRADE,
) -> Allocation:
    """Divide `allowance_w` among `members` (module doc). `allowance_w` = math.inf: no limit, every member
    gets math.inf (its planner's least power meeting the SLOs)."""
    keys = [m.key for m in members]
    if len(set(keys)) != len(keys):
        raise ValueError(f"member keys must be unique: {keys}")
    if math.isnan(allowance_w) or allowance_w < 0:
        raise ValueError(f"allowance must be >= 0 W, got {allowance_w}")
    if hysteresis < 0:
        raise ValueError(f"hysteresis must be >= 0, got {hysteresis}")
    if not members:
        return Allocation({}, {}, False, ())
    pts = {m.key: _points(m) for m in members}
    if math.isinf(allowance_w):
        return Allocation(
            {m.key: math.inf for m in members},
            {m.key: pts[m.key][-1].served for m in members},
            False,
            (),
            {m.key: "no budget limits power" for m in members},
        )
    total = math.floor(allowance_w + 1e-6)
    minimum = sum(p[0].cost for p in pts.values())
    if minimum > total:
        return _overcommit(members, pts, total, minimum, previous, on_exhausted)

    fresh = _optimum(members, pts, total - minimum)
    if previous is not None:
        kept = _keep_previous(members, pts, total, previous, fresh, hysteresis)
        if kept is not None:
            return kept
    return fresh


def _choose(
    members: Sequence[Member], pts: Mapping[str, tuple[_Point, ...]], left: int
) -> tuple[dict[str, int], int, bool]:
    """One point per member, priorities from the highest, with `left` whole watts above the minimums.
    Returns (chosen index per key, whole watts still unused, exact)."""
    chosen: dict[str, int] = {}
    exact = True
    for prio in _by_priority(members):
        group = sorted((m for m in members if m.priority == prio), key=lambda m: m.key)
        picks, ok = _serve_priority([pts[m.key] for m in group], left)
        exact = exact and ok
        for m, i in zip(group, picks, strict=True):
            chosen[m.key] = i
            left -= pts[m.key][i].cost - pts[m.key][0].cost
    return chosen, left, exact


def _optimum(members: Sequence[Member], pts: Mapping[str, tuple[_Point, ...]], left: int) -> Allocation:
    chosen, spare, exact = _choose(members, pts, left)
    power, served, reasons = _describe(members, pts, chosen, spare)
    return Allocation(power, served, False, (), reasons, exact=exact)


def _describe(
    members: Sequence[Member],
    pts: Mapping[str, tuple[_Point, ...]],
    chosen: Mapping[str, int],
    spare: int,
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Each member's chosen point in whole watts plus an equal share of the spare (the first members by
    priority then key take the odd watts), what it serves, and why."""
    power: dict[str, float] = {}
    served: dict[str, float] = {}
    reasons: dict[str, str] = {}
    if not members:
        return power, served, reasons
    share, extra = divmod(max(spare, 0), len(members))
    order = sorted(members, key=lambda m: (-m.priority, m.key))
    for rank, m in enumerate(order):
        p = pts[m.key][chosen[m.key]]
        power[m.key] = float(p.cost + share + (1 if rank < extra else 0))
        served[m.key] = p.served
        top = pts[m.key][-1]
        what = p.label or f"{p.cost} W"
        if chosen[m.key] == len(pts[m.key]) - 1:
            reasons[m.key] = f"priority {m.priority}: all demand served ({what})"
        else:
            share_served = p.served / top.served if top.served > 0 else 1.0
            reasons[m.key] = (
                f"priority {m.priority}: {share_served * 100:.0f}% of demand served ({what}); "
                f"all of it needs {top.cost} W"
            )
    return power, served, reasons


def _keep_previous(
    members: Sequence[Member],
    pts: Mapping[str, tuple[_Point, ...]],
    total: int,
    previous: Mapping[str, float],
    fresh: Allocation,
    hysteresis: float,
) -> Allocation | None:
    """The allocation with each member's part of the allocation in force protected (module doc,
    Stability), or None when the protections do not fit or the optimum gains more than `hysteresis`."""
    start: dict[str, int] = {}
    for m in members:
        held = previous.get(m.key)
        i = None if held is None else _value_at(pts[m.key], min(held, pts[m.key][-1].cost))
        start[m.key] = 0 if i is None else i
    protected = sum(pts[m.key][start[m.key]].cost for m in members)
    if protected > total:
        return None
    if all(i == 0 for i in start.values()):
        return None  # nothing to protect: the optimum is the answer
    sticky = {m.key: pts[m.key][start[m.key] :] for m in members}
    chosen, spare, exact = _choose(members, sticky, total - protected)
    picks = {k: start[k] + i for k, i in chosen.items()}
    served = {k: pts[k][i].served for k, i in picks.items()}
    for prio in _by_priority(members):
        group = [m.key for m in members if m.priority == prio]
        new = sum(fresh.served[k] for k in group)
        old = sum(served[k] for k in group)
        if new > old * (1.0 + hysteresis) + _EPS:
            return None
        if new < old - _EPS:
            # Lexicographic: the optimum is worse from here on (it served more at a higher priority
            # within the band above, or this one is better): the protected allocation stands.
            break
    power, served, reasons = _describe(members, pts, picks, spare)
    for m in members:
        if start[m.key] > 0:
            reasons[m.key] += (
                f"; kept its part of the allocation in force (moving it gains less than "
                f"{hysteresis * 100:.0f}%)"
            )
    return Allocation(power, served, False, (), reasons, kept=True, exact=exact)


def _overcommit(
    members: Sequence[Member],
    pts: Mapping[str, tuple[_Point, ...]],
    total: int,
    minimum: int,
    previous: Mapping[str, float] | None,
    on_exhausted: OnExhausted,
) -> Allocation:
    head = f"minimum configurations need {minimum} W, the budget allows {total} W"
    if on_exhausted is OnExhausted.HOLD:
        held = previous if previous is not None and set(previous) == {m.key for m in members} else None
        power = (
            {k: float(v) for k, v in held.items()}
            if held is not None
            else {m.key: float(pts[m.key][0].cost) for m in members}
        )
        served: dict[str, float] = {}
        for m in members:
            i = _value_at(pts[m.key], power[m.key])
            served[m.key] = 0.0 if i is None else pts[m.key][i].served
        what = "allocation in force kept" if held is not None else "started at its minimum anyway"
        why = f"{head}; onExhausted Hold: {what}, over the budget"
        order = sorted(members, key=lambda m: (m.priority, m.key))
        return Allocation(
            power, served, True, tuple((m.key, why) for m in order), {m.key: why for m in members}
        )
    cut: list[Member] = []
    need = minimum
    for m in _cut_order(members, pts):
        if need <= total:
            break
        cut.append(m)
        need -= pts[m.key][0].cost
    cut_keys = {m.key for m in cut}
    kept = [m for m in members if m.key not in cut_keys]
    chosen, spare, exact = _choose(kept, pts, total - need)
    # What the kept members cannot turn into a point goes to the cut members, highest priority first,
    # each up to its minimum; what is still left is shared among the kept members as slack.
    given: dict[str, float] = {}
    for m in sorted(cut, key=lambda m: (-m.priority, m.key)):
        give = min(spare, pts[m.key][0].cost)
        spare -= give
        given[m.key] = float(give)
    power, served, reasons = _describe(kept, pts, chosen, spare)
    degraded: list[tuple[str, str]] = []
    for m in cut:
        power[m.key] = given[m.key]
        served[m.key] = 0.0
        why = (
            f"{head}; onExhausted {on_exhausted.value}: cut below its minimum ({pts[m.key][0].cost} W) "
            f"to {given[m.key]:.0f} W (priority {m.priority}, the lowest left)"
        )
        degraded.append((m.key, why))
        reasons[m.key] = why
    return Allocation(power, served, True, tuple(degraded), reasons, exact=exact)


def team_allowances_w(
    budget: Budget,
    used_kwh: float,
    used_g: float,
    period_start: float,
    now: float,
    intensity_g_per_kwh: float | None,
) -> tuple[float | None, float | None]:
    """The team's two allowances now, divided separately: its `powerW` (a peak, handed to each member as
    its `budget.powerW` cap) and its energy and carbon budgets paced over the rest of the period, the
    smaller (an average, handed to each member as an average-power allowance its planner meets at
    expected power). Paced energy handed out as a peak cap starves the members. None = no such limit."""
    average = budget_rules.allowed_power(
        budget.model_copy(update={"power_w": None}), used_kwh, used_g, period_start, now, intensity_g_per_kwh
    ).power_w
    return budget.power_w, average
