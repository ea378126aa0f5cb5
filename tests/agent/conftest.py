"""Fixtures of the node-agent tests: a real kubelet PodResources gRPC server on a unix socket, simulated GPUs,
and the Kubernetes API emulator (tests/kube_emulator/) with helpers that build owner chains.

The emulator fixtures here are thin on purpose; they mirror tests/e2e/conftest.py (whose fixtures are only
visible under tests/e2e).
"""

from __future__ import annotations

import tempfile
import threading
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import kubernetes
import pytest

from greenllm.agent.gpu.simulated import SimulatedBackend, simulated_h100
from greenllm.agent.podresources import api_pb2, api_pb2_grpc
from tests.conftest import write_kubeconfig
from tests.kube_emulator import KubeEmulator

NODE = "gpu-node-1"
OTHER_NODE = "gpu-node-2"
NS = "serving"
GPU_RESOURCE = "nvidia.com/gpu"


# ---------------------------------------------------------------------------------------------- kubelet


class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):
    """The kubelet's PodResources v1 service, served for real over gRPC on a unix socket.

    `allocate(ns, name, [device ids])` gives a pod devices of `nvidia.com/gpu` (or another resource);
    `release` removes the pod; `failing = True` answers UNAVAILABLE as a restarting kubelet would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
        self.failing = False
        self.calls = 0

    def allocate(
        self, namespace: str, name: str, device_ids: Sequence[str], resource: str = GPU_RESOURCE
    ) -> None:
        with self._lock:
            self._pods.setdefault((namespace, name), []).append((resource, list(device_ids)))

    def release(self, namespace: str, name: str) -> None:
        with self._lock:
            self._pods.pop((namespace, name), None)

    def List(self, request: api_pb2.ListPodResourcesRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._lock:
            self.calls += 1
            if self.failing:
                context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet restarting")
            response = api_pb2.ListPodResourcesResponse()
            for (namespace, name), groups in sorted(self._pods.items()):
                pod = response.pod_resources.add(name=name, namespace=namespace)
                container = pod.containers.add(name="server")
                for resource, ids in groups:
                    container.devices.add(resource_name=resource, device_ids=ids)
                pod.containers.add(name="sidecar")  # no devices, as a real sidecar
            return response


@dataclass
class KubeletServer:
    kubelet: FakeKubelet
    socket: Path


@pytest.fixture
def kubelet() -> Iterator[KubeletServer]:
    # A short directory: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="kl-", dir="/tmp") as tmp:
        socket = Path(tmp) / "kubelet.sock"
        fake = FakeKubelet()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(fake, server)
        server.add_insecure_port(f"unix://{socket}")
        server.start()
        try:
            yield KubeletServer(kubelet=fake, socket=socket)
        finally:
            server.stop(grace=None).wait()


# ---------------------------------------------------------------------------------------------- GPUs


def gpu_uuid(index: int) -> str:
    return f"GPU-5e1f0c2a-0000-4000-8000-{index:012d}"


@pytest.fixture
def sim_path(tmp_path: Path) -> Path:
    """A simulated node with four H100 SXM5 GPUs (indices 0-3), persisted to a file."""
    path = tmp_path / "simulated-gpus.json"
    SimulatedBackend(path, [simulated_h100(i, gpu_uuid(i)) for i in range(4)]).close()
    return path


# ---------------------------------------------------------------------------------------------- Kubernetes


@pytest.fixture
def kubeconfig(kube_url: str, tmp_path: Path) -> Path:
    """A kubeconfig for the emulator (for agent subprocesses: pass it as $KUBECONFIG)."""
    return write_kubeconfig(tmp_path / "kubeconfig", kube_url, "agent")


@pytest.fixture
def api_client(kube_url: str) -> Iterator[kubernetes.client.ApiClient]:
    """A `kubernetes` client for the agent under test (in-process), without touching global config."""
    configuration = kubernetes.client.Configuration(host=kube_url)
    configuration.retries = 0
    with kubernetes.client.ApiClient(configuration) as api:
        yield api


class Cluster:
    """The test's own hands on the API: creates owner chains as the operator and kube-controller-manager
    would, and plays the kubelet / scheduler for pods."""

    def __init__(self, emulator: KubeEmulator, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self._session = session

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        headers = {"Content-Type": content_type}
        async with self._session.request(method, path, json=body, headers=headers) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                raise AssertionError(f"{method} {path}: HTTP {response.status}: {data}")
            return data

    async def ensure_namespace(self, name: str) -> None:
        if not any(o["metadata"]["name"] == name for o in self.emulator.stored("v1/namespaces")):
            await self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    async def greenmodel(
        self,
        name: str,
        status: Mapping[str, Any] | None = None,
        *,
        mode: str = "Auto",
        namespace: str = NS,
        port: int | None = None,
    ) -> dict[str, Any]:
        await self.ensure_namespace(namespace)
        body: dict[str, Any] = {
            "apiVersion": "greenllm.io/v1alpha1",
            "kind": "GreenModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "model": {"name": "llama-3.1-8b"},
                "variants": [{"name": "bf16", "precision": "bf16", "image": "vllm/vllm-openai:v0.11.1"}],
                "power": {"mode": mode},
            },
        }
        if port is not None:
            body["spec"]["port"] = port
        gm: dict[str, Any] = await self.request(
            "POST", f"/apis/greenllm.io/v1alpha1/namespaces/{namespace}/greenmodels", body
        )
        if status is not None:
            gm = await self.set_status(gm, status)
        return gm

    async def set_status(self, gm: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
        meta = gm["metadata"]
        path = f"/apis/greenllm.io/v1alpha1/namespaces/{meta['namespace']}/greenmodels/{meta['name']}/status"
        result: dict[str, Any] = await self.request(
            "PATCH", path, {"status": dict(status)}, "application/merge-patch+json"
        )
        return result

    async def deployment_for(self, gm: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
        """A Deployment controlled by the GreenModel, and its ReplicaSet, as the operator and the
        Deployment controller would make them. Returns the ReplicaSet."""
        meta = gm["metadata"]
        namespace, dep_name = meta["namespace"], name or f"{meta['name']}-bf16"
        labels = {"app.kubernetes.io/name": dep_name}
        template = {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.1"}]},
        }
        dep = await self.request(
            "POST",
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            {
                "metadata": {
                    "name": dep_name,
                    "namespace": namespace,
                    "ownerReferences": [_owner(gm, "greenllm.io/v1alpha1", "GreenModel")],
                },
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
            },
        )
        rs: dict[str, Any] = await self.request(
            "POST",
            f"/apis/apps/v1/namespaces/{namespace}/replicasets",
            {
                "metadata": {
                    "name": f"{dep_name}-7d9f8",
                    "namespace": namespace,
                    "ownerReferences": [_owner(dep, "apps/v1", "Deployment")],
                },
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
            },
        )
        return rs

    async def pod(
        self,
        name: str,
        owner: Mapping[str, Any] | None = None,
        *,
        node: str = NODE,
        namespace: str = NS,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        await self.ensure_namespace(namespace)
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if owner is not None:
            meta["ownerReferences"] = [_owner(owner, "apps/v1", "ReplicaSet")]
        if annotations:
            meta["annotations"] = dict(annotations)
        if labels:
            meta["labels"] = dict(labels)
        result: dict[str, Any] = await self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "metadata": meta,
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.1"}],
                },
            },
        )
        return result

    async def set_pod_ip(self, name: str, ip: str, namespace: str = NS) -> dict[str, Any]:
        """What the kubelet reports once the pod's sandbox is up: status.podIP (via /status)."""
        result: dict[str, Any] = await self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}},
            "application/merge-patch+json",
        )
        return result

    async def delete_pod(self, name: str, namespace: str = NS) -> None:
        await self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.emulator.stored("v1/events") if reason is None or e.get("reason") == reason]


def _owner(obj: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.fixture
async def cluster(kube: KubeEmulator, kube_url: str) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession(base_url=kube_url) as session:
        yield Cluster(kube, session)


def fake_uid() -> str:
    return str(uuidlib.uuid4())
