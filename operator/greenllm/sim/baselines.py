"""Baselines found by search on the very trace they are judged on (hindsight), and the policies built
from them.

- `static`: the highest-quality variant at default power, the smallest constant count that meets the
  attainment target: a team that sizes its fleet by load testing.
- `best-static`: the least-energy constant (variant, power setting, count) that meets the target: what a
  careful team would tune by hand with the trace in front of it.
- `clairvoyant`: knows every future request, decides at greenllm's interval and waits for the same pod
  start-up; its one margin over the fluid need is the smallest that meets the target on this trace.
- `instant`: the same, resized every second with no start-up. No real fleet can do this: it is shown for
  scale, not as a bound.
Attainment is taken to grow with the count (and the margin): the searches bisect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.burst import chunked_prefill_rate, energy_per_request_j
from greenllm.core.fasttier import FastTier
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.sim.engine import PolicyRun, Scenario, run_policy
from greenllm.sim.policies import ClairvoyantPolicy, PerfTable, Policy, StaticPolicy, prompt_need
from greenllm.sim.report import request_outcomes


@dataclass(frozen=True)
class Found:
    policy: Policy
    run: PolicyRun
    attainment: float
    met: bool  # False: nothing searched met the target; the closest is returned
    tried: int


class Evaluator:
    """Runs policies on one scenario, remembering each constant fleet it has run."""

    def __init__(self, scenario: Scenario, target: float, tick: Callable[[int], None] | None = None) -> None:
        self.scenario = scenario
        self.target = target
        self._tick = tick
        self._constant: dict[tuple[str, PowerSetting, int], tuple[PolicyRun, float]] = {}
        self.runs = 0

    def attainment(self, run: PolicyRun) -> float:
        s = self.scenario
        _, _, both = request_outcomes(run, s.ttft_slo_s, s.tpot_slo_s)
        return float(both.mean()) if both.size else 1.0

    def run(self, policy: Policy) -> tuple[PolicyRun, float]:
        self.runs += 1
        run = run_policy(self.scenario, policy, self._tick)
        return run, self.attainment(run)

    def constant(self, variant: str, setting: PowerSetting, n: int, name: str) -> tuple[PolicyRun, float]:
        key = (variant, setting, n)
        if key not in self._constant:
            self._constant[key] = self.run(StaticPolicy(variant, n, setting, name=name))
        run, att = self._constant[key]
        run.name = name
        return run, att


def smallest_count(ev: Evaluator, variant: str, setting: PowerSetting, lo: int, hi: int, name: str) -> Found:
    """The fewest replicas in [lo, hi] whose constant fleet meets the target (bisection)."""
    lo, hi = max(lo, 1), max(hi, lo)
    run, att = ev.constant(variant, setting, hi, name)
    if att < ev.target:
        return Found(StaticPolicy(variant, hi, setting, name), run, att, False, ev.runs)
    best = (hi, run, att)
    while lo < best[0]:
        mid = (lo + best[0]) // 2
        run, att = ev.constant(variant, setting, mid, name)
        if att >= ev.target:
            best = (mid, run, att)
        else:
            lo = mid + 1
    n, run, att = best
    return Found(StaticPolicy(variant, n, setting, name), run, att, True, ev.runs)


def frontier(
    spec: GreenModelSpec, perf: PerfTable, settings: tuple[PowerSetting, ...], request: tuple[float, float]
) -> list[tuple[str, PowerSetting, ReplicaPerformance]]:
    """(variant, setting) pairs above the quality floor that no other pair beats in both energy per
    request and prefill capacity (the rest can never be the least-energy constant fleet); of pairs with
    the same performance only the higher-quality variant is kept."""
    pairs: list[tuple[str, PowerSetting, ReplicaPerformance, float]] = []
    for v in sorted(spec.variants, key=lambda v: -v.quality):
        if v.quality < spec.slo.min_quality:
            continue
        for s in settings:
            p = perf.find(v.name, s)
            if p is None or any(q[2] == p for q in pairs):
                continue
            pairs.append((v.name, s, p, energy_per_request_j(p, *request)))
    kept = []
    for name, s, p, j in pairs:
        dominated = any(
            j2 <= j
            and p2.prompt_tokens_per_s >= p.prompt_tokens_per_s
            and (j2, -p2.prompt_tokens_per_s) != (j, -p.prompt_tokens_per_s)
            for _, _, p2, j2 in pairs
        )
        if not dominated:
            kept.append((name, s, p))
    return kept


def best_static(
    ev: Evaluator,
    spec: GreenModelSpec,
    perf: PerfTable,
    settings: tuple[PowerSetting, ...],
    request: tuple[float, float],
    max_replicas: int,
) -> Found:
    """The least-energy constant fleet meeting the target, over the frontier's pairs.

    Pruning that never drops the answer: a fleet of n replicas spends at least n x idle power x the
    duration, so counts at or above best-so-far / that are never run; a capped setting has no more
    capacity than the default, so its count starts at the default's and grows only while its energy is
    still below the best so far (energy grows with the count)."""
    best: Found | None = None
    closest: Found | None = None
    pairs = frontier(spec, perf, settings, request)
    pairs.sort(key=lambda x: (not x[1].is_default, energy_per_request_j(x[2], *request)))
    seconds = ev.scenario.steps * ev.scenario.step_s
    floor_by_variant: dict[str, int] = {}
    for variant, setting, p in pairs:
        lo = floor_by_variant.get(variant, 1)
        hi = min(max_replicas, ev.scenario.max_replicas(variant))  # the GPUs hold fewer of a wider variant
        if best is not None:
            hi = min(hi, math.ceil(best.run.energy_j / (p.idle_power_w * seconds)) - 1)
        if hi < lo:
            continue
        if setting.is_default:
            found = smallest_count(ev, variant, setting, lo, hi, "best-static")
            if found.met:
                floor_by_variant[variant] = found.policy.initial().replicas
        else:
            found = _walk_up(ev, variant, setting, lo, hi, best)
        if found.met and (best is None or found.run.energy_j < best.run.energy_j):
            best = found
        if closest is None or found.attainment > closest.attainment:
            closest = found
    assert closest is not None, "no variant above the quality floor has a profile"
    return best if best is not None else closest


def _walk_up(
    ev: Evaluator, variant: str, setting: PowerSetting, lo: int, hi: int, best: Found | None
) -> Found:
    """Counts from `lo` up until one meets the target or costs more than `best`."""
    found: Found | None = None
    for n in range(lo, hi + 1):
        run, att = ev.constant(variant, setting, n, "best-static")
        found = Found(StaticPolicy(variant, n, setting, "best-static"), run, att, att >= ev.target, ev.runs)
        if found.met or (best is not None and run.energy_j >= best.run.energy_j):
            break
    assert found is not None
    return found


def clairvoyant(
    ev: Evaluator,
    name: str,
    variant: str,
    tier: FastTier | None,
    setting: PowerSetting,
    perf: ReplicaPerformance,
    token_budget: int,
    *,
    interval_s: float,
    min_replicas: int,
    max_replicas: int,
    instant: bool,
    rounds: int = 4,
) -> Found:
    """The foresighted policy with the smallest margin (in [1/2, 4], bisected in log) meeting the target."""
    s = ev.scenario
    rate = chunked_prefill_rate(perf, token_budget, s.tpot_slo_s)
    need = prompt_need(s.trace, s.steps, s.ttft_slo_s, rate, s.step_s)
    probe = s.strategy.probe_period_s
    startup = math.ceil(s.startup_s / probe - 1e-9) * probe if probe > 0 else s.startup_s
    ahead = 1 if instant else math.ceil((startup + interval_s) / s.step_s)

    def build(margin: float) -> ClairvoyantPolicy:
        return ClairvoyantPolicy(
            name,
            variant,
            tier,
            setting,
            need,
            interval_s=interval_s,
            lookahead_steps=ahead,
            margin=margin,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            instant=instant,
        )

    lo, hi = math.log(0.5), math.log(4.0)
    policy = build(math.exp(hi))
    run, att = ev.run(policy)
    if att < ev.target:
        return Found(policy, run, att, False, ev.runs)
    best = (policy, run, att)
    for _ in range(rounds):
        mid = (lo + hi) / 2.0
        policy = build(math.exp(mid))
        run, att = ev.run(policy)
        if att >= ev.target:
            best, hi = (policy, run, att), mid
        else:
            lo = mid
    return Found(best[0], best[1], best[2], True, ev.runs)
