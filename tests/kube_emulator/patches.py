"""Patch semantics: the content types of PATCH requests, RFC 7386 merge patches and strategic merge patches
(by the patch merge keys of the built-in types)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Patch merge keys of built-in types (the `patchMergeKey` tags in k8s.io/api): lists of maps merged by key.
_SMP_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
_SMP_PRIMITIVE_MERGE = {"finalizers"}  # `patchStrategy:"merge"` on a list of strings: a set union


def _smp_merge_key(field_name: str, items: Sequence[Any]) -> str | None:
    if field_name == "ports":  # container ports merge on containerPort, Service ports on port
        maps = [i for i in items if isinstance(i, Mapping)]
        return "containerPort" if any("containerPort" in i for i in maps) else "port"
    return _SMP_MERGE_KEYS.get(field_name)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for the list fields of built-in types that carry patch keys."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
            continue
        if value is None or (isinstance(value, Mapping) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _smp_list(field_name: str, stored: Any, patch: list[Any]) -> list[Any]:
    current: list[Any] = list(stored) if isinstance(stored, list) else []
    if field_name in _SMP_PRIMITIVE_MERGE:
        return current + [v for v in patch if v not in current]
    merge_key = _smp_merge_key(field_name, [*current, *patch])
    if merge_key is None or not all(isinstance(i, Mapping) for i in patch):
        replaced: list[Any] = copy.deepcopy(patch)
        return replaced
    if any(i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if i.get("$patch") != "replace"]
    result = list(current)
    for item in patch:
        index = next(
            (
                n
                for n, c in enumerate(result)
                if isinstance(c, Mapping) and c.get(merge_key) == item.get(merge_key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result
