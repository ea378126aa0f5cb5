"""The operator asks Prometheus once per metric kind for all its GreenModels (issue 12): with eight
GreenModels ticking every 2 s against a real Prometheus, the queries per interval stay at most twice the
number of fleet queries, where one query per GreenModel and kind would be eight times that."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import KubeClient, OperatorFactory, wait_for
from tests.e2e.test_operator import GM, NS, green_model
from tests.e2e.test_status_writes import scrape
from tests.prometheus_server import (
    FakeFleet,
    PodSeries,
    PrometheusServer,
    free_port,
    instant_queries_answered,
    scraped,
)

pytestmark = pytest.mark.e2e

N = 8
INTERVAL_S = 2.0


@pytest.fixture
def prometheus() -> Iterator[PrometheusServer]:
    fleet = FakeFleet()
    for i in range(N):
        fleet.set_pod(
            PodSeries(
                NS, f"gm-{i}-5d8f7c9b6-aaaaa", f"GPU-{i}", prompt_tokens_per_s=500.0, output_tokens_per_s=50.0
            )
        )
    with scraped(fleet) as server:
        yield server


def _gm(i: int) -> dict[str, Any]:
    body = green_model(f"gm-{i}")
    body["spec"]["scaling"] = {**(body["spec"].get("scaling") or {}), "interval": f"{INTERVAL_S:g}s"}
    return body


async def test_queries_per_interval_do_not_grow_with_the_green_models(
    operator_factory: OperatorFactory,
    client: KubeClient,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("GREENLLM_METRICS_PORT", str(port))
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", prometheus.url)
    operator = operator_factory("greenllm.controller.handlers")
    await operator.start()
    await client.ensure_namespace(NS)
    for i in range(N):
        await client.create(GM, _gm(i), NS)

    async def ticks_at_least(n: float) -> dict[str, float] | None:
        seen = scrape(port)
        return seen if seen["ticks"] >= n else None

    start = await wait_for(lambda: ticks_at_least(2 * N), timeout=90, message="every GreenModel ticking")
    before = instant_queries_answered(prometheus.url)
    end = await wait_for(
        lambda: ticks_at_least(start["ticks"] + 4 * N), timeout=90, message="4 rounds of ticks"
    )
    asked = instant_queries_answered(prometheus.url) - before
    rounds = (end["ticks"] - start["ticks"]) / N  # intervals elapsed, as each GreenModel ticks once in each
    kinds = 12  # fleet queries a default GreenModel reads (power, age, energy, rates, queue, latency, SLO)
    per_interval = asked / rounds
    assert per_interval <= 2 * kinds, (asked, rounds)
    assert per_interval < N * kinds / 3  # what one query per GreenModel and kind would be, far above
