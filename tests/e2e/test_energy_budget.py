"""EnergyBudget end to end (issue 13): the real operator on the API emulator, reading a real Prometheus
that scrapes a test exporter whose token rates and power we change.

Two GreenModels under one EnergyBudget: the power moves to the one whose demand rises, while the sum of
the allocations, and of what the GreenModels plan to draw, stays within the budget. Then bad input: a
selector matching nothing, a negative budget, overlapping budgets, a member deleted mid-period, and an
operator restart that resumes the period account.

Assertions are about what the operator recorded (status, Deployments, Events); timeouts only bound a hang.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from greenllm.api import crd
from greenllm.api import energybudget as eb
from greenllm.api.crd import energy_budget_definition
from tests.e2e.conftest import ApiError, KubeClient, OperatorFactory, wait_for
from tests.e2e.test_autoscale import HIGH, LOW, green_model
from tests.e2e.test_kubectl import kubectl_columns
from tests.kube_emulator import KubeEmulator
from tests.prometheus_server import FakeFleet, PodSeries, PrometheusServer, scraped

pytestmark = pytest.mark.e2e

GM = "greenllm.io/v1alpha1/greenmodels"
EB = f"greenllm.io/v1alpha1/{eb.EB_PLURAL}"
# The two GreenModels of test_autoscale's shape (Llama 3.1 8B, bf16 and int8 on one H100 each): at LOW
# demand the minimum configuration draws about 200 W; at HIGH demand serving all of it takes about 900 W.
# 1000 W cannot pay for both at HIGH, but pays for one at HIGH (most of it) next to one at its minimum.
TEAM_POWER_W = 1000.0

_counter = iter(range(1000))


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[FakeFleet, PrometheusServer]]:
    fake = FakeFleet()
    with scraped(fake) as prometheus:
        yield fake, prometheus


@pytest.fixture
async def team(
    fleet: tuple[FakeFleet, PrometheusServer],
    kube: KubeEmulator,
    operator_factory: OperatorFactory,
    client: KubeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[dict[str, Any]]:
    fake, prometheus = fleet
    kube.register_crd(energy_budget_definition())
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", prometheus.url)
    monkeypatch.setenv("GREENLLM_METRICS_PORT", "0")
    monkeypatch.setenv("GREENLLM_RATE_WINDOW", "5s")
    monkeypatch.setenv("GREENLLM_PROMETHEUS_TIMEOUT", "2")
    monkeypatch.setenv("GREENLLM_ACCOUNTING_WRITE_PERIOD", "1")
    namespace = f"team-{next(_counter)}"
    await client.ensure_namespace(namespace)
    pods = {}
    for name in ("search-a", "search-b", "other"):
        series = PodSeries(
            namespace, f"{name}-5d8f7c9b6-abcde", f"GPU-{namespace}-{name}", power_w=300.0, **LOW
        )
        fake.set_pod(series)
        pods[name] = series.pod
    operator = operator_factory("greenllm.controller.handlers")
    await operator.start()
    yield {"fleet": fake, "namespace": namespace, "pods": pods, "operator": operator}
    for pod in pods.values():
        fake.remove_pod(pod)


def member_model(name: str, namespace: str, team: str | None = "search", **spec: Any) -> dict[str, Any]:
    body = green_model(name, namespace, **spec)
    if team is not None:
        body["metadata"]["labels"] = {"team": team}
    return body


def energy_budget(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "EnergyBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind), {}
    )
    return found


def members(budget: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in ((budget or {}).get("status") or {}).get("members") or []}


def allocations(budget: dict[str, Any] | None) -> dict[str, float]:
    return {
        n: m["allocatedPowerW"] for n, m in members(budget).items() if m.get("allocatedPowerW") is not None
    }


class Watch:
    """Every budget status the test reads, and with each the power every GreenModel of the namespace plans
    to draw (one snapshot of the store), so the invariants are checked on all of them, not the last."""

    def __init__(self, client: KubeClient, namespace: str, name: str) -> None:
        self.client, self.namespace, self.name = client, namespace, name
        self.seen: list[dict[str, Any]] = []
        self.planned: list[dict[str, float]] = []

    async def read(self) -> dict[str, Any] | None:
        budget = await self.client.get(EB, self.name, self.namespace)
        if budget is not None:
            self.seen.append(budget)
        # The emulator's store, read in one step: the members' decisions as of one instant.
        self.planned.append(
            {
                gm["metadata"]["name"]: gm["status"]["lastDecision"]["expectedPowerW"]
                for gm in self.client.emulator.stored(GM, self.namespace)
                if ((gm.get("status") or {}).get("lastDecision") or {}).get("expectedPowerW") is not None
            }
        )
        return budget

    async def until(self, check: Any, message: str, timeout: float = 90) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            budget = await self.read()
            return budget if budget is not None and check(budget) else None

        try:
            result: dict[str, Any] = await wait_for(probe, timeout=timeout, interval=0.25, message=message)
        except AssertionError as e:
            last = (self.seen[-1].get("status") or {}) if self.seen else {}
            shown = {k: last.get(k) for k in ("members", "conditions", "overlaps", "allowancePowerW")}
            raise AssertionError(f"{e}; the budget's last status: {shown}") from None
        return result


async def planned_power(client: KubeClient, namespace: str, name: str) -> float | None:
    """The power the GreenModel's last decision expects (None before its loop decided)."""
    gm = await client.get(GM, name, namespace)
    assert gm is not None
    power: float | None = ((gm.get("status") or {}).get("lastDecision") or {}).get("expectedPowerW")
    return power


async def test_power_shifts_to_the_member_whose_demand_rises(
    team: dict[str, Any], client: KubeClient
) -> None:
    ns, fake, pods = team["namespace"], team["fleet"], team["pods"]
    await client.create(
        EB, energy_budget("search", ns, selector={"matchLabels": {"team": "search"}}, powerW=TEAM_POWER_W)
    )
    for name in ("search-a", "search-b"):
        await client.create(GM, member_model(name, ns))
    await client.create(GM, member_model("other", ns, team="ads"))
    watch = Watch(client, ns, "search")

    both = await watch.until(
        lambda b: condition(b, "Ready").get("reason") == "Allocated" and len(allocations(b)) == 2,
        "the budget allocated between its two members",
    )
    assert set(members(both)) == {"search-a", "search-b"}, "the selector leaves `other` out"
    assert both["status"]["memberCount"] == 2
    assert condition(both, "Overcommitted")["status"] == "False"

    # search-a's demand rises: the budget moves power to it, search-b keeps little more than its minimum.
    fake.update(pods["search-a"], **HIGH)
    even = allocations(both)
    shifted = await watch.until(
        lambda b: (
            allocations(b).get("search-a", 0) > even["search-a"]
            and allocations(b).get("search-a", 0) > allocations(b).get("search-b", math.inf)
        ),
        "power to move to search-a",
    )
    a_gm = await wait_for(
        lambda: _bound(client, ns, "search-a"), message="search-a's status to name the budget binding it"
    )
    assert a_gm["status"]["boundBy"] == ["search"]
    # What search-a plans to draw obeys its allocation (its own planner, the lowered allowance).
    alloc = allocations(shifted)
    a_power = await wait_for(
        lambda: _planned_within(client, ns, "search-a", allocations_of=watch),
        message="search-a within its share",
    )
    assert a_power <= max(alloc["search-a"], allocations(watch.seen[-1])["search-a"]) + 1e-6

    # Then the demand moves to search-b: the power follows.
    fake.update(pods["search-a"], **LOW)
    fake.update(pods["search-b"], **HIGH)
    a_high = allocations(shifted)["search-a"]
    await watch.until(
        lambda b: (
            allocations(b).get("search-b", 0) > allocations(b).get("search-a", math.inf)
            and allocations(b).get("search-a", math.inf) < a_high
        ),
        "power to move to search-b",
    )
    b_power = await wait_for(
        lambda: _planned_within(client, ns, "search-b", allocations_of=watch),
        message="search-b within its share",
    )
    assert b_power > 0

    # The budget held all along: every allocation the operator published summed within it.
    for budget in watch.seen:
        total = sum(allocations(budget).values())
        assert total <= TEAM_POWER_W, f"allocations {allocations(budget)} exceed {TEAM_POWER_W} W"
    # ... and so did what the members planned to draw, at every instant sampled: a member given more
    # power takes it only once the one giving it up has lowered its own.
    for planned in watch.planned:
        total = planned.get("search-a", 0.0) + planned.get("search-b", 0.0)
        assert total <= TEAM_POWER_W, f"planned {planned} exceeds {TEAM_POWER_W} W"
    assert len(watch.planned) > 10
    # `other` is not covered: no budget binds it.
    other = await client.get(GM, "other", ns)
    assert other is not None and not (other["status"].get("boundBy") or [])


async def _bound(client: KubeClient, ns: str, name: str) -> dict[str, Any] | None:
    gm = await client.get(GM, name, ns)
    return gm if gm is not None and (gm.get("status") or {}).get("boundBy") else None


async def _planned_within(client: KubeClient, ns: str, name: str, *, allocations_of: Watch) -> float | None:
    """The member's planned power once it is within its current allocation."""
    budget = await allocations_of.read()
    share = allocations(budget).get(name)
    power = await planned_power(client, ns, name)
    return power if share is not None and power is not None and 0 < power <= share + 1e-6 else None


async def test_selector_matching_nothing_says_so(team: dict[str, Any], client: KubeClient) -> None:
    ns = team["namespace"]
    await client.create(GM, member_model("search-a", ns))
    await client.create(
        EB, energy_budget("nobody", ns, selector={"matchLabels": {"team": "nobody"}}, powerW=500)
    )
    watch = Watch(client, ns, "nobody")
    budget = await watch.until(lambda b: condition(b, "Ready").get("status") == "False", "Ready=False")
    ready = condition(budget, "Ready")
    assert ready["reason"] == "NoMembers"
    assert "team=nobody" in ready["message"] and ns in ready["message"]
    assert budget["status"]["memberCount"] == 0
    events = await wait_for(
        lambda: client.events_for(ns, "nobody", reason="NoMembers"), message="a NoMembers Event"
    )
    assert events[0]["type"] == "Warning"
    # The GreenModel outside it is untouched by it.
    gm = await client.get(GM, "search-a", ns)
    assert gm is not None and not ((gm.get("status") or {}).get("boundBy") or [])

    # Labelling a GreenModel into it makes it Ready.
    await client.patch(GM, "search-a", {"metadata": {"labels": {"team": "nobody"}}}, ns)
    budget = await watch.until(
        lambda b: condition(b, "Ready").get("status") == "True", "Ready once it covers one"
    )
    assert set(members(budget)) == {"search-a"}


async def test_a_negative_or_empty_budget_is_refused(team: dict[str, Any], client: KubeClient) -> None:
    ns = team["namespace"]
    for spec in ({"powerW": -5}, {"energyKwh": -1.0}, {"carbonGrams": 0}):
        with pytest.raises(ApiError) as refused:
            await client.create(EB, energy_budget("bad", ns, **spec))
        assert refused.value.status == 422, spec
    assert await client.get(EB, "bad", ns) is None
    # A label key the schema cannot check (map keys) passes the API server; the operator says what is wrong.
    await client.create(
        EB, energy_budget("odd", ns, selector={"matchLabels": {"not a key!": "x"}}, powerW=500)
    )
    budget = await Watch(client, ns, "odd").until(
        lambda b: condition(b, "Ready").get("reason") == "SpecInvalid", "Ready=False, SpecInvalid"
    )
    assert "not a label key" in condition(budget, "Ready")["message"]


async def test_overlapping_budgets_are_both_obeyed(team: dict[str, Any], client: KubeClient) -> None:
    ns, fake, pods = team["namespace"], team["fleet"], team["pods"]
    fake.update(pods["search-a"], **HIGH)
    await client.create(GM, member_model("search-a", ns))
    await client.create(GM, member_model("search-b", ns, team="ads"))
    # The whole namespace gets 2 kW; search-a alone, by another budget, 500 W: it is bound by the tighter.
    await client.create(EB, energy_budget("namespace", ns, powerW=2000))
    only_a = {"matchExpressions": [{"key": "team", "operator": "In", "values": ["search"]}]}
    await client.create(EB, energy_budget("a-only", ns, selector=only_a, powerW=500))
    wide, narrow = Watch(client, ns, "namespace"), Watch(client, ns, "a-only")
    await wide.until(
        lambda b: "a-only" in (b.get("status") or {}).get("overlaps", []), "the overlap reported"
    )
    await narrow.until(
        lambda b: "namespace" in (b.get("status") or {}).get("overlaps", []), "the overlap reported"
    )
    ready = condition(await wide.read(), "Ready")
    assert "a-only" in ready["message"]

    async def bound_by_narrow() -> dict[str, Any] | None:
        gm = await client.get(GM, "search-a", ns)
        return gm if gm is not None and (gm.get("status") or {}).get("boundBy") == ["a-only"] else None

    await wait_for(bound_by_narrow, message="search-a bound by the tighter budget")
    await wait_for(
        lambda: _planned_within(client, ns, "search-a", allocations_of=narrow),
        message="search-a within a-only",
    )
    assert allocations(await narrow.read())["search-a"] <= 500
    assert allocations(await wide.read())["search-a"] > 500, "the wide budget alone would allow more"


async def test_member_deleted_mid_period_keeps_its_energy_and_restart_resumes(
    team: dict[str, Any], client: KubeClient
) -> None:
    ns = team["namespace"]
    await client.create(GM, member_model("search-a", ns))
    await client.create(GM, member_model("search-b", ns))
    await client.create(
        EB,
        energy_budget("search", ns, selector={"matchLabels": {"team": "search"}}, energyKwh=5, period="1h"),
    )
    watch = Watch(client, ns, "search")
    budget = await watch.until(
        lambda b: (
            members(b).get("search-b", {}).get("energyKwh", 0) > 0
            and members(b).get("search-a", {}).get("energyKwh", 0) > 0
        ),
        "energy counted for both members",
    )
    start = budget["status"]["period"]["start"]

    await client.delete(GM, "search-b", ns)
    budget = await watch.until(
        lambda b: members(b).get("search-b", {}).get("present") is False, "search-b gone"
    )
    kept = members(budget)["search-b"]["energyKwh"]
    assert kept > 0
    assert budget["status"]["memberCount"] == 1
    assert condition(budget, "Ready")["status"] == "True"
    total = budget["status"]["period"]["energyKwh"]
    assert total >= kept

    # The period account survives a restart: same start, nothing lost, search-b still counted.
    before = budget["status"]["period"]["energyKwh"]
    await team["operator"].restart()
    budget = await watch.until(
        lambda b: (b.get("status") or {}).get("period", {}).get("energyKwh", 0) > before,
        "the account to grow after the restart",
    )
    assert budget["status"]["period"]["start"] == start
    assert members(budget)["search-b"]["energyKwh"] == pytest.approx(kept)
    assert members(budget)["search-b"]["present"] is False


async def test_overcommitted_degrades_the_lower_priority_first(
    team: dict[str, Any], client: KubeClient
) -> None:
    ns = team["namespace"]
    # Each member's minimum configuration draws about 200 W: 300 W cannot pay for both.
    await client.create(GM, member_model("search-a", ns, priority=5))
    await client.create(GM, member_model("search-b", ns))
    selector = {"matchLabels": {"team": "search"}}
    await client.create(EB, energy_budget("tight", ns, selector=selector, powerW=300))
    watch = Watch(client, ns, "tight")
    budget = await watch.until(
        lambda b: condition(b, "Overcommitted").get("status") == "True", "Overcommitted=True"
    )
    over = condition(budget, "Overcommitted")
    assert over["reason"] == "MinimumsExceedBudget"
    assert [d["name"] for d in budget["status"]["degraded"]] == ["search-b"]  # priority 0 before 5
    assert "search-b" in over["message"] and "Degrade" in over["message"]
    assert members(budget)["search-b"]["degraded"]
    assert sum(allocations(budget).values()) <= 300
    events = await wait_for(
        lambda: client.events_for(ns, "tight", reason="MinimumsExceedBudget"),
        message="an Overcommitted Event",
    )
    assert events[0]["type"] == "Warning"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_get_eb_prints_the_columns(
    team: dict[str, Any], client: KubeClient, kubeconfig: Path
) -> None:
    ns = team["namespace"]
    await client.create(GM, member_model("search-a", ns))
    selector = {"matchLabels": {"team": "search"}}
    await client.create(EB, energy_budget("search", ns, selector=selector, powerW=1000, energyKwh=5))
    watch = Watch(client, ns, "search")
    await watch.until(
        lambda b: condition(b, "Ready").get("status") == "True" and condition(b, "BudgetMet").get("status"),
        "Ready",
    )
    printed = await kubectl_columns(kubeconfig, ns, "search", "eb", crd.ENERGY_BUDGET_PRINTER_COLUMNS)
    assert printed["Members"] == "1"
    allocated, _, allowed = printed["Power"].partition("/")
    assert allocated and allowed  # e.g. "1 kW/1 kW"
    assert printed["Energy"].endswith("/5 kWh")
    assert printed["Ready"] == "True" and printed["Overcommitted"] == "False"
    assert printed["Selector"] == "team=search"
