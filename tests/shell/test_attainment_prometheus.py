"""The attainment and peak-queue queries against a real Prometheus scraping vLLM-shaped histograms and the
node agent's peak gauge (tests/e2e/slo_fleet.py), with request mixes whose shares are known exactly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.e2e.slo_fleet import SloFleet, SloSeries
from tests.prometheus_server import scraped

from greenllm.api import v1alpha1 as api
from greenllm.controller.prometheus import prometheus_query
from greenllm.core.decision import Observation
from greenllm.loop import promql

POD = "llama-5d8f7c9b6-{}"  # what pod_regex("llama") matches


@pytest.fixture(scope="module")
def prometheus() -> Iterator[tuple[SloFleet, promql.Query]]:
    fleet = SloFleet()
    # 90 % of first tokens within 1 s, 6 % at 1.8 s (within a 2 s SLO, but vLLM has no 2.0 bucket), 4 % late;
    # 97 % of requests within 50 ms per output token.
    mixed = SloSeries(
        "mixed",
        POD.format("aaaaa"),
        requests_per_s=20.0,
        ttft=((0.3, 0.90), (1.8, 0.06), (4.0, 0.04)),
        tpot=((0.03, 0.97), (0.2, 0.03)),
    )
    # Two pods of one GreenModel at different rates: the shares are weighted by requests, not averaged.
    fast = SloSeries("two", POD.format("bbbbb"), requests_per_s=10.0, ttft=((0.2, 1.0),))
    slow = SloSeries("two", POD.format("ccccc"), requests_per_s=30.0, ttft=((0.2, 0.5), (5.0, 0.5)))
    # Misses of both SLOs add up past zero: clamped.
    bad = SloSeries(
        "bad",
        POD.format("ddddd"),
        requests_per_s=5.0,
        ttft=((0.2, 0.3), (5.0, 0.7)),
        tpot=((0.02, 0.4), (0.2, 0.6)),
    )
    no_tpot = SloSeries("no-tpot", POD.format("eeeee"), requests_per_s=5.0, tpot_histogram=False)
    idle = SloSeries("idle", POD.format("fffff"), requests_per_s=0.0)
    # The agent's gauge: pod a on two GPUs (one pod, one queue: counted once), pod b on one, and a pod of
    # another Deployment in the namespace that must not count.
    peak_a = SloSeries("queue", POD.format("aaaaa"), peak_waiting={"GPU-0": 7.0, "GPU-1": 7.0})
    peak_b = SloSeries("queue", POD.format("bbbbb"), peak_waiting={"GPU-2": 3.0})
    other = SloSeries("queue", "other-6b7c8d9f5-zzzzz", peak_waiting={"GPU-3": 100.0})
    # The arrivals gauge, likewise (its own namespace: the same pods' series would mix the two tests).
    burst_a = SloSeries("burst", POD.format("aaaaa"), peak_arrivals={"GPU-0": 20.0, "GPU-1": 20.0})
    burst_b = SloSeries("burst", POD.format("bbbbb"), peak_arrivals={"GPU-2": 5.0})
    burst_other = SloSeries("burst", "other-6b7c8d9f5-zzzzz", peak_arrivals={"GPU-3": 500.0})
    for series in (
        mixed,
        fast,
        slow,
        bad,
        no_tpot,
        idle,
        peak_a,
        peak_b,
        other,
        burst_a,
        burst_b,
        burst_other,
    ):
        fleet.set_slo(series)
    with scraped(fleet) as server:
        yield fleet, prometheus_query(server.url, timeout_s=5.0)


def spec(**slo: Any) -> api.GreenModelSpec:
    return api.GreenModelSpec.model_validate(
        {
            "model": {"name": "m"},
            "variants": [{"name": "bf16", "precision": "bf16", "image": "i"}],
            "slo": slo,
        }
    )


def observe(query: promql.Query, namespace: str, **slo: Any) -> Observation:
    qs = promql.build_queries(spec(**slo), namespace, "llama", window="5s")
    return promql.observe(query, qs, now=time.time(), max_age_s=30.0, previous_energy_j=None)


def eventually(check: Callable[[], Any], message: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}; last value {value!r}")
        time.sleep(0.2)


def attainment(query: promql.Query, namespace: str, **slo: Any) -> float:
    """The attainment once Prometheus has two scrapes of the histograms (rate() needs them)."""
    value = eventually(lambda: observe(query, namespace, **slo).attainment is not None, f"{namespace} data")
    assert value
    result = observe(query, namespace, **slo).attainment
    assert result is not None
    return result


def test_attainment_from_the_buckets_at_the_slos(prometheus: tuple[SloFleet, promql.Query]) -> None:
    _, query = prometheus
    # A 2 s TTFT SLO lies 2/3 of the way from the 1.0 to the 2.5 bucket: the 6 % between them count as
    # spread evenly over the bucket (as histogram_quantile reads it), 4 % within the SLO.
    assert attainment(query, "mixed", ttftP90Ms=2000, tpotP90Ms=50) == pytest.approx(
        0.90 + 0.06 * 2 / 3 + 0.97 - 1, abs=1e-6
    )
    # On an edge (2.5 s), that bucket alone: they count as met.
    assert attainment(query, "mixed", ttftP90Ms=2500, tpotP90Ms=50) == pytest.approx(
        0.96 + 0.97 - 1, abs=1e-6
    )
    # A 40 ms TPOT SLO lies 3/5 of the way from the 0.025 to the 0.05 bucket, which hold 0 % and 97 %.
    assert attainment(query, "mixed", ttftP90Ms=2500, tpotP90Ms=40) == pytest.approx(
        0.96 + 0.97 * 3 / 5 - 1, abs=1e-6
    )


def test_attainment_weights_pods_by_their_requests(prometheus: tuple[SloFleet, promql.Query]) -> None:
    _, query = prometheus
    assert attainment(query, "two") == pytest.approx((10 * 1.0 + 30 * 0.5) / 40, abs=1e-6)


def test_attainment_union_bound_is_clamped_at_zero(prometheus: tuple[SloFleet, promql.Query]) -> None:
    _, query = prometheus
    assert attainment(query, "bad") == 0.0  # 0.3 + 0.4 - 1 < 0


def test_attainment_is_unknown_without_a_histogram_or_requests(
    prometheus: tuple[SloFleet, promql.Query],
) -> None:
    _, query = prometheus
    attainment(query, "mixed")  # Prometheus has scraped enough for a rate
    assert observe(query, "no-tpot").attainment is None  # no per-request TPOT histogram: no series
    assert observe(query, "idle").attainment is None  # no request in the window: 0 / 0
    assert observe(query, "nobody").attainment is None
    assert observe(query, "mixed", tpotP90Ms=5).attainment is None  # SLO below vLLM's first bucket


def test_peak_waiting_is_each_pods_highest_in_the_window(prometheus: tuple[SloFleet, promql.Query]) -> None:
    fleet, query = prometheus
    pod_a = POD.format("aaaaa")
    assert eventually(lambda: observe(query, "queue").peak_waiting_requests == 10.0, "7 + 3")
    assert observe(query, "mixed").peak_waiting_requests is None  # no agent gauge: unknown, not 0
    fleet.update_slo("queue", pod_a, peak_waiting={"GPU-0": 9.0, "GPU-1": 9.0})
    eventually(lambda: observe(query, "queue").peak_waiting_requests == 12.0, "the new peak")
    fleet.update_slo("queue", pod_a, peak_waiting={"GPU-0": 1.0, "GPU-1": 1.0})
    now = 'sum(greenllm_agent_waiting_requests_peak{namespace="queue"})'  # every GPU's latest value
    eventually(lambda: promql.scalar(query(now)) == 105.0, "the queue to fall (1 + 1 + 3 + 100)")
    assert observe(query, "queue").peak_waiting_requests == 12.0  # the window remembers


def test_peak_arrivals_is_the_largest_fleet_burst_in_the_window(
    prometheus: tuple[SloFleet, promql.Query],
) -> None:
    fleet, query = prometheus
    pod_a = POD.format("aaaaa")
    # One pod on two GPUs counts once; the other Deployment's pod not at all.
    assert eventually(lambda: observe(query, "burst").peak_arrivals == 25.0, "20 + 5")
    assert observe(query, "mixed").peak_arrivals is None  # no agent gauge: unknown, not 0
    fleet.update_slo("burst", pod_a, peak_arrivals={"GPU-0": 40.0, "GPU-1": 40.0})
    eventually(lambda: observe(query, "burst").peak_arrivals == 45.0, "the larger burst")
    fleet.update_slo("burst", pod_a, peak_arrivals={"GPU-0": 0.0, "GPU-1": 0.0})
    now = 'sum(greenllm_agent_arrivals_peak{namespace="burst"})'  # every GPU's latest value
    eventually(lambda: promql.scalar(query(now)) == 505.0, "the burst to pass (0 + 0 + 5 + 500)")
    assert observe(query, "burst").peak_arrivals == 45.0  # the window remembers the fleet's largest
