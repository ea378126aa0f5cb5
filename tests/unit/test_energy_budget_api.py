"""The EnergyBudget API (issue 13): the generated CRD (drift, structural, valid, printer columns on a
status the operator builds), the API server's checks (schema and CEL) and their pydantic twins, and label
selector semantics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError
from tests.unit.test_crd import _jsonpath, _nodes, api_server_errors

from greenllm.api import crd
from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api
from greenllm.core import budget_book as bb
from greenllm.core import budget_status as bs
from greenllm.core import status as st
from greenllm.core.allocation import Allocation

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "energybudgets.greenllm.io.yaml"
EXAMPLE = ROOT / "examples" / "team-budget.yaml"


def definition() -> dict[str, Any]:
    return crd.energy_budget_definition()


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crd.render_energy_budget_yaml(), "crds/ drifted: run hack/gen_crds.py"
    chart = ROOT / "charts" / "greenllm" / "crds" / CRD_FILE.name
    assert chart.read_text() == CRD_FILE.read_text()


@pytest.mark.parametrize("version", ["1.30.0", "newest"])
def test_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    if version == "newest":
        version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), version, strict=True)


def test_schema_is_structural_and_namespaced() -> None:
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const"}
    for path, node in _nodes(root_schema()):
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
    spec = definition()["spec"]
    assert spec["scope"] == "Namespaced"
    assert spec["group"] == api.GROUP and spec["names"]["kind"] == "EnergyBudget"
    assert spec["names"]["shortNames"] == ["eb"]
    assert spec["versions"][0]["subresources"] == {"status": {}}


def _realistic_budget() -> dict[str, Any]:
    """An EnergyBudget as the operator leaves it after an overcommitted tick, built by its own code."""
    spec = eb.EnergyBudgetSpec.model_validate(
        {"selector": {"matchLabels": {"team": "search"}}, "powerW": 1000, "energyKwh": 40}
    )
    gm = api.GreenModelSpec.model_validate(
        {"model": {"name": "m"}, "variants": [{"name": "bf16", "precision": "bf16", "image": "vllm"}]}
    )
    candidates = [bs.Candidate("a", gm, ()), bs.Candidate("b", gm, ())]
    ledger = bs.Ledger(period_start=1_800_000_000.0, energy_kwh=1.25, last_sample_time=1_800_000_100.0)
    allocation = Allocation(
        {"ns/a": 700.0, "ns/b": 300.0}, {"ns/a": 500.0, "ns/b": 10.0}, True, (("ns/b", "below its minimum"),)
    )
    grant = bb.Grant("search", {"a": 700.0, "b": 300.0})
    built = bs.build(
        namespace="ns",
        spec=spec,
        candidates=candidates,
        reports={"a": None, "b": None},
        allocation=allocation,
        grant=grant,
        allowance_w=1000.0,
        ledger=ledger,
        overlaps=[],
        bound={"a": ["search"]},
        notes=[],
        budget_name="search",
        conditions=[],
        stamp="2026-12-02T10:55:13Z",
        generation=1,
    )
    status = st.patch(built)  # what the operator writes
    assert eb.EnergyBudgetStatus.model_validate(status) == built  # and what the model declares
    return {"metadata": {"name": "search", "creationTimestamp": "2026-12-02T10:55:13Z"}, "status": status}


EXPECTED_COLUMNS = {
    "Members": 2,
    "Power": "1 kW/1 kW",
    "Energy": "1.25/40 kWh",
    "Budget": "True",
    "Overcommitted": "True",
    "Ready": "True",
    "Age": "2026-12-02T10:55:13Z",
    "Selector": "team=search",
    "Carbon": 0.0,
}


@pytest.mark.parametrize("column", crd.ENERGY_BUDGET_PRINTER_COLUMNS, ids=lambda c: c["name"])
def test_printer_column_resolves_on_a_realistic_status(column: dict[str, Any]) -> None:
    value = _jsonpath(_realistic_budget(), column["jsonPath"])
    assert value == EXPECTED_COLUMNS[column["name"]]
    assert isinstance(value, {"string": str, "number": float, "integer": int, "date": str}[column["type"]])
    if column["jsonPath"].startswith(".status."):  # declared, so the API server does not prune it
        node = root_schema()["properties"]["status"]
        for part in column["jsonPath"].split("[")[0].split(".")[2:]:
            node = node["properties"][part]


def test_example_holds_a_budget_over_two_green_models() -> None:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds.count("EnergyBudget") == 1 and kinds.count("GreenModel") == 2
    budget = eb.EnergyBudget.model_validate(next(d for d in docs if d["kind"] == "EnergyBudget"))
    models = [d for d in docs if d["kind"] == "GreenModel"]
    assert all(budget.spec.selector.matches(m["metadata"].get("labels")) for m in models)
    assert all(m["metadata"]["namespace"] == budget.metadata["namespace"] for m in models)
    for doc in docs:
        assert api_server_errors(doc) == []


TEAM = sorted((ROOT / "examples" / "team").glob("*.yaml"))


@pytest.mark.parametrize("path", TEAM, ids=lambda p: p.name)
def test_team_examples_validate(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert api_server_errors(doc) == []


def test_team_example_budget_covers_both_models() -> None:
    docs = {p.stem: yaml.safe_load(p.read_text()) for p in TEAM}
    assert set(docs) == {"energybudget", "chat", "code"}
    budget = eb.EnergyBudget.model_validate(docs["energybudget"])
    for name in ("chat", "code"):
        model = docs[name]
        assert budget.spec.selector.matches(model["metadata"]["labels"])
        assert model["metadata"]["namespace"] == budget.metadata["namespace"]


def good() -> dict[str, Any]:
    return {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "EnergyBudget",
        "metadata": {"name": "team", "namespace": "ns"},
        "spec": {"selector": {"matchLabels": {"team": "search"}}, "powerW": 6000, "energyKwh": 40},
    }


BAD = [
    (lambda s: s.update(powerW=-5), "less than or equal to the minimum", "greater than 0"),
    (lambda s: s.update(energyKwh=0), "less than or equal to the minimum", "greater than 0"),
    (lambda s: s.update(carbonGrams=-1), "less than or equal to the minimum", "greater than 0"),
    (lambda s: (s.pop("powerW"), s.pop("energyKwh")), "at least one of powerW", "at least one of powerW"),
    (lambda s: s.update(period="daily"), "does not match", "invalid duration 'daily'"),
    (lambda s: s.update(onExhausted="Panic"), "is not one of", "Input should be"),
    (
        lambda s: s["selector"].update(matchExpressions=[{"key": "team", "operator": "In"}]),
        "operators In and NotIn need values",
        "needs values",
    ),
    (
        lambda s: s["selector"].update(
            matchExpressions=[{"key": "t", "operator": "Exists", "values": ["x"]}]
        ),
        "operators In and NotIn need values",
        "takes no values",
    ),
    (lambda s: s["selector"].update(matchLabels={"team": "not a value"}), "does not match", "String should"),
]


@pytest.mark.parametrize(("mutate", "server", "model"), BAD)
def test_bad_budgets_are_refused_by_the_api_server_and_the_model(
    mutate: Any, server: str, model: str
) -> None:
    doc = good()
    assert api_server_errors(doc) == []
    eb.EnergyBudget.model_validate(doc)
    mutate(doc["spec"])
    errors = api_server_errors(doc)
    assert any(server in e for e in errors), errors
    with pytest.raises(ValidationError, match=model):
        eb.EnergyBudget.model_validate(doc)


def test_a_label_key_the_schema_cannot_check_is_refused_by_the_model() -> None:
    doc = good()
    doc["spec"]["selector"]["matchLabels"] = {"bad key!": "x"}
    with pytest.raises(ValidationError, match="not a label key"):
        eb.EnergyBudget.model_validate(doc)


def test_the_budget_is_a_budget() -> None:
    spec = eb.EnergyBudgetSpec.model_validate(good()["spec"])
    assert isinstance(spec, api.Budget)
    assert spec.budget() == api.Budget(power_w=6000, energy_kwh=40)
    assert spec.period_seconds == 24 * 3600


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({}, None, True),
        ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        ({"matchLabels": {"team": "a"}}, {}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]},
            {"tier": "gold"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]},
            {"tier": "gold"},
            False,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": ""}, False),
        (
            {"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            {"team": "a"},
            False,
        ),
    ],
)
def test_selector_semantics_are_kubernetes(selector: dict[str, Any], labels: Any, matches: bool) -> None:
    assert eb.LabelSelector.model_validate(selector).matches(labels) is matches


def test_selector_text_is_kubectl_form() -> None:
    selector = eb.LabelSelector.model_validate(
        {
            "matchLabels": {"team": "search", "app": "x"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.text() == "app=x,team=search,tier in (gold,silver),!canary"
    assert eb.LabelSelector().text() == ""


def test_green_model_priority_and_bound_by() -> None:
    base = {"model": {"name": "m"}, "variants": [{"name": "v", "precision": "bf16", "image": "i"}]}
    assert api.GreenModelSpec.model_validate(base).priority == 0
    assert api.GreenModelSpec.model_validate({**base, "priority": 7}).priority == 7
    with pytest.raises(ValidationError):
        api.GreenModelSpec.model_validate({**base, "priority": 10_000})
    gm_schema = crd.custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert gm_schema["properties"]["spec"]["properties"]["priority"]["default"] == 0
    bound = gm_schema["properties"]["status"]["properties"]["boundBy"]
    assert bound["type"] == "array" and bound["items"]["type"] == "string"
    status = api.GreenModelStatus.model_validate({"boundBy": ["team"]})
    assert status.bound_by == ["team"]
    assert copy.deepcopy(status) == status
