"""RBAC covers exactly what the code uses, checked on recorded requests (issue 6).

The real operator (`kopf run -A --standalone -m greenllm.controller.handlers`) and the real node agent run
against the API emulator, which records every request as RBAC sees it (verb, group, resource, subresource,
namespace, name, user agent). The chart is rendered with its default values, and then:

1. every request of the operator is allowed for the operator's ServiceAccount and every request of the agent
   for the agent's, by the rendered ClusterRoles, Roles and their bindings (evaluated like the API server's
   RBAC authorizer, tests/manifests/chartkit.py);
2. every rule the chart grants those accounts (each verb on each resource) was used by at least one request.

The static twin of this test, tests/manifests/test_rbac_rules.py, derives the permissions from the source;
this one observes what the processes actually did.

Who made a request is told by its user agent: kopf's own (`kopf/<version>`), the `kubernetes` client's
default (`OpenAPI-Generator/...`, the operator's controller/kube.py), the agent's client (given its own user
agent here, since in a pod it would use the same default as the operator) and the test's own client.

Default values run the operator cluster-wide and standalone, so neither peering (ClusterKopfPeering rules) nor
namespace observation (namespaces list/watch) is rendered, and neither is exercised here: both belong to other
value sets, which test_rbac_rules.py covers from the source.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import kubernetes
import pytest
import yaml

from greenllm.agent.exporter import AgentMetrics
from greenllm.agent.gpu.simulated import SimulatedBackend, simulated_h100
from greenllm.agent.kube import KubeEvents, KubeReader
from greenllm.agent.podresources import PodResourcesClient, api_pb2_grpc
from greenllm.agent.reconcile import Action, CycleReport, Restraint
from greenllm.agent.runner import Agent
from greenllm.agent.state import StateStore
from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api
from greenllm.api.crd import custom_resource_definition, energy_budget_definition
from greenllm.controller import handlers
from greenllm.core.power import Backoff, HoldPolicy
from tests.agent.conftest import FakeKubelet, gpu_uuid
from tests.e2e.conftest import CLIENT_USER_AGENT, OPERATOR_NAMESPACE, KubeClient, OperatorFactory, wait_for
from tests.kube_emulator import ApiCall, KubeEmulator, ResourceSpec
from tests.manifests.chartkit import Request, allowed, find, objects, permissions

pytestmark = pytest.mark.e2e

MODULE = "greenllm.controller.handlers"
GM = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"
EBS = f"{api.GROUP}/{api.VERSION}/{eb.EB_PLURAL}"
BUDGET = "team"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
SERVICES = "v1/services"
PODS = "v1/pods"
NS = "serving"
NAME = "qwen3-8b"
NODE = "gpu-node-1"
FIXED_LIMIT_W = 400
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qwen3-8b-minimal.yaml"

KOPF_USER_AGENT = "kopf/"  # kopf's API client (watching, finalizers, status, events)
KUBERNETES_CLIENT_USER_AGENT = "OpenAPI-Generator/"  # the `kubernetes` client's default: controller/kube.py
AGENT_USER_AGENT = "greenllm-agent-rbac-test"

Permission = tuple[str, str, str]  # (api group, resource[/subresource], verb)


# ---------------------------------------------------------------------------------------------- helpers


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def service_accounts(objs: list[dict[str, Any]]) -> tuple[tuple[str, str], tuple[str, str]]:
    """(namespace, name) of the operator's and the agent's ServiceAccounts, as their workloads use them."""
    operator = find(objs, "Deployment")
    agent = find(objs, "DaemonSet")
    return (
        (operator["metadata"]["namespace"], operator["spec"]["template"]["spec"]["serviceAccountName"]),
        (agent["metadata"]["namespace"], agent["spec"]["template"]["spec"]["serviceAccountName"]),
    )


def granted(objs: list[dict[str, Any]], account: tuple[str, str]) -> set[Permission]:
    return {(group, resource, verb) for _scope, group, resource, verb in permissions(objs, account)}


def used(calls: list[ApiCall]) -> set[Permission]:
    return {
        (c.group, f"{c.resource}/{c.subresource}" if c.subresource else c.resource, c.verb) for c in calls
    }


def denied(objs: list[dict[str, Any]], account: tuple[str, str], calls: list[ApiCall]) -> list[ApiCall]:
    return [c for c in calls if not allowed(objs, account, Request.from_api_call(c))]


def green_model() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": NAME, "namespace": NS}
    doc["spec"]["scaling"] = {"interval": "1s"}  # several autoscaling ticks within the test
    # A fixed per-GPU cap: the operator writes it into status and the agent applies it (and says so in an
    # Event) whatever the planner would choose without metrics.
    doc["spec"]["power"] = {"mode": "Fixed", "limitW": FIXED_LIMIT_W}
    return doc


def energy_budget() -> dict[str, Any]:
    return {
        "apiVersion": eb.API_VERSION,
        "kind": eb.EB_KIND,
        "metadata": {"name": BUDGET, "namespace": NS},
        "spec": {"powerW": 300},  # below what the GreenModel would draw alone: the budget binds it
    }


def condition(gm: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((gm or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            found: dict[str, Any] = cond
            return found
    return {}


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class Kubelet:
    """The kubelet's PodResources gRPC service (tests/agent's FakeKubelet) on a unix socket."""

    def __init__(self, path: Path) -> None:
        self.socket = path
        self.service = FakeKubelet()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(self.service, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"unix://{path}")
        self._server.start()

    def close(self) -> None:
        self._server.stop(grace=None).wait()


@pytest.fixture
def kubelet() -> Iterator[Kubelet]:
    with tempfile.TemporaryDirectory(prefix="kl-", dir="/tmp") as tmp:  # unix socket paths: <= 107 bytes
        server = Kubelet(Path(tmp) / "kubelet.sock")
        try:
            yield server
        finally:
            server.close()


@pytest.fixture
def agent(kube_url: str, kubelet: Kubelet, tmp_path: Path) -> Iterator[Agent]:
    """The node agent in-process: simulated H100s, the real PodResources client, a client of its own."""
    gpus = tmp_path / "simulated-gpus.json"
    SimulatedBackend(gpus, [simulated_h100(i, gpu_uuid(i)) for i in range(2)]).close()
    configuration = kubernetes.client.Configuration(host=kube_url)
    configuration.retries = 0
    with (
        kubernetes.client.ApiClient(configuration) as api_client,
        PodResourcesClient(kubelet.socket, timeout_s=5.0) as pod_resources,
    ):
        api_client.user_agent = AGENT_USER_AGENT
        yield Agent(
            node_name=NODE,
            backend_factory=lambda: SimulatedBackend(gpus),
            pod_resources=pod_resources,
            cluster=KubeReader(api_client, NODE, timeout_s=5.0),
            events=KubeEvents(api_client, NODE, timeout_s=5.0),
            store=StateStore(tmp_path / "state"),
            metrics=AgentMetrics(NODE),
            interval_s=1.0,
            policy=Restraint(
                hold=HoldPolicy(deadband_mw=5_000, min_hold_s=0.0), backoff=Backoff(base_s=1.0, max_s=10.0)
            ),
        )


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the operator's startup handler. Prometheus is a closed loopback port: every tick still reads
    # the GreenModel and writes its status (MetricsAvailable=False) without scaling.
    monkeypatch.setenv("GREENLLM_METRICS_PORT", "0")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_TIMEOUT", "1")


# ---------------------------------------------------------------------------------------------- scenario


async def drive(
    kube: KubeEmulator, client: KubeClient, operator_factory: OperatorFactory, agent: Agent, kubelet: Kubelet
) -> None:
    """Create, workloads, status, spec update, Deployment status, ticks, the agent, delete."""
    # A real API server serves CRDs, and kopf watches them (only once discovery lists them) to notice
    # resources coming and going: serve them here too, with the GreenModel CRD installed as Helm would.
    kube.declare(
        ResourceSpec(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
            subresources=("status",),
            shortnames=("crd", "crds"),
        )
    )
    await client.create(CRDS, custom_resource_definition())
    await client.create(CRDS, energy_budget_definition())
    kube.register_crd(energy_budget_definition())  # served (the fixture serves the GreenModel CRD)
    await client.ensure_namespace(NS)

    operator = operator_factory(MODULE)
    await operator.start()
    await operator.wait_watching(api.PLURAL, eb.EB_PLURAL, "deployments", "customresourcedefinitions")

    # Create: the operator makes the Deployment and Service and writes status (reconcile handler).
    await client.create(GM, green_model())

    async def reconciled(generation: int) -> dict[str, Any] | None:
        gm = await client.get(GM, NAME, NS)
        return gm if condition(gm, "SpecValid").get("observedGeneration") == generation else None

    gm = await wait_for(lambda: reconciled(1), message="the GreenModel to be reconciled")
    assert condition(gm, "SpecValid")["status"] == "True"
    deployment = await client.get(DEPLOYMENTS, NAME, NS)
    service = await client.get(SERVICES, NAME, NS)
    assert deployment is not None and service is not None

    # Spec update: a new image patches the Deployment, a new port patches the Service as well.
    variants = copy.deepcopy(gm["spec"]["variants"])
    for variant in variants:
        variant["image"] = "vllm/vllm-openai:v0.11.2"
    await client.patch(GM, NAME, {"spec": {"variants": variants, "port": 8080}}, NS)
    gm = await wait_for(lambda: reconciled(2), message="the spec update to be reconciled")
    service = await client.get(SERVICES, NAME, NS)
    assert service is not None and [p["port"] for p in service["spec"]["ports"]] == [8080]

    # The Deployment controller's part: the replicas become ready; the operator mirrors it into Ready.
    replicas = gm["status"]["replicas"]
    await client.patch_status(DEPLOYMENTS, NAME, {"replicas": replicas, "readyReplicas": replicas}, NS)

    async def ready() -> bool:
        return condition(await client.get(GM, NAME, NS), "Ready").get("status") == "True"

    await wait_for(ready, message="Ready=True mirrored from the Deployment")

    # Autoscaling ticks: each reads the GreenModel and patches its status (Prometheus is unreachable).
    async def tick_time() -> str | None:
        gm = await client.get(GM, NAME, NS)
        unavailable = condition(gm, "MetricsAvailable").get("reason") == "PrometheusUnavailable"
        observed: str | None = ((gm or {}).get("status") or {}).get("observed", {}).get("time")
        return observed if unavailable else None

    first = await wait_for(tick_time, message="an autoscaling tick")
    await wait_for(lambda: _changed(tick_time, first), message="another autoscaling tick")

    # An EnergyBudget over it: the operator allocates, writes the budget's status and the GreenModel's
    # status.boundBy; deleted, the GreenModel is bound by nothing again.
    await client.create(EBS, energy_budget())

    async def budget_ready() -> bool:
        return condition(await client.get(EBS, BUDGET, NS), "Ready").get("status") == "True"

    async def bound(names: list[str]) -> bool:
        gm = await client.get(GM, NAME, NS)
        return ((gm or {}).get("status") or {}).get("boundBy") == names

    await wait_for(budget_ready, message="the EnergyBudget to be allocated")
    await wait_for(lambda: bound([BUDGET]), message="the GreenModel to name the budget binding it")
    await client.delete(EBS, BUDGET, NS)
    await wait_for(lambda: bound([]), message="the GreenModel bound by nothing once the budget is gone")

    async def budget_gone() -> bool:
        return await client.get(EBS, BUDGET, NS) is None

    await wait_for(budget_gone, message="the EnergyBudget's finalizer to be released")

    # The agent: a pod of the GreenModel's Deployment on its node, holding GPU 0 (the ReplicaSet and the
    # pod are what the Deployment controller and the scheduler would make).
    deployment = await client.get(DEPLOYMENTS, NAME, NS)
    assert deployment is not None
    template = deployment["spec"]["template"]
    replicaset = await client.create(
        REPLICASETS,
        {
            "metadata": {
                "name": f"{NAME}-7d9f8",
                "namespace": NS,
                "ownerReferences": [owner_ref(deployment)],
            },
            "spec": {"replicas": 1, "selector": deployment["spec"]["selector"], "template": template},
        },
    )
    pod = await client.create(
        PODS,
        {
            "metadata": {
                "name": f"{NAME}-7d9f8-abcde",
                "namespace": NS,
                "labels": template["metadata"]["labels"],
                "ownerReferences": [owner_ref(replicaset)],
            },
            "spec": {"nodeName": NODE, "containers": template["spec"]["containers"]},
        },
    )
    kubelet.service.allocate(NS, pod["metadata"]["name"], [gpu_uuid(0)])
    report = await _cycle(agent)
    gpu0 = next(g for g in report.gpus if g.uuid == gpu_uuid(0))
    assert gpu0.greenmodel is not None and gpu0.greenmodel.name == NAME, gpu0
    assert gpu0.action is Action.APPLIED and gpu0.target_limit_mw == FIXED_LIMIT_W * 1000, gpu0

    # Delete: the operator removes what it owns and releases the finalizer an older operator put on the
    # GreenModel (the only patch of a GreenModel itself this one makes); the pod goes, the agent restores.
    await client.patch(GM, NAME, {"metadata": {"finalizers": [handlers.LEGACY_FINALIZER]}}, NS)
    await client.delete(GM, NAME, NS)

    async def released() -> bool:
        if await client.get(GM, NAME, NS) is not None:
            return False
        return await client.list(DEPLOYMENTS, NS) == [] and await client.list(SERVICES, NS) == []

    await wait_for(released, message="the GreenModel, its Deployment and its Service to go")
    await operator.stop()

    await client.delete(PODS, pod["metadata"]["name"], NS)
    kubelet.service.release(NS, pod["metadata"]["name"])
    report = await _cycle(agent)
    assert next(g for g in report.gpus if g.uuid == gpu_uuid(0)).action is Action.RESTORED
    agent.shutdown()


async def _changed(probe: Callable[[], Awaitable[str | None]], before: str | None) -> bool:
    now = await probe()
    return now is not None and now != before


async def _cycle(agent: Agent) -> CycleReport:
    report = await asyncio.to_thread(agent.run_once)  # the agent's client is synchronous
    assert report is not None and report.cluster_known
    return report


# ---------------------------------------------------------------------------------------------- the test


async def test_recorded_requests_are_exactly_what_the_chart_grants(
    kube: KubeEmulator,
    client: KubeClient,
    operator_factory: OperatorFactory,
    operator_env: None,
    agent: Agent,
    kubelet: Kubelet,
) -> None:
    await drive(kube, client, operator_factory, agent, kubelet)
    calls = kube.api_calls

    operator_calls = [
        c for c in calls if c.user_agent.startswith((KOPF_USER_AGENT, KUBERNETES_CLIENT_USER_AGENT))
    ]
    agent_calls = [c for c in calls if c.user_agent == AGENT_USER_AGENT]
    test_calls = [c for c in calls if c.user_agent == CLIENT_USER_AGENT]
    unknown = [c for c in calls if c not in operator_calls + agent_calls + test_calls]
    assert unknown == [], "every request must come from the operator, the agent or the test"
    assert {c.user_agent.split("/")[0] + "/" for c in operator_calls} == {
        KOPF_USER_AGENT,
        KUBERNETES_CLIENT_USER_AGENT,
    }, "both kopf and the operator's own client made requests"

    objs = objects()  # the chart with its default values
    operator_sa, agent_sa = service_accounts(objs)

    # (1) Every request is allowed for the ServiceAccount of the component that made it.
    assert denied(objs, operator_sa, operator_calls) == []
    assert denied(objs, agent_sa, agent_calls) == []
    # ... and the accounts differ: the operator's writes are refused to the agent (the check can fail).
    agent_refused = used(denied(objs, agent_sa, operator_calls))
    assert (api.GROUP, f"{api.PLURAL}/status", "patch") in agent_refused
    assert ("apps", "deployments", "create") in agent_refused

    # (2) Every granted verb on every resource was used. With default values the operator's grants are
    # cluster-wide (one ClusterRole) but for its leader Lease, in its own namespace; the agent's all are.
    operator_scoped = {
        (scope, group, resource) for scope, group, resource, _ in permissions(objs, operator_sa)
    }
    assert {(scope, r) for scope, _, r in operator_scoped if scope is not None} == {
        (OPERATOR_NAMESPACE, "leases")
    }
    assert {scope for scope, *_ in permissions(objs, agent_sa)} == {None}
    assert granted(objs, operator_sa) - used(operator_calls) == set(), "rules the operator never used"
    assert granted(objs, agent_sa) - used(agent_calls) == set(), "rules the agent never used"
    # Sanity of the recording itself: the agent applied a power setting and said so in an Event.
    assert ("", "events", "create") in used(agent_calls)
