"""kopf handlers: GreenModel -> Deployment + Service + status.

Run with `greenllm run` (or `kopf run -A -m greenllm.controller.handlers`). Nothing happens at import
time beyond registering handlers: clients and settings are built in the start-up handler.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from greenllm.api import v1alpha1 as api
from greenllm.calibration import default_energy_model
from greenllm.controller.config import OperatorConfig
from greenllm.controller.kube import Kube
from greenllm.core import render
from greenllm.core.continuity import carried_decision
from greenllm.core.decision import Decision
from greenllm.core.step import initial_decision

RESOURCE = (api.GROUP, api.VERSION, api.PLURAL)
ANNOTATION_PREFIX = "greenllm.io"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    memo.config = config
    memo.kube = Kube.from_environment()
    memo.energy = default_energy_model()
    logging.getLogger().setLevel(config.log_level.upper())
    # Keep kopf's bookkeeping in annotations: the CRD's status schema is structural and would prune it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    if config.peering_name:
        # Peering is not leader election: replicas need distinct priorities so only the highest acts.
        settings.peering.name = config.peering_name
        settings.peering.priority = config.priority
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _readable(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"spec.{where}: {err['msg']}" if where != "spec" else f"spec: {err['msg']}")
    return "; ".join(parts)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    now = _now()
    generation = meta.get("generation")
    conditions = list(status.get("conditions") or [])
    try:
        model = api.GreenModelSpec.model_validate(dict(spec))
    except ValidationError as e:
        # Not raised: a retry cannot fix a spec; the next edit of the spec triggers this handler again.
        message = _readable(e)
        logger.warning("invalid spec, workloads left as they are: %s", message)
        patch.status["conditions"] = render.set_condition(
            conditions, api.ConditionType.SPEC_VALID, False, "InvalidSpec", message, now, generation
        )
        kopf.warn(body, reason="InvalidSpec", message=message)
        return

    decision = carried_decision(model, status.get("lastDecision")) or initial_decision(model, memo.energy)
    owner = {"metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}}
    kube: Kube = memo.kube
    ready, ready_message = await apply_workloads(kube, owner, model, decision, logger)

    conditions = render.set_condition(
        conditions, api.ConditionType.SPEC_VALID, True, "Valid", "spec accepted", now, generation
    )
    conditions = render.set_condition(
        conditions,
        api.ConditionType.READY,
        ready,
        "Available" if ready else "Progressing",
        ready_message,
        now,
        generation,
    )
    patch.status.update(render.decision_status(decision))
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = conditions
    if not render.same_decision(decision, status.get("lastDecision")):
        patch.status["lastDecision"] = render.decision_record(decision, now)
        kopf.info(body, reason="Decision", message=_event_message(decision))


def _event_message(decision: Decision) -> str:
    return f"{decision.variant} x{decision.replicas} at {decision.setting.label()}: {decision.reason}"


async def apply_workloads(
    kube: Kube, owner: dict[str, Any], spec: api.GreenModelSpec, decision: Decision, logger: kopf.Logger
) -> tuple[bool, str]:
    """Create or patch the Deployment and Service; return (ready, message) from the Deployment."""
    namespace, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
    desired_deploy = render.deployment(owner, spec, decision)
    desired_svc = render.service(owner, spec)
    deploy = await _ensure(kube, desired_deploy, render.deployment_patch, owner, logger)
    await _ensure(kube, desired_svc, render.service_patch, owner, logger)
    ready = (deploy.get("status") or {}).get("readyReplicas") or 0
    want = decision.replicas
    return ready >= want, f"{ready}/{want} replicas ready ({namespace}/{name})"


async def _ensure(
    kube: Kube,
    desired: dict[str, Any],
    patcher: Any,
    owner: dict[str, Any],
    logger: kopf.Logger,
) -> dict[str, Any]:
    kind, meta = desired["kind"], desired["metadata"]
    current = await kube.get(kind, meta["namespace"], meta["name"])
    if current is None:
        logger.info("creating %s %s", kind, meta["name"])
        return await kube.create(desired)
    owners = current.get("metadata", {}).get("ownerReferences") or []
    if not any(o.get("uid") == owner["metadata"]["uid"] for o in owners):
        # Never take over an object someone else made; retrying later lets them rename or delete it.
        raise kopf.TemporaryError(
            f"{kind} {meta['name']} exists and is not owned by this GreenModel", delay=60
        )
    change = patcher(current, desired)
    if change is None:
        return current
    logger.info("patching %s %s: %s", kind, meta["name"], sorted(change.get("spec", {})))
    return await kube.patch(kind, meta["namespace"], meta["name"], change)


@kopf.on.delete(*RESOURCE)
async def cleanup(meta: kopf.Meta, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Delete what we own. Owner references let a real cluster's GC do it too; this makes it immediate."""
    kube: Kube = memo.kube
    name = render.workload_name(meta["name"])
    for kind in ("Deployment", "Service"):
        current = await kube.get(kind, meta["namespace"], name)
        owners = (current or {}).get("metadata", {}).get("ownerReferences") or []
        if any(o.get("uid") == meta["uid"] for o in owners):
            logger.info("deleting %s %s", kind, name)
            await kube.delete(kind, meta["namespace"], name)


@kopf.on.event("apps", "v1", "deployments", labels={render.MODEL_LABEL: kopf.PRESENT})
async def deployment_changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Mirror the Deployment's availability into the owning GreenModel's Ready condition."""
    meta = body.get("metadata", {})
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == api.KIND), None)
    if owner is None or meta.get("deletionTimestamp"):
        return
    kube: Kube = memo.kube
    gm = await kube.get_green_model(meta["namespace"], owner["name"])
    if gm is None or gm["metadata"].get("uid") != owner.get("uid"):
        return
    gm_status = gm.get("status") or {}
    want = (body.get("spec") or {}).get("replicas") or 0
    ready = (body.get("status") or {}).get("readyReplicas") or 0
    is_ready = ready >= want
    conditions = gm_status.get("conditions") or []
    current = next((c for c in conditions if c.get("type") == api.ConditionType.READY.value), None)
    message = f"{ready}/{want} replicas ready ({meta['namespace']}/{meta['name']})"
    if current and current.get("status") == str(is_ready) and current.get("message") == message:
        return
    updated = render.set_condition(
        conditions,
        api.ConditionType.READY,
        is_ready,
        "Available" if is_ready else "Progressing",
        message,
        _now(),
        gm["metadata"].get("generation"),
    )
    await kube.patch_green_model_status(meta["namespace"], owner["name"], {"conditions": updated})
