"""The harness itself: the emulator behaves like an API server where kopf and our tests depend on it, and a
throwaway kopf operator runs against it end to end (create -> handler -> status; finalizer -> delete)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import kopf
import kubernetes
import pytest
from kopf._core.engines.activities import ActivityError

from tests.e2e.conftest import CLIENT_USER_AGENT, ApiError, KubeClient, OperatorFactory, wait_for
from tests.kube_emulator import (
    JSON_PATCH,
    STRATEGIC_MERGE_PATCH,
    ApiCall,
    KubeEmulator,
    ResourceSpec,
    label_selector_matches,
    parse_field_selector,
    rule_allows,
    user_agent_of,
)

pytestmark = pytest.mark.e2e

NS = "harness"
EXAMPLES = "kopf.dev/v1/kopfexamples"
EXAMPLE_SPEC = ResourceSpec(
    "kopf.dev", "v1", "kopfexamples", "KopfExample", subresources=("status",), builtin=False, generation=True
)


@pytest.fixture
async def ns(client: KubeClient) -> str:
    await client.ensure_namespace(NS)
    return NS


def _pod(name: str, labels: dict[str, str] | None = None, node: str = "node-a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
    }


def _deployment(name: str, image: str = "img:1") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]},
                        {"name": "side", "image": "side:1"},
                    ]
                },
            },
        },
    }


def _green_model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "GreenModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"name": "llama"},
            "variants": [{"name": "bf16", "precision": "bf16", "image": "vllm:1"}],
            **spec,
        },
    }


# ---------------------------------------------------------------------------------------------- metadata


async def test_create_stamps_server_fields_and_fills_namespace(client: KubeClient, ns: str) -> None:
    body = _pod("p1")
    del body["metadata"]["namespace"]  # the URL says where: the server fills it in
    del body["kind"]
    created = await client.create("v1/pods", body, namespace=ns)
    meta = created["metadata"]
    assert meta["namespace"] == ns
    assert created["kind"] == "Pod" and created["apiVersion"] == "v1"
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0

    other = await client.create("v1/pods", _pod("p2"))
    assert other["metadata"]["uid"] != meta["uid"]
    assert int(other["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


async def test_generate_name_and_conflicts(client: KubeClient, ns: str) -> None:
    one = await client.create("v1/events", {"metadata": {"generateName": "kopf-event-", "namespace": ns}})
    two = await client.create("v1/events", {"metadata": {"generateName": "kopf-event-", "namespace": ns}})
    assert one["metadata"]["name"].startswith("kopf-event-")
    assert one["metadata"]["name"] != two["metadata"]["name"]

    await client.create("v1/pods", _pod("dup"))
    with pytest.raises(ApiError) as err:
        await client.create("v1/pods", _pod("dup"))
    assert err.value.status == 409


async def test_namespaces_are_served_and_required(client: KubeClient) -> None:
    names = {n["metadata"]["name"] for n in await client.list("v1/namespaces")}
    assert {"default", "kube-system"} <= names
    with pytest.raises(ApiError) as err:
        await client.create("v1/pods", {**_pod("p"), "metadata": {"name": "p", "namespace": "absent"}})
    assert err.value.status == 404
    await client.ensure_namespace("absent")
    assert (await client.get("v1/namespaces", "absent")) is not None
    with pytest.raises(ApiError) as err:  # the body's namespace must agree with the URL's
        await client.create("v1/pods", _pod("p"), namespace="absent")
    assert err.value.status == 400
    pod = {**_pod("p"), "metadata": {"name": "p"}}
    assert (await client.create("v1/pods", pod, namespace="absent"))["metadata"]["namespace"] == "absent"


async def test_names_and_labels_are_validated(client: KubeClient, ns: str) -> None:
    service = {"metadata": {"name": "7b-model", "namespace": ns}, "spec": {"ports": [{"port": 80}]}}
    with pytest.raises(ApiError) as err:  # a Service name is a DNS-1035 label: it cannot start with a digit
        await client.create("v1/services", service)
    assert err.value.status == 422 and "DNS-1035" in err.value.body["message"]
    assert (await client.create("apps/v1/deployments", _deployment("7b-model")))["metadata"][
        "name"
    ] == "7b-model"
    with pytest.raises(ApiError) as err:
        await client.create("v1/pods", _pod("bad-label", labels={"a": "not a valid value"}))
    assert err.value.status == 422


async def test_merge_patch_bumps_resource_version_and_noop_does_not(client: KubeClient, ns: str) -> None:
    created = await client.create("v1/pods", _pod("p", labels={"a": "1"}))
    rv = created["metadata"]["resourceVersion"]
    patched = await client.patch("v1/pods", "p", {"metadata": {"labels": {"a": "2", "b": "x"}}}, ns)
    assert patched["metadata"]["labels"] == {"a": "2", "b": "x"}
    assert int(patched["metadata"]["resourceVersion"]) > int(rv)
    same = await client.patch("v1/pods", "p", {"metadata": {"labels": {"a": "2"}}}, ns)
    assert same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    removed = await client.patch("v1/pods", "p", {"metadata": {"labels": {"b": None}}}, ns)
    assert removed["metadata"]["labels"] == {"a": "2"}
    untouched = await client.patch("v1/pods", "p", {"metadata": {"uid": "forged", "name": "other"}}, ns)
    assert untouched["metadata"]["uid"] == created["metadata"]["uid"]
    assert untouched["metadata"]["name"] == "p"


async def test_json_patch_test_failure_is_422_and_stale_version_is_409(client: KubeClient, ns: str) -> None:
    created = await client.create("v1/pods", _pod("p"))
    rv = created["metadata"]["resourceVersion"]
    ok = await client.patch(
        "v1/pods",
        "p",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
        ],
        ns,
        content_type=JSON_PATCH,
    )
    assert ok["metadata"]["finalizers"] == ["x/y"]
    for bad in (
        [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}],  # rv moved on: kopf's conflict
        [{"op": "remove", "path": "/spec/absent"}],
    ):
        with pytest.raises(ApiError) as err:
            await client.patch("v1/pods", "p", bad, ns, content_type=JSON_PATCH)
        assert err.value.status == 422
    with pytest.raises(ApiError) as err:
        await client.patch("v1/pods", "p", {"metadata": {"resourceVersion": rv, "labels": {"a": "b"}}}, ns)
    assert err.value.status == 409


async def test_status_subresource_semantics_and_generation(client: KubeClient, ns: str) -> None:
    created = await client.create(
        "greenllm.io/v1alpha1/greenmodels", {**_green_model("gm"), "status": {"x": 1}}
    )
    assert "status" not in created  # status is not written on create
    assert created["metadata"]["generation"] == 1
    main = await client.patch("greenllm.io/v1alpha1/greenmodels", "gm", {"status": {"variant": "bf16"}}, ns)
    assert "status" not in main  # the main endpoint ignores status
    status = await client.patch_status("greenllm.io/v1alpha1/greenmodels", "gm", {"variant": "bf16"}, ns)
    assert status["status"]["variant"] == "bf16"
    assert status["metadata"]["generation"] == 1  # status and metadata do not move the generation
    only_status = await client.patch(
        "greenllm.io/v1alpha1/greenmodels",
        "gm",
        {"spec": {"port": 9000}, "status": {"replicas": 2}},
        ns,
        subresource="status",
    )
    assert only_status["spec"]["port"] == 8000 and only_status["status"]["replicas"] == 2
    spec = await client.patch("greenllm.io/v1alpha1/greenmodels", "gm", {"spec": {"port": 9000}}, ns)
    assert spec["metadata"]["generation"] == 2 and spec["status"]["variant"] == "bf16"


async def test_crd_schema_prunes_defaults_and_validates(client: KubeClient, ns: str) -> None:
    created = await client.create(
        "greenllm.io/v1alpha1/greenmodels",
        {**_green_model("gm"), "spec": {**_green_model("gm")["spec"], "unknown": 1}},
    )
    assert "unknown" not in created["spec"]  # pruned: not in the structural schema
    assert created["spec"]["port"] == 8000  # defaulted from the schema
    assert created["spec"]["replicas"] == {"min": 1, "max": 4}
    status = await client.patch_status(
        "greenllm.io/v1alpha1/greenmodels",
        "gm",
        {"variant": "bf16", "bogus": {"x": 1}, "controllerState": {"any": 1}},
        ns,
    )
    assert "bogus" not in status["status"]
    assert status["status"]["controllerState"] == {"any": 1}  # x-kubernetes-preserve-unknown-fields
    with pytest.raises(ApiError) as err:
        await client.create("greenllm.io/v1alpha1/greenmodels", _green_model("bad", replicas={"min": -1}))
    assert err.value.status == 422 and "spec.replicas.min" in err.value.body["message"]
    with pytest.raises(ApiError) as err:
        await client.create(
            "greenllm.io/v1alpha1/greenmodels", {"metadata": {"name": "nospec", "namespace": ns}}
        )
    assert err.value.status == 422


async def test_deployment_selector_must_match_and_is_immutable(client: KubeClient, ns: str) -> None:
    bad = _deployment("d")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiError) as err:
        await client.create("apps/v1/deployments", bad)
    assert err.value.status == 422 and "selector does not match" in err.value.body["message"]
    await client.create("apps/v1/deployments", _deployment("d"))
    with pytest.raises(ApiError) as err:
        await client.patch(
            "apps/v1/deployments",
            "d",
            {
                "spec": {
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": {"metadata": {"labels": {"app": "x"}}},
                }
            },
            ns,
        )
    assert err.value.status == 422 and "immutable" in err.value.body["message"]


async def test_strategic_merge_patch_merges_by_key_and_is_refused_for_custom(
    client: KubeClient, ns: str
) -> None:
    await client.create("apps/v1/deployments", _deployment("d"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "img:2"}]}}}}
    smp = await client.patch("apps/v1/deployments", "d", patch, ns, content_type=STRATEGIC_MERGE_PATCH)
    containers = smp["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("main", "img:2"), ("side", "side:1")]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}]  # kept: merged by name, not replaced
    assert smp["metadata"]["generation"] == 2
    merge = await client.patch("apps/v1/deployments", "d", patch, ns)  # a merge patch replaces the list
    assert [c["name"] for c in merge["spec"]["template"]["spec"]["containers"]] == ["main"]

    await client.create("greenllm.io/v1alpha1/greenmodels", _green_model("gm"))
    with pytest.raises(ApiError) as err:
        await client.patch(
            "greenllm.io/v1alpha1/greenmodels",
            "gm",
            {"spec": {"port": 1}},
            ns,
            content_type=STRATEGIC_MERGE_PATCH,
        )
    assert err.value.status == 415


async def test_finalizers_block_deletion_until_removed(client: KubeClient, ns: str) -> None:
    await client.create(
        "v1/pods", {**_pod("p"), "metadata": {**_pod("p")["metadata"], "finalizers": ["x/y"]}}
    )
    deleting = await client.delete("v1/pods", "p", ns)
    assert deleting["metadata"]["deletionTimestamp"]
    assert (await client.get("v1/pods", "p", ns)) is not None
    with pytest.raises(ApiError) as err:
        await client.patch("v1/pods", "p", {"metadata": {"finalizers": ["x/y", "new/one"]}}, ns)
    assert err.value.status == 422
    await client.patch("v1/pods", "p", {"metadata": {"finalizers": None}}, ns)
    assert (await client.get("v1/pods", "p", ns)) is None
    with pytest.raises(ApiError) as err:
        await client.delete("v1/pods", "p", ns)
    assert err.value.status == 404


async def test_put_replaces_with_optimistic_concurrency(client: KubeClient, ns: str) -> None:
    created = await client.create("v1/pods", _pod("p", labels={"a": "1"}))
    body = {**created, "metadata": {**created["metadata"], "labels": {"b": "2"}}}
    replaced = await client._request("PUT", client.url("v1/pods", ns, "p"), json=body)
    assert replaced["metadata"]["labels"] == {"b": "2"}
    with pytest.raises(ApiError) as err:  # the same resourceVersion again: stale now
        await client._request("PUT", client.url("v1/pods", ns, "p"), json=body)
    assert err.value.status == 409


# ---------------------------------------------------------------------------------------------- selectors


def test_label_selector_syntax() -> None:
    labels = {"app": "x", "tier": "web"}
    assert label_selector_matches("app=x,tier in (web, db)", labels)
    assert label_selector_matches("app==x,!missing,tier,env notin (prod)", labels)
    assert not label_selector_matches("app!=x", labels)
    assert not label_selector_matches("tier notin (web)", labels)
    assert not label_selector_matches("missing", labels)
    with pytest.raises(ValueError):
        label_selector_matches("app in x", labels)
    with pytest.raises(ValueError):
        parse_field_selector("spec.unknown=1", ["metadata.name"])


async def test_list_with_selectors(client: KubeClient, ns: str) -> None:
    await client.create("v1/pods", _pod("a", {"greenllm.io/model": "m1"}, node="node-a"))
    await client.create("v1/pods", _pod("b", {"greenllm.io/model": "m2"}, node="node-b"))
    await client.create("v1/pods", _pod("c", {}, node="node-a"))
    by_node = await client.list("v1/pods", field_selector="spec.nodeName=node-a")
    assert [p["metadata"]["name"] for p in by_node] == ["a", "c"]
    by_label = await client.list("v1/pods", ns, label_selector="greenllm.io/model")
    assert [p["metadata"]["name"] for p in by_label] == ["a", "b"]
    both = await client.list(
        "v1/pods", label_selector="greenllm.io/model", field_selector="spec.nodeName=node-a"
    )
    assert [p["metadata"]["name"] for p in both] == ["a"]
    with pytest.raises(ApiError) as err:
        await client.list("v1/pods", field_selector="spec.containers=x")
    assert err.value.status == 400


# ---------------------------------------------------------------------------------------------- watch


async def _watch(kube_url: str, path: str, params: dict[str, str], count: int) -> list[tuple[str, str]]:
    """The first `count` events of a watch, as (type, name)."""
    events: list[tuple[str, str]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.get(kube_url + path, params={"watch": "true", **params}) as response,
    ):
        assert response.status == 200
        async for line in response.content:
            if line.strip():
                event = json.loads(line)
                events.append((event["type"], event["object"]["metadata"]["name"]))
            if len(events) >= count:
                break
    return events


async def test_watch_from_resource_version_and_selector_transitions(
    client: KubeClient, kube_url: str, ns: str
) -> None:
    await client.create("v1/pods", _pod("before", {"pick": "yes"}))
    since = (await client._request("GET", client.url("v1/pods", ns)))["metadata"]["resourceVersion"]
    path = client.url("v1/pods", ns)
    watcher = asyncio.create_task(
        _watch(kube_url, path, {"resourceVersion": since, "labelSelector": "pick=yes"}, 4)
    )
    await client.create("v1/pods", _pod("after", {"pick": "yes"}))
    await client.create("v1/pods", _pod("ignored", {"pick": "no"}))
    await client.patch(
        "v1/pods", "ignored", {"metadata": {"labels": {"pick": "yes"}}}, ns
    )  # enters the selection
    await client.patch("v1/pods", "after", {"metadata": {"labels": {"pick": "no"}}}, ns)  # leaves it
    await client.delete("v1/pods", "before", ns)
    events = await asyncio.wait_for(watcher, 30)
    # "before" existed at `since`: not re-sent. Leaving the selection reads as DELETED, entering as ADDED.
    assert events == [("ADDED", "after"), ("ADDED", "ignored"), ("DELETED", "after"), ("DELETED", "before")]


async def test_watch_without_version_lists_first_and_times_out(
    client: KubeClient, kube_url: str, ns: str
) -> None:
    await client.create("v1/pods", _pod("existing"))
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            kube_url + client.url("v1/pods", ns), params={"watch": "true", "timeoutSeconds": "1"}
        ) as response,
    ):
        body = await response.text()  # ends by itself: the server closes the stream after timeoutSeconds
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "existing")]


# ---------------------------------------------------------------------------------------------- recording


async def test_requests_are_recorded_as_rbac_attributes(
    client: KubeClient, kube: KubeEmulator, ns: str
) -> None:
    start = len(kube.api_calls)
    await client.create("v1/pods", _pod("p"))
    await client.get("v1/pods", "p", ns)
    await client.list("v1/pods")
    await client.patch_status("v1/pods", "p", {"phase": "Running"}, ns)
    await client.delete("v1/pods", "p", ns)
    await client.get("v1/namespaces", ns)
    calls = kube.api_calls[start:]
    assert calls == [
        ApiCall("create", "", "pods", None, ns, None, CLIENT_USER_AGENT),
        ApiCall("get", "", "pods", None, ns, "p", CLIENT_USER_AGENT),
        ApiCall("list", "", "pods", None, None, None, CLIENT_USER_AGENT),
        ApiCall("patch", "", "pods", "status", ns, "p", CLIENT_USER_AGENT),
        ApiCall("delete", "", "pods", None, ns, "p", CLIENT_USER_AGENT),
        ApiCall("get", "", "namespaces", None, ns, ns, CLIENT_USER_AGENT),
    ]


async def test_kubernetes_client_reaches_the_emulator_through_the_kubeconfig(
    kube: KubeEmulator, kubeconfig: Any, ns: str
) -> None:
    def make() -> str:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        api: Any = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient())
        created = api.create_namespaced_deployment(ns, _deployment("from-client"))  # dicts are accepted
        return str(created.metadata.uid)

    uid = await asyncio.to_thread(make)
    assert [d["metadata"]["uid"] for d in kube.stored("apps/v1/deployments", ns)] == [uid]
    assert any(c.verb == "create" and c.user_agent.startswith("OpenAPI-Generator") for c in kube.api_calls)


# ------------------------------------------------------------------------------------------- a kopf operator


class Recorder:
    """What the throwaway operator's handlers saw; they run in the operator's thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []

    def add(self, what: str, name: str) -> None:
        with self.lock:
            self.calls.append((what, name))

    def count(self, what: str, name: str) -> int:
        with self.lock:
            return self.calls.count((what, name))


def _throwaway_registry(recorder: Recorder) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(*EXAMPLES.split("/"), registry=registry)
    def created(name: str, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        recorder.add("create", name)
        patch.status["phase"] = "Created"
        patch.status["size"] = spec.get("size")

    @kopf.on.resume(*EXAMPLES.split("/"), registry=registry)
    def resumed(name: str, **_: Any) -> None:
        recorder.add("resume", name)

    @kopf.on.delete(*EXAMPLES.split("/"), registry=registry)
    def deleted(name: str, **_: Any) -> None:
        recorder.add("delete", name)

    return registry


@pytest.fixture
async def examples(kube: KubeEmulator) -> AsyncIterator[str]:
    kube.declare(EXAMPLE_SPEC)
    yield EXAMPLES


async def test_throwaway_operator_create_status_finalizer_delete(
    kube: KubeEmulator, client: KubeClient, operator_factory: OperatorFactory, examples: str, ns: str
) -> None:
    recorder = Recorder()
    operator = operator_factory(registry=_throwaway_registry(recorder))
    await operator.start()
    await operator.wait_watching("kopfexamples")

    await client.create(examples, {"metadata": {"name": "ex", "namespace": ns}, "spec": {"size": 3}})

    async def created() -> dict[str, Any] | None:
        current = await client.get(examples, "ex", ns)
        return current if current and (current.get("status") or {}).get("phase") == "Created" else None

    current = await wait_for(created, message="the create handler's status")
    assert current["status"]["size"] == 3
    assert current["metadata"].get("finalizers") == ["kopf.zalando.org/KopfFinalizerMarker"]
    assert recorder.count("create", "ex") == 1

    await client.delete(examples, "ex", ns)

    async def gone() -> bool:
        return await client.get(examples, "ex", ns) is None

    await wait_for(gone, message="the object to be deleted once the finalizer is released")
    assert recorder.count("delete", "ex") == 1
    kopf_calls = [c for c in kube.api_calls if c.user_agent.startswith("kopf")]
    assert any(c.verb == "patch" and c.subresource == "status" and c.name == "ex" for c in kopf_calls)
    await operator.stop()
    assert operator.runs[-1].exit_code == 0


async def test_operator_restarts_within_a_test(
    kube: KubeEmulator, client: KubeClient, operator_factory: OperatorFactory, examples: str, ns: str
) -> None:
    recorder = Recorder()
    operator = operator_factory(registry=_throwaway_registry(recorder))
    async with operator:
        await operator.wait_watching("kopfexamples")
        await client.create(examples, {"metadata": {"name": "ex", "namespace": ns}, "spec": {"size": 1}})
        await wait_for(lambda: recorder.count("create", "ex") == 1, message="the create handler")
        mark = len(kube.api_calls)
        await operator.restart()
        await operator.wait_watching("kopfexamples", since=mark)
        await wait_for(
            lambda: recorder.count("resume", "ex") >= 1, message="the resume handler after restart"
        )
    assert recorder.count("create", "ex") == 1  # a restart resumes; it does not create again
    assert len(operator.runs) == 2 and all(run.exit_code == 0 for run in operator.runs)


async def test_an_operator_that_dies_is_reported_at_once(operator_factory: OperatorFactory) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def broken(**_: Any) -> None:
        raise kopf.PermanentError("broken on purpose")

    operator = operator_factory(registry=registry)
    await operator.start()
    with pytest.raises(AssertionError, match="the operator exited while running"):
        await operator.wait_watching("kopfexamples")
    with pytest.raises(ActivityError) as error:  # KopfRunner re-raises what ended the operator
        await operator.stop()
    assert isinstance(error.value.__cause__, kopf.PermanentError)


async def test_hooks_can_hold_requests_and_inject_errors(
    kube: KubeEmulator, client: KubeClient, ns: str
) -> None:
    release = asyncio.Event()
    order: list[str] = []

    async def hold_creates(request: kmock.Request) -> None:
        if request.method == kmock.method.POST and user_agent_of(request) == CLIENT_USER_AGENT:
            await release.wait()
            order.append("create")

    async def fail_gets(request: kmock.Request) -> None:
        if request.method == kmock.method.GET and request.name == "broken":
            raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="injected")

    kube.hooks += [hold_creates, fail_gets]
    creating = asyncio.create_task(client.create("v1/pods", _pod("held")))
    await client.list("v1/pods", ns)  # served while the create is held
    order.append("list")
    release.set()
    await creating
    assert order == ["list", "create"]
    with pytest.raises(ApiError) as err:
        await client.get("v1/pods", "broken", ns)
    assert err.value.status == 503


def test_rbac_rule_matching() -> None:
    status = ApiCall("patch", "greenllm.io", "greenmodels", "status", "ns", "gm", "kopf")
    listing = ApiCall("list", "apps", "deployments", None, None, None, "kopf")
    named = ApiCall("get", "", "pods", None, "ns", "p1", "agent")
    assert status.rbac_resource == "greenmodels/status"
    assert rule_allows(
        {"apiGroups": ["greenllm.io"], "resources": ["greenmodels/status"], "verbs": ["patch"]}, status
    )
    assert not rule_allows(
        {"apiGroups": ["greenllm.io"], "resources": ["greenmodels"], "verbs": ["patch"]}, status
    )  # the main resource does not grant its status subresource
    assert rule_allows({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}, status)
    assert rule_allows(
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]}, listing
    )
    assert not rule_allows({"apiGroups": [""], "resources": ["deployments"], "verbs": ["list"]}, listing)
    assert not rule_allows(
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"], "resourceNames": ["x"]},
        listing,
    )  # resourceNames never allow a list
    assert rule_allows(
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["p1"]}, named
    )
    assert not rule_allows(
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["p2"]}, named
    )
