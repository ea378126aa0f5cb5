"""The loop reads GreenModels from kopf's watch and writes status only when readers would see a change,
else the accounting at most every --accounting-write-period (issue 12: a GET and a PATCH per GreenModel
per tick throttled a real API server at a thousand GreenModels)."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import KubeClient, OperatorFactory, wait_for
from tests.e2e.test_operator import GM, NS, _closed_port, green_model
from tests.prometheus_server import free_port

pytestmark = pytest.mark.e2e

OPERATOR_CLIENT = "OpenAPI-Generator/"  # the kubernetes client's user agent: controller/kube.py


def scrape(port: int) -> dict[str, float]:
    """The operator's own counters: ticks, and status writes by why."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {"ticks": 0.0, "change": 0.0, "accounting": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "greenllm_loop_duration_seconds_count":
                out["ticks"] = sample.value
            elif sample.name == "greenllm_status_writes_total":
                out[sample.labels["why"]] = sample.value
    return out


async def _operator(
    operator_factory: OperatorFactory, client: KubeClient, monkeypatch: pytest.MonkeyPatch, period_s: str
) -> int:
    port = free_port()
    monkeypatch.setenv("GREENLLM_METRICS_PORT", str(port))
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_TIMEOUT", "1")
    monkeypatch.setenv("GREENLLM_ACCOUNTING_WRITE_PERIOD", period_s)
    operator = operator_factory("greenllm.controller.handlers")
    await operator.start()
    await client.ensure_namespace(NS)
    return port


def _gm() -> dict[str, Any]:
    body = green_model()
    body["spec"]["scaling"] = {**(body["spec"].get("scaling") or {}), "interval": "1s"}
    return body


async def _ticks_past(port: int, n: float) -> dict[str, float] | None:
    seen = scrape(port)
    return seen if seen["ticks"] >= n else None


async def test_steady_ticks_neither_get_nor_write_the_green_model(
    operator_factory: OperatorFactory, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await _operator(operator_factory, client, monkeypatch, "3600")
    await client.create(GM, _gm(), NS)
    await wait_for(
        lambda: _has_state(client), timeout=60, message="the first tick's status (what readers see is new)"
    )
    before = scrape(port)
    assert before["change"] >= 1
    since = len(client.emulator.api_calls)
    after = await wait_for(lambda: _ticks_past(port, before["ticks"] + 4), timeout=60, message="4 more ticks")
    calls = [c for c in client.emulator.api_calls[since:] if c.user_agent.startswith(OPERATOR_CLIENT)]
    greenmodel_calls = [c for c in calls if c.resource == "greenmodels"]
    assert (after["change"], after["accounting"]) == (before["change"], before["accounting"])
    assert greenmodel_calls == [], "steady ticks read kopf's watch and have nothing new to write"


async def test_accounting_is_written_every_period_not_every_tick(
    operator_factory: OperatorFactory, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await _operator(operator_factory, client, monkeypatch, "2")
    await client.create(GM, _gm(), NS)
    first = await wait_for(lambda: _has_state(client), timeout=60, message="the first status write")
    start = scrape(port)
    end = await wait_for(lambda: _ticks_past(port, start["ticks"] + 8), timeout=60, message="8 more ticks")
    ticks = end["ticks"] - start["ticks"]
    accounting = end["accounting"] - start["accounting"]
    # At least one accounting write happened (the period is 2 s of 1 s ticks) and at most one every
    # second tick: never one per tick.
    assert 1 <= accounting <= ticks / 2 + 1, (ticks, accounting)
    gm = await client.get(GM, "qwen3-8b", NS)
    assert gm is not None
    assert gm["status"]["controllerState"]["lastSampleTime"] != first["controllerState"]["lastSampleTime"]


async def _has_state(client: KubeClient) -> dict[str, Any] | None:
    gm = await client.get(GM, "qwen3-8b", NS)
    status: dict[str, Any] = (gm or {}).get("status") or {}
    return status if status.get("controllerState") else None
