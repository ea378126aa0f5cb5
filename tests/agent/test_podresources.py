"""The PodResources client against a real gRPC server of the kubelet's v1 API on a unix socket."""

from __future__ import annotations

import tempfile
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from greenllm.agent.podresources import (
    DeviceAllocation,
    PodDevices,
    PodResourcesClient,
    PodResourcesError,
    api_pb2_grpc,
)
from tests.agent.conftest import FakeKubelet, KubeletServer


def test_lists_pods_with_their_devices(kubelet: KubeletServer) -> None:
    kubelet.kubelet.allocate("serving", "llama-0", ["GPU-aaaa", "GPU-bbbb"])
    kubelet.kubelet.allocate("serving", "llama-0", ["0000:3b:00.0"], resource="example.com/nic")
    kubelet.kubelet.allocate("batch", "job-1", ["3"])
    with PodResourcesClient(kubelet.socket) as client:
        pods = client.list()
    assert pods == [
        PodDevices(
            namespace="batch", name="job-1", devices=(DeviceAllocation("server", "nvidia.com/gpu", "3"),)
        ),
        PodDevices(
            namespace="serving",
            name="llama-0",
            devices=(
                DeviceAllocation("server", "nvidia.com/gpu", "GPU-aaaa"),
                DeviceAllocation("server", "nvidia.com/gpu", "GPU-bbbb"),
                DeviceAllocation("server", "example.com/nic", "0000:3b:00.0"),
            ),
        ),
    ]
    assert pods[1].key == "serving/llama-0"


def test_no_pods_is_an_empty_list(kubelet: KubeletServer) -> None:
    with PodResourcesClient(kubelet.socket) as client:
        assert client.list() == []


def test_missing_socket_is_an_error_not_an_empty_node(tmp_path: Path) -> None:
    with PodResourcesClient(tmp_path / "absent.sock") as client, pytest.raises(PodResourcesError):
        client.list()


def test_kubelet_error_is_an_error(kubelet: KubeletServer) -> None:
    kubelet.kubelet.failing = True
    with PodResourcesClient(kubelet.socket) as client, pytest.raises(PodResourcesError, match="UNAVAILABLE"):
        client.list()


def test_reconnects_after_the_kubelet_restarts() -> None:
    with tempfile.TemporaryDirectory(prefix="kl-", dir="/tmp") as tmp:
        socket = Path(tmp) / "kubelet.sock"

        def serve(fake: FakeKubelet) -> grpc.Server:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
            api_pb2_grpc.add_PodResourcesListerServicer_to_server(fake, server)
            server.add_insecure_port(f"unix://{socket}")
            server.start()
            return server

        first = FakeKubelet()
        first.allocate("ns", "a", ["GPU-a"])
        server = serve(first)
        client = PodResourcesClient(socket, timeout_s=2.0)
        try:
            assert [p.name for p in client.list()] == ["a"]
            server.stop(grace=None).wait()
            socket.unlink(missing_ok=True)
            with pytest.raises(PodResourcesError):
                client.list()
            second = FakeKubelet()
            second.allocate("ns", "b", ["GPU-b"])
            server = serve(second)
            assert [p.name for p in client.list()] == ["b"]
        finally:
            client.close()
            server.stop(grace=None).wait()
