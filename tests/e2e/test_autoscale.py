"""The autoscaling loop end to end: the real operator against the API emulator, reading a real
Prometheus that scrapes a test exporter publishing DCGM, vLLM and carbon series whose values we change.

Assertions are about behaviour recorded by the operator (status, Deployment, Events), never about how
long something took; timeouts only bound a hang.
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from greenllm.api.durations import parse_duration
from tests.e2e.conftest import KubeClient, Operator, OperatorFactory, wait_for
from tests.prometheus_server import FakeFleet, PodSeries, PrometheusServer, scraped

pytestmark = pytest.mark.e2e

GM = "greenllm.io/v1alpha1/greenmodels"
DEPLOY = "apps/v1/deployments"
LOW = {"prompt_tokens_per_s": 2000.0, "output_tokens_per_s": 50.0}
HIGH = {"prompt_tokens_per_s": 60000.0, "output_tokens_per_s": 1000.0}


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[FakeFleet, PrometheusServer]]:
    fleet = FakeFleet()
    with scraped(fleet) as prometheus:
        yield fleet, prometheus


_counter = iter(range(1000))


def green_model(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "GreenModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "paramsBillions": 8},
            "gpu": {"type": "H100-SXM", "count": 1},
            "variants": [
                {"name": "bf16", "precision": "bf16", "image": "vllm/vllm-openai:v0.11.1", "quality": 1.0},
                {"name": "int8", "precision": "int8", "image": "vllm/vllm-openai:v0.11.1", "quality": 0.993},
            ],
            "slo": {"tpotP90Ms": 50, "ttftP90Ms": 2000, "minQuality": 0.97},
            "replicas": {"min": 1, "max": 8},
            "scaling": {
                "interval": "1s",
                "scaleDownStabilization": "8s",
                "switchHold": "0s",
                "switchThreshold": 0.05,
            },
        },
    }
    for key, value in spec.items():
        body["spec"][key] = {**body["spec"].get(key, {}), **value} if isinstance(value, dict) else value
    return body


@pytest.fixture
async def setup(
    fleet: tuple[FakeFleet, PrometheusServer],
    operator_factory: OperatorFactory,
    client: KubeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[dict[str, Any]]:
    fake, prometheus = fleet
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", prometheus.url)
    monkeypatch.setenv("GREENLLM_METRICS_PORT", "0")
    monkeypatch.setenv("GREENLLM_RATE_WINDOW", "5s")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_TIMEOUT", "2")
    monkeypatch.setenv("GREENLLM_ALLOW_SPEC_QUERIES", "true")  # the carbon-intensity query below
    namespace = f"auto-{next(_counter)}"
    await client.ensure_namespace(namespace)
    # One series carries the whole GreenModel's load: the operator sums over its pods anyway.
    pod = PodSeries(namespace, "llama-5d8f7c9b6-abcde", f"GPU-{namespace}", power_w=400.0, **LOW)
    fake.set_pod(pod)
    operator = operator_factory("greenllm.controller.handlers")
    await operator.start()
    yield {
        "fleet": fake,
        "prometheus": prometheus,
        "namespace": namespace,
        "pod": pod.pod,
        "operator": operator,
    }
    fake.remove_pod(pod.pod)


async def status(client: KubeClient, namespace: str, name: str = "llama") -> dict[str, Any]:
    gm = await client.get(GM, name, namespace)
    assert gm is not None
    result: dict[str, Any] = gm.get("status") or {}
    return result


def condition(st: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), None)


async def wait_status(
    client: KubeClient, namespace: str, check: Any, message: str, timeout: float = 60
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        st = await status(client, namespace)
        return st if check(st) else None

    result: dict[str, Any] = await wait_for(probe, timeout=timeout, interval=0.25, message=message)
    return result


def metrics_ok(st: dict[str, Any]) -> bool:
    c = condition(st, "MetricsAvailable")
    return c is not None and c["status"] == "True"


def observed_near(st: dict[str, Any], output_tokens_per_s: float) -> bool:
    seen = (st.get("observed") or {}).get("outputTokensPerSecond")
    return seen is not None and abs(seen - output_tokens_per_s) <= 0.1 * output_tokens_per_s


async def replicas_of(client: KubeClient, namespace: str) -> int:
    deploy = await client.get(DEPLOY, "llama", namespace)
    assert deploy is not None
    replicas: int = deploy["spec"]["replicas"]
    return replicas


async def test_demand_up_scales_up_and_down_only_after_the_window(
    setup: dict[str, Any], client: KubeClient
) -> None:
    ns, fake = setup["namespace"], setup["fleet"]
    await client.create(GM, green_model("llama", ns))
    await wait_status(client, ns, lambda s: metrics_ok(s) and s.get("replicas") == 1, "one replica")
    # The rate window fills within a few scrapes; then the operator sees what the exporter serves.
    await wait_status(client, ns, lambda s: observed_near(s, LOW["output_tokens_per_s"]), "demand observed")

    fake.update(setup["pod"], **HIGH)
    st = await wait_status(client, ns, lambda s: (s.get("replicas") or 0) > 1, "scale up on high demand")
    assert await replicas_of(client, ns) == st["replicas"]
    high_replicas = st["replicas"]

    fake.update(setup["pod"], **LOW)
    fell_at = time.time()
    st = await wait_status(
        client, ns, lambda s: s.get("replicas") == 1, "scale down after the window", timeout=90
    )
    decided = st["lastDecision"]["time"]
    decided_at = time.mktime(time.strptime(decided, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    window = parse_duration(green_model("llama", ns)["spec"]["scaling"]["scaleDownStabilization"])
    # Status times have one-second resolution.
    assert decided_at - fell_at >= window - 1.0, f"scaled down from {high_replicas} too early"
    assert await replicas_of(client, ns) == 1


@pytest.mark.parametrize("mode", ["Degrade", "CapReplicas"])
async def test_power_budget_tightened(setup: dict[str, Any], client: KubeClient, mode: str) -> None:
    ns, fake = setup["namespace"], setup["fleet"]
    fake.update(setup["pod"], **HIGH)
    await client.create(GM, green_model("llama", ns, budget={"onExhausted": mode}))
    before = await wait_status(
        client, ns, lambda s: metrics_ok(s) and (s.get("replicas") or 0) > 1, "scaled up"
    )
    before_power = before["lastDecision"]["expectedPowerW"]

    budget = before_power / 2
    await client.patch(GM, "llama", {"spec": {"budget": {"powerW": budget}}}, ns)
    st = await wait_status(
        client, ns, lambda s: (condition(s, "BudgetMet") or {}).get("status") == "False", "BudgetMet=False"
    )
    assert st["lastDecision"]["expectedPowerW"] <= before_power
    if mode == "CapReplicas":
        assert st["variant"] == before["variant"]
        assert st["replicas"] < before["replicas"]
    assert mode in st["lastDecision"]["reason"] or "budget" in st["lastDecision"]["reason"]
    events = await client.events_for(ns, "llama", reason="BudgetExceeded")
    assert events, "a BudgetExceeded event is emitted when the state changes"


async def test_energy_is_accounted_and_the_budget_paced(setup: dict[str, Any], client: KubeClient) -> None:
    ns = setup["namespace"]
    # 400 W for an hour is 0.4 kWh: a 0.2 kWh budget allows about 200 W on average.
    await client.create(GM, green_model("llama", ns, budget={"energyKwh": 0.2, "period": "1h"}))
    st = await wait_status(
        client, ns, lambda s: (s.get("period") or {}).get("energyKwh", 0) > 0, "energy accounted"
    )
    first = st["period"]["energyKwh"]
    st = await wait_status(client, ns, lambda s: s["period"]["energyKwh"] > first + 0.0005, "energy grows")
    start = time.mktime(time.strptime(st["period"]["start"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    last = time.mktime(time.strptime(st["period"]["lastSampleTime"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    # The exporter draws a constant 400 W; the operator integrates DCGM's counter over its own ticks.
    expected_kwh = 400.0 * (last - start) / 3.6e6
    assert st["period"]["energyKwh"] == pytest.approx(expected_kwh, rel=0.35, abs=0.0003)
    allowed = st["controllerState"]["allowedPowerW"]
    remaining_s = 3600 - (last - start)
    assert allowed == pytest.approx((0.2 - st["period"]["energyKwh"]) * 3.6e6 / remaining_s, rel=0.1)


async def test_carbon_intensity_rise_tightens_the_allowed_energy(
    setup: dict[str, Any], client: KubeClient
) -> None:
    ns, fake = setup["namespace"], setup["fleet"]
    gauge = f"grid_intensity_{ns.replace('-', '_')}"
    # PromQL from a GreenModel sees its own namespace only: the intensity series carries it.
    fake.extra_gauge_labels[gauge] = {"namespace": ns}
    fake.extra_gauges[gauge] = 100.0
    spec = green_model(
        "llama",
        ns,
        budget={"carbonGrams": 50.0, "period": "1h"},
        metrics={"carbonIntensity": {"query": f"max({gauge})"}},
    )
    await client.create(GM, spec)
    st = await wait_status(
        client,
        ns,
        lambda s: (s.get("observed") or {}).get("carbonIntensityGPerKwh") == 100.0,
        "carbon intensity observed",
    )
    low_allowed = await wait_status(
        client, ns, lambda s: s["controllerState"].get("allowedPowerW"), "allowed power"
    )
    fake.extra_gauges[gauge] = 400.0
    st = await wait_status(
        client, ns, lambda s: s["observed"].get("carbonIntensityGPerKwh") == 400.0, "intensity up"
    )
    assert st["controllerState"]["allowedPowerW"] < low_allowed["controllerState"]["allowedPowerW"] / 2
    assert st["period"]["carbonGrams"] > 0
    del fake.extra_gauges[gauge]


async def test_prometheus_down_holds_the_decision_then_recovers(
    setup: dict[str, Any], client: KubeClient
) -> None:
    ns, fake, prometheus = setup["namespace"], setup["fleet"], setup["prometheus"]
    fake.update(setup["pod"], **HIGH)
    await client.create(GM, green_model("llama", ns))
    before = await wait_status(
        client, ns, lambda s: metrics_ok(s) and (s.get("replicas") or 0) > 1, "scaled up"
    )
    fake.update(setup["pod"], **LOW)  # would scale down, if the operator could see it
    prometheus.stop()
    try:
        st = await wait_status(
            client,
            ns,
            lambda s: (condition(s, "MetricsAvailable") or {}).get("reason") == "PrometheusUnavailable",
            "MetricsAvailable=False",
        )
        assert condition(st, "MetricsAvailable")["status"] == "False"  # type: ignore[index]
        seen = st["observed"]["time"]
        await wait_status(
            client, ns, lambda s: s["observed"]["time"] != seen, "another tick while it is down"
        )
        assert (await status(client, ns))["replicas"] == before["replicas"]
        assert await replicas_of(client, ns) == before["replicas"]
    finally:
        prometheus.start()
    await wait_status(client, ns, metrics_ok, "MetricsAvailable=True again", timeout=90)


async def test_operator_restart_continues_the_period(setup: dict[str, Any], client: KubeClient) -> None:
    ns = setup["namespace"]
    operator: Operator = setup["operator"]
    await client.create(GM, green_model("llama", ns, budget={"energyKwh": 5.0, "period": "24h"}))
    st = await wait_status(
        client, ns, lambda s: (s.get("period") or {}).get("energyKwh", 0) > 0.0003, "energy"
    )
    before = copy.deepcopy(st["period"])
    await operator.restart()
    st = await wait_status(
        client,
        ns,
        lambda s: s["period"].get("lastSampleTime") != before["lastSampleTime"],
        "a tick after restart",
    )
    assert st["period"]["start"] == before["start"]
    assert st["period"]["energyKwh"] >= before["energyKwh"]
    # Not double-counted: what was added since matches 400 W over the time between the two samples.
    t0 = time.mktime(time.strptime(before["lastSampleTime"], "%Y-%m-%dT%H:%M:%SZ"))
    t1 = time.mktime(time.strptime(st["period"]["lastSampleTime"], "%Y-%m-%dT%H:%M:%SZ"))
    added = st["period"]["energyKwh"] - before["energyKwh"]
    assert added <= 400.0 * (t1 - t0 + 2) / 3.6e6 * 1.35
