"""What a platform engineer sees with kubectl: the printer columns, `describe`'s times, reasons and
conditions, and the Events, after the real operator ran against the API emulator and a real Prometheus.

`kubectl get -o custom-columns` evaluates the CRD's own printer-column JSONPaths client-side (the emulator
serves no Table format), so each column's value is read exactly as the API server's printer would.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from greenllm.api import crd
from greenllm.api.timestamps import epoch_seconds
from tests.e2e import test_autoscale
from tests.e2e.conftest import KubeClient
from tests.e2e.test_autoscale import DEPLOY, GM, condition, green_model, metrics_ok, status, wait_status

# The autoscaling tests' Prometheus, exporter and operator fixtures.
fleet = test_autoscale.fleet
setup = test_autoscale.setup

pytestmark = pytest.mark.e2e


async def kubectl_columns(
    kubeconfig: Path,
    namespace: str,
    name: str,
    resource: str = "gm",
    columns: Sequence[Mapping[str, Any]] = crd.PRINTER_COLUMNS,
) -> dict[str, str]:
    """`kubectl get RESOURCE NAME` with every printer column of its CRD (wide ones too), as {column name:
    printed value}; RESOURCE as a user types it (a short name is fine)."""
    spec = ",".join(f"C{i}:{c['jsonPath']}" for i, c in enumerate(columns))
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--kubeconfig={kubeconfig}",
        "get",
        resource,
        name,
        "-n",
        namespace,
        "-o",
        f"custom-columns={spec}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    header, row = out.decode().splitlines()
    # Columns are aligned under their headers (C0, C1, ...); values may hold blanks ("450 W/GPU").
    starts = [m.start() for m in re.finditer(r"C\d+", header)]
    assert len(starts) == len(columns), header
    bounds = zip(starts, [*starts[1:], None], strict=True)
    return {c["name"]: row[a:b].strip() for c, (a, b) in zip(columns, bounds, strict=True)}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_printer_columns_read_through_kubectl(
    setup: dict[str, Any], client: KubeClient, kubeconfig: Path
) -> None:
    ns = setup["namespace"]
    await client.create(GM, green_model("llama", ns, budget={"energyKwh": 40.0, "period": "24h"}))

    def measured(s: dict[str, Any]) -> bool:
        observed = s.get("observed") or {}
        return (
            metrics_ok(s)
            and observed.get("powerW") is not None
            and observed.get("joulesPerToken") is not None
            and (s.get("period") or {}).get("energyKwh", 0) > 0
        )

    await wait_status(client, ns, measured, "power, tokens and energy measured")
    # Play the Deployment controller: every wanted replica is ready.
    deploy = await client.get(DEPLOY, "llama", ns)
    assert deploy is not None
    wanted = deploy["spec"]["replicas"]
    await client.patch_status(DEPLOY, "llama", {"replicas": wanted, "readyReplicas": wanted}, ns)
    st = await wait_status(
        client,
        ns,
        lambda s: measured(s) and (condition(s, "Ready") or {}).get("status") == "True",
        "Ready=True",
    )
    columns = await kubectl_columns(kubeconfig, ns, "llama")
    st = await status(client, ns)  # the object kubectl read (a tick may have run meanwhile)
    assert columns["Variant"] == st["variant"]
    assert columns["Replicas"] == f"{wanted}/{st['replicas']}" == st["replicasText"]
    assert float(columns["Watts"]) > 0
    energy, _, budget = columns["Energy"].partition("/")
    assert float(energy) > 0 and budget == "40 kWh"
    assert float(columns["J/Token"]) > 0
    assert columns["Budget"] == "True"
    assert condition(st, "BudgetMet")["message"]  # type: ignore[index]
    assert columns["Metrics"] == "True"
    assert columns["Ready"] == "True"
    assert columns["Age"].endswith("Z")
    assert columns["Setting"] == st["settingText"]
    assert float(columns["Carbon"]) >= 0


async def test_describe_times_reason_and_unknown_budget(setup: dict[str, Any], client: KubeClient) -> None:
    # A namespace without any series: the operator never measures power, energy or token rates.
    ns = f"{setup['namespace']}-quiet"
    await client.ensure_namespace(ns)
    # Power mode Off: without demand the loop keeps the first decision, and with it its reason.
    await client.create(GM, green_model("llama", ns, slo={"minQuality": 0.5}, power={"mode": "Off"}))
    st = await wait_status(client, ns, lambda s: s.get("controllerState"), "a tick")
    budget = condition(st, "BudgetMet")
    assert budget is not None
    assert (budget["status"], budget["reason"]) == ("Unknown", "NoMetrics")
    assert budget["message"]
    state = st["controllerState"]
    for key in ("periodStart", "lastSampleTime"):
        assert isinstance(state[key], str) and state[key].endswith("Z"), state
        assert epoch_seconds(state[key]) is not None
    assert all(isinstance(t, str) for t, _ in state["history"])
    assert st["period"]["start"].endswith("Z")
    assert "slo.minQuality 0.5" in st["lastDecision"]["reason"]

    # Raise the floor: the variant in force (quality 1.0) still meets it and is kept, with a reason
    # that speaks of the new floor.
    await client.patch(GM, "llama", {"spec": {"slo": {"minQuality": 0.995}}}, ns)
    st = await wait_status(
        client,
        ns,
        lambda s: "slo.minQuality 0.995" in (s.get("lastDecision") or {}).get("reason", ""),
        "lastDecision.reason re-worded for the new floor",
    )
    assert "0.5" not in st["lastDecision"]["reason"]
    assert st["lastDecision"]["reasonKind"] == "Hold"  # kept, not chosen for least energy
    assert st["lastDecision"]["variant"] == "bf16"
    st = await wait_status(
        client, ns, lambda s: s["controllerState"]["lastSampleTime"] != state["lastSampleTime"], "a tick"
    )
    assert (condition(st, "BudgetMet") or {}).get("reason") == "NoMetrics"
    assert "0.5" not in st["lastDecision"]["reason"]


async def next_tick(client: KubeClient, ns: str, st: dict[str, Any]) -> dict[str, Any]:
    seen = st["observed"]["time"]
    return await wait_status(client, ns, lambda s: s["observed"]["time"] != seen, "another tick")


async def test_metrics_events_once_per_transition(setup: dict[str, Any], client: KubeClient) -> None:
    ns, prometheus = setup["namespace"], setup["prometheus"]
    await client.create(GM, green_model("llama", ns))
    await wait_status(client, ns, metrics_ok, "MetricsAvailable=True")

    async def events(reason: str) -> list[dict[str, Any]]:
        return await client.events_for(ns, "llama", reason=reason)

    warnings_before = len(await events("MetricsUnavailable"))
    normals_before = len(await events("MetricsAvailable"))
    prometheus.stop()
    try:
        st = await wait_status(
            client,
            ns,
            lambda s: (condition(s, "MetricsAvailable") or {}).get("reason") == "PrometheusUnavailable",
            "MetricsAvailable=False",
        )
        message = condition(st, "MetricsAvailable")["message"]  # type: ignore[index]
        assert len(message) <= 200
        for _ in range(2):  # more ticks while it is down: still one Warning
            st = await next_tick(client, ns, st)
    finally:
        prometheus.start()
    st = await wait_status(client, ns, metrics_ok, "MetricsAvailable=True again", timeout=90)
    for _ in range(2):  # more ticks after recovery: still one Normal
        st = await next_tick(client, ns, st)

    warnings = (await events("MetricsUnavailable"))[warnings_before:]
    normals = (await events("MetricsAvailable"))[normals_before:]
    assert [e["type"] for e in warnings] == ["Warning"]
    assert [e["type"] for e in normals] == ["Normal"]
    for event in (*warnings, *normals):
        assert event["reportingComponent"] == "greenllm"
        assert event["source"]["component"] == "greenllm"
