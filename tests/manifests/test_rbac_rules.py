"""RBAC covers exactly what the code uses: permissions derived here from the source of the operator and the
agent (their kubernetes-client calls and kopf handlers) are compared both ways with the rendered rules."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from chartkit import NAMESPACE, ROOT, SCENARIOS, Request, allowed, objects, permissions
from kubernetes.leaderelection.resourcelock import leaselock

from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api

PACKAGE = ROOT / "operator" / "greenllm"
OPERATOR_SA = (NAMESPACE, "greenllm-operator")
AGENT_SA = (NAMESPACE, "greenllm-agent")

API_GROUPS = {
    "CoreV1Api": "",
    "AppsV1Api": "apps",
    "EventsV1Api": "events.k8s.io",
    "CoordinationV1Api": "coordination.k8s.io",
}
VERBS = {
    "read": "get",
    "get": "get",
    "list": "list",
    "create": "create",
    "patch": "patch",
    "delete": "delete",
    "replace": "update",
}
KOPF_CHANGE_HANDLERS = {"create", "update", "resume", "delete", "field", "timer", "daemon"}
KOPF_WATCH_HANDLERS = {"event", "index"}
KOPF_EVENT_CALLS = {"event", "info", "warn", "exception"}
GREENMODELS = (api.GROUP, api.PLURAL)
# The operator's modules that register kopf handlers (handlers.py imports budgets.py).
KOPF_MODULES = ("handlers.py", "budgets.py")

# (api group, resource[/subresource], verb, scope): scope "cluster" needs a ClusterRoleBinding (cluster-scoped
# resources or requests across all namespaces), "namespace" works with a RoleBinding in that namespace.
Permission = tuple[str, str, str, str]


def _method_permission(api_class: str, method: str, source: str) -> Permission:
    match = re.fullmatch(
        r"(read|get|list|create|patch|replace|delete)_(namespaced_|cluster_)?(\w+?)(_for_all_namespaces)?",
        method,
    )
    assert match, f"unknown kubernetes client method {api_class}.{method}"
    verb, scope_word, kind, all_namespaces = match.groups()
    subresource = ""
    if kind.endswith("_status"):
        kind, subresource = kind.removesuffix("_status"), "status"
    if api_class == "CustomObjectsApi":
        assert kind == "custom_object", method
        # The only custom objects greenllm addresses are its own kinds (group and plural from the API); the
        # plural is read from each call (`custom_plurals`).
        assert "PLURAL" in source and "GROUP" in source
        group, resource = GREENMODELS
    else:
        group, resource = API_GROUPS[api_class], kind.replace("_", "") + "s"
    cluster = scope_word == "cluster_" or all_namespaces is not None
    resource = f"{resource}/{subresource}" if subresource else resource
    return group, resource, VERBS[verb], "cluster" if cluster else "namespace"


def client_calls(path: Path) -> set[Permission]:
    """Permissions for every kubernetes-client API method the module references (called or stored)."""
    source = path.read_text()
    tree = ast.parse(source)
    apis: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr.endswith("Api")
                and isinstance(func.value, ast.Name)
            ):
                for target in node.targets:
                    if isinstance(target, ast.Attribute):
                        apis[target.attr] = func.attr
    found: set[Permission] = set()
    watches = "watch.Watch" in source
    plurals = custom_plurals(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr in apis
            and not node.attr.startswith("_")
            and node.attr != "api_client"
        ):
            permission = _method_permission(apis[node.value.attr], node.attr, source)
            if apis[node.value.attr] == "CustomObjectsApi":
                resources = plurals.get(node.attr)
                assert resources, f"{path.name}: {node.attr} is called with no plural the scan knows"
                for plural in resources:
                    sub = permission[1].partition("/")[2]
                    found.add((permission[0], f"{plural}/{sub}" if sub else plural, *permission[2:]))
            else:
                found.add(permission)
            if watches and permission[2] == "list":
                found.add((permission[0], permission[1], "watch", permission[3]))
    return found


# The plurals of greenllm's own kinds, as the source names them (the agent imports PLURAL bare).
PLURAL_NAMES = {"api.PLURAL": api.PLURAL, "PLURAL": api.PLURAL, "eb.EB_PLURAL": eb.EB_PLURAL}


def custom_plurals(tree: ast.AST) -> dict[str, set[str]]:
    """For each CustomObjectsApi method the module calls (`self._custom.<method>(...)`), the plurals of
    greenllm's kinds among the call's arguments."""
    out: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "_custom"
        ):
            names = {PLURAL_NAMES[ast.unparse(a)] for a in node.args if ast.unparse(a) in PLURAL_NAMES}
            out.setdefault(node.func.attr, set()).update(names)
        elif isinstance(node, ast.Call) and any(
            isinstance(a, ast.Attribute) and isinstance(a.value, ast.Attribute) and a.value.attr == "_custom"
            for a in node.args
        ):
            # self._call(self._custom.<method>, group, version, namespace, plural, ...)
            method = next(
                a.attr
                for a in node.args
                if isinstance(a, ast.Attribute)
                and isinstance(a.value, ast.Attribute)
                and a.value.attr == "_custom"
            )
            names = {PLURAL_NAMES[ast.unparse(a)] for a in node.args if ast.unparse(a) in PLURAL_NAMES}
            out.setdefault(method, set()).update(names)
    return out


def _resolve_resource(args: list[ast.expr], constants: dict[str, tuple[str, ...]]) -> tuple[str, str]:
    values: list[str] = []
    for arg in args:
        if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name):
            values.extend(constants[arg.value.id])
        elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            values.append(arg.value)
    group, _version, plural = values
    return group, plural


def kopf_permissions(path: Path) -> set[Permission]:
    """What kopf does for the handlers the module registers (kopf 1.45 source, see the chart's RBAC notes)."""
    source = path.read_text()
    tree = ast.parse(source)
    constants: dict[str, tuple[str, ...]] = {}
    known = {
        f"(api.GROUP, api.VERSION, {name})": (api.GROUP, api.VERSION, plural)
        for name, plural in PLURAL_NAMES.items()
    }
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and ast.unparse(node.value) in known:
                constants[target.id] = known[ast.unparse(node.value)]
    found: set[Permission] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            name = ast.unparse(decorator.func)
            kind = name.removeprefix("kopf.on.").removeprefix("kopf.")
            if kind in KOPF_CHANGE_HANDLERS | KOPF_WATCH_HANDLERS:
                group, plural = _resolve_resource(list(decorator.args), constants)
                found |= {(group, plural, "list", "cluster"), (group, plural, "watch", "cluster")}
                if kind in KOPF_CHANGE_HANDLERS:
                    # finalizer, progress and diff-base annotations
                    found.add((group, plural, "patch", "namespace"))
                    if "patch.status" in ast.unparse(node):
                        found.add((group, f"{plural}/status", "patch", "namespace"))
    calls = {
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "kopf"
    }
    if calls & KOPF_EVENT_CALLS or found:
        # kopf.info/warn/... and kopf's own handler-outcome events: core/v1 Events.
        found.add(("", "events", "create", "namespace"))
    if "scanning.disabled" not in source:
        # kopf's resource observer watches CRDs to notice resources appearing or going.
        found |= {
            ("apiextensions.k8s.io", "customresourcedefinitions", "list", "cluster"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "watch", "cluster"),
        }
    return found


def operator_requirements(*, namespaced: bool, peering: bool) -> set[Permission]:
    controller = PACKAGE / "controller"
    needed: set[Permission] = set()
    for module in KOPF_MODULES:
        needed |= kopf_permissions(controller / module)
    for path in sorted(controller.glob("*.py")):
        needed |= client_calls(path)
    if namespaced:
        # kopf lists and watches namespaces only when restricted to some (reactor/observation.py).
        needed |= {("", "namespaces", "list", "cluster"), ("", "namespaces", "watch", "cluster")}
    if peering:
        resource = ("kopfpeerings", "namespace") if namespaced else ("clusterkopfpeerings", "cluster")
        needed |= {("kopf.dev", resource[0], verb, resource[1]) for verb in ("list", "watch", "patch")}
    return needed


def leader_election_requirements() -> set[Permission]:
    """What the Lease lock of the kubernetes client's leader election calls (controller/leader.py uses it),
    in the namespace of the Lease: the release's by default."""
    assert "LeaseLock(" in (PACKAGE / "controller" / "leader.py").read_text()
    return client_calls(Path(leaselock.__file__))


def agent_requirements() -> set[Permission]:
    needed: set[Permission] = set()
    for path in sorted((PACKAGE / "agent").glob("*.py")):
        needed |= client_calls(path)
    return needed


def _flatten(granted: set[tuple[str | None, str, str, str]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for _scope, group, resource, verb in granted}


def test_code_scan_finds_the_known_calls() -> None:
    """Guards the scanner itself: a few calls that must be recognised in today's code."""
    operator = operator_requirements(namespaced=False, peering=False)
    assert ("apps", "deployments", "create", "namespace") in operator
    assert (api.GROUP, f"{api.PLURAL}/status", "patch", "namespace") in operator
    assert (api.GROUP, api.PLURAL, "watch", "cluster") in operator
    assert (api.GROUP, f"{eb.EB_PLURAL}/status", "patch", "namespace") in operator
    assert (api.GROUP, eb.EB_PLURAL, "watch", "cluster") in operator
    assert (api.GROUP, f"{api.PLURAL}/status", "get", "namespace") not in operator
    assert leader_election_requirements() == {
        ("coordination.k8s.io", "leases", verb, "namespace") for verb in ("get", "create", "update")
    }
    agent = agent_requirements()
    assert ("", "pods", "list", "cluster") in agent
    assert ("apps", "replicasets", "get", "namespace") in agent
    assert ("", "events", "create", "namespace") in agent


@pytest.mark.parametrize("scenario", ["defaults", "peering"])
def test_cluster_wide_operator_rbac_is_exactly_what_the_code_uses(scenario: str) -> None:
    values = SCENARIOS[scenario]
    needed = operator_requirements(namespaced=False, peering=bool(values.get("operator", {}).get("peering")))
    granted = permissions(objects(values), OPERATOR_SA)
    _assert_lease_grants(values, granted)
    granted = {p for p in granted if p[0] != NAMESPACE}
    assert {scope for scope, *_ in granted} == {None}
    assert _flatten(granted) == {(g, r, v) for g, r, v, _ in needed}


def _assert_lease_grants(values: dict[str, Any], granted: set[tuple[str | None, str, str, str]]) -> None:
    """The Lease's Role: in the release's namespace, exactly the lock's calls, and none with peering."""
    in_release = _flatten({p for p in granted if p[0] == NAMESPACE})
    lease = {(g, r, v) for g, r, v, _ in leader_election_requirements()}
    assert in_release == (set() if values.get("operator", {}).get("peering") else lease)


@pytest.mark.parametrize("scenario", ["namespaced", "peering-namespaced"])
def test_namespaced_operator_rbac_is_exactly_what_the_code_uses(scenario: str) -> None:
    values = SCENARIOS[scenario]
    needed = operator_requirements(namespaced=True, peering=bool(values.get("operator", {}).get("peering")))
    granted = permissions(objects(values), OPERATOR_SA)
    _assert_lease_grants(values, granted)
    granted = {p for p in granted if p[0] != NAMESPACE}
    cluster_needed = {(g, r, v) for g, r, v, scope in needed if scope == "cluster"}
    namespace_needed = {(g, r, v) for g, r, v, scope in needed if scope == "namespace"}
    # kopf watches each served namespace separately, so its list/watch of GreenModels and Deployments is
    # namespaced here; only CRDs and namespaces (cluster-scoped kinds) stay cluster-wide.
    cluster_kinds = {"customresourcedefinitions", "namespaces"}
    namespace_needed |= {(g, r, v) for g, r, v in cluster_needed if r not in cluster_kinds}
    cluster_needed = {(g, r, v) for g, r, v in cluster_needed if r in cluster_kinds}
    assert _flatten({p for p in granted if p[0] is None}) == cluster_needed
    for namespace in values["watchNamespaces"]:
        assert _flatten({p for p in granted if p[0] == namespace}) == namespace_needed
    assert {p[0] for p in granted} == {None, *values["watchNamespaces"]}


@pytest.mark.parametrize("scenario", sorted(s for s in SCENARIOS if s != "agent-disabled"))
def test_agent_rbac_is_exactly_what_the_code_uses(scenario: str) -> None:
    needed = agent_requirements()
    granted = permissions(objects(SCENARIOS[scenario]), AGENT_SA)
    assert {scope for scope, *_ in granted} == {None}
    assert _flatten(granted) == {(g, r, v) for g, r, v, _ in needed}


def test_agent_disabled_has_no_grants() -> None:
    assert permissions(objects(SCENARIOS["agent-disabled"]), AGENT_SA) == set()


DENIED: list[tuple[str, tuple[str, str], Request, dict[str, Any]]] = [
    (
        "agent cannot write GreenModel status (only the operator chooses power settings)",
        AGENT_SA,
        Request("patch", api.GROUP, api.PLURAL, "status", namespace="llm-prod"),
        {},
    ),
    ("agent cannot change pods", AGENT_SA, Request("patch", "", "pods", namespace="llm-prod"), {}),
    ("agent cannot read secrets", AGENT_SA, Request("get", "", "secrets", namespace="llm-prod"), {}),
    ("operator cannot read secrets", OPERATOR_SA, Request("list", "", "secrets"), {}),
    ("operator cannot exec into pods", OPERATOR_SA, Request("create", "", "pods", "exec", namespace="x"), {}),
    (
        "operator cannot update (PUT) deployments",
        OPERATOR_SA,
        Request("update", "apps", "deployments", namespace="x"),
        {},
    ),
    (
        "namespaced operator cannot touch other namespaces",
        OPERATOR_SA,
        Request("patch", "apps", "deployments", namespace="default"),
        SCENARIOS["namespaced"],
    ),
    (
        "namespaced operator cannot list deployments cluster-wide",
        OPERATOR_SA,
        Request("list", "apps", "deployments"),
        SCENARIOS["namespaced"],
    ),
    (
        "no peering access without peering",
        OPERATOR_SA,
        Request("patch", "kopf.dev", "clusterkopfpeerings"),
        {},
    ),
]

ALLOWED: list[tuple[str, tuple[str, str], Request, dict[str, Any]]] = [
    (
        "operator writes status",
        OPERATOR_SA,
        Request("patch", api.GROUP, api.PLURAL, "status", namespace="a"),
        {},
    ),
    ("operator watches GreenModels everywhere", OPERATOR_SA, Request("watch", api.GROUP, api.PLURAL), {}),
    ("agent lists its node's pods", AGENT_SA, Request("list", "", "pods"), {}),
    ("agent reads a ReplicaSet", AGENT_SA, Request("get", "apps", "replicasets", namespace="llm-prod"), {}),
    (
        "namespaced operator creates a Deployment in its namespace",
        OPERATOR_SA,
        Request("create", "apps", "deployments", namespace="llm-staging"),
        SCENARIOS["namespaced"],
    ),
    (
        "peering operator patches its ClusterKopfPeering",
        OPERATOR_SA,
        Request("patch", "kopf.dev", "clusterkopfpeerings", name="greenllm"),
        SCENARIOS["peering"],
    ),
    (
        "namespaced peering operator patches its KopfPeering",
        OPERATOR_SA,
        Request("patch", "kopf.dev", "kopfpeerings", namespace="llm-prod", name="greenllm"),
        SCENARIOS["peering-namespaced"],
    ),
]


@pytest.mark.parametrize(("case", "account", "request_", "values"), DENIED, ids=[c[0] for c in DENIED])
def test_requests_outside_the_design_are_denied(
    case: str, account: tuple[str, str], request_: Request, values: dict[str, Any]
) -> None:
    assert not allowed(objects(values), account, request_), case


@pytest.mark.parametrize(("case", "account", "request_", "values"), ALLOWED, ids=[c[0] for c in ALLOWED])
def test_requests_of_the_design_are_allowed(
    case: str, account: tuple[str, str], request_: Request, values: dict[str, Any]
) -> None:
    assert allowed(objects(values), account, request_), case


def test_request_from_a_recorded_api_call() -> None:
    call = type(
        "Call",
        (),
        {
            "verb": "patch",
            "group": api.GROUP,
            "resource": api.PLURAL,
            "subresource": None,
            "namespace": "a",
            "name": "m",
        },
    )()
    request = Request.from_api_call(call)
    assert request == Request("patch", api.GROUP, api.PLURAL, "", "a", "m")
    assert allowed(objects(), OPERATOR_SA, request) and not allowed(objects(), AGENT_SA, request)
