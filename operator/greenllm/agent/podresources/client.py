"""A small client of the kubelet's PodResources v1 `List` on its unix socket."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from greenllm.agent.podresources import api_pb2, api_pb2_grpc

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
# Largest response accepted: 16 MiB, as the kubelet's own PodResources client does
# (kubernetes pkg/kubelet/apis/podresources/client.go, DefaultMaxMsgSize).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class PodResourcesError(Exception):
    """The kubelet could not be asked (socket missing, kubelet down, timeout): not the same as no pods."""


@dataclass(frozen=True, slots=True)
class DeviceAllocation:
    container: str
    resource_name: str
    device_id: str


@dataclass(frozen=True, slots=True)
class PodDevices:
    namespace: str
    name: str
    devices: tuple[DeviceAllocation, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _convert(response: api_pb2.ListPodResourcesResponse) -> list[PodDevices]:
    pods = []
    for pod in response.pod_resources:
        devices = tuple(
            DeviceAllocation(container=container.name, resource_name=group.resource_name, device_id=device_id)
            for container in pod.containers
            for group in container.devices
            for device_id in group.device_ids
        )
        pods.append(PodDevices(namespace=pod.namespace, name=pod.name, devices=devices))
    return pods


class PodResourcesClient:
    """`list()` returns every pod the kubelet knows with its devices, or raises PodResourcesError."""

    def __init__(self, socket_path: Path = DEFAULT_SOCKET, *, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._channel: Any = None
        self._stub: Any = None

    def _connect(self) -> Any:
        if self._stub is None:
            target = f"unix://{Path(self.socket_path).absolute()}"
            self._channel = grpc.insecure_channel(
                target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
            )
            self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    def list(self) -> list[PodDevices]:
        if not Path(self.socket_path).exists():
            raise PodResourcesError(f"no kubelet PodResources socket at {self.socket_path}")
        stub = self._connect()
        try:
            response = stub.List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            self.close()  # reconnect next time: the kubelet may have restarted with a new socket
            raise PodResourcesError(f"PodResources List failed: {exc.code()}: {exc.details()}") from exc
        return _convert(response)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._stub = None

    def __enter__(self) -> PodResourcesClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
