"""The fleet queries (one per metric kind for every GreenModel) give each GreenModel the numbers its own
per-GreenModel queries give, on a real Prometheus scraping DCGM, Kepler, vLLM and agent series of several
GreenModels' pods in two namespaces, next to a pod of another Deployment that belongs to none of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.e2e.slo_fleet import SloFleet, SloSeries
from tests.prometheus_server import PodSeries, scraped

from greenllm.api import v1alpha1 as api
from greenllm.controller.prometheus import PrometheusConnection, prometheus_client
from greenllm.loop import fleet_queries, promql
from greenllm.loop.fleet_queries import CounterReading

MODELS = (("team-a", "llama"), ("team-a", "mistral"), ("team-b", "llama"))
PODS = {
    ("team-a", "llama"): ("llama-5d8f7c9b6-aaaaa", "llama-5d8f7c9b6-bbbbb"),
    ("team-a", "mistral"): ("mistral-7c9b6d8f5-ccccc",),
    ("team-b", "llama"): ("llama-6b7c8d9f5-ddddd",),
}
OTHER = ("team-a", "llama-canary-6b7c8d9f5-zzzzz")  # another Deployment whose name starts like one
WINDOW = "5s"


@pytest.fixture(scope="module")
def prometheus() -> Iterator[tuple[SloFleet, Any]]:
    fleet = SloFleet()
    for i, ((namespace, deployment), pods) in enumerate(PODS.items()):
        for j, pod in enumerate(pods):
            fleet.set_pod(
                PodSeries(
                    namespace,
                    pod,
                    f"GPU-{i}-{j}",
                    power_w=200.0 + 50 * i + 10 * j,
                    prompt_tokens_per_s=1000.0 * (i + 1),
                    output_tokens_per_s=100.0 * (j + 1),
                    waiting=float(i + j),
                    running=float(2 * i + j),
                    tpot_s=0.02 * (i + 1),
                )
            )
            fleet.set_slo(
                SloSeries(
                    namespace,
                    pod,
                    requests_per_s=5.0 * (i + j + 1),
                    ttft=((0.3, 0.9), (1.8, 0.06), (4.0, 0.04)) if i else ((0.2, 1.0),),
                    tpot=((0.03, 0.97), (0.2, 0.03)),
                    peak_waiting={f"GPU-{i}-{j}": 3.0 + i},
                    peak_arrivals={f"GPU-{i}-{j}": 7.0 + j},
                    greenmodel=deployment,
                )
            )
    fleet.set_pod(
        PodSeries(OTHER[0], OTHER[1], "GPU-x", power_w=999.0, prompt_tokens_per_s=1e6, waiting=99.0)
    )
    with scraped(fleet) as server:
        client = prometheus_client(server.url, 5.0, 0, PrometheusConnection())
        yield fleet, client


def _at(client: Any, when: float) -> promql.Query:
    """Queries evaluated at one instant: the per-GreenModel and the fleet answers see the same samples."""

    def run(promql: str) -> Any:
        return client.custom_query(promql, params={"time": f"{when:.3f}"})

    return run


def _spec(source: str = "dcgm", **slo: Any) -> api.GreenModelSpec:
    return api.GreenModelSpec.model_validate(
        {
            "model": {"name": "m"},
            "variants": [{"name": "bf16", "precision": "bf16", "image": "i"}],
            "slo": slo,
            "metrics": {"powerSource": source},
        }
    )


def _wait_for_rates(client: Any) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        when = time.time() - 1
        rows = fleet_queries.rows(_at(client, when)(_fleet("prompt_tokens_per_s", _spec()).promql))
        if len(rows) >= len(MODELS) and all(v for v in rows.values()):
            time.sleep(2.5)  # a few more scrapes for the histograms' attainment window
            return time.time() - 1
        time.sleep(0.5)
    raise AssertionError("Prometheus never had two scrapes of every pod")


def _fleet(template: str, spec: api.GreenModelSpec) -> fleet_queries.FleetQuery:
    q = fleet_queries.fleet_query(
        template,
        window=WINDOW,
        attainment_window_s=3.0,
        ttft_slo_ms=spec.slo.ttft_p90_ms,
        tpot_slo_ms=spec.slo.tpot_p90_ms,
    )
    assert q is not None
    return q


NAMES = (
    "power_w",
    "power_age_s",
    "prompt_tokens_per_s",
    "output_tokens_per_s",
    "requests_per_s",
    "requests_waiting",
    "requests_running",
    "tpot_p90_ms",
    "ttft_p90_ms",
    "attainment",
    "peak_waiting_requests",
    "peak_arrivals",
)


@pytest.mark.parametrize("source", ["dcgm", "kepler"])
def test_every_green_model_reads_in_its_row_what_its_own_queries_answer(
    prometheus: tuple[SloFleet, Any], source: str
) -> None:
    _, client = prometheus
    when = _wait_for_rates(client)
    query = _at(client, when)
    spec = _spec(source, ttftP90Ms=2000, tpotP90Ms=40, attainmentWindow="3s")
    compared = 0
    for name in NAMES:
        template = f"{source}_{name}" if name.startswith("power") else name
        fleet_rows = fleet_queries.rows(query(_fleet(template, spec).promql))
        for namespace, deployment in MODELS:
            own = promql.build_queries(spec, namespace, deployment, window=WINDOW)
            expected = promql.run(query, name, own.queries[name])
            got = fleet_rows.get((namespace, deployment))
            if expected is None:
                assert got is None, (name, namespace, deployment)
            else:
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), (name, namespace, deployment)
                compared += 1
    assert compared >= len(NAMES) * len(MODELS) - 3  # nearly every answer is a number, not None == None


def test_energy_is_the_counters_increase_between_two_readings(prometheus: tuple[SloFleet, Any]) -> None:
    fleet, client = prometheus
    template = _fleet("dcgm_energy_j", _spec())
    t1 = time.time()
    first = fleet_queries.counter_rows(_at(client, t1)(template.promql))
    time.sleep(3.5)
    t2 = time.time()
    second = fleet_queries.counter_rows(_at(client, t2)(template.promql))
    for (namespace, deployment), pods in PODS.items():
        a, b = first[(namespace, deployment)], second[(namespace, deployment)]
        assert {dict(key)["pod"] for key in b.series} == set(pods)  # one series per GPU, only its pods
        # The same counters read alone for this GreenModel's pods (mJ): the increase is theirs, in J.
        selector = f'{{namespace="{namespace}",pod=~"{promql.pod_regex(deployment)}"}}'
        own = f"sum(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{selector})"
        before, after = promql.run(_at(client, t1), "e", own), promql.run(_at(client, t2), "e", own)
        assert before is not None and after is not None
        increase = fleet_queries.energy_increase_j(a, b)
        assert increase == pytest.approx((after - before) / 1000, rel=1e-9)
        # and it is physically the GPUs' power over the time between the samples (scrape jitter aside)
        seconds = max(b.series[k][1] - a.series[k][1] for k in b.series)
        watts = sum(fleet.pods[pod].power_w for pod in pods)
        assert increase == pytest.approx(watts * seconds, rel=0.25)
    assert ("team-a", "llama-canary") in second  # its own row, never in llama's


def test_a_counter_reset_counts_from_zero_and_a_new_series_is_a_baseline() -> None:
    gpu0 = (("UUID", "GPU-0"), ("pod", "p-a-b"))
    gpu1 = (("UUID", "GPU-1"), ("pod", "p-a-b"))
    before = CounterReading({gpu0: (5000.0, 10.0)})
    after = CounterReading({gpu0: (300.0, 25.0), gpu1: (9e9, 25.0)})
    assert fleet_queries.energy_increase_j(before, after) == 300.0  # reset: 0 -> 300; gpu1: baseline only
    same = CounterReading({gpu0: (5000.0, 10.0)})
    assert fleet_queries.energy_increase_j(before, same) == 0.0  # no newer sample: nothing to add
