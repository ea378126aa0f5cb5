"""A CustomResourceDefinition's openAPIV3Schema applied as the API server does: structural pruning,
defaulting and validation (CEL `x-kubernetes-validations` rules are not evaluated)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema


def _to_json_schema(node: Any) -> Any:
    """OpenAPI v3.0 (as CRDs use it) -> JSON Schema draft 4, which shares its boolean exclusiveMinimum."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, Mapping):
        return node
    out = {
        k: _to_json_schema(v)
        for k, v in node.items()
        if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def prune_and_default(value: Any, schema: Mapping[str, Any], *, root: bool = False) -> Any:
    """The API server's structural pruning and defaulting of a custom resource (before validation)."""
    if isinstance(value, Mapping) and schema.get("type") == "object":
        properties: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        out: dict[str, Any] = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                out[key] = item
            elif key in properties:
                sub = properties[key]
                if item is None and not sub.get("nullable"):
                    continue  # null in a non-nullable field is pruned (and may be defaulted below)
                out[key] = prune_and_default(item, sub)
            elif isinstance(additional, Mapping):
                out[key] = prune_and_default(item, additional)
            elif preserve or additional is True:
                out[key] = item
        for key, sub in properties.items():
            if key not in out and "default" in sub:
                out[key] = prune_and_default(copy.deepcopy(sub["default"]), sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [prune_and_default(item, schema["items"]) for item in value]
    return value


@dataclass(frozen=True)
class CrdSchema:
    """A CRD version's openAPIV3Schema and its validator, compiled once when the CRD is registered (as the
    API server does). Compiled on every write, it was about a tenth of the emulator's CPU in the N = 5,000
    benchmark (py-spy; validating is another sixth), CPU the operator under test shares here."""

    openapi: Mapping[str, Any]
    validator: jsonschema.Draft4Validator

    @classmethod
    def of(cls, openapi: Mapping[str, Any]) -> CrdSchema:
        return cls(openapi, jsonschema.Draft4Validator(_to_json_schema(openapi)))

    def problems(self, obj: Mapping[str, Any]) -> list[str]:
        problems = []
        errors = sorted(self.validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        for error in errors:
            path = ".".join(str(p) for p in error.absolute_path) or "<root>"
            problems.append(f"{path}: Invalid value: {error.message}")
        return problems
