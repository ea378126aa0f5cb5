"""End to end through the production entry point: `greenllm run` started as a subprocess (flags and
GREENLLM_* environment as in the chart's pod), logging in with a kubeconfig for the emulated API, and
reconciling one GreenModel into its Deployment and status."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import OPERATOR_NAMESPACE, SERVICE_ACCOUNT_TOKEN, KubeClient
from tests.e2e.test_operator import DEPLOYMENTS, GM, NS, _closed_port, condition, green_model, settled
from tests.kube_emulator import KubeEmulator
from tests.prometheus_server import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class GreenllmRun:
    """`greenllm run` in a subprocess: Prometheus is a closed port (set through the environment, as
    GREENLLM_PROMETHEUS_URL used to be ignored); the other settings through flags and `env`."""

    def __init__(self, kubeconfig: Path, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp_path / "operator.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT / "operator"),
            "HOME": str(tmp_path),
            "KUBECONFIG": str(kubeconfig),
            "GREENLLM_PROMETHEUS_URL": f"http://127.0.0.1:{_closed_port()}",
            "GREENLLM_PROMETHEUS_TIMEOUT": "1",
            **(env or {}),
        }
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> GreenllmRun:
        args = ["run", "--metrics-port", "0", "--probe-port", str(free_port()), "--io-threads", "4"]
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "greenllm.cli",
                *args,
                env=self.env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        return self

    async def __aexit__(self, *_: object) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.fixture
async def greenllm_run(
    kube: KubeEmulator, kubeconfig: Path, client: KubeClient, tmp_path: Path
) -> AsyncIterator[Path]:
    """`greenllm run` in a subprocess; yields its log file."""
    if os.path.exists(SERVICE_ACCOUNT_TOKEN):
        pytest.skip("a service-account token is mounted: the operator's login could reach the real cluster")
    await client.ensure_namespace(OPERATOR_NAMESPACE)  # the Lease's, as an install has it
    async with GreenllmRun(kubeconfig, tmp_path) as run:
        yield run.log


async def test_greenllm_run_reconciles_a_green_model(
    kube: KubeEmulator, client: KubeClient, greenllm_run: Path
) -> None:
    await client.ensure_namespace(NS)
    await client.create(GM, green_model(), NS)
    try:
        gm = await settled(client)
    except BaseException:
        print(greenllm_run.read_text()[-5000:])
        raise
    valid = condition(gm, "SpecValid")
    assert valid is not None and valid["status"] == "True"
    deployment = await client.get(DEPLOYMENTS, "qwen3-8b", NS)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == gm["status"]["replicas"]
    # The kopf user agent made the calls: the operator process, not this test, did the work.
    assert any(c.user_agent.startswith("kopf") and c.verb == "watch" for c in kube.api_calls)
