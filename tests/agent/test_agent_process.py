"""`python -m greenllm.agent` as a real process: SIGTERM restores; kill -9 then restart restores from the
record; with no NVML library it stays up and says so. The GPUs are simulated in a file the test inspects; the
kubelet PodResources API and the Kubernetes API are served by this test process."""

from __future__ import annotations

import asyncio
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import kmock
import pytest

from greenllm.agent.gpu.simulated import SimulatedBackend
from greenllm.agent.state import StateStore
from tests.agent.conftest import NODE, NS, Cluster, KubeletServer, gpu_uuid
from tests.kube_emulator import KubeEmulator

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MW = 700_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "greenllm.agent", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    async def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.to_thread(self.proc.wait, 60)
        self.proc = None
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def wait_for(fn: Callable[[], object], what: str, proc: AgentProcess, timeout: float = 60.0) -> None:
    """Poll until `fn()` is truthy; the timeout only bounds a hang (no test asserts on durations)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not fn():
        if not proc.running:
            raise AssertionError(f"agent exited while waiting for {what}:\n{proc.output()}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proc.output()}")
        await asyncio.sleep(0.1)


def limits(sim_path: Path) -> dict[int, int]:
    return {int(g["index"]): int(g["limit_mw"]) for g in SimulatedBackend.load(sim_path).values()}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def agent_env(kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env["KUBECONFIG"] = str(kubeconfig)
    env["PYTHONPATH"] = str(ROOT / "operator")
    return env


@pytest.fixture
def spawn(
    agent_env: dict[str, str], kubelet: KubeletServer, sim_path: Path, tmp_path: Path
) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def make(*extra: str, backend: str = "simulated") -> AgentProcess:
        args = [
            "--node-name", NODE,
            "--state-dir", str(tmp_path / "hostpath"),
            "--pod-resources-socket", str(kubelet.socket),
            "--interval", "0.2",
            "--metrics-port", str(free_port()),
            "--backend", backend,
            "--simulated-gpus", str(sim_path),
            "--min-hold", "0",
            *extra,
        ]  # fmt: skip
        agent = AgentProcess(args, agent_env, tmp_path / "agent.log")
        started.append(agent)
        agent.start()
        return agent

    yield make
    for agent in started:
        if agent.running and agent.proc is not None:
            agent.proc.kill()
            agent.proc.wait(30)


@pytest.fixture
async def capped_workload(cluster: Cluster, kubelet: KubeletServer) -> AsyncIterator[None]:
    gm = await cluster.greenmodel("llama", {"powerLimitW": 350})
    rs = await cluster.deployment_for(gm)
    await cluster.pod("llama-0", rs)
    kubelet.kubelet.allocate(NS, "llama-0", [gpu_uuid(0), gpu_uuid(1)])
    yield


def port_of(agent: AgentProcess) -> int:
    return int(agent.args[agent.args.index("--metrics-port") + 1])


async def test_sigterm_restores_defaults(
    capped_workload: None, spawn: Callable[..., AgentProcess], sim_path: Path, tmp_path: Path
) -> None:
    agent = spawn()
    await wait_for(lambda: limits(sim_path)[0] == limits(sim_path)[1] == 350_000, "the cap", agent)
    assert limits(sim_path)[2] == DEFAULT_MW
    metrics = await asyncio.to_thread(scrape, port_of(agent))
    assert f'greenllm_agent_gpu_power_limit_enforced_watts{{greenmodel="llama",namespace="{NS}",' in metrics
    assert f'uuid="{gpu_uuid(0)}"}} 350.0' in metrics
    assert "greenllm_agent_gpu_energy_joules_total" in metrics

    code = await agent.stop(signal.SIGTERM)

    assert code == 0, agent.output()
    assert limits(sim_path) == {0: DEFAULT_MW, 1: DEFAULT_MW, 2: DEFAULT_MW, 3: DEFAULT_MW}
    assert StateStore(tmp_path / "hostpath").load() == {}
    assert "received SIGTERM" in agent.output()


async def test_kill_9_then_restart_restores_from_the_record(
    kube: KubeEmulator,
    capped_workload: None,
    spawn: Callable[..., AgentProcess],
    sim_path: Path,
    tmp_path: Path,
) -> None:
    agent = spawn()
    await wait_for(lambda: limits(sim_path)[0] == limits(sim_path)[1] == 350_000, "the cap", agent)
    assert await agent.stop(signal.SIGKILL) == -signal.SIGKILL
    assert limits(sim_path)[0] == 350_000  # stranded by the crash...
    record = StateStore(tmp_path / "hostpath").load()
    assert set(record) == {gpu_uuid(0), gpu_uuid(1)}  # ...but recorded

    # The API server is down for the new agent: no cycle can touch the GPUs; only the start-up restore can.
    def outage() -> kmock.KubernetesError:
        return kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd unavailable")

    kube[kmock.action.LIST, kmock.resource("", "v1", "pods")] << outage
    restarted = spawn()
    await wait_for(lambda: limits(sim_path)[0] == limits(sim_path)[1] == DEFAULT_MW, "the restore", restarted)
    await wait_for(lambda: "cannot read the cluster" in restarted.output(), "a failed cycle", restarted)
    assert limits(sim_path)[0] == DEFAULT_MW  # and the failing cycles left it alone
    assert StateStore(tmp_path / "hostpath").load() == {}
    assert await restarted.stop(signal.SIGTERM) == 0


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="an NVML library is installed")
async def test_without_nvml_the_agent_stays_up_and_reports_it(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn(backend="nvml")

    def unavailable_cycles() -> int:
        try:
            text = scrape(port_of(agent))
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith(
                f'greenllm_agent_reconcile_total{{node="{NODE}",result="backend_unavailable"}}'
            ):
                return int(float(line.split()[-1]))
        return 0

    await wait_for(lambda: unavailable_cycles() >= 3, "three cycles without NVML", agent)
    text = await asyncio.to_thread(scrape, port_of(agent))
    assert f'greenllm_agent_gpu_backend_up{{error="library_not_found",node="{NODE}"}} 0.0' in text
    assert agent.output().count("GPU backend unavailable (library_not_found)") == 1  # said once, clearly
    assert await agent.stop(signal.SIGTERM) == 0
