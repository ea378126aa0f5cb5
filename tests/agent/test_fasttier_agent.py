"""The agent's fast tier against real parts: a vLLM /metrics stand-in over real HTTP on 127.0.0.1 (the pod IP
the API emulator reports), the kubelet PodResources gRPC API, the Kubernetes API emulator and simulated GPUs.

Each `fast()` is one step of the real fast loop (`Agent.fast_once`: HTTP read, parse, core.fasttier.next_mode,
apply); each `cycle()` one reconcile. Time is a fake clock the test moves, except in the one test that runs
the fast loop's own thread, which counts reads rather than seconds.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from greenllm.agent.exporter import AgentMetrics
from greenllm.agent.gpu.simulated import SimulatedBackend
from greenllm.agent.kube import KubeEvents, KubeReader
from greenllm.agent.podresources import PodResourcesClient
from greenllm.agent.reconcile import Action, CycleReport, GpuReport, Restraint
from greenllm.agent.runner import READABLE, UNREADABLE, Agent
from greenllm.agent.state import StateStore
from greenllm.core.fasttier import READ_PERIOD_S
from greenllm.core.power import Backoff, HoldPolicy
from tests.agent.conftest import NODE, NS, Cluster, KubeletServer, gpu_uuid
from tests.agent.vllm_stub import VllmStub, vllm_metrics

DEFAULT_MW = 700_000
EFFICIENT_MW, BURST_MW, PLAIN_MW = 300_000, 600_000, 450_000
HOLD_S = 3.0  # the rule's hold (status.fastTier.rule.holdSeconds)
AGENT_HOLD_S = 60.0  # the agent's own hold (Restraint.hold), as deployed
FAST_TIER = {
    "efficient": {"powerLimitW": 300},
    "burst": {"powerLimitW": 600},
    "rule": {"burstAtWaiting": 1, "holdSeconds": HOLD_S},
}
GPUS = (0, 1)  # the pod holds two GPUs (tensor parallel 2)


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, agent: Agent, sim_path: Path, clock: Clock, cluster: Cluster) -> None:
        self.agent = agent
        self.sim_path = sim_path
        self.clock = clock
        self.cluster = cluster
        self.seen_limits: set[int] = set()

    async def cycle(self) -> CycleReport:
        report = await asyncio.to_thread(self.agent.run_once)
        assert report is not None
        self._note()
        return report

    async def fast(self, advance_s: float = 1.0) -> list[GpuReport]:
        self.clock.now += advance_s
        reports = await asyncio.to_thread(self.agent.fast_once)
        self._note()
        return reports

    def _note(self) -> None:
        self.seen_limits.update(self.limits()[i] for i in GPUS)

    def limits(self) -> dict[int, int]:
        gpus = SimulatedBackend.load(self.sim_path)
        return {int(g["index"]): int(g["limit_mw"]) for g in gpus.values()}

    def limit(self) -> int:
        """The limit of the pod's GPUs (always the same on both)."""
        limits = self.limits()
        assert limits[0] == limits[1], limits
        return limits[0]

    def scrape(self) -> list[tuple[str, dict[str, str], float]]:
        """One scrape of the agent's /metrics (a collect: it resets the waiting peaks)."""
        text = generate_latest(self.agent.metrics.registry).decode()
        return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]

    def metric(self, name: str, **labels: str) -> list[float]:
        return pick(self.scrape(), name, **labels)


def pick(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> list[float]:
    return [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]


@pytest.fixture
def stub() -> Iterator[VllmStub]:
    server = VllmStub().start()
    yield server
    server.stop()


@pytest.fixture
def make_agent(
    api_client: kubernetes.client.ApiClient,
    kubelet: KubeletServer,
    sim_path: Path,
    tmp_path: Path,
    cluster: Cluster,
) -> Iterator[Callable[..., Harness]]:
    agents: list[Agent] = []

    def make(clock: Clock | None = None) -> Harness:
        clock = clock or Clock()
        hold = HoldPolicy(deadband_mw=5_000, min_hold_s=AGENT_HOLD_S)
        policy = Restraint(hold=hold, backoff=Backoff(base_s=1.0, max_s=10.0))
        agent = Agent(
            node_name=NODE,
            backend_factory=lambda: SimulatedBackend(sim_path, clock=clock),
            pod_resources=PodResourcesClient(kubelet.socket, timeout_s=5.0),
            cluster=KubeReader(api_client, NODE, timeout_s=5.0),
            events=KubeEvents(api_client, NODE, timeout_s=5.0),
            store=StateStore(tmp_path / "state"),
            metrics=AgentMetrics(NODE),
            interval_s=10.0,
            policy=policy,
            clock=clock,
        )
        agents.append(agent)
        return Harness(agent, sim_path, clock, cluster)

    yield make
    for agent in agents:
        if agent._pool is not None:
            agent._pool.shutdown(wait=True)


async def serving(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, fast_tier: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A GreenModel with a fast tier; its pod llama-0 (IP 127.0.0.1, spec.port the stub's) holds GPUs 0-1."""
    status = {"powerLimitW": 450, "fastTier": fast_tier or FAST_TIER}
    gm = await cluster.greenmodel("llama", status, port=stub.port)
    rs = await cluster.deployment_for(gm)
    await cluster.pod("llama-0", rs)
    await cluster.set_pod_ip("llama-0", "127.0.0.1")
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(i) for i in GPUS])
    return gm


async def at_efficient(h: Harness, stub: VllmStub) -> None:
    """Start up: the first cycle puts the GPUs at burst (nobody has read the pod yet); an empty queue,
    once read, moves them to efficient."""
    stub.serve(0)
    await h.cycle()
    assert h.limit() == BURST_MW
    await h.fast()
    assert h.limit() == EFFICIENT_MW


# ---------------------------------------------------------------------------------------------- switching


async def test_queue_switches_to_burst_within_two_reads_of_the_running_loop(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    assert h.agent.fast_interval_s == READ_PERIOD_S == 1.0  # two reads = two seconds

    halt = threading.Event()
    loop = threading.Thread(target=h.agent.run_fast, args=(halt,), daemon=True)
    loop.start()
    try:
        stub.serve(5, engines=2)  # the queue grows (and the clock does not move: no hold can pass)
        reads_before = stub.count()
        for _ in range(200):  # a generous deadline for a loaded machine; the assertion counts reads
            if h.limit() == BURST_MW:
                break
            await asyncio.sleep(0.05)
        reads = stub.count() - reads_before
    finally:
        halt.set()
        await asyncio.to_thread(loop.join, 10.0)
    assert h.limit() == BURST_MW
    assert 1 <= reads <= 2, f"burst after {reads} reads"
    assert not loop.is_alive()


async def test_efficient_only_after_the_rules_hold_and_never_held_by_the_agents_hold(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)  # 1 s after the burst was applied: the agent's 60 s hold would say no

    stub.serve(3)
    await h.fast()
    assert h.limit() == BURST_MW  # at once
    stub.serve(0)
    await h.fast()
    assert h.limit() == BURST_MW  # 1 s without a queue: held by the rule
    await h.fast()
    assert h.limit() == BURST_MW  # 2 s
    await h.fast()
    assert h.limit() == EFFICIENT_MW  # 3 s = holdSeconds: efficient again
    assert h.metric("greenllm_agent_fast_tier_switches_total", uuid=gpu_uuid(0)) == [3.0]
    # A reconcile cycle in between agrees with the fast loop and changes nothing.
    report = await h.cycle()
    assert {g.action for g in report.gpus if g.index in GPUS} == {Action.UNCHANGED}
    assert h.limit() == EFFICIENT_MW
    assert h.seen_limits == {EFFICIENT_MW, BURST_MW}


async def test_flapping_queue_switches_a_bounded_number_of_times(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    changes_before = SimulatedBackend.load(h.sim_path)[gpu_uuid(0)]["changes"]
    rng = random.Random(7)
    reads = 120
    modes = []
    for _ in range(reads):
        if rng.random() < 0.3:
            stub.status = 503  # unreadable now and then: burst too
        else:
            stub.serve(rng.choice([0, 0, 1, 4]))
        await h.fast()
        modes.append(h.limit())
    # Every burst lasts at least the hold: at most one efficient -> burst -> efficient pair per hold_s.
    bound = 2 * (reads / HOLD_S) + 2
    switches = h.metric("greenllm_agent_fast_tier_switches_total", uuid=gpu_uuid(0))[0]
    changes = SimulatedBackend.load(h.sim_path)[gpu_uuid(0)]["changes"] - changes_before
    assert switches == sum(1 for a, b in zip([EFFICIENT_MW, *modes], modes, strict=False) if a != b) + 1
    assert changes <= bound and switches <= bound + 1
    runs = "".join("b" if m == BURST_MW else "e" for m in modes).split("e")
    assert all(len(r) >= HOLD_S for r in runs[1:-1] if r), runs
    assert h.seen_limits == {EFFICIENT_MW, BURST_MW}
    seconds = {
        m: h.metric("greenllm_agent_fast_tier_seconds_total", uuid=gpu_uuid(0), mode=m)[0]
        for m in ("efficient", "burst")
    }
    # Time in each setting up to the last read: burst from the first cycle to the first read, then the
    # setting of each read until the next one.
    assert sum(seconds.values()) == pytest.approx(reads + 1)
    assert seconds["burst"] == pytest.approx(1 + modes[:-1].count(BURST_MW))
    assert 0 < seconds["efficient"] < reads


async def test_pair_changes_keep_the_agents_hold_but_switches_do_not(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    gm = await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    new_tier = {**FAST_TIER, "efficient": {"powerLimitW": 250}, "burst": {"powerLimitW": 650}}
    await cluster.set_status(gm, {"fastTier": new_tier})
    h.clock.now += 10.0
    report = await h.cycle()
    assert {g.action for g in report.gpus if g.index in GPUS} == {Action.HELD}
    assert h.limit() == EFFICIENT_MW
    stub.serve(2)
    await h.fast()
    assert h.limit() == BURST_MW  # switches go on within the old pair while the new one waits
    h.clock.now += 50.0  # 61 s since the pair was adopted
    report = await h.cycle()
    assert h.limit() == 650_000
    assert {g.action for g in report.gpus if g.index in GPUS} == {Action.APPLIED}
    # Start-up and the new pair: switches within a pair post no Events.
    assert len(cluster.events("PowerSettingApplied")) == 2 * len(GPUS)

    # Back to a plain status.powerLimitW: held from the adoption of the pair, then applied.
    await cluster.set_status(gm, {"fastTier": None, "powerLimitW": 450})
    h.clock.now += 1.0
    await h.cycle()
    assert h.limit() == 650_000
    h.clock.now += 60.0
    await h.cycle()
    assert h.limit() == PLAIN_MW
    assert h.agent.reconciler is not None and h.agent.reconciler.fast == {}
    await h.fast()
    assert h.limit() == PLAIN_MW
    assert h.metric("greenllm_agent_fast_tier_switches_total") == []


# ---------------------------------------------------------------------------------------------- trust


async def test_endpoint_down_means_burst_a_counted_failure_and_one_event(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)

    stub.stop()  # connection refused
    await h.fast()
    assert h.limit() == BURST_MW
    for _ in range(5):
        await h.fast()
        await h.cycle()
    assert h.limit() == BURST_MW
    failures = h.metric("greenllm_agent_fast_tier_read_failures_total", uuid=gpu_uuid(0), reason="refused")
    assert failures == [6.0]
    assert h.metric(
        "greenllm_agent_fast_tier_read_failures_total", uuid=gpu_uuid(1), pod="llama-0", namespace=NS
    ) == [6.0]
    events = cluster.events(UNREADABLE)
    assert len(events) == 1
    assert events[0]["type"] == "Warning"
    assert events[0]["involvedObject"]["kind"] == "GreenModel"
    assert events[0]["involvedObject"]["name"] == "llama"
    assert f"127.0.0.1:{stub.port}" in events[0]["message"] and "refused" in events[0]["message"]

    stub.start()  # back on the same port
    await h.fast()
    await h.cycle()
    assert h.limit() == BURST_MW  # readable, empty queue, but a failed read counts as a queue: hold
    for _ in range(3):
        await h.fast()
    assert h.limit() == EFFICIENT_MW
    await h.cycle()
    recovered = cluster.events(READABLE)
    assert len(recovered) == 1 and recovered[0]["type"] == "Normal"
    assert len(cluster.events(UNREADABLE)) == 1

    stub.status = 500
    await h.fast()
    await h.cycle()
    assert h.limit() == BURST_MW
    failed = h.metric("greenllm_agent_fast_tier_read_failures_total", uuid=gpu_uuid(0), reason="http_status")
    assert failed == [1.0]


async def test_a_pod_never_read_is_not_reported_during_model_loading(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    stub.stop()  # vLLM still loading its weights
    await h.cycle()
    for _ in range(3):
        await h.fast()
    await h.cycle()
    assert h.limit() == BURST_MW
    assert cluster.events(UNREADABLE) == []
    await h.fast(advance_s=600.0)  # ten minutes: no longer loading, something is wrong
    await h.cycle()
    assert len(cluster.events(UNREADABLE)) == 1


HOSTILE: list[tuple[str, Callable[[VllmStub], None], str]] = [
    ("garbage", lambda s: setattr(s, "body", b"\x00\xffnot {{ prometheus\n" * 100), "missing"),
    ("not utf-8", lambda s: setattr(s, "body", b"vllm:num_requests_waiting \xff\n"), "bad_response"),
    ("parse error", lambda s: setattr(s, "body", b'vllm:num_requests_waiting{engine="0" 0\n'), "parse_error"),
    ("nan", lambda s: setattr(s, "body", vllm_metrics("NaN")), "invalid_value"),
    ("negative", lambda s: setattr(s, "body", vllm_metrics(-5)), "invalid_value"),
    ("huge", lambda s: setattr(s, "body", vllm_metrics(1e300)), "invalid_value"),
    ("infinite running", lambda s: setattr(s, "body", vllm_metrics(0, running="+Inf")), "invalid_value"),
    ("missing", lambda s: setattr(s, "body", b"# a different server\nup 1\n"), "missing"),
    (
        "names a value",
        lambda s: setattr(s, "body", b"greenllm_power_limit_w 100\nvllm:num_requests_waiting 0\n"),
        "missing",
    ),
    ("gigantic", lambda s: setattr(s, "stream", (vllm_metrics(0), 40_000)), "too_large"),
    ("slow loris", lambda s: setattr(s, "dribble_s", 0.05), "timeout"),
    (
        "gzip",
        lambda s: s.headers.update({"Content-Encoding": "gzip"}),
        "bad_response",
    ),
]


@pytest.mark.parametrize(("case", "make_hostile", "reason"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_a_hostile_pod_gets_burst_and_never_names_a_value(
    case: str,
    make_hostile: Callable[[VllmStub], None],
    reason: str,
    cluster: Cluster,
    kubelet: KubeletServer,
    stub: VllmStub,
    make_agent: Callable[..., Harness],
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    make_hostile(stub)
    for _ in range(3):
        await h.fast()
        assert h.limit() == BURST_MW
    await h.cycle()
    assert h.limit() == BURST_MW
    assert h.seen_limits == {EFFICIENT_MW, BURST_MW}
    assert h.metric("greenllm_agent_fast_tier_read_failures_total", uuid=gpu_uuid(0), reason=reason) == [3.0]


async def test_a_redirect_is_not_followed(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    elsewhere = VllmStub().start()  # would say "no queue"
    try:
        h = make_agent()
        await serving(cluster, kubelet, stub)
        await at_efficient(h, stub)
        stub.serve(0)
        stub.status = 302
        stub.headers["Location"] = f"http://127.0.0.1:{elsewhere.port}/metrics"
        for _ in range(HOLD_S.__ceil__() + 1):
            await h.fast()
            assert h.limit() == BURST_MW
        assert elsewhere.count() == 0
        failures = "greenllm_agent_fast_tier_read_failures_total"
        assert h.metric(failures, reason="http_status", uuid=gpu_uuid(0)) == [HOLD_S.__ceil__() + 1]
    finally:
        elsewhere.stop()


# ---------------------------------------------------------------------------------------------- metrics


async def test_waiting_peak_reports_a_one_read_spike_once_then_resets(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    h.scrape()  # a scrape: the peak so far is gone
    labels = {"namespace": NS, "pod": "llama-0", "greenmodel": "llama", "node": NODE}

    stub.serve(7, engines=1)
    await h.fast()  # one read with 7 waiting, between reads of none
    stub.serve(0)
    for _ in range(14):
        await h.fast()
    first = h.scrape()
    assert pick(first, "greenllm_agent_waiting_requests_peak", uuid=gpu_uuid(0), **labels) == [7.0]
    assert pick(first, "greenllm_agent_waiting_requests_peak", uuid=gpu_uuid(1), **labels) == [7.0]
    await h.fast()
    second = h.scrape()
    assert pick(second, "greenllm_agent_waiting_requests_peak", uuid=gpu_uuid(0), **labels) == [0.0]
    # No read between two scrapes: the last value read, not a stale peak.
    assert pick(h.scrape(), "greenllm_agent_waiting_requests_peak", uuid=gpu_uuid(0), **labels) == [0.0]
    stub.serve(2, engines=3)  # summed over engines
    await h.fast()
    assert pick(h.scrape(), "greenllm_agent_waiting_requests_peak", uuid=gpu_uuid(0), **labels) == [6.0]


ARRIVALS = "greenllm_agent_arrivals_peak"
POD_LABELS = {"namespace": NS, "pod": "llama-0", "greenmodel": "llama", "node": NODE}


def arrivals(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, list[float]]:
    """The arrivals peak of each of the pod's GPUs in one scrape ([] when it has no sample)."""
    return {gpu_uuid(i): pick(samples, ARRIVALS, uuid=gpu_uuid(i), **POD_LABELS) for i in GPUS}


def both(*values: float) -> dict[str, list[float]]:
    return {gpu_uuid(i): list(values) for i in GPUS}


async def test_arrivals_peak_counts_a_burst_once_then_resets(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    stub.serve(0, running=0, succeeded={"stop": 90, "length": 8, "abort": 2})
    await h.fast()  # the first read with the counter: nothing to compare with
    assert arrivals(h.scrape()) == both()

    # 12 requests in the system and 3 more finished: 15 arrived in one read.
    stub.serve(10, running=2, succeeded={"stop": 92, "length": 9, "abort": 2})
    await h.fast()
    assert h.limit() == BURST_MW  # the fast tier itself goes on as before
    stub.serve(8, running=4, succeeded={"stop": 93, "length": 9, "abort": 2})  # 1 arrived, 1 finished
    await h.fast()
    first = h.scrape()
    assert arrivals(first) == both(15.0)
    types = {
        f.name: f.type
        for f in text_string_to_metric_families(generate_latest(h.agent.metrics.registry).decode())
    }
    assert types[ARRIVALS] == "gauge"

    await h.fast()  # nothing arrived, nothing finished
    assert arrivals(h.scrape()) == both(0.0)  # reset by the scrape: not the 15 again
    assert arrivals(h.scrape()) == both()  # no read since the last scrape: no estimate, no sample


async def test_arrivals_unknown_across_a_counter_reset_or_a_failed_read(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    stub.serve(0, running=0, succeeded={"stop": 500})
    await h.fast()
    h.scrape()

    stub.serve(3, running=2, succeeded={"stop": 4})  # vLLM restarted: the counter went down
    await h.fast()
    assert arrivals(h.scrape()) == both()  # no estimate, and certainly not 5 - 496
    stub.serve(3, running=2, succeeded={"stop": 6})  # the restarted server is the reference now
    await h.fast()
    assert arrivals(h.scrape()) == both(2.0)

    stub.status = 503  # a failed read forgets the previous one
    await h.fast()
    stub.serve(9, running=2, succeeded={"stop": 10})
    await h.fast()
    assert arrivals(h.scrape()) == both()  # not 4 + 6 over two reads
    stub.serve(9, running=2, succeeded={"stop": 11})
    await h.fast()
    assert arrivals(h.scrape()) == both(1.0)
    failures = h.metric(
        "greenllm_agent_fast_tier_read_failures_total", uuid=gpu_uuid(0), reason="http_status"
    )
    assert failures == [1.0]


async def test_requests_finishing_are_no_arrivals(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    stub.serve(6, running=4, succeeded={"stop": 50})
    await h.fast()
    stub.serve(1, running=4, succeeded={"stop": 53, "length": 2})  # 5 fewer in the system, 5 finished
    await h.fast()
    assert arrivals(h.scrape()) == both(0.0)
    # A read that sees fewer finished than left the system (vLLM's gauges and counter are not one
    # snapshot): clamped at 0, never negative.
    stub.serve(0, running=0, succeeded={"stop": 54, "length": 2})
    await h.fast()
    assert arrivals(h.scrape()) == both(0.0)


async def test_a_pod_without_the_counter_switches_as_before_and_exports_no_arrivals(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)  # the stub's answers have no vllm:request_success_total
    stub.serve(4)
    await h.fast()
    assert h.limit() == BURST_MW
    stub.serve(0)
    for _ in range(int(HOLD_S)):
        await h.fast()
    assert h.limit() == EFFICIENT_MW
    samples = h.scrape()
    assert pick(samples, "greenllm_agent_waiting_requests_peak", uuid=gpu_uuid(0), **POD_LABELS) == [4.0]
    assert pick(samples, ARRIVALS) == []
    assert pick(samples, "greenllm_agent_fast_tier_read_failures_total") == []

    # The counter appears (an upgraded vLLM), disappears and comes back: an estimate needs two reads in a
    # row that have it.
    stub.serve(0, running=1, succeeded={"stop": 7})
    await h.fast()
    stub.serve(0, running=1)
    await h.fast()
    stub.serve(0, running=3, succeeded={"stop": 9})
    await h.fast()
    assert pick(h.scrape(), ARRIVALS) == []
    stub.serve(0, running=3, succeeded={"stop": 10})
    await h.fast()
    assert arrivals(h.scrape()) == both(1.0)


# ---------------------------------------------------------------------------------------------- departure


async def test_pod_leaving_restores_defaults_and_drops_the_fast_tier(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    for finished in (10, 12):  # an arrivals peak nobody scraped yet
        stub.serve(1, succeeded={"stop": finished})
        await h.fast()
    stub.stop()  # vLLM stops with its pod: no Event for a pod that is leaving
    await h.fast()
    await cluster.delete_pod("llama-0")
    kubelet.kubelet.release(NS, "llama-0")
    report = await h.cycle()
    assert h.limits()[0] == h.limits()[1] == DEFAULT_MW
    assert {g.action for g in report.gpus if g.index in GPUS} == {Action.RESTORED}
    assert h.agent.reconciler is not None and h.agent.reconciler.fast == {}
    assert await h.fast() == []
    assert h.limits()[0] == DEFAULT_MW
    samples = h.scrape()
    assert pick(samples, "greenllm_agent_waiting_requests_peak") == []
    assert pick(samples, ARRIVALS) == []
    assert pick(samples, "greenllm_agent_fast_tier_seconds_total") == []
    assert cluster.events(UNREADABLE) == []


async def test_shutdown_restores_fast_tier_gpus(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    restored = await asyncio.to_thread(h.agent.shutdown)
    assert {g.action for g in restored} == {Action.RESTORED}
    assert h.limits()[0] == h.limits()[1] == DEFAULT_MW
    assert h.agent.reconciler is not None and h.agent.reconciler.fast == {}


# ---------------------------------------------------------------------------------------------- isolation


async def test_one_gpus_error_in_the_fast_step_does_not_stop_the_other_gpus(
    cluster: Cluster, kubelet: KubeletServer, stub: VllmStub, make_agent: Callable[..., Harness]
) -> None:
    h = make_agent()
    await serving(cluster, kubelet, stub)
    await at_efficient(h, stub)
    backend = h.agent.backend
    assert backend is not None
    real = backend.set_power_limit

    def broken(uuid: str, limit_mw: int) -> None:
        if uuid == gpu_uuid(0):
            raise OverflowError("cannot convert float infinity to integer")  # not a GpuError
        real(uuid, limit_mw)

    backend.set_power_limit = broken  # type: ignore[method-assign]
    stub.serve(5)

    await h.fast()  # raised out of fast_once before GPU 1 was reached

    assert h.limits()[0] == EFFICIENT_MW
    assert h.limits()[1] == BURST_MW
