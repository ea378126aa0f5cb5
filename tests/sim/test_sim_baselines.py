"""The baselines found by search (sim.baselines): static by bisection, best-static over the frontier."""

from __future__ import annotations

from typing import Any

import pytest
from simkit import CAPPED, DEFAULT, FakeSource, bursty_trace, perf, scenario, spec_dict

from greenllm.api.v1alpha1 import GreenModelSpec, Variant
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.sim.baselines import Evaluator, best_static, frontier, smallest_count
from greenllm.sim.policies import PerfTable

SETTINGS = (DEFAULT, CAPPED)
REQUEST = (3000.0, 20.0)


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    spec = GreenModelSpec.model_validate(spec_dict())
    return Evaluator(scenario(spec, bursty_trace()), 0.9)


def scan(ev: Evaluator, variant: str, setting: PowerSetting, hi: int) -> list[float]:
    return [ev.constant(variant, setting, n, "scan")[1] for n in range(1, hi + 1)]


def test_smallest_count_is_the_first_count_that_meets_the_target(evaluator: Evaluator) -> None:
    attainment = scan(evaluator, "hq", DEFAULT, 8)
    assert attainment == sorted(attainment), "the case must be monotone"
    first = next(n for n, a in enumerate(attainment, 1) if a >= evaluator.target)
    assert 1 < first < 8, "the case must leave something to search"
    found = smallest_count(evaluator, "hq", DEFAULT, 1, 8, "static")
    assert found.met
    assert found.policy.initial().replicas == first
    assert found.attainment == attainment[first - 1] >= evaluator.target
    assert found.run.name == "static"


def test_smallest_count_bisects(evaluator: Evaluator) -> None:
    ev = Evaluator(evaluator.scenario, evaluator.target)
    found = smallest_count(ev, "hq", DEFAULT, 1, 8, "static")
    assert found.met
    assert ev.runs <= 4  # 8, then at most log2(8) more
    # The same counts again are remembered, not re-run.
    smallest_count(ev, "hq", DEFAULT, 1, 8, "static")
    assert ev.runs == found.tried


def test_smallest_count_returns_the_closest_when_nothing_meets(evaluator: Evaluator) -> None:
    ev = Evaluator(evaluator.scenario, 1.0 + 1e-9)
    found = smallest_count(ev, "hq", CAPPED, 1, 3, "static")
    assert not found.met
    assert found.policy.initial().replicas == 3
    assert found.attainment == scan(evaluator, "hq", CAPPED, 3)[-1]


def test_the_evaluators_attainment_is_the_share_of_requests_meeting_both(evaluator: Evaluator) -> None:
    run, attainment = evaluator.constant("hq", DEFAULT, 3, "x")
    s = evaluator.scenario
    ok = (run.ttft_s <= s.ttft_slo_s + 1e-9) & (
        (run.tpot_s <= s.tpot_slo_s + 1e-9) | (run.output_tokens <= 1)
    )
    assert attainment == pytest.approx(float(ok.mean()))


def met_energy(ev: Evaluator, variant: str, setting: PowerSetting) -> float | None:
    found = smallest_count(ev, variant, setting, 1, 8, "pair")
    return found.run.energy_j if found.met else None


def test_best_static_uses_no_more_energy_than_any_frontier_pair(evaluator: Evaluator) -> None:
    spec = evaluator.scenario.spec
    table = evaluator.scenario.perf
    best = best_static(evaluator, spec, table, SETTINGS, REQUEST, 8)
    assert best.met
    energies = [met_energy(evaluator, v, s) for v, s, _ in frontier(spec, table, SETTINGS, REQUEST)]
    assert any(e is not None for e in energies)
    for energy in energies:
        assert energy is None or best.run.energy_j <= energy + 1e-6
    target = best.policy.initial()
    assert best.attainment >= evaluator.target
    assert (target.variant, target.setting) in {
        (v, s) for v, s, _ in frontier(spec, table, SETTINGS, REQUEST)
    }


def test_best_static_returns_the_closest_when_nothing_meets(evaluator: Evaluator) -> None:
    ev = Evaluator(evaluator.scenario, 1.0 + 1e-9)
    spec = ev.scenario.spec
    found = best_static(ev, spec, ev.scenario.perf, SETTINGS, REQUEST, 2)
    assert not found.met
    assert found.policy.initial().replicas == 2


# ---------------------------------------------------------------------------------------------- frontier


def pairs(spec: GreenModelSpec, source: Any = None) -> set[tuple[str, float | None]]:
    table = PerfTable(spec, source or FakeSource())
    return {(v, s.limit_w) for v, s, _ in frontier(spec, table, SETTINGS, REQUEST)}


def test_frontier_drops_pairs_beaten_in_energy_and_prefill(spec: GreenModelSpec) -> None:
    # fast is twice as fast as hq at the same power: both hq pairs are dominated. fast at 300 W uses less
    # energy per request, fast at default power prefills faster: neither dominates the other.
    assert pairs(spec) == {("fast", None), ("fast", 300.0)}


def test_frontier_keeps_the_quality_floor() -> None:
    strict = GreenModelSpec.model_validate(spec_dict(slo={"minQuality": 0.995}))
    assert pairs(strict) == {("hq", None), ("hq", 300.0)}


def test_frontier_keeps_the_higher_quality_of_two_identical_variants(spec: GreenModelSpec) -> None:
    class Same(FakeSource):
        def performance(
            self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
        ) -> ReplicaPerformance:
            return super().performance(spec, spec.variant("hq"), setting)

    assert pairs(spec, Same()) == {("hq", None), ("hq", 300.0)}


def test_frontier_drops_a_setting_that_saves_nothing(spec: GreenModelSpec) -> None:
    class NoSaving(FakeSource):
        def performance(
            self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
        ) -> ReplicaPerformance:
            speed = 2.0 if variant.name == "fast" else 1.0
            if setting.limit_w is not None:  # slower at the same power: more energy, less prefill
                return perf(8000.0 * speed, 800.0 * speed, 100.0, 500.0)
            return perf(10_000.0 * speed, 1000.0 * speed, 100.0, 500.0)

    assert pairs(spec, NoSaving()) == {("fast", None)}
