"""Leader election (controller/leader.py) against the emulated API: one Lease, one operator acting.

Two operators without it doubled the energy accounted in status and both rolled the Deployment. The
candidates here are the real `LeaderLease` (the kubernetes client's Lease lock and acquire / renew rule)
and the real operator, in-process and as `greenllm run`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from greenllm.controller.leader import LeaderLease, LeaseTimings
from tests.e2e.conftest import OPERATOR_NAMESPACE, KubeClient, OperatorFactory, wait_for
from tests.e2e.test_cli_run import GreenllmRun
from tests.e2e.test_operator import _closed_port
from tests.e2e.test_peering import green_model
from tests.prometheus_server import free_port

pytestmark = pytest.mark.e2e

LEASES = "coordination.k8s.io/v1/leases"
LEASE = "greenllm-operator"
GM = "greenllm.io/v1alpha1/greenmodels"
DEPLOY = "apps/v1/deployments"
NS = "peers"
TIMINGS = LeaseTimings(lease_duration_s=3)  # renewed every 1 s, given up after 2 s


async def holder(client: KubeClient) -> str | None:
    lease = await client.get(LEASES, LEASE, OPERATOR_NAMESPACE)
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")


@pytest.fixture
async def candidate(kubeconfig: Path, client: KubeClient) -> AsyncIterator[Callable[..., LeaderLease]]:
    """Starts `LeaderLease` candidates for the operator's Lease; stops them all at the end."""
    await client.ensure_namespace(OPERATOR_NAMESPACE)
    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]  # the lock's client: the emulator
    started: list[LeaderLease] = []

    def start(on_lost: Callable[[], None] = lambda: None) -> LeaderLease:
        lease = LeaderLease(OPERATOR_NAMESPACE, LEASE, TIMINGS, on_lost)
        lease.start()
        started.append(lease)
        return lease

    yield start
    for lease in started:
        await asyncio.to_thread(lease.stop)


async def test_one_candidate_leads_and_a_stopped_leader_hands_over_at_once(
    candidate: Callable[..., LeaderLease], client: KubeClient
) -> None:
    first = candidate()
    await first.wait_until_leading()
    second = candidate()
    # The second has tried (and failed) twice: the lease is held and renewed.
    await asyncio.sleep(2 * TIMINGS.retry_period_s)
    assert not second.leading
    assert await holder(client) == first.identity
    await asyncio.to_thread(first.stop)
    assert not first.leading and not first.lost  # stopping is not losing
    # Released (an empty holder), so the second takes it on its next attempt, not a lease duration later.
    await wait_for(lambda: second.leading, timeout=30, message="the second candidate to lead")
    assert await holder(client) == second.identity


async def test_a_leader_whose_lease_is_taken_stops_leading(
    candidate: Callable[..., LeaderLease], client: KubeClient
) -> None:
    lost = threading.Event()
    leader = candidate(on_lost=lost.set)
    await leader.wait_until_leading()
    # Another holder, e.g. a partitioned leader's successor, renewing as the protocol says.
    await client.patch(
        LEASES,
        LEASE,
        {"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}},
        OPERATOR_NAMESPACE,
    )
    await wait_for(lost.is_set, timeout=30, message="the leader to give up after its renew deadline")
    assert leader.lost and not leader.leading
    assert await holder(client) == "intruder"  # it never writes over the new holder


async def test_an_unreachable_api_server_ends_leadership_instead_of_the_thread(
    candidate: Callable[..., LeaderLease],
) -> None:
    lost = threading.Event()
    leader = candidate(on_lost=lost.set)
    await leader.wait_until_leading()
    unreachable = kubernetes.client.Configuration()
    unreachable.host = f"http://127.0.0.1:{_closed_port()}"
    unreachable.retries = False
    # Connection errors are not ApiExceptions: the lock lets them through, the campaign must count them
    # as failed attempts (the API server is the boundary that fails here, reached over a closed port).
    leader._lock.api_instance = kubernetes.client.CoordinationV1Api(kubernetes.client.ApiClient(unreachable))
    await wait_for(lost.is_set, timeout=30, message="the leader to give up")
    assert leader.lost


async def test_a_second_operator_waits_answers_its_probe_and_takes_over(
    operator_factory: OperatorFactory, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.ensure_namespace(NS)
    monkeypatch.setenv("GREENLLM_METRICS_PORT", "0")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("GREENLLM_LEASE_DURATION", str(TIMINGS.lease_duration_s))
    first = operator_factory("greenllm.controller.handlers")
    await first.start()
    await first.wait_watching("greenmodels")
    first_id = await wait_for(lambda: holder(client), timeout=30, message="the first operator's lease")

    probe_port = free_port()
    monkeypatch.setenv("GREENLLM_PROBE_PORT", str(probe_port))
    second = operator_factory("greenllm.controller.handlers")
    await second.start()
    health = await wait_for(lambda: _healthz(probe_port), timeout=30, message="the standby's /healthz")
    assert health == {"leader": False, "waiting": "for the leader lease"}

    since = len(client.emulator.api_calls)
    await client.create(
        GM, {**green_model("vllm/vllm-openai:v0.11.1"), "metadata": {"name": "llama", "namespace": NS}}
    )
    await wait_for(lambda: client.get(DEPLOY, "llama", NS), timeout=30, message="the Deployment")
    await wait_for(lambda: _decisions(client, 1), timeout=30, message="a Decision event")
    creates = [
        c for c in client.emulator.api_calls[since:] if c.verb == "create" and c.resource == "deployments"
    ]
    assert len(creates) == 1, "both operators acted"
    assert await holder(client) == first_id

    await first.stop()
    await wait_for(
        lambda: _held_by_other(client, first_id), timeout=30, message="the standby to take the lease"
    )
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
        NS,
    )

    async def rolled() -> bool:
        deploy = await client.get(DEPLOY, "llama", NS)
        image: str = deploy["spec"]["template"]["spec"]["containers"][0]["image"] if deploy else ""
        return image.endswith("v0.12.0")

    await wait_for(rolled, timeout=60, message="the new leader to roll the Deployment")
    await second.stop()


async def test_greenllm_run_exits_when_it_loses_the_lease(
    kubeconfig: Path, client: KubeClient, tmp_path: Path
) -> None:
    await client.ensure_namespace(OPERATOR_NAMESPACE)
    env = {"GREENLLM_LEASE_DURATION": str(TIMINGS.lease_duration_s)}
    async with GreenllmRun(kubeconfig, tmp_path, env) as run:
        await wait_for(lambda: holder(client), timeout=60, message="greenllm run to take the lease")
        await client.patch(
            LEASES,
            LEASE,
            {"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}},
            OPERATOR_NAMESPACE,
        )
        assert run.process is not None
        code = await asyncio.wait_for(run.process.wait(), timeout=60)
    log = run.log.read_text()
    assert code == 1, log[-3000:]
    assert "greenllm run: error: lost the leader Lease" in log


def _healthz(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except OSError:
        return None


async def _held_by_other(client: KubeClient, identity: str) -> bool:
    current = await holder(client)
    return current is not None and current != identity


async def _decisions(client: KubeClient, n: int) -> bool:
    return len(await client.events_for(NS, "llama", reason="Decision")) == n
