"""The operator's Kubernetes client (controller.kube): connections kept open, and the rate limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from greenllm.controller.kube import Kube, RateLimit


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def test_as_many_connections_are_kept_as_threads_call_the_api(kubeconfig: Path) -> None:
    # The client's default keeps 10: at 64 calling threads, most calls opened a new connection and
    # discarded it ("Connection pool is full" 2,700 times in the operator's log at 1,000 GreenModels).
    assert Kube.from_environment(connections=64).connections == 64
    assert Kube.from_environment().connections == client.Configuration().connection_pool_maxsize == 10


def test_the_rate_limit_counts_the_requests_it_holds_back() -> None:
    held: list[int] = []
    limit = RateLimit(qps=1000.0, burst=2, throttled=lambda: held.append(1))

    async def three() -> None:
        for _ in range(3):
            async with limit:
                pass

    asyncio.run(three())
    assert held == [1]  # the burst of two passed; the third waited for the bucket
