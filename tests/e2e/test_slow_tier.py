"""The slow tier end to end: the real operator reads attainment and the node agent's peak-queue gauge from
a real Prometheus, keeps a warm replica floor for the bursts of `slo.attainmentWindow`, and publishes the
fast tier's two settings in status.

Two GreenModels with the same token demand run side by side: `queued`, whose pods show a growing queue
(vLLM's num_requests_waiting rising, the agent's peak gauge rising, first tokens missing the TTFT SLO),
and `calm`, which never queues. Once the queue has drained and the live signals (queue, TTFT p90 over the
rate window, the down-window's demand peak) have all returned to calm, only the window's memory (the peak
and the attainment) can still tell the two apart: `queued` must keep more replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from greenllm.api.durations import parse_duration
from tests.e2e.conftest import KubeClient, OperatorFactory, wait_for
from tests.e2e.slo_fleet import SloFleet, SloSeries
from tests.prometheus_server import PodSeries, PrometheusServer, scraped

pytestmark = pytest.mark.e2e

GM = "greenllm.io/v1alpha1/greenmodels"
DEPLOY = "apps/v1/deployments"
PODS = {"queued": "llama-5d8f7c9b6-aaaaa", "calm": "llama-5d8f7c9b6-bbbbb"}  # FakeFleet keys pods by name
LOW = {"prompt_tokens_per_s": 2000.0, "output_tokens_per_s": 50.0}  # one replica's worth (test_autoscale)
TOKENS_PER_REQUEST = 1500.0  # PodSeries' default: sets vllm:request_success_total's rate
ON_TIME = ((0.3, 1.0),)  # every first token within 1 s
LATE = ((0.3, 0.5), (4.0, 0.5))  # half of them past a 2 s TTFT SLO
PEAK_QUEUE = 60.0


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[SloFleet, PrometheusServer]]:
    fleet = SloFleet()
    with scraped(fleet) as prometheus:
        yield fleet, prometheus


_counter = iter(range(1000))


def green_model(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "GreenModel",
        "metadata": {"name": "llama", "namespace": namespace},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "paramsBillions": 8},
            "gpu": {"type": "H100-SXM", "count": 1},
            "variants": [
                {"name": "bf16", "precision": "bf16", "image": "vllm/vllm-openai:v0.11.1", "quality": 1.0}
            ],
            "slo": {"tpotP90Ms": 50, "ttftP90Ms": 2000, "attainment": 0.99, "attainmentWindow": "5m"},
            "replicas": {"min": 1, "max": 8},
            "scaling": {"interval": "1s", "scaleDownStabilization": "8s", "switchHold": "0s"},
        },
    }


@pytest.fixture
async def setup(
    fleet: tuple[SloFleet, PrometheusServer],
    operator_factory: OperatorFactory,
    client: KubeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[dict[str, Any]]:
    fake, prometheus = fleet
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", prometheus.url)
    monkeypatch.setenv("GREENLLM_METRICS_PORT", "0")
    monkeypatch.setenv("GREENLLM_RATE_WINDOW", "5s")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_TIMEOUT", "2")
    n = next(_counter)
    namespaces = {"queued": f"queued-{n}", "calm": f"calm-{n}"}
    requests_per_s = LOW["prompt_tokens_per_s"] / TOKENS_PER_REQUEST
    for key, ns in namespaces.items():
        await client.ensure_namespace(ns)
        pod = PODS[key]
        fake.set_pod(
            PodSeries(ns, pod, f"GPU-{ns}", power_w=400.0, tokens_per_request=TOKENS_PER_REQUEST, **LOW)
        )
        fake.set_slo(
            SloSeries(
                ns,
                pod,
                requests_per_s=requests_per_s,
                ttft=ON_TIME,
                peak_waiting={"GPU-0": 0.0},
                peak_arrivals={"GPU-0": 0.0},
            )
        )
    operator = operator_factory("greenllm.controller.handlers")
    await operator.start()
    yield {"fleet": fake, **namespaces}
    for key, ns in namespaces.items():
        fake.remove_pod(PODS[key])
        fake.remove_slo(ns, PODS[key])


async def status(client: KubeClient, namespace: str) -> dict[str, Any]:
    gm = await client.get(GM, "llama", namespace)
    assert gm is not None
    result: dict[str, Any] = gm.get("status") or {}
    return result


async def wait_status(
    client: KubeClient, namespace: str, check: Any, message: str, timeout: float = 90
) -> Any:
    async def probe() -> dict[str, Any] | None:
        st = await status(client, namespace)
        return st if check(st) else None

    return await wait_for(probe, timeout=timeout, interval=0.25, message=message)


def observed(st: dict[str, Any], field: str) -> Any:
    return (st.get("observed") or {}).get(field)


def stamp(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


async def replicas_of(client: KubeClient, namespace: str) -> int:
    deploy = await client.get(DEPLOY, "llama", namespace)
    assert deploy is not None
    replicas: int = deploy["spec"]["replicas"]
    return replicas


async def grow_queue(fleet: SloFleet, namespace: str, pod: str) -> None:
    """A burst: the queue builds up by 5 requests every half second to PEAK_QUEUE and stays there; the
    agent's gauges follow it (the queue only grows, so its peak since the last scrape is the queue now, and
    the burst's arrivals between two reads are as large)."""
    waiting = 0.0
    while True:
        waiting = min(waiting + 5.0, PEAK_QUEUE)
        fleet.update(pod, waiting=waiting)
        fleet.update_slo(namespace, pod, peak_waiting={"GPU-0": waiting}, peak_arrivals={"GPU-0": waiting})
        await asyncio.sleep(0.5)


async def test_a_queue_keeps_a_warm_floor_after_it_drains(setup: dict[str, Any], client: KubeClient) -> None:
    fake: SloFleet = setup["fleet"]
    queued, calm = setup["queued"], setup["calm"]
    pod = PODS["queued"]
    for ns in (queued, calm):
        await client.create(GM, green_model(ns))
    for ns in (queued, calm):
        await wait_status(
            client,
            ns,
            lambda s: observed(s, "attainment") == 1.0,
            f"{ns}: every request on time",
            timeout=120,
        )

    # A burst: the queue grows and first tokens come late.
    fake.update_slo(queued, pod, ttft=LATE)
    grower = asyncio.create_task(grow_queue(fake, queued, pod))
    try:
        st = await wait_status(
            client,
            queued,
            lambda s: (
                (observed(s, "peakWaitingRequests") or 0) >= PEAK_QUEUE
                and (observed(s, "peakArrivals") or 0) >= PEAK_QUEUE
                and (observed(s, "attainment") or 1.0) < 0.99
                and (s.get("replicas") or 0) > 1
            ),
            "the queued fleet to scale up on its queue",
        )
    finally:
        grower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await grower
    busy_replicas = st["replicas"]

    # The queue drains and every new request is on time again.
    fake.update(pod, waiting=0.0)
    fake.update_slo(queued, pod, ttft=ON_TIME, peak_waiting={"GPU-0": 0.0}, peak_arrivals={"GPU-0": 0.0})
    drained_at = time.time()
    window = parse_duration(green_model(queued)["spec"]["scaling"]["scaleDownStabilization"])
    # Past the down-window and the rate window, with a few ticks to spare: the live signals are calm.
    st = await wait_status(
        client,
        queued,
        lambda s: stamp(observed(s, "time") or "1970-01-01T00:00:00Z") >= drained_at + window + 5 + 5,
        "the down-window to pass",
    )
    calm_st = await status(client, calm)

    assert st["replicas"] > calm_st["replicas"], (
        f"queued fleet fell from {busy_replicas} to {st['replicas']}: the window's peak queue "
        f"({observed(st, 'peakWaitingRequests')}), its largest burst ({observed(st, 'peakArrivals')}) and "
        f"attainment ({observed(st, 'attainment')}) kept no floor"
    )
    assert await replicas_of(client, queued) == st["replicas"]
    assert calm_st["replicas"] == await replicas_of(client, calm) == 1
    # What the slow tier read and published.
    assert observed(st, "peakWaitingRequests") >= PEAK_QUEUE  # the window remembers the burst
    assert 0 < observed(st, "attainment") < 0.99
    assert observed(calm_st, "attainment") == 1.0 and observed(calm_st, "peakWaitingRequests") == 0.0
    for s in (st, calm_st):
        tier = s.get("fastTier")
        assert tier is not None, "status.fastTier is published for a GreenModel in power mode Auto"
        assert set(tier) == {"efficient", "burst", "rule"}
        # A merge patch drops nulls: a field absent here is a null the operator wrote.
        efficient = tier["efficient"]
        for field in ("powerLimitW", "lockedClockMhz"):
            assert efficient.get(field) == s.get(field), f"fastTier.efficient is the setting in force: {s}"
        assert tier["rule"]["burstAtWaiting"] >= 0 and tier["rule"]["holdSeconds"] >= 0
