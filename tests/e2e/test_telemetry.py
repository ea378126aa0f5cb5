"""The operator's own metrics: served on its metrics port, per GreenModel, and again after a restart."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from tests.e2e.conftest import KubeClient, OperatorFactory, wait_for
from tests.prometheus_server import free_port

pytestmark = pytest.mark.e2e


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text: str = response.read().decode()
            return text
    except OSError:
        return ""


async def test_metrics_per_green_model_survive_a_restart(
    operator_factory: OperatorFactory, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("GREENLLM_METRICS_PORT", str(port))
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    operator = operator_factory("greenllm.controller.handlers")
    await operator.start()
    await client.create(
        "greenllm.io/v1alpha1/greenmodels",
        {
            "apiVersion": "greenllm.io/v1alpha1",
            "kind": "GreenModel",
            "metadata": {"name": "llama", "namespace": "default"},
            "spec": {
                "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "paramsBillions": 8},
                "variants": [{"name": "bf16", "precision": "bf16", "image": "vllm/vllm-openai:v0.11.1"}],
                "replicas": {"min": 2, "max": 4},
                "scaling": {"interval": "1s"},
            },
        },
    )
    labels = 'greenmodel="llama",namespace="default"'

    async def exported() -> str | None:
        text = await asyncio.to_thread(scrape, port)
        return text if f"greenllm_replicas{{{labels}}} 2.0" in text else None

    text = await wait_for(exported, message="greenllm_replicas for the GreenModel")
    assert f'greenllm_variant_info{{{labels},variant="bf16"}} 1.0' in text
    assert "greenllm_loop_duration_seconds_count" in text
    # Prometheus is down: every tick holds the decision and the metrics say so via the loop, not errors.
    assert f"greenllm_loop_errors_total{{{labels}" not in text

    await operator.restart()  # the same port must be free again in the same process
    await wait_for(exported, message="metrics after the restart")
    await operator.stop()
    assert await asyncio.to_thread(scrape, port) == "", "the metrics server outlived the operator"
