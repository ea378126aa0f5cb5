"""The kubelet PodResources v1 API: which devices each pod on this node holds.

`api.proto` is vendored from Kubernetes (see its header); `api_pb2*.py` are generated from it.
"""

from greenllm.agent.podresources.client import (
    DEFAULT_SOCKET,
    DeviceAllocation,
    PodDevices,
    PodResourcesClient,
    PodResourcesError,
)

__all__ = ["DEFAULT_SOCKET", "DeviceAllocation", "PodDevices", "PodResourcesClient", "PodResourcesError"]
