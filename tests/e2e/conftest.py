"""The e2e harness: a Kubernetes API (tests/kube_emulator/) on loopback, a kubeconfig pointing at it, an
async client for the test's own reads and writes, a polling `wait_for`, and kopf operators run in-process.

Fixtures (all function-scoped; async tests run on the same loop that serves the API):

- `kube`: the `KubeEmulator`, served on 127.0.0.1 at a free port, with the GreenModel CRD registered
  (schema pruning, defaults and validation as the API server would do them).
- `kubeconfig`: a kubeconfig file for it, exported as $KUBECONFIG and as the `kubernetes` client's
  default location (that client reads $KUBECONFIG once, at import time); the client's global default
  configuration is restored afterwards.
- `client`: `KubeClient`, an aiohttp client with create/get/list/patch/delete that talks to `kube`.
- `operator_factory`: `OperatorFactory`; `operator_factory("pkg.module")` returns an `Operator` whose
  `start()` / `stop()` / `restart()` run `kopf run -A --standalone -m pkg.module` in a thread through
  `kopf.testing.KopfRunner`. Every operator still running is stopped at teardown.

The emulator has no controllers: no Deployment makes Pods, no garbage collector follows ownerReferences.
Tests play those parts through `client` when they need them.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import inspect
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

import aiohttp
import kopf
import kubernetes
import pytest
from kopf._core.intents.registries import SmartOperatorRegistry  # what `kopf run` uses by default
from kopf.testing import KopfRunner

from tests.conftest import write_kubeconfig
from tests.kube_emulator import MERGE_PATCH, ApiCall, KubeEmulator
from tests.prometheus_server import free_port

T = TypeVar("T")

CLIENT_USER_AGENT = "greenllm-e2e-client"
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, Mapping) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


# ---------------------------------------------------------------------------------------------- polling


@overload
async def wait_for(
    fn: Callable[[], Awaitable[T | None]], timeout: float = ..., interval: float = ..., message: str = ...
) -> T: ...
@overload
async def wait_for(
    fn: Callable[[], T | None], timeout: float = ..., interval: float = ..., message: str = ...
) -> T: ...
async def wait_for(
    fn: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll `fn` (sync or async) until it returns something truthy; return that. Fail after `timeout` s.

    The timeout only bounds a hang: tests never assert on how long something took.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        result = fn()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------- client


class KubeClient:
    """A small async client for the test itself. Resources are named like `apps/v1/deployments`,
    `v1/pods` or `greenllm.io/v1alpha1/greenmodels`; namespaces default to the object's own."""

    def __init__(self, emulator: KubeEmulator, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self._session = session

    def url(
        self,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        spec = self.emulator.spec(resource)
        base = f"/api/{spec.version}" if spec.group == "" else f"/apis/{spec.group}/{spec.version}"
        if spec.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        path = f"{base}/{spec.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Content-Type": content_type, "User-Agent": CLIENT_USER_AGENT}
        async with self._session.request(method, path, json=json, params=params, headers=headers) as response:
            body = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiError(response.status, body)
            return body

    async def create(
        self, resource: str, obj: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        namespace = namespace or (obj.get("metadata") or {}).get("namespace")
        result: dict[str, Any] = await self._request("POST", self.url(resource, namespace), json=obj)
        return result

    async def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._request("GET", self.url(resource, namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return result

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        params = {
            k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v
        }
        body = await self._request("GET", self.url(resource, namespace), params=params)
        items: builtins.list[dict[str, Any]] = body["items"]
        return items

    async def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "PATCH", self.url(resource, namespace, name, subresource), json=patch, content_type=content_type
        )
        return result

    async def patch_status(
        self, resource: str, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Play a controller or kubelet: merge `status` through the status subresource."""
        return await self.patch(resource, name, {"status": dict(status)}, namespace, subresource="status")

    async def delete(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("DELETE", self.url(resource, namespace, name))
        return result

    async def ensure_namespace(self, name: str) -> None:
        if await self.get("v1/namespaces", name) is None:
            await self.create("v1/namespaces", {"metadata": {"name": name}})

    async def events_for(
        self, namespace: str, name: str, reason: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Core v1 Events about object `name` (what kopf.info/warn/event post), oldest first."""
        events = await self.list("v1/events", namespace, field_selector=f"involvedObject.name={name}")
        return [e for e in events if reason is None or e.get("reason") == reason]


# ---------------------------------------------------------------------------------------------- operators


_REGISTRIES: dict[str, kopf.OperatorRegistry] = {}
COMPANION_MODULES = {"greenllm.controller.handlers": ("greenllm.controller.budgets",)}


def operator_registry(module: str) -> kopf.OperatorRegistry:
    """The handlers of `module` in a registry of their own, loaded once per session.

    `kopf run` makes whatever registry it is given the process-wide default and imports the module into
    it; a module imported a second time registers nothing. So each operator module is imported exactly once
    with a fresh default registry (re-executed if something else imported it first), and that registry is
    handed to every run. A test-local operator passes its own registry to the decorators instead.
    """
    if module not in _REGISTRIES:
        registry = SmartOperatorRegistry()
        previous = kopf.get_default_registry()
        kopf.set_default_registry(registry)
        try:
            # A module's handlers in modules it imports (the operator's EnergyBudget handlers, imported by
            # its GreenModel handlers) register only when executed under this registry too.
            for companion in COMPANION_MODULES.get(module, ()):
                if companion in sys.modules:
                    importlib.reload(sys.modules[companion])
            if module in sys.modules:
                importlib.reload(sys.modules[module])
            else:
                importlib.import_module(module)
        finally:
            kopf.set_default_registry(previous)
        _REGISTRIES[module] = registry
    return _REGISTRIES[module]


class Operator:
    """One kopf operator run in-process, restartable. Start and stop it only from async tests."""

    def __init__(
        self,
        emulator: KubeEmulator,
        args: list[str],
        registry: kopf.OperatorRegistry,
        settings: Callable[[], kopf.OperatorSettings] | None = None,
    ) -> None:
        self.emulator = emulator
        self.args = args
        self.registry = registry
        self._settings = settings
        self._runner: KopfRunner | None = None
        self.runs: list[KopfRunner] = []  # finished runs, for their output and exit codes

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the operator is already running")
        settings = self._settings() if self._settings is not None else None
        runner = KopfRunner(self.args, registry=self.registry, settings=settings, timeout=60)
        runner.__enter__()  # only starts the thread and waits for its loop: fast, does not block on I/O
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # KopfRunner.__exit__ joins the operator's thread; off the loop, since this loop serves the API.
        await asyncio.to_thread(runner.__exit__, None, None, None)
        self.runs.append(runner)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def check_alive(self) -> None:
        """Fail at once, with kopf's own output, if the operator's thread has ended by itself."""
        runner = self._runner
        if runner is not None and runner.future.done():
            error = runner.future.exception()
            result = None if error is not None else runner.future.result()
            cause = error or (result.exception if result is not None else None)
            output = "" if result is None else result.output[-4000:]
            raise AssertionError(f"the operator exited while running: {cause!r}\n{output}")

    async def wait_watching(self, *resources: str, since: int = 0, timeout: float = 60.0) -> None:
        """Wait until kopf watches every `resources` (e.g. "greenmodels") in requests after index `since`."""

        def watching() -> bool:
            self.check_alive()
            calls = self.emulator.api_calls[since:]
            seen = {c.resource for c in calls if c.verb == "watch" and c.user_agent.startswith("kopf")}
            return set(resources) <= seen

        await wait_for(watching, timeout=timeout, message=f"kopf to watch {resources}")

    async def __aenter__(self) -> Operator:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


class OperatorFactory:
    def __init__(self, emulator: KubeEmulator) -> None:
        self.emulator = emulator
        self.operators: list[Operator] = []

    def __call__(
        self,
        module: str | None = None,
        *,
        registry: kopf.OperatorRegistry | None = None,
        extra_args: tuple[str, ...] = (),
        settings: Callable[[], kopf.OperatorSettings] | None = None,
    ) -> Operator:
        """An operator of `module`'s handlers, or of an explicit `registry` (a test-local operator)."""
        if (module is None) == (registry is None):
            raise TypeError("give exactly one of module or registry")
        args = ["run", "-A", "--standalone", *extra_args]
        if module is not None:
            args += ["-m", module]
            registry = operator_registry(module)
        assert registry is not None
        operator = Operator(self.emulator, args, registry, settings)
        self.operators.append(operator)
        return operator

    async def stop_all(self) -> None:
        """Stop every operator still running; then re-raise the first error one of them ended with."""
        errors: list[BaseException] = []
        for operator in self.operators:
            try:
                await operator.stop()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def kubeconfig(kube_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = write_kubeconfig(tmp_path / "kubeconfig", kube_url, "tester")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    # In a pod, the in-cluster config would win over the kubeconfig and reach the real cluster.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    # load_kube_config() replaces the client's process-wide default configuration: put it back afterwards.
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", kubernetes.client.Configuration._default)
    yield path


@pytest.fixture
async def client(kube: KubeEmulator, kube_url: str) -> AsyncIterator[KubeClient]:
    async with aiohttp.ClientSession(base_url=kube_url) as session:
        yield KubeClient(kube, session)


# Where an install runs the operator, and so holds its leader Lease (controller/leader.py).
OPERATOR_NAMESPACE = "greenllm-system"


@pytest.fixture
async def operator_factory(
    kube: KubeEmulator, kubeconfig: Path, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OperatorFactory]:
    if os.path.exists(SERVICE_ACCOUNT_TOKEN):
        pytest.skip("a service-account token is mounted: an operator's login could reach the real cluster")
    await client.ensure_namespace(OPERATOR_NAMESPACE)
    # A follower answers its liveness probe while it waits for the Lease: never on a fixed port here.
    monkeypatch.setenv("GREENLLM_PROBE_PORT", str(free_port()))
    # Tests watch the loop through status, so by default every tick writes it; a test of the write
    # policy sets the period itself.
    monkeypatch.setenv("GREENLLM_ACCOUNTING_WRITE_PERIOD", "0")
    factory = OperatorFactory(kube)
    try:
        yield factory
    finally:
        await factory.stop_all()


def calls_by(calls: list[ApiCall], user_agent_prefix: str) -> list[ApiCall]:
    return [c for c in calls if c.user_agent.startswith(user_agent_prefix)]
