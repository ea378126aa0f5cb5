"""Two operator replicas with kopf peering and distinct priorities: exactly one acts, the other takes over
when the first stops (kopf peering is not leader election: kopf pauses every replica of an equal priority,
so they need distinct ones). kopf's pause stops its handlers; the fleet loop (the operator's own task)
follows it through controller/peering.py."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kubernetes
import pytest

from greenllm.controller.peering import PeeringWatch
from tests.e2e.conftest import KubeClient, OperatorFactory, wait_for
from tests.e2e.test_status_writes import scrape
from tests.prometheus_server import free_port

pytestmark = pytest.mark.e2e

GM = "greenllm.io/v1alpha1/greenmodels"
DEPLOY = "apps/v1/deployments"
PEERING = "kopf.dev/v1/clusterkopfpeerings"


def green_model(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "GreenModel",
        "metadata": {"name": "llama", "namespace": "peers"},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "paramsBillions": 8},
            "variants": [{"name": "bf16", "precision": "bf16", "image": image, "quality": 1.0}],
            "scaling": {"interval": "1h"},
        },
    }


async def peers(client: KubeClient) -> dict[str, Any]:
    peering = await client.get(PEERING, "greenllm")
    assert peering is not None
    status: dict[str, Any] = peering.get("status") or {}
    return status


async def test_only_the_highest_priority_replica_acts_and_the_other_takes_over(
    operator_factory: OperatorFactory, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.ensure_namespace("peers")
    await client.create(
        PEERING, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "greenllm"}}
    )
    monkeypatch.setenv("GREENLLM_METRICS_PORT", "0")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", "http://127.0.0.1:9")  # closed: ticks hold their decision
    monkeypatch.setenv("GREENLLM_PEERING", "greenllm")
    monkeypatch.setenv("GREENLLM_PEERING_LIFETIME", "3")

    monkeypatch.setenv("GREENLLM_PRIORITY", "100")
    leader = operator_factory("greenllm.controller.handlers")
    await leader.start()
    await wait_for(lambda: _count(peers(client), 1), timeout=30, message="the leader in the peering")
    monkeypatch.setenv("GREENLLM_PRIORITY", "50")
    standby = operator_factory("greenllm.controller.handlers")
    await standby.start()
    status = await wait_for(lambda: _count(peers(client), 2), timeout=30, message="both peers")
    assert sorted(p["priority"] for p in status.values()) == [50, 100]

    since = len(client.emulator.api_calls)
    await client.create(GM, green_model("vllm/vllm-openai:v0.11.1"))
    await wait_for(lambda: client.get(DEPLOY, "llama", "peers"), timeout=30, message="the Deployment")
    await wait_for(lambda: _decisions(client, 1), timeout=30, message="a Decision event")
    creates = [
        c for c in client.emulator.api_calls[since:] if c.verb == "create" and c.resource == "deployments"
    ]
    assert len(creates) == 1, "both replicas acted"

    await leader.stop()
    # The leader's peering record expires after its lifetime; then the standby resumes and handles edits.
    await client.patch(
        GM,
        "llama",
        {
            "spec": {
                "variants": [
                    {"name": "bf16", "precision": "bf16", "image": "vllm/vllm-openai:v0.12.0", "quality": 1.0}
                ]
            }
        },
        "peers",
    )

    async def rolled() -> bool:
        deploy = await client.get(DEPLOY, "llama", "peers")
        return deploy is not None and deploy["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
            "v0.12.0"
        )

    await wait_for(rolled, timeout=60, message="the standby to take over and roll the Deployment")
    await standby.stop()


async def test_a_paused_operator_stops_ticking_what_it_already_tracks(
    operator_factory: OperatorFactory, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer of higher priority appears (written here as kopf's keep-alive writes it): kopf pauses this
    operator's handlers, and its fleet loop must stop ticking the GreenModel it tracked before; when the
    peer leaves, it ticks again. Before controller/peering.py it kept ticking (and writing) throughout."""
    await client.ensure_namespace("peers")
    await client.create(
        PEERING, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "greenllm"}}
    )
    port = free_port()
    monkeypatch.setenv("GREENLLM_METRICS_PORT", str(port))
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_TIMEOUT", "1")
    monkeypatch.setenv("GREENLLM_PEERING", "greenllm")
    monkeypatch.setenv("GREENLLM_PRIORITY", "50")
    operator = operator_factory("greenllm.controller.handlers")
    await operator.start()
    body = green_model("vllm/vllm-openai:v0.11.1")
    body["spec"]["scaling"] = {"interval": "1s"}
    await client.create(GM, body)
    await wait_for(lambda: _ticks_at_least(port, 3), timeout=30, message="the loop to tick")

    await client.patch(PEERING, "greenllm", {"status": {"higher": keepalive(100)}})
    await asyncio.sleep(2)  # a tick in flight when the pause came may still end
    paused_at = scrape(port)["ticks"]
    await asyncio.sleep(4)  # four intervals
    assert scrape(port)["ticks"] == paused_at, "the paused operator's loop kept ticking"

    await client.patch(PEERING, "greenllm", {"status": {"higher": None}})
    await wait_for(lambda: _ticks_at_least(port, paused_at + 2), timeout=30, message="the loop to tick again")
    await operator.stop()


def keepalive(priority: int) -> dict[str, Any]:
    """A peer's record as kopf's keep-alive writes it."""
    return {"priority": priority, "lifetime": 60, "lastseen": datetime.datetime.now(datetime.UTC).isoformat()}


async def test_the_watch_follows_each_namespace_and_acts_only_with_every_object_clear(
    kubeconfig: Any, client: KubeClient
) -> None:
    """A namespaced operator has a peering object per namespace; kopf pauses it for a conflict in any."""
    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]  # the watch's client: the emulator
    places = ("team-a", "team-b")
    for ns in places:
        await client.ensure_namespace(ns)
    watch = PeeringWatch("greenllm", 50, places)
    watch.start()
    try:
        await asyncio.sleep(1)
        assert not watch.acting(), "acted without the peering objects (kopf requires them)"
        for ns in places:
            body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "greenllm"}}
            await client.create("kopf.dev/v1/kopfpeerings", {**body, "status": {"us": keepalive(50)}}, ns)
        await wait_for(watch.acting, timeout=10, message="the watch to see both objects clear")
        await client.patch(
            "kopf.dev/v1/kopfpeerings", "greenllm", {"status": {"them": keepalive(60)}}, "team-b"
        )
        await wait_for(lambda: not watch.acting(), timeout=10, message="a conflict in one namespace to pause")
        await client.patch("kopf.dev/v1/kopfpeerings", "greenllm", {"status": {"them": None}}, "team-b")
        await wait_for(watch.acting, timeout=10, message="the peer leaving to resume")
        await client.delete("kopf.dev/v1/kopfpeerings", "greenllm", "team-a")
        await wait_for(lambda: not watch.acting(), timeout=10, message="a deleted object to pause")
    finally:
        watch.stop()


async def _ticks_at_least(port: int, n: float) -> bool:
    try:
        return scrape(port)["ticks"] >= n
    except OSError:  # the operator's /metrics is not served yet
        return False


async def _count(status: Any, n: int) -> dict[str, Any] | None:
    result: dict[str, Any] = await status
    return result if len(result) == n else None


async def _decisions(client: KubeClient, n: int) -> bool:
    return len(await client.events_for("peers", "llama", reason="Decision")) == n
