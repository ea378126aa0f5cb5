"""Decision -> the Deployment and Service that run it. Pure: dicts in, dicts out (the status is
core/status.py's)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from greenllm.api import v1alpha1 as api
from greenllm.core.burst import budget_flags
from greenllm.core.decision import Decision

MODEL_LABEL = "greenllm.io/model"
VARIANT_LABEL = "greenllm.io/variant"
TEMPLATE_HASH_ANNOTATION = "greenllm.io/template-hash"
MANAGED_BY = {"app.kubernetes.io/managed-by": "greenllm"}
CONTAINER_NAME = "server"
PORT_NAME = "http"


# The GreenModel's name names its Service, so it must be a DNS-1035 label (also a valid label value).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63


def name_problem(name: str) -> str | None:
    """Why `name` cannot name the GreenModel's Service and label its pods, or None."""
    if len(name) <= NAME_MAX and re.fullmatch(NAME_PATTERN, name):
        return None
    return (
        f"metadata.name {name!r} cannot name a Service: use at most {NAME_MAX} lowercase letters, digits "
        "and '-', starting with a letter and ending with a letter or digit"
    )


def workload_name(owner_name: str) -> str:
    """Deployment and Service share the GreenModel's name: one of each per GreenModel."""
    return owner_name


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _selector(owner_name: str) -> dict[str, str]:
    # The selector is immutable in a Deployment, so it holds only the model label: changing the variant
    # rolls the pods instead of forcing a delete and re-create.
    return {MODEL_LABEL: owner_name}


def serving_args(variant: api.Variant, token_budget: int | None) -> list[str]:
    """The variant's args, plus the prompt-chunk budget greenllm chose when the variant sets none (it keeps
    a decode step within the TPOT SLO while prompts are chunked: core.burst.token_budget, budget_flags)."""
    return [*variant.args, *budget_flags(variant, token_budget)]


def _pod_template(
    owner_name: str, spec: api.GreenModelSpec, variant: api.Variant, token_budget: int | None = None
) -> dict[str, Any]:
    gpu_count = str(spec.gpus_per_replica(variant))  # a variant may run on more or fewer GPUs
    requests = {**variant.resources.requests, spec.gpu.resource_name: gpu_count}
    limits = {**variant.resources.limits, spec.gpu.resource_name: gpu_count}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": variant.image,
        "args": serving_args(variant, token_budget),
        "env": [{"name": e.name, "value": e.value} for e in variant.env],
        "ports": [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "resources": {"requests": requests, "limits": limits},
        # vLLM's OpenAI server answers /health once the model is loaded.
        "readinessProbe": {"httpGet": {"path": "/health", "port": PORT_NAME}, "periodSeconds": 10},
    }
    return {
        "metadata": {
            "labels": {**_selector(owner_name), VARIANT_LABEL: variant.name, **MANAGED_BY},
            "annotations": {"greenllm.io/precision": variant.precision.value},
        },
        # A serving container needs no Kubernetes API access: no service-account token in the pod.
        "spec": {"automountServiceAccountToken": False, "containers": [container]},
    }


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def deployment(owner: Mapping[str, Any], spec: api.GreenModelSpec, decision: Decision) -> dict[str, Any]:
    name = workload_name(owner["metadata"]["name"])
    template = _pod_template(
        owner["metadata"]["name"], spec, spec.variant(decision.variant), decision.token_budget
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": {MODEL_LABEL: owner["metadata"]["name"], VARIANT_LABEL: decision.variant, **MANAGED_BY},
            "annotations": {TEMPLATE_HASH_ANNOTATION: template_hash(template)},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "replicas": decision.replicas,
            "selector": {"matchLabels": _selector(owner["metadata"]["name"])},
            "template": template,
        },
    }


def deployment_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that turns `current` into `desired`, or None when nothing we own differs."""
    cur_meta = current.get("metadata", {})
    cur_hash = (cur_meta.get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
    want_hash = desired["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    patch: dict[str, Any] = {}
    if cur_hash != want_hash:
        patch = {
            "metadata": {
                "labels": desired["metadata"]["labels"],
                "annotations": desired["metadata"]["annotations"],
            },
            "spec": {"template": desired["spec"]["template"]},
        }
    if current.get("spec", {}).get("replicas") != desired["spec"]["replicas"]:
        patch.setdefault("spec", {})["replicas"] = desired["spec"]["replicas"]
    return patch or None


def service(owner: Mapping[str, Any], spec: api.GreenModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": workload_name(owner["metadata"]["name"]),
            "namespace": owner["metadata"]["namespace"],
            "labels": {MODEL_LABEL: owner["metadata"]["name"], **MANAGED_BY},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(owner["metadata"]["name"]),
            "ports": [{"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def service_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    cur = current.get("spec", {})
    want = desired["spec"]
    if cur.get("selector") == want["selector"] and _ports(cur.get("ports")) == _ports(want["ports"]):
        return None
    return {"spec": {"selector": want["selector"], "ports": want["ports"]}}


def _ports(ports: Sequence[Mapping[str, Any]] | None) -> list[tuple[Any, ...]]:
    return [(p.get("name"), p.get("port"), p.get("targetPort")) for p in ports or []]
