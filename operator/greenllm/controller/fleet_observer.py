"""Runs the fleet queries of one Prometheus for every GreenModel's tick, each at most once per freshness
period (controller/fleet_queries.py says what they ask); and puts one GreenModel's observation together
from their rows and its own queries."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from greenllm.api import v1alpha1 as api
from greenllm.core.decision import Observation
from greenllm.loop import fleet_queries, promql
from greenllm.loop.fleet_queries import CounterReading, FleetQuery, Row


class FleetObserver:
    """Answers of the fleet queries, shared by every GreenModel read from one Prometheus.

    A query runs again once its answer is older than the asking GreenModel's freshness (half its
    interval, so at most twice an interval), and one run serves everyone. Until an answer is twice that
    old (an interval), the asker gets it while the run goes on in the background: at thousands of
    GreenModels a run takes a good part of a second, and every tick waiting for it would stall the loop
    (the ticks in flight all wait on the same query, and the next ones on the next query). Older than
    that, or a failure, the asker waits for the run. A failure is remembered as long as an answer would
    be, so a Prometheus that is down is not asked again by every GreenModel."""

    def __init__(self, query: promql.Query, clock: Callable[[], float] = time.monotonic) -> None:
        self._query = query
        self._clock = clock
        self._answers: dict[str, tuple[float, Any]] = {}  # promql -> (when, parsed rows or the error)
        self._running: dict[str, asyncio.Task[tuple[float, Any]]] = {}
        self.runs = 0

    async def answer(self, q: FleetQuery, fresh_s: float) -> Any:
        cached = self._answers.get(q.promql)
        age = math.inf if cached is None else self._clock() - cached[0]
        if cached is None or age >= fresh_s:
            run = self._running.get(q.promql)
            if run is None:
                run = self._running[q.promql] = asyncio.create_task(self._run(q))
            if cached is None or age >= 2 * fresh_s or isinstance(cached[1], Exception):
                cached = await asyncio.shield(run)  # one asker cancelled does not cancel everyone's run
        if isinstance(cached[1], Exception):
            raise promql.MetricsError(f"{q.template}: {cached[1]}")
        return cached[1]

    async def _run(self, q: FleetQuery) -> tuple[float, Any]:
        self.runs += 1
        try:
            raw = await asyncio.to_thread(self._query, q.promql)
            parse = fleet_queries.counter_rows if q.template in fleet_queries.COUNTERS else fleet_queries.rows
            parsed: Any = parse(raw)
        except Exception as e:
            parsed = (
                e if isinstance(e, promql.MetricsError) else promql.MetricsError(f"{type(e).__name__}: {e}")
            )
        finally:
            self._running.pop(q.promql, None)
        answer = self._answers[q.promql] = (self._clock(), parsed)
        return answer


@dataclass
class EnergyReadings:
    """A GreenModel's last reading of its GPUs' energy counters (the baseline of the next increase)."""

    last: CounterReading | None = None


def batched_names(spec: api.GreenModelSpec, overrides: frozenset[str], own_url: bool) -> frozenset[str]:
    """The query names a GreenModel takes from the fleet: all but those it or the operator config
    overrides (`overrides`: template names); none when it reads its own Prometheus."""
    if own_url:
        return frozenset()
    source = spec.metrics.power_source.value
    return frozenset(n for n in promql.QUERY_NAMES if promql.template_key(n, source) not in overrides)


def own_names(batched: frozenset[str], energy: EnergyReadings) -> frozenset[str]:
    """The query names `observe` may run as the GreenModel's own: those not in `batched`, and energy
    while there is no last reading of the fleet's counters (the time since the persisted sample)."""
    own = frozenset(promql.QUERY_NAMES) - batched
    return own | {"energy_j"} if energy.last is None else own


async def observe(
    observer: FleetObserver,
    per_model: promql.Query,
    queries: promql.QuerySet,
    spec: api.GreenModelSpec,
    row: Row,
    *,
    batched: frozenset[str],
    window: str,
    interval_s: float,
    now: float,
    previous_energy_j: float | None,
    energy: EnergyReadings,
) -> Observation:
    """The GreenModel's observation: the names in `batched` from the fleet's rows (its row `row`), the
    rest from its own queries in `queries`. Energy from the fleet: the increase of its counters since its
    last reading; without a last reading (first tick after a start) its own `increase` query, if any."""
    source = spec.metrics.power_source.value
    fresh_s = interval_s / 2
    values: dict[str, float | None] = {}
    reading = energy.last  # taken as the new baseline only once the whole observation succeeded
    own = replace(queries, queries={k: v for k, v in queries.queries.items() if k not in batched})
    attainment_window_s = spec.slo.attainment_window.seconds
    for name in sorted(batched):
        template = promql.template_key(name, source)
        q = fleet_queries.fleet_query(
            template,
            window=window,
            attainment_window_s=attainment_window_s,
            ttft_slo_ms=spec.slo.ttft_p90_ms,
            tpot_slo_ms=spec.slo.tpot_p90_ms,
        )
        if q is None:
            values[name] = None
            continue
        answer = await observer.answer(q, fresh_s)
        if template in fleet_queries.COUNTERS:
            current: CounterReading = answer.get(row, CounterReading({}))
            if energy.last is not None:  # no counters at all: unknown, as an empty increase() is
                values[name] = (
                    fleet_queries.energy_increase_j(energy.last, current) if current.series else None
                )
            elif name in queries.queries:  # the time since the persisted sample: the GreenModel's own query
                own.queries[name] = queries.queries[name]
            reading = current
        else:
            values[name] = answer.get(row)
    if own.queries or own.carbon_query is not None:
        fetched = await asyncio.to_thread(promql.fetch, per_model, own)
    else:  # all from the fleet's rows: no thread for nothing (a hop per tick, thousands a minute)
        fetched = promql.fetch(per_model, own)
    carbon = fetched.pop("carbon_intensity", None)
    values.update(fetched)
    observation = promql.observation_from(
        values, carbon, now, promql.max_age_s(interval_s), previous_energy_j
    )
    # A tick that failed (MetricsError above) accounts nothing, so the next one must start from the same
    # reading: moving the baseline on a failure would lose the energy between the two readings.
    energy.last = reading
    return observation
