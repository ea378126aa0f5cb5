"""The agent's Kubernetes reads (its node's pods, their owners, GreenModels) and Events on GreenModels.

Objects travel as plain dicts (`_preload_content=False`). Any failure other than "not found" makes the
whole snapshot None: the agent then changes nothing, which is different from an empty node.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from greenllm.agent.ownership import (
    GreenModelRef,
    GreenModelSetting,
    ObjectKey,
    controller_ref,
    greenmodel_setting,
    object_key,
    owning_greenmodel,
)
from greenllm.api.v1alpha1 import API_VERSION, GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)

COMPONENT = "greenllm-agent"


@dataclass(frozen=True, slots=True)
class NodePod:
    namespace: str
    name: str
    uid: str
    owner: GreenModelRef | None
    ip: str | None = None  # status.podIP (set by the kubelet, not by the pod): where its metrics are read
    terminating: bool = False  # metadata.deletionTimestamp is set

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the API server says about this node: its pods (with verified owners) and all GreenModels."""

    pods: dict[str, NodePod] = field(default_factory=dict)  # "namespace/name" -> pod
    greenmodels: dict[str, GreenModelSetting] = field(default_factory=dict)  # "namespace/name" -> setting


class ClusterReader(Protocol):
    def snapshot(self) -> ClusterView | None: ...


class EventSink(Protocol):
    def emit(self, ref: GreenModelRef, type_: str, reason: str, message: str) -> None: ...


class _NotFoundError(Exception):
    pass


def load_api_client() -> client.ApiClient:
    """In-cluster service account first, then $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class KubeReader:
    """Reads the node's view with a handful of calls: one pod list (fieldSelector on the node, filtered
    client-side as well), one GreenModel list, and one GET per distinct ReplicaSet and Deployment."""

    def __init__(self, api_client: client.ApiClient, node_name: str, *, timeout_s: float = 10.0) -> None:
        self.node_name = node_name
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._timeout = timeout_s

    def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            response = call(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise _NotFoundError() from exc
            raise
        return json.loads(response.data)

    def snapshot(self) -> ClusterView | None:
        try:
            return self._snapshot()
        except Exception as exc:  # API down, timeout, 5xx, 403, bad JSON: all mean "do not know"
            log.warning("cannot read the cluster (changing nothing): %s", _short(exc))
            return None

    def _snapshot(self) -> ClusterView:
        pods = self._json(
            self._core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={self.node_name}"
        )["items"]
        pods = [p for p in pods if (p.get("spec") or {}).get("nodeName") == self.node_name]
        gm_items = self._json(self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)["items"]
        greenmodels: dict[ObjectKey, Mapping[str, Any]] = {object_key(gm): gm for gm in gm_items}
        replicasets: dict[ObjectKey, Mapping[str, Any]] = {}
        deployments: dict[ObjectKey, Mapping[str, Any]] = {}
        for pod in pods:
            ref = controller_ref(pod, "ReplicaSet", "apps")
            if ref is None:
                continue
            rs_key = (object_key(pod)[0], str(ref["name"]))
            if rs_key not in replicasets:
                rs = self._get(self._apps.read_namespaced_replica_set, *rs_key)
                if rs is None:
                    continue
                replicasets[rs_key] = rs
            dep_ref = controller_ref(replicasets[rs_key], "Deployment", "apps")
            if dep_ref is None:
                continue
            dep_key = (rs_key[0], str(dep_ref["name"]))
            if dep_key not in deployments:
                dep = self._get(self._apps.read_namespaced_deployment, *dep_key)
                if dep is not None:
                    deployments[dep_key] = dep
        view = ClusterView()
        for pod in pods:
            namespace, name = object_key(pod)
            owner = owning_greenmodel(pod, replicasets, deployments, greenmodels)
            meta = pod.get("metadata") or {}
            status = pod.get("status") or {}
            ip = status.get("podIP") if isinstance(status, dict) else None
            view.pods[f"{namespace}/{name}"] = NodePod(
                namespace=namespace,
                name=name,
                uid=str(meta.get("uid", "")),
                owner=owner,
                ip=ip if isinstance(ip, str) and ip else None,
                terminating=bool(meta.get("deletionTimestamp")),
            )
        for gm in greenmodels.values():
            setting = greenmodel_setting(gm)
            view.greenmodels[setting.ref.key] = setting
        return view

    def _get(self, call: Callable[..., Any], namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            obj = self._json(call, name, namespace)
        except _NotFoundError:
            return None
        return obj if isinstance(obj, Mapping) else None


class KubeEvents:
    """core/v1 Events about a GreenModel, from this node's agent. Failures are logged, never raised."""

    def __init__(self, api_client: client.ApiClient, node_name: str, *, timeout_s: float = 10.0) -> None:
        self.node_name = node_name
        self._core = client.CoreV1Api(api_client)
        self._timeout = timeout_s
        self._serial = 0

    def emit(self, ref: GreenModelRef, type_: str, reason: str, message: str) -> None:
        now = datetime.now(tz=UTC)
        self._serial += 1
        stamp = now.strftime("%Y%m%d%H%M%S%f")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{ref.name}.{stamp}{self._serial:04d}"[:253],
                "namespace": ref.namespace,
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT, "host": self.node_name},
            "reportingComponent": f"{GROUP}/agent",
            "reportingInstance": self.node_name,
            "firstTimestamp": now.isoformat().replace("+00:00", "Z"),
            "lastTimestamp": now.isoformat().replace("+00:00", "Z"),
            "count": 1,
        }
        event = client.CoreV1Event.from_dict(body)
        assert event is not None
        try:
            self._core.create_namespaced_event(
                ref.namespace,
                event,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except Exception as exc:
            log.warning("cannot post event %s on %s: %s", reason, ref.key, _short(exc))


def _short(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:300]
