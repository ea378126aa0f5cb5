"""Two operator replicas with kopf peering and distinct priorities: exactly one acts, the other takes over
when the first stops (kopf peering is not leader election: equal priorities would both act)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import KubeClient, OperatorFactory, wait_for

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


async def _count(status: Any, n: int) -> dict[str, Any] | None:
    result: dict[str, Any] = await status
    return result if len(result) == n else None


async def _decisions(client: KubeClient, n: int) -> bool:
    return len(await client.events_for("peers", "llama", reason="Decision")) == n
