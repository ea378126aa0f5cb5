"""Helpers for the install-path tests: the chart rendered by Helm's engine, its objects, and RBAC evaluation.

Rendering goes through hack/render_manifests.py, so the tests, deploy/ and the snapshots share one code path.
`allowed()` answers "may this service account make this request?" from rendered Roles, ClusterRoles and
their bindings, the way the API server's RBAC authorizer does (a recorded request log can be checked with it).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load_render_manifests() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "hack" / "render_manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_manifests = _load_render_manifests()
RELEASE: str = render_manifests.RELEASE
NAMESPACE: str = render_manifests.NAMESPACE
SCENARIOS: dict[str, dict[str, Any]] = render_manifests.SCENARIOS


def render(
    values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    rendered: dict[str, str] = render_manifests.render_chart(values, name=name, namespace=namespace)
    return rendered


def objects(values: Mapping[str, Any] | None = None, **kwargs: str) -> list[dict[str, Any]]:
    """Every object the chart renders for these values (templates only; CRDs are in chart_crds())."""
    key = json.dumps(values or {}, sort_keys=True), json.dumps(kwargs, sort_keys=True)
    return copy.deepcopy(_objects(*key))


@functools.cache
def _objects(values: str, kwargs: str) -> list[dict[str, Any]]:
    return parse_stream(render_manifests.manifest_stream(render(json.loads(values), **json.loads(kwargs))))


def parse_stream(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def chart_crds() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((ROOT / "charts" / "greenllm" / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def find(objs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(objs: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in objs)


@dataclass(frozen=True)
class Request:
    """One resource request as the API server's authorizer sees it. namespace None = cluster scope."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None

    @classmethod
    def from_api_call(cls, call: Any) -> Request:
        """From a recorded request with these six attributes (tests/kube_emulator.ApiCall)."""
        return cls(call.verb, call.group, call.resource, call.subresource or "", call.namespace, call.name)


def _rule_matches(rule: Mapping[str, Any], request: Request) -> bool:
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    groups = rule.get("apiGroups") or []
    resources = rule.get("resources") or []
    verbs = rule.get("verbs") or []
    names = rule.get("resourceNames") or []
    return (
        (request.group in groups or "*" in groups)
        and (resource in resources or "*" in resources)
        and (request.verb in verbs or "*" in verbs)
        and (not names or request.name in names)
    )


def _binds(binding: Mapping[str, Any], service_account: tuple[str, str]) -> bool:
    namespace, name = service_account
    return any(
        s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace") == namespace
        for s in binding.get("subjects") or []
    )


def grants(
    objs: Iterable[dict[str, Any]], service_account: tuple[str, str]
) -> list[tuple[str | None, dict[str, Any]]]:
    """(namespace the rule is limited to, None = everywhere; rule) for each rule bound to the account."""
    objs = list(objs)
    cluster_roles = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ClusterRole"}
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "Role"}
    result: list[tuple[str | None, dict[str, Any]]] = []
    for binding in objs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or not _binds(
            binding, service_account
        ):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else None
        role = (
            cluster_roles.get(ref["name"])
            if ref["kind"] == "ClusterRole"
            else roles.get((scope, ref["name"]))
        )
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']} refers to a missing {ref}"
        result.extend((scope, rule) for rule in role.get("rules") or [])
    return result


def allowed(objs: Iterable[dict[str, Any]], service_account: tuple[str, str], request: Request) -> bool:
    return any(
        (scope is None or scope == request.namespace) and _rule_matches(rule, request)
        for scope, rule in grants(objs, service_account)
    )


def permissions(
    objs: Iterable[dict[str, Any]], service_account: tuple[str, str]
) -> set[tuple[str | None, str, str, str]]:
    """Flattened grants: (namespace scope or None, api group, resource[/subresource], verb)."""
    return {
        (scope, group, resource, verb)
        for scope, rule in grants(objs, service_account)
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }
