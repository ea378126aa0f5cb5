"""The generated CRD: no drift, structural, valid for Kubernetes; examples pass its schema and CEL."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from greenllm.api import crd
from greenllm.api import v1alpha1 as api
from greenllm.core import status as st
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "greenmodels.greenllm.io.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def crd_doc() -> dict[str, Any]:
    return crd.custom_resource_definition()


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd_doc()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crd.render_yaml(), "crds/ drifted: run `python hack/gen_crds.py`"


@pytest.mark.parametrize("version", ["1.30.0", "newest"])
def test_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    if version == "newest":
        version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), version, strict=True)


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural() -> None:
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const"}
    for path, node in _nodes(root_schema()):
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_status_subresource_and_printer_columns() -> None:
    version = crd_doc()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Variant"] == ".status.variant"
    assert columns["Replicas"] == ".status.replicasText"
    assert columns["Watts"] == ".status.observed.powerW"
    assert "BudgetMet" in columns["Budget"]
    assert columns["Age"] == ".metadata.creationTimestamp"
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority") == 1]
    assert wide == ["Setting", "Carbon"]
    assert crd_doc()["spec"]["names"]["shortNames"] == ["gm"]


_FILTER = re.compile(r'^\[\?\(@\.(\w+)=="([^"]*)"\)\]')
_FIELD = re.compile(r"^\.(\w+)")


def _jsonpath(doc: Any, path: str) -> Any:
    """The subset of Kubernetes JSONPath printer columns use: `.field` and `[?(@.key=="value")]`."""
    node, rest = doc, path
    while rest:
        if m := _FIELD.match(rest):
            node = node.get(m.group(1)) if isinstance(node, dict) else None
        elif m := _FILTER.match(rest):
            node = next((x for x in node or [] if x.get(m.group(1)) == m.group(2)), None)
        else:
            raise AssertionError(f"unsupported JSONPath at {rest!r} in {path!r}")
        rest = rest[m.end() :]
    return node


def _realistic_green_model() -> dict[str, Any]:
    """A GreenModel as the operator leaves it after a few ticks, built with the operator's own helpers."""
    spec = api.GreenModelSpec.model_validate(
        {
            "model": {"name": "m", "paramsBillions": 8},
            "variants": [{"name": "bf16", "precision": "bf16", "image": "vllm"}],
            "budget": {"energyKwh": 40},
        }
    )
    decision = Decision("bf16", 4, PowerSetting(limit_w=300.0), 1200.0, "planned", True)
    now = "2026-12-02T10:55:13Z"
    conditions: list[api.Condition] = []
    for kind, ok, reason in [
        (api.ConditionType.SPEC_VALID, True, "Valid"),
        (api.ConditionType.READY, False, "Progressing"),
        (api.ConditionType.METRICS_AVAILABLE, True, "Observed"),
    ]:
        conditions = st.set_condition(conditions, kind, ok, reason, "", now, 1)
    budget = st.budget_condition(spec, decision, 1.2, 300.0, 1150.0, measured=True)
    conditions = st.set_condition(conditions, api.ConditionType.BUDGET_MET, *budget, now, 1)
    observation = Observation(time=0.0, prompt_tokens_per_s=9000.0, output_tokens_per_s=500.0, power_w=1150.0)
    status = st.patch(
        st.decided(
            decision,
            ready_replicas=3,
            replicas_text=st.replicas_text(3, decision.replicas),
            energy_text=st.energy_text(1.2, spec.budget.energy_kwh),
            observed=st.observed_status(observation, now),
            period=api.PeriodAccount(start=now, energy_kwh=1.2, carbon_grams=300.0, last_sample_time=now),
            conditions=conditions,
        )
    )
    return {"metadata": {"name": "llama", "creationTimestamp": now}, "status": status}


EXPECTED_COLUMNS = {
    "Variant": "bf16",
    "Replicas": "3/4",
    "Watts": 1150.0,
    "Energy": "1.2/40 kWh",
    "J/Token": 2.3,
    "Budget": "True",
    "Metrics": "True",
    "Ready": "False",
    "Age": "2026-12-02T10:55:13Z",
    "Setting": "300 W/GPU",
    "Carbon": 300.0,
}


@pytest.mark.parametrize("column", crd.PRINTER_COLUMNS, ids=lambda c: c["name"])
def test_printer_column_resolves_on_a_realistic_status(column: dict[str, Any]) -> None:
    value = _jsonpath(_realistic_green_model(), column["jsonPath"])
    assert value == EXPECTED_COLUMNS[column["name"]]
    assert isinstance(value, {"string": str, "number": float, "date": str}[column["type"]])
    # The API server prunes what the status schema does not declare: the column would stay empty.
    if column["jsonPath"].startswith(".status."):
        node = root_schema()["properties"]["status"]
        for part in column["jsonPath"].split("[")[0].split(".")[2:]:
            node = node["properties"][part]


# ------------------------------------------------------------- validating objects like the API server


def _as_json_schema(node: Any) -> Any:
    """OpenAPI v3.0 `nullable` -> JSON Schema draft 4 (which keeps boolean exclusiveMinimum)."""
    if isinstance(node, list):
        return [_as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server does it, so CEL sees what it would see."""
    if isinstance(obj, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = _apply_defaults(sub, obj[name])
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(schema["items"], o) for o in obj]
    return obj


def _cel_errors(schema: dict[str, Any], obj: Any, path: str = "") -> list[str]:
    errors = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(obj)})
        if not bool(result):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in obj:
                errors += _cel_errors(sub, obj[name], f"{path}.{name}")
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def api_server_errors(obj: dict[str, Any]) -> list[str]:
    """Errors the API server would give `obj`, by the CRD of its kind (GreenModel or EnergyBudget)."""
    definition = crd.energy_budget_definition() if obj.get("kind") == "EnergyBudget" else crd_doc()
    schema: dict[str, Any] = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = _apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft4Validator(_as_json_schema(schema))
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    return errors or _cel_errors(schema, obj)


def test_there_are_examples() -> None:
    assert EXAMPLES, "examples/ is empty"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert api_server_errors(doc) == []


def good() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-h100.yaml").read_text())
    return doc


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["spec"].update(replicas={"min": 3, "max": 2}), "replicas.min must be <= replicas.max"),
        (
            lambda d: d["spec"]["variants"].append(dict(d["spec"]["variants"][0])),
            "variant names must be unique",
        ),
        (lambda d: d["spec"].update(variants=[]), "should be non-empty"),
        (lambda d: d["spec"].setdefault("budget", {}).update(powerW=0), "less than or equal to the minimum"),
        (lambda d: d["spec"].setdefault("budget", {}).update(period="daily"), "does not match"),
        (lambda d: d["spec"]["variants"][0].update(precision="fp4"), "is not one of"),
        (lambda d: d["spec"].update(power={"mode": "Fixed"}), "power.limitW is required"),
        (lambda d: d["spec"]["slo"].update(minQuality=1.9), "at least one variant must meet"),
        (lambda d: d["spec"]["variants"][0].update(name="Not_A_Label"), "does not match"),
        (lambda d: d["metadata"].update(name="7b-chat"), "must be a DNS-1035 label"),
        (lambda d: d["metadata"].update(name="m" * 64), "must be a DNS-1035 label"),
        (lambda d: d["spec"]["variants"][0].update(sparsity="2:8"), "is not one of"),
        (lambda d: d["spec"]["variants"][0].update(qualitySource=""), "should be non-empty"),
        (lambda d: d["spec"]["variants"][0].update(model={"paramsBillions": 4.5}), "'name' is a required"),
        (lambda d: d["spec"]["variants"][0].update(model={"name": "s", "paramsBillions": 0}), "minimum"),
        (lambda d: d["spec"]["variants"][0].update(gpuCount=0), "less than the minimum of 1"),
        (lambda d: d["spec"]["variants"][0].update(gpuCount=17), "greater than the maximum of 16"),
        (lambda d: d["spec"]["variants"][0].update(gpuCount=1.5), "is not of type 'integer'"),
    ],
)
def test_schema_refuses_bad_objects(mutate: Any, needle: str) -> None:
    doc = good()
    assert api_server_errors(doc) == []
    mutate(doc)
    errors = api_server_errors(doc)
    assert any(needle in e for e in errors), errors


# ------------------------------------------------------------------ pruned and distilled variants (issue 14)

_STUDENT = {"name": "nvidia/Llama-3.1-Minitron-4B-Width-Base", "paramsBillions": 4.5}
_OWN_QUALITY = "a variant with its own model or with 2:4 sparsity must give quality and qualitySource"


def _with_variant(**fields: Any) -> dict[str, Any]:
    doc = good()
    doc["spec"]["variants"].append({"name": "small", "precision": "bf16", "image": "vllm", **fields})
    return doc


@pytest.mark.parametrize(
    "fields",
    [
        {"model": _STUDENT},
        {"model": _STUDENT, "quality": 0.93},
        {"model": _STUDENT, "qualitySource": "MMLU 5-shot"},
        {"sparsity": "2:4"},
        {"sparsity": "2:4", "precision": "fp8", "quality": 0.975},
        {"sparsity": "2:4", "qualitySource": "Open LLM v1 average"},
    ],
)
def test_cel_refuses_a_sparse_or_foreign_model_variant_without_quality(fields: dict[str, Any]) -> None:
    errors = api_server_errors(_with_variant(**fields))
    assert any(_OWN_QUALITY in e for e in errors), errors


@pytest.mark.parametrize(
    "fields",
    [
        {"model": _STUDENT, "quality": 0.93, "qualitySource": "Open LLM v1 tasks vs Llama-3.1-8B"},
        {"sparsity": "2:4", "precision": "fp8", "quality": 0.975, "qualitySource": "Open LLM v1 average"},
        {"sparsity": "none"},  # a dense variant of the GreenModel's model may leave quality at 1.0
        {},
    ],
)
def test_cel_accepts_a_compressed_variant_that_states_its_quality(fields: dict[str, Any]) -> None:
    assert api_server_errors(_with_variant(**fields)) == []


def test_quality_has_no_schema_default_so_cel_sees_it_missing() -> None:
    variant = root_schema()["properties"]["spec"]["properties"]["variants"]["items"]
    assert "default" not in variant["properties"]["quality"]
    assert variant["properties"]["sparsity"]["default"] == "none"
    # A variant without quality still counts as 1.0 for the quality floor, as the operator reads it.
    doc = good()
    plain = [v for v in doc["spec"]["variants"] if v.get("sparsity", "none") == "none" and "model" not in v]
    doc["spec"]["variants"] = plain
    for v in doc["spec"]["variants"]:
        v.pop("quality", None)
    doc["spec"]["slo"]["minQuality"] = 1.0
    assert api_server_errors(doc) == []
    doc["spec"]["slo"]["minQuality"] = 1.01
    assert any("at least one variant must meet" in e for e in api_server_errors(doc))


def test_cel_and_pydantic_agree_on_compressed_variants() -> None:
    for fields in (
        {"model": _STUDENT},
        {"sparsity": "2:4", "quality": 0.98},
        {"model": _STUDENT, "quality": 0.93, "qualitySource": "MMLU 5-shot"},
    ):
        doc = _with_variant(**fields)
        cel_ok = api_server_errors(doc) == []
        try:
            api.GreenModelSpec.model_validate(doc["spec"])
            pydantic_ok = True
        except ValueError:
            pydantic_ok = False
        assert cel_ok == pydantic_ok, fields
