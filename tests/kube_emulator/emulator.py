"""KubeEmulator: `kmock.KubernetesEmulator` with the traps of kmock 0.8 fixed (create, update, patch,
delete, list, watch).

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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
from kmock._internal import apps, parsing
from kmock._internal.rendering import Response

from tests.kube_emulator.errors import api_error, conflict, invalid, not_found
from tests.kube_emulator.names import label_problems, name_problems
from tests.kube_emulator.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    merge_patch,
    strategic_merge_patch,
)
from tests.kube_emulator.rbac import ApiCall
from tests.kube_emulator.resources import DEFAULT_RESOURCES, INITIAL_NAMESPACES, ResourceSpec
from tests.kube_emulator.schema import CrdSchema, prune_and_default
from tests.kube_emulator.selectors import field_selector_matches, label_selector_matches, parse_field_selector

JSON = dict[str, Any]


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
    _schemas: dict[kmock.resource, CrdSchema] = attrs.field(factory=dict, init=False)
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
                self._schemas[spec.key] = CrdSchema.of(copy.deepcopy(schema))

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
            raise api_error(
                404, "NotFound", f"the server could not find the requested resource ({request.subresource})"
            )
        if request.subresource and request.subresource != "status":
            raise api_error(404, "NotFound", f"subresource {request.subresource!r} is not emulated")
        if not spec.namespaced and request.namespace is not None:
            raise api_error(404, "NotFound", f"{spec.plural} is not a namespaced resource")
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
            obj = prune_and_default(obj, schema.openapi, root=True)
        problems = [] if old is not None else name_problems(name, spec.name_rule)
        problems += label_problems(obj["metadata"].get("labels"), "metadata.labels")
        if schema is not None:
            problems += schema.problems(_without(obj, "metadata"))
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
            raise invalid(spec, name, problems)
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
            raise api_error(400, "BadRequest", "the body of the request must be a JSON object")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise api_error(400, "BadRequest", "metadata must be an object")
        for field_name, expected in (("apiVersion", spec.api_version), ("kind", spec.kind)):
            if obj.get(field_name) not in (None, expected):
                raise api_error(
                    400, "BadRequest", f"{field_name} {obj[field_name]!r} does not match {expected!r}"
                )
            obj[field_name] = expected
        if spec.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise api_error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            if namespace is None:
                raise api_error(404, "NotFound", "a namespaced object must be created in a namespace")
            meta["namespace"] = namespace
            if self._current(self._specs[kmock.resource("", "v1", "namespaces")], None, namespace) is None:
                raise api_error(
                    404, "NotFound", f'namespaces "{namespace}" not found', name=namespace, kind="namespaces"
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(spec, "", ["metadata.name: Required value: name or generateName is required"])
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        if meta.get("resourceVersion"):
            raise invalid(
                spec,
                meta["name"],
                ["metadata.resourceVersion: Invalid value: must not be set on objects to be created"],
            )
        name = meta["name"]
        key = self._key(spec, namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            what = f"{spec.plural}.{spec.group}" if spec.group else spec.plural
            raise api_error(
                409, "AlreadyExists", f'{what} "{name}" already exists', name=name, kind=spec.plural
            )
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
            raise api_error(422, "Invalid", "the patched object is not a Kubernetes object")
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
            raise not_found(spec, name)
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
            raise api_error(405, "MethodNotAllowed", "cannot create a subresource here")
        return Response(status=201, payload=self._create(spec, request.namespace, request.data))

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        assert request.name is not None
        obj = self._current(spec, request.namespace, request.name)
        if obj is None:
            raise not_found(spec, request.name)
        return obj

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        assert request.name is not None
        old = self._current(spec, request.namespace, request.name)
        if old is None:
            raise not_found(spec, request.name)
        kind = _content_type(request)
        patch = request.data
        try:
            if kind == JSON_PATCH:
                if not isinstance(patch, list):
                    raise api_error(400, "BadRequest", "a JSON patch must be a list of operations")
                proposed = jsonpatch.apply_patch(old, patch, in_place=False)
            elif kind == MERGE_PATCH:
                if not isinstance(patch, Mapping):
                    raise api_error(400, "BadRequest", "a merge patch must be a JSON object")
                proposed = merge_patch(old, patch)
            elif kind == STRATEGIC_MERGE_PATCH:
                if not spec.builtin:
                    raise api_error(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for "
                        f"custom resources ({spec.plural}.{spec.group}); use a merge patch",
                    )
                if not isinstance(patch, Mapping):
                    raise api_error(400, "BadRequest", "a strategic merge patch must be a JSON object")
                proposed = strategic_merge_patch(old, patch)
            elif kind == APPLY_PATCH:
                raise api_error(
                    415, "UnsupportedMediaType", "server-side apply is not emulated by the test API"
                )
            else:
                raise api_error(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {kind}"
                )
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise invalid(spec, request.name, [f"the patch cannot be applied: {e}"]) from e
        if isinstance(patch, Mapping):
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(
                    spec,
                    request.name,
                    "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                )
        return self._update(spec, request.subresource, old, proposed)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        if request.name is None:
            raise api_error(405, "MethodNotAllowed", "PUT needs an object name")
        old = self._current(spec, request.namespace, request.name)
        if old is None:
            raise not_found(spec, request.name)
        body = request.data
        if not isinstance(body, Mapping) or not isinstance(body.get("metadata"), Mapping):
            raise api_error(400, "BadRequest", "the body of the request must be a Kubernetes object")
        if body["metadata"].get("name") != request.name:
            raise api_error(400, "BadRequest", "the name of the object does not match the name on the URL")
        wanted = body["metadata"].get("resourceVersion")
        if wanted is None and not spec.builtin:
            raise invalid(
                spec,
                request.name,
                ["metadata.resourceVersion: Invalid value: 0: must be specified for an update"],
            )
        if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
            raise conflict(
                spec,
                request.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        return self._update(spec, request.subresource, old, dict(body))

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        assert request.name is not None
        if request.subresource:
            raise api_error(405, "MethodNotAllowed", "cannot delete a subresource")
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
            raise api_error(400, "BadRequest", str(e)) from e
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
