"""A stateful Kubernetes API for tests: `KubeEmulator`, a `kmock.KubernetesEmulator` with the traps of kmock
0.8 fixed (what it fixes and what it does not emulate: emulator.py). Tests import from here.

- resources.py: `ResourceSpec` (a resource as discovery describes it) and the table of built-in resources;
- rbac.py: `ApiCall` (a request as RBAC sees it) and `rule_allows` (the authorizer's rule matching);
- errors.py: the API server's error answers (404, 409, 422, ...);
- names.py: object-name and label validation;
- selectors.py: label and field selectors;
- patches.py: patch content types, merge patch and strategic merge patch;
- schema.py: CRD schema pruning, defaulting and validation;
- emulator.py: `KubeEmulator` (create, update, patch, delete, list, watch, status, namespaces).
"""

from __future__ import annotations

from tests.kube_emulator.emulator import KubeEmulator, user_agent_of
from tests.kube_emulator.patches import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    merge_patch,
    strategic_merge_patch,
)
from tests.kube_emulator.rbac import ApiCall, rule_allows
from tests.kube_emulator.resources import DEFAULT_RESOURCES, INITIAL_NAMESPACES, ResourceSpec
from tests.kube_emulator.schema import prune_and_default
from tests.kube_emulator.selectors import field_selector_matches, label_selector_matches, parse_field_selector

__all__ = [
    "DEFAULT_RESOURCES",
    "INITIAL_NAMESPACES",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "ApiCall",
    "KubeEmulator",
    "ResourceSpec",
    "field_selector_matches",
    "label_selector_matches",
    "merge_patch",
    "parse_field_selector",
    "prune_and_default",
    "rule_allows",
    "strategic_merge_patch",
    "user_agent_of",
]
