"""Fixtures shared by every suite that talks to the Kubernetes API emulator (e2e and agent tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
import yaml

from greenllm.api.crd import custom_resource_definition
from tests.kube_emulator import KubeEmulator


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    """The emulator on 127.0.0.1 at a free port, with the GreenModel CRD registered."""
    emulator = KubeEmulator()
    emulator.register_crd(custom_resource_definition())
    async with emulator, kmock.Server(emulator, host="127.0.0.1"):
        yield emulator


@pytest.fixture
def kube_url(kube: KubeEmulator) -> str:
    return str(kube.url).rstrip("/")


def write_kubeconfig(path: Path, server: str, user: str) -> Path:
    """A kubeconfig with one context: `server`, a bearer token for `user`, namespace default."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": user, "user": {"token": f"{user}-token"}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": user, "namespace": "default"}}
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path
