"""A stateful Kubernetes API for tests: `kmock.KubernetesEmulator` with the traps of kmock 0.8 fixed.

kmock serves objects over HTTP (list, watch, get, create, patch, delete, finalizers), but on its own it
breaks kopf and hides bugs a real API server would show. This subclass replaces kmock's object handling
with behaviour checked against the Kubernetes API server (apiserver request handling, registry strategies
and `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go` for the RBAC attributes):

- every write stamps a fresh `metadata.resourceVersion` (one cluster-wide counter, like etcd's revision);
  creates stamp `uid`, `creationTimestamp`, `generation`, fill `kind`/`apiVersion` and the namespace from
  the URL, and honour `generateName` (kopf posts Events with it);
- a write that changes nothing keeps the resourceVersion and emits no watch event;
- `generation` moves when anything but metadata/status changes, and when deletion starts;
- JSON-patch `test` failures and bad paths answer 422 (kopf's finalizer patches rely on it), a stale
  `resourceVersion` in a merge patch or PUT answers 409;
- `status` subresource semantics: the main endpoint ignores `status`, `/status` changes only `status`;
- merge patches follow RFC 7386; strategic-merge patches are merged by the built-in types' patch keys and
  refused (415) for custom resources, as the API server does; server-side apply is refused (415), so a
  client relying on it fails loudly instead of silently;
- `PUT` (update) and `DELETE` on a collection (deletecollection) work;
- `/api/v1/namespaces[/NAME[/status]]` parses (kmock answers 500) and the usual namespaces exist;
  namespaced objects can only be created in an existing namespace (404 otherwise, as in a cluster);
- object names are validated as the API server does (a Service name must be a DNS-1035 label), labels
  too, and a Deployment's selector must match its template and cannot change;
- `labelSelector` and `fieldSelector` work on lists and watches (only the fields the API server supports
  for that resource; others answer 400); a watch honours `resourceVersion` (events after it, without
  re-sending the objects) and `timeoutSeconds`; objects that stop matching a selector arrive as DELETED;
- a registered CRD's openAPIV3Schema is applied like the API server does: unknown fields are pruned,
  defaults filled in, and the structural schema validated (422). CEL `x-kubernetes-validations` rules
  are NOT evaluated: no CEL engine is available here;
- `emulator.hooks` run before each resource request: to force an interleaving of clients or inject errors;
- every served API request is recorded as an `ApiCall` (RBAC verb, group, resource, subresource,
  namespace, name, user agent) in `emulator.api_calls`, for checks against rendered Roles.

Not emulated: garbage collection by ownerReferences, admission webhooks, CEL rules, scale and other
subresources besides status, pagination (`limit` is ignored and everything is returned), watch bookmarks.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import datetime
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import jsonschema
import kmock
from kmock._internal import apps, parsing
from kmock._internal.rendering import Response

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


# ---------------------------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class ResourceSpec:
    """What the discovery API says about one resource, plus how the emulator should treat it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    shortnames: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    builtin: bool = True  # custom resources refuse strategic-merge patches
    generation: bool = False  # whether metadata.generation is maintained
    name_rule: str = "subdomain"  # "subdomain" | "label" (DNS-1123) | "dns1035"
    fields: tuple[str, ...] = ()  # field selectors supported beyond metadata.name/namespace
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        subresources=("status", "finalize"),
        shortnames=("ns",),
        name_rule="label",
        fields=("status.phase",),
    ),
    ResourceSpec(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        subresources=("status",),
        shortnames=("no",),
        fields=("spec.unschedulable",),
    ),
    ResourceSpec(
        "",
        "v1",
        "pods",
        "Pod",
        subresources=("status",),
        shortnames=("po",),
        categories=("all",),
        name_rule="subdomain",
        fields=_POD_FIELDS,
    ),
    ResourceSpec(
        "",
        "v1",
        "services",
        "Service",
        subresources=("status",),
        shortnames=("svc",),
        categories=("all",),
        name_rule="dns1035",
    ),
    ResourceSpec("", "v1", "events", "Event", shortnames=("ev",), fields=_EVENT_FIELDS),
    ResourceSpec(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        subresources=("status",),
        shortnames=("deploy",),
        categories=("all",),
        generation=True,
    ),
    ResourceSpec(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        subresources=("status",),
        shortnames=("rs",),
        categories=("all",),
        generation=True,
        fields=("status.replicas",),
    ),
    ResourceSpec("events.k8s.io", "v1", "events", "Event", shortnames=("ev",)),
    ResourceSpec("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceSpec(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        "ClusterKopfPeering",
        namespaced=False,
        builtin=False,
        generation=True,
    ),
    ResourceSpec("kopf.dev", "v1", "kopfpeerings", "KopfPeering", builtin=False, generation=True),
    ResourceSpec(
        "greenllm.io",
        "v1alpha1",
        "greenmodels",
        "GreenModel",
        subresources=("status",),
        shortnames=("gm",),
        categories=("greenllm",),
        builtin=False,
        generation=True,
    ),
)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApiCall(NamedTuple):
    """One API request as RBAC sees it (the attributes of an authorization check)."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str  # "" for the core group
    resource: str  # plural
    subresource: str | None
    namespace: str | None
    name: str | None
    user_agent: str

    @property
    def rbac_resource(self) -> str:
        """The resource as RBAC rules name it: `pods`, or `greenmodels/status` for a subresource."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def rule_allows(rule: Mapping[str, Any], call: ApiCall) -> bool:
    """Whether one PolicyRule of a Role or ClusterRole allows `call` (the RBAC authorizer's matching:
    `*` wildcards, `resource/subresource` names, `*/subresource`, and resourceNames only for named calls)."""
    if not (set(rule.get("verbs") or ()) & {"*", call.verb}):
        return False
    if not (set(rule.get("apiGroups") or ()) & {"*", call.group}):
        return False
    wanted = call.rbac_resource
    resources = set(rule.get("resources") or ())
    if not (resources & {"*", wanted} or (call.subresource and f"*/{call.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or ()
    return not names or (call.name is not None and call.name in names)


# ---------------------------------------------------------------------------------------------- errors


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    # Non-empty details: kmock would put a Python traceback there (it still does for unexpected errors: 500).
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def _not_found(spec: ResourceSpec, name: str) -> kmock.KubernetesError:
    return _error(
        404,
        "NotFound",
        f'{spec.plural}.{spec.group or "core"} "{name}" not found',
        name=name,
        group=spec.group,
        kind=spec.plural,
    )


def _invalid(spec: ResourceSpec, name: str, causes: Sequence[str]) -> kmock.KubernetesError:
    what = f"{spec.kind}.{spec.group}" if spec.group else spec.kind
    return _error(
        422,
        "Invalid",
        f'{what} "{name}" is invalid: {"; ".join(causes)}',
        name=name,
        group=spec.group,
        kind=spec.kind,
        causes=[{"message": c} for c in causes],
    )


def _conflict(spec: ResourceSpec, name: str, message: str) -> kmock.KubernetesError:
    what = f"{spec.plural}.{spec.group}" if spec.group else spec.plural
    return _error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {what} "{name}": {message}',
        name=name,
        group=spec.group,
        kind=spec.plural,
    )


# ------------------------------------------------------------------------------------------ names and labels

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def name_problems(name: str, rule: str) -> list[str]:
    """The API server's object-name validation (apimachinery/pkg/util/validation)."""
    if rule == "dns1035":
        ok, limit, what = _DNS1035_LABEL.match(name) is not None, 63, "a DNS-1035 label"
    elif rule == "label":
        ok, limit, what = _DNS1123_LABEL.match(name) is not None, 63, "a lowercase RFC 1123 label"
    else:
        ok, limit, what = _DNS1123_SUBDOMAIN.match(name) is not None, 253, "a lowercase RFC 1123 subdomain"
    problems = []
    if not ok:
        problems.append(f"metadata.name: Invalid value: {name!r}: must be {what}")
    if len(name) > limit:
        problems.append(f"metadata.name: Invalid value: {name!r}: must be no more than {limit} characters")
    return problems


def label_problems(labels: Any, where: str) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [f"{where}: Invalid value: must be a map of strings"]
    problems = []
    for key, value in labels.items():
        prefix, _, short = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix))) or not (
            len(short) <= 63 and _LABEL_NAME.match(short)
        ):
            problems.append(f"{where}: Invalid value: {key!r}: name part must be a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"{where}: Invalid value: {value!r}: a valid label must be 63 characters or less")
    return problems


# ---------------------------------------------------------------------------------------------- selectors

_SET_REQ = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector syntax: `a=b,c!=d,e in (f,g),h notin (i),j,!k`. ValueError if malformed."""
    for requirement in _split_requirements(selector):
        if match := _SET_REQ.match(requirement):
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            present = match["key"] in labels and labels[match["key"]] in values
            if present != (match["op"] == "in"):
                return False
        elif match := _EQ_REQ.match(requirement):
            equal = labels.get(match["key"]) == match["value"]
            if equal != (match["op"] != "!="):
                return False
        elif match := _EXISTS_REQ.match(requirement):
            if (match["key"] in labels) == bool(match["neg"]):
                return False
        else:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
    return True


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, Mapping):  # e.g. Event `source`: the API server matches its component
        return str(node.get("component", ""))
    return str(node)


def parse_field_selector(selector: str, allowed: Iterable[str]) -> list[tuple[str, bool, str]]:
    """(path, equal?, value) requirements; ValueError on bad syntax or a field the server does not index."""
    allowed = set(allowed)
    out = []
    for requirement in _split_requirements(selector):
        match = _EQ_REQ.match(requirement)
        if match is None:
            raise ValueError(f"invalid field selector: {requirement!r}")
        if match["key"] not in allowed:
            raise ValueError(f"field label not supported: {match['key']}")
        out.append((match["key"], match["op"] != "!=", match["value"]))
    return out


def field_selector_matches(requirements: Sequence[tuple[str, bool, str]], obj: Mapping[str, Any]) -> bool:
    return all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)


# ---------------------------------------------------------------------------------------------- patches


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


# ---------------------------------------------------------------------------------------------- CRD schemas


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


def _schema_problems(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(_to_json_schema(schema))
    problems = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path) or "<root>"
        problems.append(f"{path}: Invalid value: {error.message}")
    return problems


# ---------------------------------------------------------------------------------------------- the emulator


@dataclass(frozen=True)
class _Event:
    revision: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: JSON
    old: JSON | None = None


@dataclass
class _Watch:
    namespace: str | None
    name: str | None
    labels: str | None
    fields: list[tuple[str, bool, str]] = field(default_factory=list)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content_type(request: kmock.Request) -> str:
    for key, value in request.headers.items():
        if key.lower() == "content-type":
            return value.split(";")[0].strip().lower()
    return ""


def user_agent_of(request: kmock.Request) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == "user-agent"), "")


def _strip_meta(obj: Mapping[str, Any]) -> JSON:
    """An object without the fields the server maintains itself (for no-op detection)."""
    out = copy.deepcopy(dict(obj))
    meta = out.get("metadata") or {}
    meta.pop("resourceVersion", None)
    return out


def _without(obj: Mapping[str, Any], *keys: str) -> JSON:
    return {k: v for k, v in obj.items() if k not in keys}


_NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?$")


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """The Kubernetes API for e2e tests; serve it with `kmock.Server(emulator)` (tests/e2e/conftest.py)."""

    extra_resources: Sequence[ResourceSpec] = ()
    namespaces: Sequence[str] = INITIAL_NAMESPACES

    _specs: dict[kmock.resource, ResourceSpec] = attrs.field(factory=dict, init=False)
    _schemas: dict[kmock.resource, JSON] = attrs.field(factory=dict, init=False)
    _revision: int = attrs.field(default=0, init=False)
    _history: dict[kmock.resource, list[_Event]] = attrs.field(factory=dict, init=False)
    _wakeup: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _api_calls: list[ApiCall] = attrs.field(factory=list, init=False)
    # Awaited in order before each resource request is served: a hook may wait (to force an interleaving
    # between clients) or raise a kmock.KubernetesError (to inject a failure). Tests append and remove them.
    hooks: list[Callable[[kmock.Request], Awaitable[None]]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback[kmock.method.DELETE] << self._serve_delete_collection
        for spec in (*DEFAULT_RESOURCES, *self.extra_resources):
            self.declare(spec)
        for name in self.namespaces:
            self._create(
                self._specs[kmock.resource("", "v1", "namespaces")], None, {"metadata": {"name": name}}
            )

    # ------------------------------------------------------------------------------------------ public API

    def declare(self, spec: ResourceSpec) -> None:
        """Serve one more resource (or re-declare one)."""
        self._specs[spec.key] = spec
        self._history.setdefault(spec.key, [])
        info = self.resources[spec.key]
        info.kind = spec.kind
        info.singular = spec.kind.lower()
        info.namespaced = spec.namespaced
        info.verbs = set(spec.verbs)
        info.shortnames = set(spec.shortnames)
        info.categories = set(spec.categories)
        info.subresources = set(spec.subresources)

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve a CustomResourceDefinition's resource with its schema (pruning, defaults, validation)."""
        crd_spec = crd["spec"]
        names = crd_spec["names"]
        for version in crd_spec["versions"]:
            if not version.get("served", True):
                continue
            spec = ResourceSpec(
                group=crd_spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=crd_spec.get("scope", "Namespaced") == "Namespaced",
                subresources=tuple(sorted((version.get("subresources") or {}).keys())),
                shortnames=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                builtin=False,
                generation=True,
            )
            self.declare(spec)
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema:
                self._schemas[spec.key] = copy.deepcopy(schema)

    @property
    def api_calls(self) -> list[ApiCall]:
        """Every resource request served so far, in order (discovery and /version are not resources)."""
        return list(self._api_calls)

    @property
    def revision(self) -> int:
        return self._revision

    def spec(self, resource: str | kmock.resource) -> ResourceSpec:
        key = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        return self._specs[key]

    def stored(self, resource: str | kmock.resource, namespace: str | None = None) -> list[JSON]:
        """Current objects of a resource (optionally of one namespace), as stored; for assertions."""
        key = self.spec(resource).key
        return [
            obj.raw
            for (res, ns, _), obj in self.objects.items()
            if res == key and not obj.deleted and (namespace is None or ns == namespace)
        ]

    # ------------------------------------------------------------------------------------------ plumbing

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and request.resource is not None and request.resource.group == "":
            payload["groupVersion"] = request.resource.version  # kmock says "/v1" for the core group
        return payload

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        match = _NAMESPACES_PATH.match(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        # kmock's path parser fails on /api/v1/namespaces (500) and reads /namespaces/x as a namespace.
        await raw_request.read()
        try:
            data: Any = await raw_request.json()
        except ValueError:
            data = None
        path = parsing.ParsedPath(
            group="", version="v1", plural="namespaces", name=match["name"], subresource=match["sub"]
        )
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=await raw_request.read(),
            text=await raw_request.text(),
            action=parsing.guess_k8s(path, kmock.method(raw_request.method), dict(raw_request.query)),
            resource=kmock.resource("", "v1", "namespaces"),
            namespace=None,
            name=match["name"],
            subresource=match["sub"],
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as e:
            if self._errors:
                self._errors[-1].append(e)
            return await self._render_error(e)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._record(request)
        if request.resource is not None and request.resource.plural:
            for hook in list(self.hooks):
                await hook(request)
        # Skip KubernetesEmulator._handle: its state changes (no resourceVersion, no status semantics)
        # are replaced by the _serve_* fallbacks below. User-defined reactions still take precedence.
        return await apps.RawHandler._handle(self, request)

    def _record(self, request: kmock.Request) -> None:
        resource = request.resource
        if resource is None or not resource.plural:
            return
        method = str(request.method.value).upper()
        watch = request.params.get("watch") in ("true", "1")
        if method == "GET":
            verb = "watch" if watch else ("get" if request.name else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
            if method == "DELETE":
                verb = "delete" if request.name else "deletecollection"
        if not verb:
            return
        namespace = request.namespace
        if resource.plural == "namespaces" and resource.group == "" and request.name:
            namespace = request.name  # requestinfo.go: a namespace's own requests carry its name as namespace
        self._api_calls.append(
            ApiCall(
                verb,
                resource.group or "",
                resource.plural,
                request.subresource,
                namespace,
                request.name,
                user_agent_of(request),
            )
        )

    def _spec_of(self, request: kmock.Request) -> ResourceSpec:
        resource = request.resource
        if resource is None or resource not in self._specs:
            raise kmock.KubernetesResourceNotFoundError()
        spec = self._specs[resource]
        if request.subresource and request.subresource not in spec.subresources:
            raise _error(
                404, "NotFound", f"the server could not find the requested resource ({request.subresource})"
            )
        if request.subresource and request.subresource != "status":
            raise _error(404, "NotFound", f"subresource {request.subresource!r} is not emulated")
        if not spec.namespaced and request.namespace is not None:
            raise _error(404, "NotFound", f"{spec.plural} is not a namespaced resource")
        return spec

    def _key(
        self, spec: ResourceSpec, namespace: str | None, name: str
    ) -> tuple[kmock.resource, str | None, str]:
        return (spec.key, namespace if spec.namespaced else None, name)

    def _current(self, spec: ResourceSpec, namespace: str | None, name: str) -> JSON | None:
        key = self._key(spec, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _publish(self, spec: ResourceSpec, type_: str, obj: JSON, old: JSON | None = None) -> None:
        self._history[spec.key].append(_Event(self._revision, type_, copy.deepcopy(obj), old))
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    # ------------------------------------------------------------------------------------------ writes
    # All state changes are synchronous (no await): each runs atomically on the event loop.

    def _admit(self, spec: ResourceSpec, obj: JSON, old: JSON | None) -> JSON:
        """Schema pruning/defaulting/validation and the built-in validations; raises 422."""
        name = obj["metadata"]["name"]
        schema = self._schemas.get(spec.key)
        if schema is not None:
            obj = prune_and_default(obj, schema, root=True)
        problems = [] if old is not None else name_problems(name, spec.name_rule)
        problems += label_problems(obj["metadata"].get("labels"), "metadata.labels")
        if schema is not None:
            problems += _schema_problems(_without(obj, "metadata"), schema)
        if spec.key == kmock.resource("apps", "v1", "deployments") or spec.key == kmock.resource(
            "apps", "v1", "replicasets"
        ):
            problems += self._workload_problems(obj, old)
        if old is not None and old["metadata"].get("deletionTimestamp"):
            added = set(obj["metadata"].get("finalizers") or []) - set(
                old["metadata"].get("finalizers") or []
            )
            if added:
                problems.append(
                    f"metadata.finalizers: Forbidden: no new finalizers can be added if the object "
                    f"is being deleted, found new finalizers {sorted(added)}"
                )
        if problems:
            raise _invalid(spec, name, problems)
        return obj

    @staticmethod
    def _workload_problems(obj: JSON, old: JSON | None) -> list[str]:
        spec = obj.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        problems = label_problems(template_labels, "spec.template.metadata.labels")
        if not selector and not (spec.get("selector") or {}).get("matchExpressions"):
            problems.append("spec.selector: Required value")
        elif any(template_labels.get(k) != v for k, v in selector.items()):
            problems.append(
                "spec.template.metadata.labels: Invalid value: selector does not match template labels"
            )
        if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
            problems.append("spec.selector: Invalid value: field is immutable")
        return problems

    def _create(self, spec: ResourceSpec, namespace: str | None, body: Any) -> JSON:
        if not isinstance(body, Mapping):
            raise _error(400, "BadRequest", "the body of the request must be a JSON object")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _error(400, "BadRequest", "metadata must be an object")
        for field_name, expected in (("apiVersion", spec.api_version), ("kind", spec.kind)):
            if obj.get(field_name) not in (None, expected):
                raise _error(
                    400, "BadRequest", f"{field_name} {obj[field_name]!r} does not match {expected!r}"
                )
            obj[field_name] = expected
        if spec.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise _error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            if namespace is None:
                raise _error(404, "NotFound", "a namespaced object must be created in a namespace")
            meta["namespace"] = namespace
            if self._current(self._specs[kmock.resource("", "v1", "namespaces")], None, namespace) is None:
                raise _error(
                    404, "NotFound", f'namespaces "{namespace}" not found', name=namespace, kind="namespaces"
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid(spec, "", ["metadata.name: Required value: name or generateName is required"])
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        if meta.get("resourceVersion"):
            raise _invalid(
                spec,
                meta["name"],
                ["metadata.resourceVersion: Invalid value: must not be set on objects to be created"],
            )
        name = meta["name"]
        key = self._key(spec, namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            what = f"{spec.plural}.{spec.group}" if spec.group else spec.plural
            raise _error(409, "AlreadyExists", f'{what} "{name}" already exists', name=name, kind=spec.plural)
        for server_field in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ):
            meta.pop(server_field, None)
        if spec.has_status:
            obj.pop("status", None)  # status is written through /status only
        obj = self._admit(spec, obj, None)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if spec.generation:
            meta["generation"] = 1
        meta["resourceVersion"] = self._next_revision()
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        self._publish(spec, "ADDED", obj)
        return obj

    def _update(self, spec: ResourceSpec, subresource: str | None, old: JSON, proposed: JSON) -> JSON:
        """Store `proposed` as the next state of `old` (after patch or PUT) with the server's rules."""
        if not isinstance(proposed, dict) or not isinstance(proposed.get("metadata", {}), dict):
            raise _error(422, "Invalid", "the patched object is not a Kubernetes object")
        name = old["metadata"]["name"]
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in proposed:
                new["status"] = proposed["status"]
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(proposed)
            new.setdefault("metadata", {})
            if spec.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta, old_meta = new["metadata"], old["metadata"]
            for fixed in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ):
                if fixed in old_meta:
                    meta[fixed] = old_meta[fixed]
                else:
                    meta.pop(fixed, None)
        new["apiVersion"], new["kind"] = spec.api_version, spec.kind
        new = self._admit(spec, new, old)
        if _strip_meta(new) == _strip_meta(old):
            return old  # a no-op write: same resourceVersion, no event
        if spec.generation and _without(new, "metadata", "status") != _without(old, "metadata", "status"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = self._next_revision()
        key = self._key(spec, new["metadata"].get("namespace"), name)
        self.objects[key].history.append(new)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key].delete()
            self._publish(spec, "DELETED", new, old)
        else:
            self._publish(spec, "MODIFIED", new, old)
        return new

    def _delete(self, spec: ResourceSpec, namespace: str | None, name: str) -> JSON:
        old = self._current(spec, namespace, name)
        if old is None:
            raise _not_found(spec, name)
        meta = old["metadata"]
        if meta.get("deletionTimestamp"):
            return old
        key = self._key(spec, namespace, name)
        new = copy.deepcopy(old)
        new["metadata"]["resourceVersion"] = self._next_revision()
        if meta.get("finalizers"):
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if spec.generation:
                new["metadata"]["generation"] = int(meta.get("generation") or 0) + 1
            self.objects[key].history.append(new)
            self._publish(spec, "MODIFIED", new, old)
        else:
            self.objects[key].delete()
            self._publish(spec, "DELETED", new, old)
        return new

    # ------------------------------------------------------------------------------------------ fallbacks

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        if request.subresource:
            raise _error(405, "MethodNotAllowed", "cannot create a subresource here")
        return Response(status=201, payload=self._create(spec, request.namespace, request.data))

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        assert request.name is not None
        obj = self._current(spec, request.namespace, request.name)
        if obj is None:
            raise _not_found(spec, request.name)
        return obj

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        assert request.name is not None
        old = self._current(spec, request.namespace, request.name)
        if old is None:
            raise _not_found(spec, request.name)
        kind = _content_type(request)
        patch = request.data
        try:
            if kind == JSON_PATCH:
                if not isinstance(patch, list):
                    raise _error(400, "BadRequest", "a JSON patch must be a list of operations")
                proposed = jsonpatch.apply_patch(old, patch, in_place=False)
            elif kind == MERGE_PATCH:
                if not isinstance(patch, Mapping):
                    raise _error(400, "BadRequest", "a merge patch must be a JSON object")
                proposed = merge_patch(old, patch)
            elif kind == STRATEGIC_MERGE_PATCH:
                if not spec.builtin:
                    raise _error(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for "
                        f"custom resources ({spec.plural}.{spec.group}); use a merge patch",
                    )
                if not isinstance(patch, Mapping):
                    raise _error(400, "BadRequest", "a strategic merge patch must be a JSON object")
                proposed = strategic_merge_patch(old, patch)
            elif kind == APPLY_PATCH:
                raise _error(415, "UnsupportedMediaType", "server-side apply is not emulated by the test API")
            else:
                raise _error(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {kind}"
                )
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise _invalid(spec, request.name, [f"the patch cannot be applied: {e}"]) from e
        if isinstance(patch, Mapping):
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
                raise _conflict(
                    spec,
                    request.name,
                    "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                )
        return self._update(spec, request.subresource, old, proposed)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        if request.name is None:
            raise _error(405, "MethodNotAllowed", "PUT needs an object name")
        old = self._current(spec, request.namespace, request.name)
        if old is None:
            raise _not_found(spec, request.name)
        body = request.data
        if not isinstance(body, Mapping) or not isinstance(body.get("metadata"), Mapping):
            raise _error(400, "BadRequest", "the body of the request must be a Kubernetes object")
        if body["metadata"].get("name") != request.name:
            raise _error(400, "BadRequest", "the name of the object does not match the name on the URL")
        wanted = body["metadata"].get("resourceVersion")
        if wanted is None and not spec.builtin:
            raise _invalid(
                spec,
                request.name,
                ["metadata.resourceVersion: Invalid value: 0: must be specified for an update"],
            )
        if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
            raise _conflict(
                spec,
                request.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        return self._update(spec, request.subresource, old, dict(body))

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        assert request.name is not None
        if request.subresource:
            raise _error(405, "MethodNotAllowed", "cannot delete a subresource")
        return self._delete(spec, request.namespace, request.name)

    async def _serve_delete_collection(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        watch = self._watch_filter(spec, request)
        deleted = [
            self._delete(spec, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            for obj in self._matching(spec, watch)
        ]
        return self._list_body(spec, deleted)

    def _watch_filter(self, spec: ResourceSpec, request: kmock.Request) -> _Watch:
        labels = request.params.get("labelSelector") or None
        try:
            if labels:
                label_selector_matches(labels, {})
            fields = parse_field_selector(
                request.params.get("fieldSelector") or "",
                ("metadata.name", "metadata.namespace", *spec.fields),
            )
        except ValueError as e:
            raise _error(400, "BadRequest", str(e)) from e
        return _Watch(namespace=request.namespace, name=request.name, labels=labels, fields=fields)

    def _matches(self, watch: _Watch, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if watch.namespace is not None and meta.get("namespace") != watch.namespace:
            return False
        if watch.name is not None and meta.get("name") != watch.name:
            return False
        if watch.labels and not label_selector_matches(watch.labels, meta.get("labels") or {}):
            return False
        return field_selector_matches(watch.fields, obj)

    def _matching(self, spec: ResourceSpec, watch: _Watch) -> list[JSON]:
        found = [
            obj.raw
            for (res, _, _), obj in self.objects.items()
            if res == spec.key and not obj.deleted and self._matches(watch, obj.raw)
        ]
        found.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return copy.deepcopy(found)

    def _list_body(self, spec: ResourceSpec, items: list[JSON]) -> JSON:
        return {
            "apiVersion": spec.api_version,
            "kind": f"{spec.kind}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": items,
        }

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        return self._list_body(spec, self._matching(spec, self._watch_filter(spec, request)))

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        spec = self._spec_of(request)  # errors before the first chunk become proper HTTP errors
        watch = self._watch_filter(spec, request)
        timeout = request.params.get("timeoutSeconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(timeout) if timeout else None
        since = request.params.get("resourceVersion") or ""
        yield b""  # send the headers now: clients wait for them before the first event
        history = self._history[spec.key]
        if since.isdigit() and int(since) > 0:
            index = bisect.bisect_right([e.revision for e in history], int(since))
        else:
            index = len(history)
            for obj in self._matching(spec, watch):
                yield {"type": "ADDED", "object": obj}
        while True:
            while index < len(history):
                event = history[index]
                index += 1
                out = self._translate(watch, event)
                if out is not None:
                    yield out
            wakeup = self._wakeup
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                await asyncio.wait_for(wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _translate(self, watch: _Watch, event: _Event) -> JSON | None:
        """The event as a watcher with selectors sees it: leaving the selection is a DELETED event."""
        now = self._matches(watch, event.obj)
        before = event.old is not None and self._matches(watch, event.old)
        if event.type == "MODIFIED":
            if now and before:
                kind = "MODIFIED"
            elif now:
                kind = "ADDED"
            elif before:
                kind = "DELETED"
            else:
                return None
        elif now:
            kind = event.type
        else:
            return None
        return {"type": kind, "object": copy.deepcopy(event.obj)}


__all__ = [
    "DEFAULT_RESOURCES",
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
