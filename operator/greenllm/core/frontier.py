"""A GreenModel's power frontier: for each allowance of power, the best configuration its planner can run
and the demand it then serves within the SLO. Pure; what the team allocator (core.allocation) divides a
budget by.

Built from the planner's own search space (core.plan_space.PlanSpace: the same pairs, replica rules,
power and capacity), not a second capacity model:

- Top point: the planner's choice with no budget, the least power meeting the SLOs
  (`PlanSpace.best_of`); it serves all of the demand.
- Below it, every (variant, setting, replicas) the planner could be left with under a tighter allowance,
  replicas from max(replicas.min, 1 for a non-zero demand) up to the fewest meeting the SLO rules for that
  pair. A configuration short of them serves the share n / n_need of the demand within the SLO, n_need
  being the fewest replicas of that pair meeting the capacity rule with headroom and the TTFT estimate
  (n_need >= demand's work x (1 + headroom), so this is never more than its capacity share the planner's
  Degrade rule ranks by). A pair that cannot meet the TTFT SLO at any count serves nothing within it.
- The frontier is the Pareto set of those (power, served): increasing in both, each point the least
  power serving that much; point 0 is the cheapest configuration (the member's minimum).

A point's power is what the member's `budget.powerW` cap counts for that configuration as the burst rules
run it (core.step.with_burst_rules, core.burst.power_cap_fit): its replicas, raised to the warm floor,
times one replica's peak power at the fast tier's burst setting (`BurstPlan.peak_w`), not the planner's
expected (fluid) power. The allocator hands out watts that members spend as that cap, so an allocation of
a point's power pays for the point's configuration with its floor and burst setting; priced at expected
power, a member allocated X W could run far less than the frontier promised. The warm floor is sized as
the member's last tick sized it (`WarmFloor`: its floor state after the tick and the tick's observation);
without one the floor is left out (no burst seen yet). Each pair's minimum (replicas at the lower end)
is also offered as the cap runs it when it pays for nothing more (power_cap_fit's last resort): no warm
floor, no fast tier, every GPU at the pair's own setting's peak. Priced with the floor and the burst
setting, two members' minimums alone can exceed the allowance and the allocator's overcommit rule cuts
the lower priorities to nothing. Above the minimum a point includes its floor and burst setting: its
served demand does not value them, so pricing every point without them would never pay for either.

With `expected=True` a point's power is the planner's expected (fluid) power instead, with no floor or
burst setting: what a member's planner counts against an average-power allowance (core.step.plan_step's
`extra_allowance_w`, as against its own paced energy budget). A team budget's paced energy and carbon are
an average and are divided over these frontiers; its `powerW` (a peak) over the peak-priced ones.

Served demand is in output tokens/s: a configuration serves up to its share of the planned demand,
capacity = demand.output_tokens_per_s x share. The planned demand is a peak (core.step plans on the peak
of the scale-down window), and the demand moves under it; with `recent_output` (the member's recent
demands, output tokens/s, e.g. one per interval over that window) a configuration serves, on average over
those demands and the peak, min(capacity, demand): what a fleet of that capacity serves within the SLO
while the demand moves (the rest waits). This is concave in capacity, as attainment is on bursty load (a
short fleet still serves the lulls), where the share of the peak alone is linear and would make the
allocator's choice between two short members a coin toss. Without `recent_output` it is the share of the
peak. A zero demand gives the one point of the minimum configuration, serving nothing. A spec with no
runnable variant gives (0 W, 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from greenllm.api.v1alpha1 import GreenModelSpec, Variant
from greenllm.core.allocation import FrontierPoint
from greenllm.core.burst import FloorState, peak_power_w
from greenllm.core.decision import Demand, Observation
from greenllm.core.plan_rules import _TTFT_UNREACHABLE as TTFT_UNREACHABLE  # Pair.why_code's
from greenllm.core.plan_rules import EPS, Candidate, Pair, PerformanceSource
from greenllm.core.plan_space import PlanSpace
from greenllm.core.step import BurstPlan, burst_plan

# Most replica counts tried per pair below its need: beyond it the counts are thinned evenly (the
# frontier stays exact at the ends and keeps a point every few replicas in between).
MAX_COUNTS_PER_PAIR = 64


@dataclass(frozen=True, slots=True)
class WarmFloor:
    """What sizes a member's warm floor (core.burst): its floor state after its last tick (LoopState.floor),
    that tick's observation and time. Re-sized from them the floor is the one that tick kept (the margin
    moved already, the request size was seen at that time)."""

    state: FloorState
    observation: Observation
    now: float


def power_frontier(
    spec: GreenModelSpec,
    demand: Demand,
    source: PerformanceSource,
    *,
    min_capacity: float = 0.0,
    recent_output: Sequence[float] = (),
    warm: WarmFloor | None = None,
    expected: bool = False,
) -> tuple[FrontierPoint, ...]:
    """The member's frontier at `demand` (module doc). `min_capacity` as PlanSpace's (the SLO feedback's
    capacity floor, a multiple of demand); `recent_output`: recent output demands, tokens/s; `warm`: the
    warm floor's inputs (None: no floor); `expected`: priced at expected power, not the cap's peak."""
    space = PlanSpace(spec, demand, source, min_capacity)
    if not space.pairs:
        return (FrontierPoint(0.0, 0.0, "no variant can run"),)
    out = max(demand.output_tokens_per_s, 0.0)
    samples = sorted([out, *(min(max(r, 0.0), out) for r in recent_output)])

    def served(capacity: float) -> float:
        return sum(min(capacity, x) for x in samples) / len(samples)

    runs: dict[tuple[str, object], BurstPlan] = {}
    by_name = {v.name: v for v in spec.variants}

    def peak(pair: Pair, c: Candidate) -> float:
        """The cap's count for `c` (module doc); its expected power when the energy model has no burst
        setting for it (the cap cannot price it either), and when the frontier is priced at expected
        power."""
        if expected:
            return c.power_w
        key = (pair.variant, pair.setting)
        run = runs.get(key)
        if run is None:
            run = runs[key] = _burst_plan(spec, by_name[pair.variant], pair, source, warm)
        w = run.peak_w(c.replicas)
        return c.power_w if w is None else w

    lo = max(space.min_replicas, 1 if space.demand_positive else 0)
    options: list[FrontierPoint] = []
    top = space.best_of(space.pairs, None)
    if top is not None:
        top_pair = space.find(top.variant, top.setting)
        assert top_pair is not None
        options.append(FrontierPoint(peak(top_pair, top), served(out), top.label()))
    for pair in space.pairs:
        hi = min(pair.need_any, space.max_replicas)
        for n in _counts(lo, hi):
            c = space.candidate(pair, n)
            if c.slo_met:
                share = 1.0
            elif pair.why_code == TTFT_UNREACHABLE:
                share = 0.0  # TTFT unreachable at any count: nothing is served within the SLO
            else:
                # n < need_any here (n = need_any within replicas.max meets the SLO rules).
                share = min(n / pair.need_any, 1.0) if pair.need_any > 0 else 1.0
            options.append(FrontierPoint(peak(pair, c), served(out * share), c.label()))
            if n == lo and not expected:
                # The minimum as the cap runs it when it pays for nothing more (module doc).
                options.append(FrontierPoint(n * peak_power_w(pair.perf), served(out * share), c.label()))
    return _pareto(options)


def _burst_plan(
    spec: GreenModelSpec, variant: Variant, pair: Pair, source: PerformanceSource, warm: WarmFloor | None
) -> BurstPlan:
    """How the burst rules run `pair`'s variant (core.step.burst_plan), with the floor `warm` sizes."""
    if warm is None:
        return burst_plan(spec, FloorState(), variant, pair.setting, False, Observation(0.0), 0.0, source)
    return burst_plan(spec, warm.state, variant, pair.setting, True, warm.observation, warm.now, source)


def _counts(lo: int, hi: int) -> list[int]:
    if hi < lo:
        return [lo]
    span = hi - lo + 1
    if span <= MAX_COUNTS_PER_PAIR:
        return list(range(lo, hi + 1))
    step = span / (MAX_COUNTS_PER_PAIR - 1)
    return sorted({lo + round(i * step) for i in range(MAX_COUNTS_PER_PAIR - 1)} | {hi})


def _pareto(options: list[FrontierPoint]) -> tuple[FrontierPoint, ...]:
    """Least power first (ties: more served), then only points serving strictly more."""
    options.sort(key=lambda p: (p.power_w, -p.served))
    kept: list[FrontierPoint] = []
    for p in options:
        if not kept or p.served > kept[-1].served * (1.0 + EPS) + EPS:
            kept.append(p)
    return tuple(kept)
