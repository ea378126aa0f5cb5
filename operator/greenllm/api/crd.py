"""Generate the GreenModel and EnergyBudget CustomResourceDefinitions from the pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: no `$ref`,
every node typed, `nullable` instead of `anyOf [X, null]`, boolean `exclusiveMinimum`, no `title`.
This module does that translation and nothing else, so the CRD can never drift from the models.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api

_DROP = {"title", "$defs"}


def _condition(kind: str) -> str:
    return f'.status.conditions[?(@.type=="{kind}")].status'


# `kubectl get gm` at a glance; `-o wide` adds the priority-1 columns. One JSONPath per column, so the
# operator writes the two-number columns as text (status.replicasText, status.energyText).
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Variant", "type": "string", "jsonPath": ".status.variant"},
    {"name": "Replicas", "type": "string", "jsonPath": ".status.replicasText", "description": "Ready/wanted"},
    {"name": "Watts", "type": "number", "jsonPath": ".status.observed.powerW", "description": "Power now, W"},
    {
        "name": "Energy",
        "type": "string",
        "jsonPath": ".status.energyText",
        "description": "Energy this budget period / its budget, kWh",
    },
    {
        "name": "J/Token",
        "type": "number",
        "jsonPath": ".status.observed.joulesPerToken",
        "description": "Joules per output token",
    },
    {"name": "Budget", "type": "string", "jsonPath": _condition("BudgetMet"), "description": "BudgetMet"},
    {
        "name": "Metrics",
        "type": "string",
        "jsonPath": _condition("MetricsAvailable"),
        "description": "MetricsAvailable",
    },
    {"name": "Ready", "type": "string", "jsonPath": _condition("Ready")},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Setting",
        "type": "string",
        "jsonPath": ".status.settingText",
        "priority": 1,
        "description": "Per-GPU power setting",
    },
    {
        "name": "Carbon",
        "type": "number",
        "jsonPath": ".status.period.carbonGrams",
        "priority": 1,
        "description": "gCO2 this budget period",
    },
]


def _to_structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_to_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _to_structural({**target, **extra}, defs)
    out: dict[str, Any] = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [n for n in any_of if n.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express union in a structural schema: {any_of}")
        merged = {**non_null[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        out = _to_structural(merged, defs)
        out["nullable"] = True
        if out.get("default", 0) is None:
            del out["default"]
        return out
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _to_structural(sub, defs) for name, sub in value.items()}
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "additionalProperties" and value is False:
            # Structural schemas forbid it beside `properties`; the API server prunes unknown fields.
            continue
        else:
            out[key] = _to_structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _to_structural(raw, raw.get("$defs", {}))
    return result


def custom_resource_definition() -> dict[str, Any]:
    """The GreenModel CRD."""
    return _definition(
        kind=api.KIND,
        plural=api.PLURAL,
        singular=api.SINGULAR,
        short_names=api.SHORT_NAMES,
        spec_model=api.GreenModelSpec,
        status_model=api.GreenModelStatus,
        columns=PRINTER_COLUMNS,
        description="A model served with the least energy that meets its SLO.",
        # The name also names the Service, so it must be a DNS-1035 label.
        validations=[
            {
                "rule": "self.metadata.name.size() <= 63 && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name must be a DNS-1035 label (it names a Service)",
            }
        ],
    )


# `kubectl get eb`: how much of the team's budget is handed out and used; `-o wide` adds the selector.
ENERGY_BUDGET_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Members",
        "type": "integer",
        "jsonPath": ".status.memberCount",
        "description": "GreenModels the budget covers",
    },
    {
        "name": "Power",
        "type": "string",
        "jsonPath": ".status.powerText",
        "description": "Power allocated / allowed now",
    },
    {
        "name": "Energy",
        "type": "string",
        "jsonPath": ".status.energyText",
        "description": "Energy this period / its budget, kWh",
    },
    {"name": "Budget", "type": "string", "jsonPath": _condition("BudgetMet"), "description": "BudgetMet"},
    {
        "name": "Overcommitted",
        "type": "string",
        "jsonPath": _condition("Overcommitted"),
        "description": "Minimum configurations alone exceed the budget",
    },
    {"name": "Ready", "type": "string", "jsonPath": _condition("Ready")},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Selector",
        "type": "string",
        "jsonPath": ".status.selector",
        "priority": 1,
        "description": "GreenModels covered (empty: all in the namespace)",
    },
    {
        "name": "Carbon",
        "type": "number",
        "jsonPath": ".status.period.carbonGrams",
        "priority": 1,
        "description": "gCO2 this period",
    },
]


def energy_budget_definition() -> dict[str, Any]:
    """The EnergyBudget CRD."""
    return _definition(
        kind=eb.EB_KIND,
        plural=eb.EB_PLURAL,
        singular=eb.EB_SINGULAR,
        short_names=eb.EB_SHORT_NAMES,
        spec_model=eb.EnergyBudgetSpec,
        status_model=eb.EnergyBudgetStatus,
        columns=ENERGY_BUDGET_PRINTER_COLUMNS,
        description="One energy budget shared by the GreenModels a label selector picks in its namespace.",
        validations=[],
    )


def all_definitions() -> list[dict[str, Any]]:
    return [custom_resource_definition(), energy_budget_definition()]


def _definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[dict[str, Any]],
    description: str,
    validations: list[dict[str, Any]],
) -> dict[str, Any]:
    spec_schema = openapi_schema(spec_model)
    _default_optional_objects(spec_schema)
    status_schema = openapi_schema(status_model)
    # Defaults are applied by the API server on read; status defaults would make every field
    # look "observed", so keep status free of them.
    _strip_defaults(status_schema)
    root: dict[str, Any] = {"type": "object", "description": description, "required": ["spec"]}
    if validations:
        root["x-kubernetes-validations"] = validations
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec_schema,
        "status": status_schema,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": ["greenllm"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _default_optional_objects(node: dict[str, Any]) -> None:
    """Give optional sections `default: {}` so the API server fills in their field defaults too."""
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        if sub.get("type") != "object" or "properties" not in sub:
            continue
        _default_optional_objects(sub)
        if name not in required and not sub.get("required") and not sub.get("nullable"):
            sub.setdefault("default", {})
    items = node.get("items")
    if isinstance(items, dict) and items.get("type") == "object":
        _default_optional_objects(items)


def _strip_defaults(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("default", None)
        for value in node.values():
            _strip_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _strip_defaults(value)


HEADER = "# Generated by `greenllm crd` from operator/greenllm/api/v1alpha1.py. Do not edit.\n"
ENERGY_BUDGET_HEADER = (
    "# Generated by hack/gen_crds.py from operator/greenllm/api/energybudget.py. Do not edit.\n"
)


def render_yaml() -> str:
    return HEADER + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=120)


def render_energy_budget_yaml() -> str:
    return ENERGY_BUDGET_HEADER + yaml.safe_dump(energy_budget_definition(), sort_keys=False, width=120)


def rendered_files() -> dict[str, str]:
    """Every generated CRD file by name (crds/ and the chart's crds/ hold these)."""
    return {
        f"{api.PLURAL}.{api.GROUP}.yaml": render_yaml(),
        f"{eb.EB_PLURAL}.{api.GROUP}.yaml": render_energy_budget_yaml(),
    }
