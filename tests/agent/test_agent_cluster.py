"""The agent in-process against real parts: the kubelet PodResources gRPC API on a unix socket, the Kubernetes
API emulator, and simulated GPUs persisted to a file. Each `cycle()` is one reconcile of the real loop code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import kubernetes
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from greenllm.agent.exporter import AgentMetrics
from greenllm.agent.gpu.simulated import SimulatedBackend
from greenllm.agent.kube import KubeEvents, KubeReader
from greenllm.agent.podresources import PodResourcesClient
from greenllm.agent.reconcile import Action, CycleReport, Restraint
from greenllm.agent.runner import Agent
from greenllm.agent.state import StateStore
from greenllm.core.power import Backoff, HoldPolicy
from tests.agent.conftest import NODE, NS, OTHER_NODE, Cluster, KubeletServer, gpu_uuid
from tests.kube_emulator import KubeEmulator

DEFAULT_MW = 700_000  # H100 SXM5 default limit (data/gpu_specs/gpu_power_specs.csv)


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, agent: Agent, sim_path: Path, state_dir: Path, clock: Clock) -> None:
        self.agent = agent
        self.sim_path = sim_path
        self.state_dir = state_dir
        self.clock = clock

    async def cycle(self) -> CycleReport:
        report = await asyncio.to_thread(self.agent.run_once)
        assert report is not None
        return report

    def limits(self) -> dict[int, int]:
        gpus = SimulatedBackend.load(self.sim_path)
        return {int(g["index"]): int(g["limit_mw"]) for g in gpus.values()}

    def gpu(self, index: int) -> dict[str, Any]:
        return SimulatedBackend.load(self.sim_path)[gpu_uuid(index)]

    def record(self) -> dict[str, Any]:
        return {u: r for u, r in StateStore(self.state_dir).load().items()}

    def metric(self, name: str, **labels: str) -> list[float]:
        text = generate_latest(self.agent.metrics.registry).decode()
        values = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    values.append(sample.value)
        return values


@pytest.fixture
def make_agent(
    api_client: kubernetes.client.ApiClient, kubelet: KubeletServer, sim_path: Path, tmp_path: Path
) -> Callable[..., Harness]:
    def make(*, dry_run: bool = False, hold_s: float = 0.0, clock: Clock | None = None) -> Harness:
        clock = clock or Clock()
        state_dir = tmp_path / "state"
        policy = Restraint(
            hold=HoldPolicy(deadband_mw=5_000, min_hold_s=hold_s), backoff=Backoff(base_s=1.0, max_s=10.0)
        )
        agent = Agent(
            node_name=NODE,
            backend_factory=lambda: SimulatedBackend(sim_path, clock=clock),
            pod_resources=PodResourcesClient(kubelet.socket, timeout_s=5.0),
            cluster=KubeReader(api_client, NODE, timeout_s=5.0),
            events=KubeEvents(api_client, NODE, timeout_s=5.0),
            store=StateStore(state_dir),
            metrics=AgentMetrics(NODE),
            interval_s=1.0,
            policy=policy,
            dry_run=dry_run,
            clock=clock,
        )
        return Harness(agent, sim_path, state_dir, clock)

    return make


async def serving(
    cluster: Cluster, status: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A GreenModel asking for `status` and the ReplicaSet its pods come from."""
    gm = await cluster.greenmodel("llama", status if status is not None else {"powerLimitW": 350})
    rs = await cluster.deployment_for(gm)
    return gm, rs


# ---------------------------------------------------------------------------------------------- which GPUs


async def test_capped_set_equals_allocated_set_including_idle_gpus(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    await cluster.pod("llama-1", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0), gpu_uuid(1)])  # by UUID
    kubelet.kubelet.allocate(NS, "llama-1", ["2"])  # by index
    SimulatedBackend(h.sim_path).set_demand(gpu_uuid(2), 0)  # idle: model loaded, no requests

    report = await h.cycle()

    capped = {i for i, mw in h.limits().items() if mw != DEFAULT_MW}
    assert capped == {0, 1, 2}
    assert h.limits()[0] == 350_000 and h.limits()[2] == 350_000
    assert set(h.record()) == {gpu_uuid(0), gpu_uuid(1), gpu_uuid(2)}
    actions = {g.index: g.action for g in report.gpus}
    assert actions == {0: Action.APPLIED, 1: Action.APPLIED, 2: Action.APPLIED, 3: Action.UNCHANGED}
    applied = cluster.events("PowerSettingApplied")
    assert len(applied) == 3
    assert {e["involvedObject"]["kind"] for e in applied} == {"GreenModel"}
    assert all("power limit 350 W" in e["message"] for e in applied)
    assert h.metric(
        "greenllm_agent_gpu_power_limit_enforced_watts", uuid=gpu_uuid(2), pod="llama-1", greenmodel="llama"
    ) == [350.0]
    assert h.metric("greenllm_agent_gpu_power_watts", uuid=gpu_uuid(2)) == [0.0]

    # A second cycle changes nothing and posts nothing new.
    again = await h.cycle()
    assert {g.action for g in again.gpus} == {Action.UNCHANGED}
    assert len(cluster.events("PowerSettingApplied")) == 3
    assert all(h.gpu(i)["changes"] == 1 for i in (0, 1, 2))


async def test_pods_on_other_nodes_are_ignored(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs, node=OTHER_NODE)
    # The pod list of another node must not lend this node's GPU an owner.
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    await h.cycle()
    assert h.limits()[0] == DEFAULT_MW


async def test_foreign_cotenant_blocks_capping(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    await cluster.pod("batch-job", None)  # a pod of nobody's GreenModel
    # Time-slicing: both pods hold a replica of GPU 0; llama-0 alone holds GPU 1.
    kubelet.kubelet.allocate(NS, "llama-0", [f"{gpu_uuid(0)}::0", gpu_uuid(1)])
    kubelet.kubelet.allocate(NS, "batch-job", [f"{gpu_uuid(0)}::1"])

    report = await h.cycle()

    assert h.limits()[0] == DEFAULT_MW
    assert h.limits()[1] == 350_000
    gpu0 = next(g for g in report.gpus if g.index == 0)
    assert gpu0.action is Action.SHARED
    assert "batch-job" in gpu0.message
    shared = cluster.events("GpuShared")
    assert len(shared) == 1 and gpu_uuid(0) in shared[0]["message"]
    assert h.metric("greenllm_agent_gpu_role", uuid=gpu_uuid(0), role="shared") == [1.0]


async def test_cotenant_arriving_later_restores_the_gpu(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent(hold_s=3600.0)
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [f"{gpu_uuid(0)}::0"])
    await h.cycle()
    assert h.limits()[0] == 350_000

    other_gm = await cluster.greenmodel("mistral", {"powerLimitW": 250})
    other_rs = await cluster.deployment_for(other_gm)
    await cluster.pod("mistral-0", other_rs)
    kubelet.kubelet.allocate(NS, "mistral-0", [f"{gpu_uuid(0)}::1"])
    h.clock.now += 1.0  # well inside the hold time: a restore does not wait for it

    report = await h.cycle()
    assert h.limits()[0] == DEFAULT_MW
    assert next(g for g in report.gpus if g.index == 0).action is Action.RESTORED
    assert h.record() == {}


async def test_pod_annotation_or_label_alone_changes_nothing(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster, {"powerLimitW": 300})
    await cluster.pod(
        "impostor",
        None,
        annotations={"greenllm.io/power-limit-w": "150", "greenllm.io/greenmodel": "llama"},
        labels={"greenllm.io/greenmodel": "llama", "app.kubernetes.io/name": "llama-bf16"},
    )
    # A forged owner reference: right names, wrong UID.
    forged = {"metadata": {"name": rs["metadata"]["name"], "uid": "00000000-0000-0000-0000-000000000000"}}
    await cluster.pod("forger", forged)
    kubelet.kubelet.allocate(NS, "impostor", [gpu_uuid(0)])
    kubelet.kubelet.allocate(NS, "forger", [gpu_uuid(1)])

    report = await h.cycle()

    assert h.limits() == {0: DEFAULT_MW, 1: DEFAULT_MW, 2: DEFAULT_MW, 3: DEFAULT_MW}
    assert all(h.gpu(i)["changes"] == 0 for i in range(4))
    assert h.record() == {}
    assert {g.action for g in report.gpus} == {Action.UNCHANGED}
    assert cluster.events() == []


# ---------------------------------------------------------------------------------------------- values


async def test_request_below_minimum_is_clamped_and_reported(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster, {"powerLimitW": 120})
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])

    report = await h.cycle()

    assert h.limits()[0] == 200_000  # the H100's minimum
    gpu0 = next(g for g in report.gpus if g.index == 0)
    assert gpu0.action is Action.CLAMPED
    assert (gpu0.requested_limit_w, gpu0.target_limit_mw, gpu0.enforced_limit_mw) == (120.0, 200_000, 200_000)
    clamped = cluster.events("PowerSettingClamped")
    assert len(clamped) == 1
    assert clamped[0]["type"] == "Warning"
    assert "requested 120 W" in clamped[0]["message"] and "200 W" in clamped[0]["message"]
    labels = {"uuid": gpu_uuid(0), "greenmodel": "llama", "pod": "llama-0", "namespace": NS, "node": NODE}
    assert h.metric("greenllm_agent_gpu_power_limit_requested_watts", **labels) == [120.0]
    assert h.metric("greenllm_agent_gpu_power_limit_target_watts", **labels) == [200.0]
    assert h.metric("greenllm_agent_gpu_power_limit_enforced_watts", **labels) == [200.0]


async def test_absurd_request_is_refused_and_reported(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster, {"powerLimitW": 5000})
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])

    report = await h.cycle()
    assert h.limits()[0] == DEFAULT_MW
    assert next(g for g in report.gpus if g.index == 0).action is Action.REFUSED
    refused = cluster.events("PowerSettingRefused")
    assert len(refused) == 1 and "above the device maximum" in refused[0]["message"]
    await h.cycle()
    assert len(cluster.events("PowerSettingRefused")) == 1  # reported once, not every cycle


async def test_absurd_power_reading_is_ignored_and_reported(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    SimulatedBackend(h.sim_path).set_power_reading(gpu_uuid(3), 5_000_000)  # 5 kW from a 700 W GPU
    report = await h.cycle()
    gpu3 = next(g for g in report.gpus if g.index == 3)
    assert gpu3.power_mw is None and gpu3.error == "absurd_power"
    assert h.metric("greenllm_agent_gpu_power_watts", uuid=gpu_uuid(3)) == []
    assert h.metric("greenllm_agent_gpu_last_error", uuid=gpu_uuid(3), error="absurd_power") == [1.0]
    assert h.metric("greenllm_agent_gpu_power_watts", uuid=gpu_uuid(0)) == [486.0]


async def test_locked_clock_snaps_to_supported_clock(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster, {"powerLimitW": None, "lockedClockMhz": 1800})
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    await h.cycle()
    assert h.gpu(0)["locked_clock_mhz"] == 1770
    assert h.gpu(0)["limit_mw"] == DEFAULT_MW
    assert len(cluster.events("PowerSettingClamped")) == 1

    await cluster.delete_pod("llama-0")
    kubelet.kubelet.release(NS, "llama-0")
    await h.cycle()
    assert h.gpu(0)["locked_clock_mhz"] is None


# ---------------------------------------------------------------------------------------------- restore


async def test_pod_deleted_restores_default_within_one_cycle(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent(hold_s=3600.0)
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(1)])
    await h.cycle()
    assert h.limits()[1] == 350_000

    await cluster.delete_pod("llama-0")
    kubelet.kubelet.release(NS, "llama-0")
    SimulatedBackend(h.sim_path).set_demand(gpu_uuid(1), 0)  # idle GPU: restored all the same
    h.clock.now += 1.0

    report = await h.cycle()
    assert h.limits()[1] == DEFAULT_MW
    assert next(g for g in report.gpus if g.index == 1).action is Action.RESTORED
    assert h.record() == {}


async def test_greenmodel_status_change_follows_and_null_means_default(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    clock = Clock()
    h = make_agent(hold_s=60.0, clock=clock)
    gm, rs = await serving(cluster, {"powerLimitW": 400})
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    await h.cycle()
    assert h.limits()[0] == 400_000

    await cluster.set_status(gm, {"powerLimitW": 300})
    clock.now += 10.0
    report = await h.cycle()
    assert h.limits()[0] == 400_000  # held
    assert next(g for g in report.gpus if g.index == 0).action is Action.HELD
    clock.now += 60.0
    await h.cycle()
    assert h.limits()[0] == 300_000

    await cluster.set_status(gm, {"powerLimitW": None})
    clock.now += 61.0
    await h.cycle()
    assert h.limits()[0] == DEFAULT_MW
    assert h.record() == {}


async def test_api_listing_fails_then_nothing_changes(
    kube: KubeEmulator, cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    await h.cycle()
    assert h.limits()[0] == 350_000

    failing = {"pods": True}

    def outage() -> kmock.KubernetesError | None:
        if failing["pods"]:
            return kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd unavailable")
        return None

    kube[kmock.action.LIST, kmock.resource("", "v1", "pods")] << outage
    # With the pod gone from the kubelet too, "no pods" would mean restore; "unknown" must not.
    await cluster.delete_pod("llama-0")
    kubelet.kubelet.release(NS, "llama-0")

    report = await h.cycle()
    assert not report.cluster_known
    assert {g.action for g in report.gpus} == {Action.UNKNOWN}
    assert h.limits()[0] == 350_000
    assert gpu_uuid(0) in h.record()
    assert h.metric("greenllm_agent_reconcile_total", result="cluster_unknown") == [1.0]

    failing["pods"] = False
    await h.cycle()
    assert h.limits()[0] == DEFAULT_MW


async def test_kubelet_unreachable_then_nothing_changes(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    await h.cycle()
    kubelet.kubelet.failing = True
    await cluster.delete_pod("llama-0")
    report = await h.cycle()
    assert not report.cluster_known
    assert h.limits()[0] == 350_000


async def test_greenmodel_power_mode_off_restores(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    gm = await cluster.greenmodel("llama", {"powerLimitW": 350}, mode="Off")
    rs = await cluster.deployment_for(gm)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    await h.cycle()
    assert h.limits()[0] == DEFAULT_MW


async def test_dry_run_changes_nothing(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent(dry_run=True)
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    report = await h.cycle()
    assert next(g for g in report.gpus if g.index == 0).action is Action.APPLIED  # what it would do
    assert h.limits()[0] == DEFAULT_MW
    assert h.gpu(0)["changes"] == 0
    assert not (h.state_dir / "power-record.json").exists()
    assert cluster.events() == []


# ---------------------------------------------------------------------------------------------- bad numbers


def _strand(h: Harness, bad_entry: str) -> None:
    """What a crashed agent leaves: GPUs 0 and 1 capped (GPU 0's clocks locked too), and a record file whose
    entry for GPU 0 is `bad_entry` (raw JSON text) while GPU 1's entry is sane."""
    sim = SimulatedBackend(h.sim_path)
    sim.set_power_limit(gpu_uuid(0), 300_000)
    sim.lock_clocks(gpu_uuid(0), 1770)
    sim.set_power_limit(gpu_uuid(1), 250_000)
    sim.close()
    good = '{"changed_at": 999000.0, "clock_mhz": null, "default_limit_mw": 700000, "greenmodel": "serving/llama", "limit_mw": 250000, "pending": false}'  # noqa: E501
    h.state_dir.mkdir(parents=True, exist_ok=True)
    (h.state_dir / "power-record.json").write_text(
        f'{{"format": 1, "gpus": {{"{gpu_uuid(0)}": {bad_entry}, "{gpu_uuid(1)}": {good}}}}}'
    )


_ENTRY = (
    '{{"changed_at": {changed_at}, "clock_mhz": 1770, "default_limit_mw": {default}, "limit_mw": {limit}}}'
)


@pytest.mark.parametrize(
    "bad_entry",
    [
        _ENTRY.format(changed_at="999000.0", default="700000", limit="Infinity"),
        _ENTRY.format(changed_at="1" + "0" * 399, default="700000", limit="300000"),  # a 400-digit time
        _ENTRY.format(changed_at="999000.0", default="1e400", limit="300000"),  # JSON's inf by another name
        _ENTRY.format(changed_at="999000.0", default="700000", limit="-Infinity"),
    ],
    ids=["limit-Infinity", "changed_at-400-digits", "default-1e400", "limit-minus-Infinity"],
)
async def test_record_entry_with_non_finite_or_huge_numbers_restores_that_gpu_and_keeps_running(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness], bad_entry: str
) -> None:
    h = make_agent()
    _strand(h, bad_entry)

    report = await h.cycle()  # start-up restore, then the cycle (it raised OverflowError every cycle)

    assert h.limits() == {0: DEFAULT_MW, 1: DEFAULT_MW, 2: DEFAULT_MW, 3: DEFAULT_MW}
    assert h.gpu(0)["locked_clock_mhz"] is None
    assert h.record() == {}
    assert all(g.action is not Action.FAILED for g in report.gpus)
    # ...and the agent keeps working: a GreenModel's GPU is capped the next cycle.
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    await h.cycle()
    assert h.limits()[0] == 350_000
    assert set(h.record()) == {gpu_uuid(0)}


@pytest.mark.parametrize("limit", [1e308, -1e308, 1e7])
async def test_absurdly_large_power_limit_is_refused_and_other_gpus_are_still_reconciled(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness], limit: float
) -> None:
    h = make_agent()
    bad = await cluster.greenmodel("bad", {"powerLimitW": 350})
    bad_rs = await cluster.deployment_for(bad)
    await cluster.pod("bad-0", bad_rs)
    kubelet.kubelet.allocate(NS, "bad-0", [gpu_uuid(0)])
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(1)])
    await h.cycle()
    assert (h.limits()[0], h.limits()[1]) == (350_000, 350_000)

    # The schema accepts 1e308; llama's pod leaves at the same time: its GPU must still be restored.
    await cluster.set_status(bad, {"powerLimitW": limit})
    await cluster.delete_pod("llama-0")
    kubelet.kubelet.release(NS, "llama-0")
    report = await h.cycle()

    gpus = {g.index: g for g in report.gpus}
    assert gpus[0].action is Action.REFUSED
    assert h.limits()[0] == 350_000  # left as it was
    assert gpus[1].action is Action.RESTORED
    assert h.limits()[1] == DEFAULT_MW
    assert set(h.record()) == {gpu_uuid(0)}
    refused = cluster.events("PowerSettingRefused")
    assert len(refused) == 1 and f"{limit:g} W" in refused[0]["message"]


async def test_odd_device_ids_from_the_kubelet_do_not_stop_the_cycle(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    """Device IDs come from the device plugin: a 5000-digit "index" or a non-ASCII digit ("²", "٣") is not a
    GPU of this node (int() raised on them, or read "٣" as index 3), and the other pods' GPUs are handled."""
    h = make_agent()
    _, rs = await serving(cluster)
    await cluster.pod("llama-0", rs)
    await cluster.pod("llama-1", rs)
    kubelet.kubelet.allocate(NS, "llama-0", ["9" * 5000, "²", "٣"])
    kubelet.kubelet.allocate(NS, "llama-1", [gpu_uuid(1)])

    report = await h.cycle()

    assert h.limits() == {0: DEFAULT_MW, 1: 350_000, 2: DEFAULT_MW, 3: DEFAULT_MW}
    assert {g.index: g.role for g in report.gpus}[3].value == "free"


async def test_fast_tier_setting_absurdly_large_is_refused_not_raised(
    cluster: Cluster, kubelet: KubeletServer, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    tier = {
        "efficient": {"powerLimitW": 300},
        "burst": {"powerLimitW": 1e308},
        "rule": {"burstAtWaiting": 1, "holdSeconds": 3},
    }
    _, rs = await serving(cluster, {"powerLimitW": 450, "fastTier": tier})
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0)])
    _, rs2 = await serving_named(cluster, "other")
    await cluster.pod("other-1", rs2)
    kubelet.kubelet.allocate(NS, "other-1", [gpu_uuid(1)])

    report = await h.cycle()

    gpus = {g.index: g for g in report.gpus}
    assert gpus[0].action is Action.REFUSED
    assert h.limits()[0] == DEFAULT_MW
    assert h.limits()[1] == 350_000


async def serving_named(cluster: Cluster, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    gm = await cluster.greenmodel(name, {"powerLimitW": 350})
    rs = await cluster.deployment_for(gm)
    return gm, rs
