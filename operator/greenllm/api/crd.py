"""Generate the GreenModel CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: no `$ref`,
every node typed, `nullable` instead of `anyOf [X, null]`, boolean `exclusiveMinimum`, no `title`.
This module does that translation and nothing else, so the CRD can never drift from the models.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

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
    spec_schema = openapi_schema(api.GreenModelSpec)
    _default_optional_objects(spec_schema)
    status_schema = openapi_schema(api.GreenModelStatus)
    # Defaults are applied by the API server on read; status defaults would make every field
    # look "observed", so keep status free of them.
    _strip_defaults(status_schema)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["greenllm"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model served with the least energy that meets its SLO.",
                            "required": ["spec"],
                            # The name also names the Service, so it must be a DNS-1035 label.
                            "x-kubernetes-validations": [
                                {
                                    "rule": "self.metadata.name.size() <= 63 && "
                                    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                                    "message": "metadata.name must be a DNS-1035 label (it names a Service)",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
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


def render_yaml() -> str:
    return HEADER + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=120)
