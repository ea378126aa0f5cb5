"""The few Kubernetes calls the operator makes itself (kopf does the watching, status and events).

Objects travel as plain dicts: the core renders dicts and the operator only ever patches the fields it
owns, so the client's typed models would add nothing but conversion.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from aiolimiter import AsyncLimiter
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api

MERGE_PATCH = "application/merge-patch+json"


class RateLimit:
    """Client-side rate limit of the operator's own requests, as controller-runtime's QPS and burst: a
    token bucket of `burst` tokens refilled at `qps` per second (aiolimiter's leaky bucket is the same
    thing). A real API server's Priority and Fairness throttles a controller that floods it; this keeps
    the operator below that on its own. `throttled` counts requests that had to wait."""

    def __init__(self, qps: float, burst: int, throttled: Callable[[], None] = lambda: None) -> None:
        self._bucket = AsyncLimiter(burst, burst / qps)
        self._throttled = throttled

    async def __aenter__(self) -> None:
        if not self._bucket.has_capacity():
            self._throttled()
        await self._bucket.acquire()

    async def __aexit__(self, *_: object) -> None:
        return None


class Kube:
    def __init__(self, api_client: client.ApiClient, limit: RateLimit | None = None) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._limit = limit

    @classmethod
    def from_environment(cls, limit: RateLimit | None = None, connections: int | None = None) -> Kube:
        """As the operator's login: an explicit $KUBECONFIG, else the service account, else ~/.kube/config.
        `connections`: the most kept open to the API server; as many as the threads that call it, since
        the client's default (10) made most calls beyond it open and discard a connection."""
        if os.environ.get("KUBECONFIG"):
            # Named here: the client reads $KUBECONFIG once, when it is imported.
            config.load_kube_config(config_file=os.environ["KUBECONFIG"])  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
        configuration = client.Configuration.get_default_copy()
        if connections is not None:
            configuration.connection_pool_maxsize = connections
        return cls(client.ApiClient(configuration), limit)

    @property
    def connections(self) -> int:
        """The most connections kept open to the API server."""
        maxsize: int = self._custom.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"]
        return maxsize

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self._limit is None:
            return await _request(method, *args, **kwargs)
        async with self._limit:
            return await _request(method, *args, **kwargs)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(self._method(kind, "read"), name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self._method(obj["kind"], "create"), obj["metadata"]["namespace"], obj)

    async def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            self._method(kind, "patch"), name, namespace, patch, _content_type=MERGE_PATCH
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._call(self._method(kind, "delete"), name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    async def get_green_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(
                self._custom.get_namespaced_custom_object, api.GROUP, api.VERSION, namespace, api.PLURAL, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def patch_green_model_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge `status`; with `resource_version`, only onto that version of the object (else 409)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._call(
            self._custom.patch_namespaced_custom_object_status,
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            name,
            body,
            _content_type=MERGE_PATCH,
        )

    async def set_green_model_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Replace a GreenModel's finalizers; with `resource_version`, only on that version (else 409)."""
        metadata: dict[str, Any] = {"finalizers": finalizers}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return await self._call(
            self._custom.patch_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            name,
            {"metadata": metadata},
            _content_type=MERGE_PATCH,
        )

    async def patch_energy_budget_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge an EnergyBudget's status (its daemon is the one writer, so no resourceVersion)."""
        return await self._call(
            self._custom.patch_namespaced_custom_object_status,
            api.GROUP,
            api.VERSION,
            namespace,
            eb.EB_PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    def _method(self, kind: str, verb: str) -> Callable[..., Any]:
        """e.g. ("Deployment", "patch") -> AppsV1Api.patch_namespaced_deployment (named in full, so RBAC
        tests that scan this file see every call the operator makes)."""
        methods: dict[tuple[str, str], Callable[..., Any]] = {
            ("Deployment", "read"): self._apps.read_namespaced_deployment,
            ("Deployment", "create"): self._apps.create_namespaced_deployment,
            ("Deployment", "patch"): self._apps.patch_namespaced_deployment,
            ("Deployment", "delete"): self._apps.delete_namespaced_deployment,
            ("Service", "read"): self._core.read_namespaced_service,
            ("Service", "create"): self._core.create_namespaced_service,
            ("Service", "patch"): self._core.patch_namespaced_service,
            ("Service", "delete"): self._core.delete_namespaced_service,
        }
        return methods[(kind, verb)]


async def _request(method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    # The client is synchronous; run it off the event loop that kopf's watchers share.
    response = await asyncio.to_thread(method, *args, _preload_content=False, **kwargs)
    data = response.data
    result: dict[str, Any] = json.loads(data) if data else {}
    return result
