"""FleetObserver: each fleet query runs once per freshness period for every GreenModel that asks, a failure
is remembered as long as an answer, and a GreenModel's energy comes from the increase of its counters
since its own last reading (its own `increase` query only when it has none)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from greenllm.api import v1alpha1 as api
from greenllm.controller import fleet_observer
from greenllm.loop import fleet_queries, promql

NS = "prod"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _row(deployment: str, value: float, **labels: str) -> dict[str, Any]:
    return {"metric": {"namespace": NS, "deployment": deployment, **labels}, "value": [100.0, str(value)]}


def test_one_run_serves_every_green_model_until_the_answer_is_stale() -> None:
    calls: list[str] = []

    def query(promql: str) -> Any:
        calls.append(promql)
        return [_row("a", float(len(calls))), _row("b", 2.0)]

    clock = Clock()
    observer = fleet_observer.FleetObserver(query, clock)
    q = fleet_queries.FleetQuery("requests_waiting", "sum by (namespace, deployment) (x)")

    async def scenario() -> None:
        answers = await asyncio.gather(*(observer.answer(q, fresh_s=7.5) for _ in range(50)))
        assert len(calls) == 1 and all(a == {(NS, "a"): 1.0, (NS, "b"): 2.0} for a in answers)
        clock.now = 7.0
        await observer.answer(q, fresh_s=7.5)
        assert len(calls) == 1
        # Stale but younger than an interval: served at once, one run in the background for everyone.
        clock.now = 7.6
        stale = await asyncio.gather(*(observer.answer(q, fresh_s=7.5) for _ in range(20)))
        assert all(a[(NS, "a")] == 1.0 for a in stale)
        while observer.runs < 2 or observer._running:
            await asyncio.sleep(0.01)
        assert len(calls) == 2
        assert (await observer.answer(q, fresh_s=7.5))[(NS, "a")] == 2.0
        # Older than an interval: the asker waits for the new answer.
        clock.now = 7.6 + 15.0
        assert (await observer.answer(q, fresh_s=7.5))[(NS, "a")] == 3.0

    asyncio.run(scenario())


def test_a_failure_is_remembered_for_everyone_as_an_answer_would_be() -> None:
    calls = 0

    def query(promql: str) -> Any:
        nonlocal calls
        calls += 1
        raise ConnectionError("refused")

    clock = Clock()
    observer = fleet_observer.FleetObserver(query, clock)
    q = fleet_queries.FleetQuery("requests_waiting", "x")
    for _ in range(3):
        with pytest.raises(promql.MetricsError, match="requests_waiting: ConnectionError: refused"):
            asyncio.run(observer.answer(q, fresh_s=5))
    assert calls == 1
    clock.now = 6
    with pytest.raises(promql.MetricsError):
        asyncio.run(observer.answer(q, fresh_s=5))
    assert calls == 2


def _spec() -> api.GreenModelSpec:
    return api.GreenModelSpec.model_validate(
        {"model": {"name": "m"}, "variants": [{"name": "bf16", "precision": "bf16", "image": "i"}]}
    )


class EnergyFleet:
    """One GreenModel "gm" whose GPU energy counter reads `readings` in turn (J, sample time value / 10),
    and whose own queries answer 42 J to increase(); `fail` makes the prompt-rate fleet query refuse."""

    def __init__(self, *readings: float) -> None:
        self.readings = iter(readings)
        self.fail = False
        self.own_queries: list[str] = []
        self.clock = Clock()
        self.spec = _spec()
        self.observer = fleet_observer.FleetObserver(self.fleet, self.clock)
        self.memory = fleet_observer.EnergyReadings()

    def fleet(self, promql: str) -> Any:
        if "ENERGY" in promql:
            value = next(self.readings)
            return [
                _row("gm", value, UUID="GPU-0", pod="gm-5d8f7c9b6-aaaaa")
                | {"value": [value / 10, str(value)]}
            ]
        if self.fail and "prompt_tokens" in promql:
            raise ConnectionError("refused")
        return []

    def own(self, promql: str) -> Any:
        self.own_queries.append(promql)
        return [{"metric": {}, "value": [0, "42"]}] if "increase" in promql else []

    def tick(self, previous: float | None, since_s: float | None = None) -> float | None:
        """One observation 15 s after the last (no answer, or failure, is reused): its energy total."""
        self.clock.now += 15
        batched = fleet_observer.batched_names(self.spec, frozenset(), own_url=False)
        names = fleet_observer.own_names(batched, self.memory)  # as the operator's tick builds them
        queries = promql.build_queries(self.spec, NS, "gm", since_s=since_s, names=names)
        obs = asyncio.run(
            fleet_observer.observe(
                self.observer,
                self.own,
                queries,
                self.spec,
                (NS, "gm"),
                batched=batched,
                window="1m",
                interval_s=15,
                now=self.clock.now,
                previous_energy_j=previous,
                energy=self.memory,
            )
        )
        return obs.energy_j_total


def test_energy_is_the_increase_since_the_green_models_own_last_reading() -> None:
    fleet = EnergyFleet(1000.0, 1600.0, 1750.0)  # J: the fleet query divides DCGM's mJ by 1000 already
    totals = []
    previous: float | None = None
    for since in (30.0, 15.0, 15.0):  # a restart: the persisted sample was 30 s ago
        previous = fleet.tick(previous, since_s=since)
        totals.append(previous)
    # First: the own increase() since the persisted sample (42 J); then the counters' increases.
    assert totals == [42.0, 42.0 + 600.0, 42.0 + 600.0 + 150.0]
    assert sum("increase" in q for q in fleet.own_queries) == 1


def test_overridden_queries_and_an_own_prometheus_are_not_batched() -> None:
    spec = _spec()
    every = fleet_observer.batched_names(spec, frozenset(), own_url=False)
    assert "prompt_tokens_per_s" in every and "energy_j" in every and "attainment" in every
    fewer = fleet_observer.batched_names(
        spec, frozenset({"prompt_tokens_per_s", "dcgm_power_w"}), own_url=False
    )
    assert every - fewer == {"prompt_tokens_per_s", "power_w"}
    assert fleet_observer.batched_names(spec, frozenset(), own_url=True) == frozenset()


def test_a_tick_fills_only_the_queries_it_runs_as_its_own() -> None:
    spec = _spec()
    every = fleet_observer.batched_names(spec, frozenset(), own_url=False)
    first = fleet_observer.own_names(every, fleet_observer.EnergyReadings())
    assert first == {"energy_j"}  # no reading of the fleet's counters yet: its own increase() this once
    read = fleet_observer.EnergyReadings(fleet_queries.CounterReading({}))
    assert fleet_observer.own_names(every, read) == frozenset()
    assert promql.build_queries(spec, NS, "gm", since_s=15.0, names=frozenset()).queries == {}
    assert list(promql.build_queries(spec, NS, "gm", since_s=15.0, names=first).queries) == ["energy_j"]
    alone = fleet_observer.own_names(frozenset(), read)  # its own Prometheus: everything
    assert promql.build_queries(spec, NS, "gm", since_s=15.0, names=alone).queries.keys() == set(
        promql.QUERY_NAMES
    )


def test_a_failed_tick_does_not_move_the_energy_baseline() -> None:
    """The energy between two readings is counted by the tick that succeeds: a tick whose other queries
    fail must not take a reading, or the next tick would start from it and that energy would be lost."""
    fleet = EnergyFleet(1000.0, 1600.0, 1750.0)
    first = fleet.tick(None)  # baseline at 1000
    fleet.fail = True
    with pytest.raises(promql.MetricsError):
        fleet.tick(first)  # read 1600, then failed
    fleet.fail = False
    assert fleet.tick(first) == pytest.approx((first or 0.0) + 750.0)  # 1750 - 1000: nothing lost
