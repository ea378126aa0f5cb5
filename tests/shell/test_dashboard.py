"""Every query of the Grafana dashboard (charts/greenllm/dashboards/greenllm.json) against a real Prometheus
scraping one exporter that serves the series the dashboard reads, with their real names and labels:

- the operator's own metrics: a real `controller.exporter.OperatorMetrics` registry, set as a tick sets it;
- the node agent's: a real `agent.exporter.AgentMetrics` fed a cycle report and a fast-tier GPU;
- DCGM and vLLM: `tests/prometheus_server.FakeFleet` (power, energy, tokens, queues) and
  `tests/e2e/slo_fleet.SloFleet` (vLLM's per-request TTFT / TPOT histograms with vLLM's buckets).

The template variables are replaced by concrete values (the custom variables by the dashboard's own
defaults); every panel target must return data, and a few must return the value the series imply.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import Metric
from tests.e2e.slo_fleet import SloFleet, SloSeries
from tests.prometheus_server import PodSeries, scraped

from greenllm.agent.exporter import AgentMetrics
from greenllm.agent.gpu.base import GpuInfo
from greenllm.agent.ownership import GreenModelRef
from greenllm.agent.reconcile import Action, CycleReport, FastGpu, FastPod, GpuReport
from greenllm.controller.exporter import OperatorMetrics
from greenllm.core.decision import ReasonKind
from greenllm.core.fasttier import FastTier, Mode
from greenllm.core.performance import PowerSetting
from greenllm.core.power import Role

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "greenllm" / "dashboards" / "greenllm.json"
NAMESPACE, GREENMODEL = "prod", "llama"
PODS = ("llama-5d8f7c9b6-aaaaa", "llama-5d8f7c9b6-bbbbb")  # what the dashboard's pod regex matches
OTHER = "other-6b7c8d9f5-zzzzz"  # another Deployment's pod in the namespace: never counted
POWER_W = 350.0
OUTPUT_TOKENS_PER_S = 500.0
CONCRETE = {"namespace": NAMESPACE, "greenmodel": GREENMODEL, "__rate_interval": "1m"}
REASON = ReasonKind.BUDGET_BINDS  # the kind of the decision in force (an earlier one was Hold)


@dataclass(eq=False)
class DashboardFleet(SloFleet):
    """DCGM / vLLM series of the fleet plus the operator's and the agent's own registries."""

    sources: list[Any] = field(default_factory=list)  # collectors: OperatorMetrics's registry, AgentMetrics

    def _families(self) -> Iterator[Metric]:
        yield from super()._families()
        for source in self.sources:
            yield from source.collect()


def _operator() -> OperatorMetrics:
    t = OperatorMetrics()
    labels = (NAMESPACE, GREENMODEL)
    t.replicas.labels(*labels).set(2)
    t.set_variant(NAMESPACE, GREENMODEL, "fp8")
    t.power_limit.labels(*labels).set(450)
    t.expected_power.labels(*labels).set(720)
    t.observed_power.labels(*labels).set(700)
    t.energy.labels(*labels).set(1.25)
    t.carbon.labels(*labels).set(500.0)
    t.energy_remaining.labels(*labels).set(3.75)
    t.set_reason(NAMESPACE, GREENMODEL, ReasonKind.HOLD)
    t.count_decision(NAMESPACE, GREENMODEL, ReasonKind.HOLD)
    t.set_reason(NAMESPACE, GREENMODEL, REASON)  # replaces the Hold series: only the kind in force shows
    t.count_decision(NAMESPACE, GREENMODEL, REASON)
    t.count_decision(NAMESPACE, GREENMODEL, REASON)
    t.loop_errors.labels(*labels, "prometheus").inc()
    return t


def _agent() -> AgentMetrics:
    agent = AgentMetrics("node-1")
    owner = GreenModelRef(NAMESPACE, GREENMODEL, "uid-1")
    gpus = []
    for i, pod in enumerate(PODS):
        gpus.append(
            GpuReport(
                uuid=f"GPU-{i}",
                index=i,
                role=Role.OWNED,
                action=Action.APPLIED,
                greenmodel=owner,
                pods=(f"{NAMESPACE}/{pod}",),
                requested_limit_w=450.0,
                target_limit_mw=450_000,
                enforced_limit_mw=450_000,
                default_limit_mw=700_000,
                power_mw=int(POWER_W * 1000),
                energy_mj=10**9,
            )
        )
    agent.cycle(CycleReport(gpus=tuple(gpus), cluster_known=True), time.time(), "ok")
    tier = FastTier(efficient=PowerSetting(limit_w=450.0), burst=PowerSetting())
    fast = [
        FastGpu(
            gpu=GpuInfo(uuid=f"GPU-{i}", index=i, name="NVIDIA H100 80GB HBM3", constraints=None),
            owner=owner,
            pods=(FastPod(key=f"{NAMESPACE}/{pod}", ip="10.0.0.1", port=8000),),
            tier=tier,
            since=0.0,
            applied=Mode.EFFICIENT if i == 0 else Mode.BURST,
        )
        for i, pod in enumerate(PODS)
    ]
    agent.fast_tier(fast, waiting=())
    return agent


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    agent = _agent()
    fleet = DashboardFleet(sources=[_operator().registry, agent.registry])
    for i, pod in enumerate((*PODS, OTHER)):
        fleet.set_pod(
            PodSeries(
                NAMESPACE,
                pod,
                f"GPU-{i}",
                power_w=POWER_W,
                prompt_tokens_per_s=5000.0,
                output_tokens_per_s=OUTPUT_TOKENS_PER_S,
                running=4.0,
            )
        )
        # 90 % of first tokens within 1 s (the TTFT variable's default bucket), all within 0.1 s per token.
        fleet.set_slo(
            SloSeries(
                NAMESPACE,
                pod,
                requests_per_s=10.0,
                ttft=((0.3, 0.9), (4.0, 0.1)) if pod != OTHER else ((4.0, 1.0),),
                tpot=((0.03, 1.0),),
                greenmodel=GREENMODEL if pod != OTHER else "other",
            )
        )
    with scraped(fleet) as server:
        yield server.url


def _get(url: str, path: str, **params: str) -> Any:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def _dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def _variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Concrete values: the custom variables' defaults, the GreenModel and Grafana's rate interval."""
    values = dict(CONCRETE)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "custom":
            values[variable["name"]] = variable["current"]["value"]
    return values


def _substitute(expr: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown dashboard variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def _targets(dashboard: dict[str, Any]) -> Iterable[tuple[str, str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["refId"], target["expr"]


def _query_until_data(url: str, promql: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        result: list[dict[str, Any]] = _get(url, "/api/v1/query", query=promql)["result"]
        values = [float(r["value"][1]) for r in result]
        if result and all(v == v for v in values):  # non-empty and no NaN (rate() of one sample)
            return result
        if time.monotonic() > deadline:
            return result
        time.sleep(1.0)


TARGETS = list(_targets(_dashboard()))


def test_every_panel_has_targets() -> None:
    panels = [p for p in _dashboard()["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    assert all(p["targets"] for p in panels)
    titles = {p["title"] for p in panels}
    for needed in (
        "Power",
        "Energy vs budget (current period)",
        "Energy per output token",
        "Carbon (current period)",
    ):
        assert needed in titles
    for needed in ("Replicas", "Variant", "SLO attainment", "Power limit per GPU", "Power setting per GPU"):
        assert needed in titles
    assert {"Decision reason", "Decisions per hour"} <= titles


@pytest.mark.parametrize(("panel", "ref", "expr"), TARGETS, ids=[f"{p}/{r}" for p, r, _ in TARGETS])
def test_target_returns_data(prometheus: str, panel: str, ref: str, expr: str) -> None:
    promql = _substitute(expr, _variables(_dashboard()))
    assert "$" not in promql
    result = _query_until_data(prometheus, promql)
    assert result, f"{panel} {ref}: no data for {promql}"


def test_template_variable_queries(prometheus: str) -> None:
    """The namespace and greenmodel variables (Grafana's label_values) as Prometheus' label API reads them."""
    dashboard = _dashboard()
    queries = {v["name"]: v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"}
    assert queries["namespace"] == "label_values(greenllm_replicas, namespace)"
    deadline = time.monotonic() + 60
    while True:
        namespaces = _get(prometheus, "/api/v1/label/namespace/values", **{"match[]": "greenllm_replicas"})
        if namespaces or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert namespaces == [NAMESPACE]
    match = _substitute(queries["greenmodel"], CONCRETE).removeprefix("label_values(").split(", ")[0]
    greenmodels = _get(prometheus, "/api/v1/label/greenmodel/values", **{"match[]": match})
    assert greenmodels == [GREENMODEL]


def _result(url: str, panel: str, ref: str) -> list[dict[str, Any]]:
    [expr] = [e for p, r, e in TARGETS if p == panel and r == ref]
    return _query_until_data(url, _substitute(expr, _variables(_dashboard())))


def _value(url: str, panel: str, ref: str) -> float:
    result = _result(url, panel, ref)
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_values_follow_the_series(prometheus: str) -> None:
    # DCGM power summed over the GreenModel's two pods, not the other Deployment's.
    assert _value(prometheus, "Power", "A") == pytest.approx(2 * POWER_W)
    assert _value(prometheus, "Energy vs budget (current period)", "B") == pytest.approx(5.0)
    # J per output token: the GPU power over the output token rate (both from counters).
    assert _value(prometheus, "Energy per output token", "A") == pytest.approx(
        POWER_W / OUTPUT_TOKENS_PER_S, rel=0.05
    )
    assert _value(prometheus, "Replicas", "B") == 2
    # 90 % of requests within the TTFT bucket, all within the TPOT one.
    assert _value(prometheus, "SLO attainment", "A") == pytest.approx(0.9, abs=1e-6)


def test_the_reason_panels_show_the_kind_in_force(prometheus: str) -> None:
    # One row: the kind of the decision in force, the earlier kind's series gone (not a stale 1 beside it).
    [current] = _result(prometheus, "Decision reason", "A")
    assert current["metric"] == {"reason": REASON.value}
    assert float(current["value"][1]) == 1
    # Decisions per hour by kind: a series for each kind that was counted (Prometheus' increase() of a
    # counter first seen at its value is 0, so the counts themselves are not compared here).
    counted = {r["metric"]["reason"] for r in _result(prometheus, "Decisions per hour", "A")}
    assert counted == {ReasonKind.HOLD.value, REASON.value}
