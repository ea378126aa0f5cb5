"""kopf handlers: GreenModel -> Deployment + Service + status.

Run with `greenllm run` (or `kopf run -A -m greenllm.controller.handlers`). Nothing happens at import
time beyond registering handlers: clients and settings are built in the start-up handler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from greenllm.api import v1alpha1 as api
from greenllm.calibration import default_energy_model
from greenllm.controller import budgets, fleet_observer, leader, peering, prometheus, trust
from greenllm.controller.config import OperatorConfig
from greenllm.controller.diffbase import StatusFreeDiffBaseStorage
from greenllm.controller.exporter import OperatorMetrics
from greenllm.controller.fleet_loop import NOT_RECONCILED, FleetLoop, Tracked
from greenllm.controller.kube import Kube, RateLimit
from greenllm.controller.memo import OperatorMemo
from greenllm.core import render
from greenllm.core import status as st
from greenllm.core.continuity import adopt_deployed, carried_decision
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting
from greenllm.core.step import LoopState, initial_decision, initial_state
from greenllm.loop import promql
from greenllm.loop.tick import MetricsVerdict, Notice, loop_status, stamp
from greenllm.loop.tick import tick as loop_tick

RESOURCE = (api.GROUP, api.VERSION, api.PLURAL)
ANNOTATION_PREFIX = "greenllm.io"
REPORTING_COMPONENT = "greenllm"


def _now() -> str:
    return stamp(time.time())


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    memo.config = config
    if "telemetry" not in memo:
        memo.telemetry = OperatorMetrics()
        memo.telemetry.serve(config.metrics_port)
    telemetry: OperatorMetrics = memo.telemetry
    memo.kube = Kube.from_environment(
        RateLimit(config.kube_qps, config.kube_burst, telemetry.kube_throttled.inc),
        connections=config.io_threads,
    )
    memo.energy = default_energy_model()
    # Shared by every GreenModel: kopf hands each resource a shallow copy of this memo, so these dicts
    # must exist here (a key added to one resource's copy would be that resource's alone).
    memo.prometheus = {}  # URL -> promql.Query, built on first use
    memo.fleet = {}  # URL -> fleet_observer.FleetObserver: one per Prometheus, for every GreenModel
    # Every tick holds a thread for its Prometheus queries, and Kubernetes calls share the pool: the
    # default (min(32, cores + 4)) made ticks queue behind each other at a few hundred GreenModels.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=config.io_threads))
    logging.getLogger().setLevel(config.log_level.upper())
    # Events say who posted them: `kubectl describe gm` shows this component in its "From" column.
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = os.environ.get("HOSTNAME") or REPORTING_COMPONENT
    # Keep kopf's bookkeeping in annotations: the CRD's status schema is structural and would prune it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = StatusFreeDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    if config.peering_name:
        # Peering is not leader election: replicas need distinct priorities so only the highest acts.
        settings.peering.name = config.peering_name
        settings.peering.priority = config.priority
        settings.peering.lifetime = config.peering_lifetime_s
        settings.peering.standalone = False
        # kopf's pause stops its handlers, not the fleet loop: it follows the peering objects itself.
        memo.peering = peering.PeeringWatch(config.peering_name, config.priority, config.namespaces)
        memo.peering.start()
    else:
        settings.peering.standalone = True
    if config.elects_leader:
        await _lead(config, memo)
    # One task ticks every GreenModel (controller/fleet_loop.py); the watch feeds it (`track`).
    # Ticks in flight: one per I/O thread. More did not help where the process is short of CPU and cost
    # memory: at 8 per thread the N = 5,000 benchmark ticked every 115 s instead of 124 s, at 663 MB
    # instead of 445 MB, and N = 1,000 peaked at 210 MB instead of 187 MB (hack/bench_operator.py).
    memo.loop = FleetLoop(
        lambda tracked: autoscale(memo, tracked),
        concurrency=config.io_threads,
        acting=lambda: _acting(memo),
        started=telemetry.loop_lag.observe,
    )
    telemetry.ticks_in_flight.set_function(lambda: memo.loop.in_flight)


async def _lead(config: OperatorConfig, memo: OperatorMemo) -> None:
    """Return once this operator holds the leader Lease: kopf watches nothing before start-up ends."""
    # `greenllm run` stops the process on a lost Lease; in-process (tests) the operator only stops acting.
    on_lost: Callable[[], None] = memo.get("on_lease_lost") or (lambda: None)
    lease = leader.LeaderLease(
        config.leader_election_namespace,
        config.leader_election_id,
        leader.LeaseTimings(config.lease_duration_s),
        on_lost=on_lost,
    )
    memo.leader = lease
    lease.start()
    try:
        async with leader.StandbyProbe(config.probe_port):
            await lease.wait_until_leading()
    except BaseException:  # stopped while a follower: kopf runs no clean-up handler after a failed start-up
        await asyncio.to_thread(lease.stop)
        raise


def _acting(memo: OperatorMemo) -> bool:
    """False once this operator has lost its leader Lease (it is stopping), and while kopf's peering pauses
    it: it must not write anything."""
    lease: leader.LeaderLease | None = memo.get("leader")
    peers: peering.PeeringWatch | None = memo.get("peering")
    return (lease is None or lease.leading) and (peers is None or peers.acting())


@kopf.on.cleanup()
async def stop_serving(memo: OperatorMemo, **_: Any) -> None:
    if "loop" in memo:
        await memo.loop.stop()
    if "telemetry" in memo:
        memo.telemetry.stop()
        del memo["telemetry"]
    peers: peering.PeeringWatch | None = memo.get("peering")
    if peers is not None:
        peers.stop()
    lease: leader.LeaderLease | None = memo.get("leader")
    if lease is not None:
        await asyncio.to_thread(lease.stop)  # releases the Lease: a successor need not wait for it


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """An explicit $KUBECONFIG wins; otherwise the pod's service account, then ~/.kube/config."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs) or kopf.login_with_service_account(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


async def reconcile(memo: OperatorMemo, tracked: Tracked, logger: kopf.Logger) -> float:
    """Apply the GreenModel's generation this process has not applied yet: its Deployment and Service and
    the status that records the decision; or SpecValid=False and one Warning for a spec it cannot run.

    A turn of the fleet loop, not a kopf create/update/resume handler: those made kopf diff every event of
    every GreenModel against a copy of its last spec (each status write comes back as an event), patch a
    finalizer and that copy into each new one, and stamp its progress: a third of the operator's CPU while
    a thousand GreenModels were created. Here the watch compiles each new generation (`track`) and this
    turn applies it. Returns the seconds to the next turn: at once after a spec change (a shorter
    interval applies now, not after the old one); an interval after a GreenModel's first turn in this
    process (new, or after a restart: its pods have no metrics yet)."""
    memory = tracked.memory
    gm = tracked.gm  # this turn's snapshot; `tracked.gm` moves on with each event
    generation = memory.generation  # the one compiled (a write's response may show a newer one first)
    first = memory.reconciled == NOT_RECONCILED
    spec, problem = memory.spec, memory.spec_error
    async with memo.loop.writing(tracked.key):
        if memo.loop.latest(tracked.key) is not tracked:
            return 15.0  # deleted meanwhile (`release` waits for this turn, then finds nothing to make)
        await _reconcile(memo, gm, spec, problem, generation, logger)
    memory.reconciled = generation
    if spec is None:
        return 15.0  # nothing to scale until the spec changes (the turn after it reconciles again)
    return spec.scaling.interval.seconds if first else 0.0


async def _reconcile(
    memo: OperatorMemo,
    gm: dict[str, Any],
    model: api.GreenModelSpec | None,
    problem: str,
    generation: int | None,
    logger: kopf.Logger,
) -> None:
    meta = gm["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    subject = kopf.Body(cast(kopf.RawBody, gm))  # what Events are about
    kube: Kube = memo.kube
    try:
        if model is None:
            raise ValueError(problem)
        name_problem = render.name_problem(name)
        if name_problem:
            raise ValueError(name_problem)
        # The energy model refuses (ValueError) a GPU type or model size it has no calibration for.
        for variant in model.variants:
            memo.energy.performance(model, variant, PowerSetting())
        status = gm.get("status")
        current = st.read(status)
        carried = carried_decision(model, current.last_decision)
        if carried is not None and current.observed_generation not in (None, generation):
            carried = replace(
                carried, reason=_kept_reason(model, carried, generation), kind=api.ReasonKind.HOLD
            )
        decision = carried or initial_decision(model, memo.energy)
        if carried is None:
            fast_tier = st.fast_tier_status(decision)
        else:  # lastDecision records no fast tier: keep the one in status while it fits the spec
            fast_tier = st.carried_fast_tier(model, carried, current.fast_tier)
        owner = {"metadata": {"name": name, "namespace": namespace, "uid": meta["uid"]}}
        running: dict[str, Any] | Unread | None = UNSEEN
        # Reconciled before: its Deployment may run another decision than the status recorded (a crash
        # between the two writes). Never reconciled (no status): create without reading first.
        if status:
            running = await kube.get("Deployment", namespace, render.workload_name(name))
            adopted = adopt_deployed(model, decision, running, meta["uid"])
            if adopted is not decision:  # no roll back to what status recorded before a crash
                decision, fast_tier = adopted, None
        deployment = await apply_workloads(kube, owner, model, decision, logger, running=running)
    except (ValueError, WorkloadRejectedError) as e:
        # Not retried: a retry cannot fix a spec; its next generation is reconciled again.
        logger.warning("invalid spec, workloads left as they are: %s", e)
        await _write_status(memo, namespace, name, _spec_invalid(str(e), generation), read=gm)
        kopf.warn(subject, reason="InvalidSpec", message=st.short(str(e), st.EVENT_MESSAGE_MAX))
        return

    def build(latest: dict[str, Any]) -> dict[str, Any]:
        seen = st.read(latest.get("status"))
        return st.patch(st.reconciled(model, decision, fast_tier, deployment, seen, _now(), generation))

    # The view the watch delivered: a first try without a GET (409 re-reads).
    written = await _write_status(memo, namespace, name, build, read=gm)
    if written is not None and not st.same_decision(decision, current.last_decision):
        kopf.info(subject, reason="Decision", message=_event_message(decision))


def _kept_reason(spec: api.GreenModelSpec, carried: Decision, generation: int | None) -> str:
    """lastDecision.reason for a decision a spec edit kept: said against the new spec, never the old one."""
    variant = spec.variant(carried.variant)
    low, high = spec.replicas.min, spec.replicas.max
    clamped = "" if f"[{low}, {high}]" not in carried.reason else f"; {carried.reason}"
    return (
        f"spec changed (generation {generation}): kept {variant.name} (quality {variant.quality:g} >= "
        f"slo.minQuality {spec.slo.min_quality:g}) x{carried.replicas} (replicas [{low}, {high}]) at "
        f"{carried.setting.label()}{clamped}; the loop re-plans from its next observation"
    )


def _spec_invalid(message: str, generation: int | None) -> StatusBuilder:
    def build(gm: dict[str, Any]) -> dict[str, Any]:
        return st.patch(st.invalid(st.read(gm.get("status")), message, _now(), generation))

    return build


StatusBuilder = Callable[[dict[str, Any]], dict[str, Any] | None]


async def update_status(
    kube: Kube, namespace: str, name: str, build: StatusBuilder, read: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Read, change and write a GreenModel's status with optimistic concurrency.

    Several writers share status.conditions (reconcile, the loop, the Deployment watcher) and a merge
    patch replaces the whole list, so each write carries the resourceVersion it was computed from and
    is recomputed when someone else wrote first (409). `build` returns the status fields to merge, or
    None for no write. Returns the object as written (None when it is gone or nothing was written).
    `read`: the object as the caller just read it, to save the first GET.
    """
    for _ in range(10):
        gm, read = read or await kube.get_green_model(namespace, name), None
        if gm is None:
            return None
        change = build(gm)
        if change is None:
            return None
        try:
            return await kube.patch_green_model_status(
                namespace, name, change, resource_version=gm["metadata"].get("resourceVersion")
            )
        except ApiException as e:
            if e.status != 409:
                raise
    raise kopf.TemporaryError(f"status of {namespace}/{name} kept changing while being written", delay=1)


async def _write_status(
    memo: OperatorMemo, namespace: str, name: str, build: StatusBuilder, read: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """`update_status`, and the fleet loop's view of the GreenModel refreshed from the write's response:
    every writer's next write starts from it, not from the event before (a 409 and a GET)."""
    written = await update_status(memo.kube, namespace, name, build, read=read)
    memo.loop.saw(written)
    return written


class WorkloadRejectedError(Exception):
    """The API server refused a Deployment or Service rendered from the spec (HTTP 422)."""


def _event_message(decision: Decision) -> str:
    message = f"{decision.variant} x{decision.replicas} at {decision.setting.label()}: {decision.reason}"
    return st.short(message, st.EVENT_MESSAGE_MAX)


class Unread:
    """Marks an object the caller has not read (None means read and absent)."""


class Unseen(Unread):
    """Not read, and most likely absent: create it first and read it only if it exists (409). A GreenModel
    the operator never reconciled has no workloads yet; two GETs fewer per new GreenModel is a quarter of
    the requests that creating a fleet of them costs."""


UNREAD = Unread()
UNSEEN = Unseen()


async def apply_workloads(
    kube: Kube,
    owner: dict[str, Any],
    spec: api.GreenModelSpec,
    decision: Decision,
    logger: kopf.Logger,
    running: dict[str, Any] | Unread | None = UNREAD,
    service: bool = True,
) -> dict[str, Any]:
    """Create or patch the Deployment (and the Service unless `service` is False); return the Deployment as
    the API server has it. `running`: the Deployment as the caller just read it (None: there is none), to
    save a second GET; UNSEEN: a new GreenModel's, created without a GET (and the Service too)."""
    ensure_deployment = _ensure(
        kube, render.deployment(owner, spec, decision), render.deployment_patch, owner, logger, running
    )
    if not service:
        return await ensure_deployment
    seen = UNSEEN if isinstance(running, Unseen) else UNREAD  # a new GreenModel has neither object
    ensure_service = _ensure(kube, render.service(owner, spec), render.service_patch, owner, logger, seen)
    # Neither needs the other: one round trip to the API server instead of two before the status write
    # (most of what a new GreenModel waits for). gather, not a TaskGroup: callers catch the error types
    # themselves, not an ExceptionGroup; the other call still finishes and is applied on the next turn.
    deployment: dict[str, Any] = (await asyncio.gather(ensure_deployment, ensure_service))[0]
    return deployment


async def _ensure(
    kube: Kube,
    desired: dict[str, Any],
    patcher: Any,
    owner: dict[str, Any],
    logger: kopf.Logger,
    current: dict[str, Any] | Unread | None = UNREAD,
) -> dict[str, Any]:
    kind, meta = desired["kind"], desired["metadata"]
    if isinstance(current, Unseen):
        try:
            logger.info("creating %s %s", kind, meta["name"])
            return await _rejected_as_spec_error(kube.create(desired), kind)
        except ApiException as e:
            if e.status != 409:
                raise
    if isinstance(current, Unread):
        current = await kube.get(kind, meta["namespace"], meta["name"])
    if current is None:
        logger.info("creating %s %s", kind, meta["name"])
        return await _rejected_as_spec_error(kube.create(desired), kind)
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
    return await _rejected_as_spec_error(kube.patch(kind, meta["namespace"], meta["name"], change), kind)


async def _rejected_as_spec_error(call: Awaitable[dict[str, Any]], kind: str) -> dict[str, Any]:
    try:
        return await call
    except ApiException as e:
        if e.status != 422:
            raise
        try:
            reason = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            reason = e.reason
        message = f"the API server refused the {kind} rendered from this spec: {reason}"
        raise WorkloadRejectedError(message) from e


LEGACY_FINALIZER = f"{ANNOTATION_PREFIX}/finalizer"  # put by earlier builds (kopf, for on.delete); released


async def release(memo: OperatorMemo, meta: Mapping[str, Any], logger: kopf.Logger) -> None:
    """A deleted GreenModel's Deployment and Service go now (a real cluster's garbage collector follows
    their owner references too, later), and the finalizer older operators put on it is released."""
    kube: Kube = memo.kube
    namespace, name = meta["namespace"], render.workload_name(meta["name"])
    for kind in ("Deployment", "Service"):
        current = await kube.get(kind, namespace, name)
        owners = (current or {}).get("metadata", {}).get("ownerReferences") or []
        if any(o.get("uid") == meta.get("uid") for o in owners):
            logger.info("deleting %s %s", kind, name)
            await kube.delete(kind, namespace, name)
    finalizers = list(meta.get("finalizers") or [])
    if LEGACY_FINALIZER in finalizers:
        finalizers.remove(LEGACY_FINALIZER)
        await kube.set_green_model_finalizers(
            namespace, meta["name"], finalizers, resource_version=meta.get("resourceVersion")
        )


# The kopf handlers called on every watch event: thousands a minute at scale (greenllm run keeps their
# success lines out of the log).
PER_EVENT_HANDLERS = ("track", "deployment_changed")


@kopf.on.event(*RESOURCE)
async def track(event: Mapping[str, Any], memo: OperatorMemo, **_: Any) -> None:
    """Feed the watch to the fleet loop: what a turn and the Deployment watcher read of each GreenModel,
    kept without a GET, and the spec compiled once per generation; a new generation is reconciled at once
    (`reconcile`). A deleted GreenModel is forgotten and its workloads deleted."""
    raw = event.get("object") or {}
    meta = raw.get("metadata") or {}
    key = (meta.get("namespace", ""), meta.get("name", ""))
    loop: FleetLoop = memo.loop
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        forgotten = loop.forget(key)
        memo.telemetry.forget(*key)
        # Once per GreenModel: the DELETED event after a deletionTimestamp one finds nothing tracked.
        ours = forgotten is not None and forgotten.uid == meta.get("uid")
        if _acting(memo) and (ours or LEGACY_FINALIZER in (meta.get("finalizers") or [])):
            try:
                async with loop.writing(key):  # after a turn in flight that may be applying a decision
                    await release(memo, meta, GreenModelLog(*key))
            except (ApiException, OSError) as e:  # a real cluster's GC still removes them; a restart retries
                log.warning("[%s/%s] releasing the deleted GreenModel failed: %s", *key, e)
        return
    entry = loop.track(raw)
    known = entry.memory.generation is not None  # a new entry is due at once anyway
    if entry.memory.compile(raw, memo.config) and known:
        # A changed spec: reconciled and planned for now, or right after a turn in flight (which may be
        # applying the previous generation).
        loop.wake(key)
    # Started from a watch handler, not at start-up: its tasks inherit the context kopf gives the
    # handlers of watched objects, which kopf.info/kopf.warn need to post Events from the turns.
    loop.start()


@kopf.on.event("apps", "v1", "deployments", labels={render.MODEL_LABEL: kopf.PRESENT})
async def deployment_changed(body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    """Mirror the Deployment's availability into the owning GreenModel's Ready condition."""
    meta = body.get("metadata", {})
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == api.KIND), None)
    if owner is None or meta.get("deletionTimestamp"):
        return

    def build(gm: dict[str, Any]) -> dict[str, Any] | None:
        if gm["metadata"].get("uid") != owner.get("uid"):
            return None  # a new GreenModel of the same name; its own Deployment will report
        seen = st.deployment_seen(st.read(gm.get("status")), body, _now(), gm["metadata"].get("generation"))
        return None if seen is None else st.patch(seen)

    loop: FleetLoop = memo.loop
    key = (meta["namespace"], owner["name"])
    async with loop.writing(key):  # after reconcile's or a tick's write in flight, from its response
        known = loop.latest(key)
        # The GreenModel as last seen, without a GET (an update built on a stale one is refused with 409
        # and re-read); an unknown one (not delivered by the watch yet) is read.
        read = None if known is None else known.gm
        await _write_status(memo, key[0], key[1], build, read=read)


# ------------------------------------------------------------------------------------------ autoscaling


async def autoscale(memo: OperatorMemo, tracked: Tracked) -> float:
    """One GreenModel's turn in the fleet loop: observe -> the core's decision step -> apply what changed
    -> status; returns the seconds until its next turn. One bad tick must not end the loop: it is logged,
    counted and retried at the next turn."""
    namespace, name = tracked.key
    started = time.monotonic()
    interval = 15.0
    logger = GreenModelLog(namespace, name)
    try:
        if tracked.memory.needs_reconcile:
            interval = await reconcile(memo, tracked, logger)
        else:
            interval = await tick(memo, tracked, logger)
    except kopf.TemporaryError as e:  # e.g. a Deployment of that name that is not its own: retried later
        logger.warning("%s; retrying in %s s", e, e.delay)
        interval = e.delay if e.delay is not None else interval
    except Exception as e:
        log.exception("[%s/%s] autoscaling tick failed", namespace, name)
        memo.telemetry.loop_errors.labels(namespace, name, type(e).__name__).inc()
    memo.telemetry.loop_duration.observe(time.monotonic() - started)
    return interval


log = logging.getLogger("greenllm.loop")


class GreenModelLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The loop's log lines about one GreenModel, prefixed like kopf's per-object ones. Not kopf's own
    per-object logger: that one posts each line as an Event, and a tick posts its Events explicitly."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(log, {})
        self.prefix = f"[{namespace}/{name}]"

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.prefix} {msg}", kwargs


# What a tick reads of the stored status: the conditions, the decision in force and the ready replicas it
# writes over, and on a GreenModel's first tick (new, or after a restart) the loop state it resumes.
# Validating the whole status every tick was 7 % of the event loop at 1,000 GreenModels (py-spy); keeping
# it typed between ticks, 20 KB each.
TICK_STATUS_FIELDS = ("conditions", "lastDecision", "readyReplicas")


def tick_status(raw: Mapping[str, Any] | None, resume: bool) -> api.GreenModelStatus:
    """The part of the stored status a tick reads (`resume`: with status.controllerState)."""
    fields = (*TICK_STATUS_FIELDS, "controllerState") if resume else TICK_STATUS_FIELDS
    return st.read({k: raw[k] for k in fields if k in raw} if raw else None)


def _prometheus(memo: OperatorMemo, url: str) -> promql.Query:
    if url not in memo.prometheus:
        # The config's own TLS and auth settings (not the process default), however the operator started.
        memo.prometheus[url] = prometheus.prometheus_query(
            url, memo.config.prometheus_timeout_s, connection=memo.config.prometheus_connection()
        )
    query: promql.Query = memo.prometheus[url]
    return query


def _fleet(memo: OperatorMemo, url: str) -> fleet_observer.FleetObserver:
    """The fleet queries' answers from `url`, shared by every GreenModel's tick."""
    fleets: dict[str, fleet_observer.FleetObserver] = memo.fleet
    if url not in fleets:
        fleets[url] = fleet_observer.FleetObserver(_prometheus(memo, url))
    return fleets[url]


async def tick(memo: OperatorMemo, tracked: Tracked, logger: kopf.Logger) -> float:
    """One pass of the loop for one GreenModel, as the watch last showed it (`tracked`); returns the
    seconds until the next one."""
    kube: Kube = memo.kube
    config: OperatorConfig = memo.config
    memory = tracked.memory
    # This tick's snapshot: the fleet loop replaces `tracked.gm` with each event's view and never changes
    # one in place, so it holds still across this tick's awaits while `tracked.gm` moves on.
    gm = tracked.gm
    if not gm.get("metadata") or gm["metadata"].get("deletionTimestamp"):
        return 15.0
    namespace, name = gm["metadata"]["namespace"], gm["metadata"]["name"]
    subject = kopf.Body(cast(kopf.RawBody, gm))  # what Events are about
    # Compiled when the watch delivered this generation (`track`); a newer generation seen first in a
    # write's response is planned for once its event has compiled it (reconcile wakes the loop then).
    spec = memory.spec if memory.generation == gm["metadata"].get("generation") else None
    if spec is None:
        return 15.0  # reconcile has set SpecValid=False; nothing to scale
    interval = spec.scaling.interval.seconds
    status = tick_status(gm.get("status"), resume=memory.state is None)
    if st.condition_status(status, api.ConditionType.SPEC_VALID) == "False":
        return interval  # e.g. a GPU type without calibration
    applied = carried_decision(spec, status.last_decision)
    if applied is None:
        return interval  # reconcile has not deployed anything yet
    now = time.time()
    saved = status.controller_state
    state = memory.state
    if state is None:  # the loop's first tick for it: resume what the status kept, if it kept a period
        if saved is not None and saved.period_start is not None:
            state = LoopState.from_status(saved)
        else:
            state = initial_state(spec, now, applied)

    url = trust.prometheus_url(spec, config)
    query = _prometheus(memo, url)
    overrides = frozenset(spec.metrics.queries) | frozenset(config.queries)
    batched = fleet_observer.batched_names(spec, overrides, own_url=url != config.prometheus_url)
    since = None if state.last_sample_time is None else now - state.last_sample_time
    queries = promql.build_queries(
        spec,
        namespace,
        render.workload_name(name),
        window=config.rate_window,
        since_s=since,
        overrides=config.queries,
        default_carbon_g_per_kwh=config.default_carbon_intensity_g_per_kwh,
        names=fleet_observer.own_names(batched, memory.energy),
    )
    try:
        if batched:
            observation = await fleet_observer.observe(
                _fleet(memo, url),
                query,
                queries,
                spec,
                (namespace, render.workload_name(name)),
                batched=batched,
                window=config.rate_window,
                interval_s=interval,
                now=now,
                previous_energy_j=state.last_energy_j,
                energy=memory.energy,
            )
        else:
            observation = await asyncio.to_thread(
                promql.observe, query, queries, now, promql.max_age_s(interval), state.last_energy_j
            )
        metrics = MetricsVerdict.of(observation)
    except promql.MetricsError as e:
        observation = Observation(time=now)
        metrics = MetricsVerdict.unavailable(trust.metrics_failure(e))
        logger.warning("metrics unavailable, holding the last decision: %s", e)

    # A team EnergyBudget covering this GreenModel lowers its powerW cap (its share of the team's powerW)
    # and grants it an average allowance (its share of the team's paced energy); the tightest wins.
    spec = budgets.effective_spec(memo, namespace, name, spec, now)
    average = budgets.average_allowance_w(memo, namespace, name)
    generation = gm["metadata"].get("generation")
    result = loop_tick(spec, state, observation, metrics, now, memo.energy, status, generation, average)
    state, decision = result.state, result.decision
    budgets.record_member(memo, namespace, name, spec, decision, observation, state)
    memory.state = state
    if result.changed:
        # Planned against `generation`: if the spec moved on meanwhile, applying would roll back what
        # reconcile just applied. Skip this tick; the next one plans with the new spec.
        # The tracked view has any newer generation the watch delivered while this tick asked Prometheus.
        if tracked.gm["metadata"].get("generation") != generation:
            return interval
        owner = {"metadata": {"name": name, "namespace": namespace, "uid": gm["metadata"]["uid"]}}
        async with memo.loop.writing((namespace, name)):
            if memo.loop.latest((namespace, name)) is not tracked:
                return interval  # deleted meanwhile: applying would make its Deployment again
            # The Service follows the spec alone (reconcile keeps it); a decision changes the Deployment.
            await apply_workloads(kube, owner, spec, decision, logger, service=False)
        kopf.info(subject, reason="Decision", message=_event_message(decision))
        memo.telemetry.count_decision(namespace, name, decision.kind)

    notices: list[tuple[Notice, ...]] = []
    why: list[str] = []

    def build(latest: dict[str, Any]) -> dict[str, Any] | None:
        if latest["metadata"].get("generation") != generation:
            return None  # reconcile owns this generation's status now; the next tick catches up
        new, notices[:] = result.status, [result.notices]
        if latest is not gm:  # a re-read after a conflict: say the tick over what is there now
            seen = st.read(latest.get("status"))
            new, notices[0] = loop_status(
                spec, state, decision, result.changed, observation, metrics, now, seen, generation
            )
        change = st.patch(new)
        stored = latest.get("status") or {}
        reason = (
            "change"
            if result.changed
            else memory.due(stored, change, time.monotonic(), write_period, interval)
        )
        why[:] = [reason] if reason else []
        return change if reason else None

    write_period = config.accounting_write_period_s
    # This tick's read of the object to build the status write on (a 409 re-reads).
    # The latest view: another writer's response may have refreshed it while this tick waited its turn.
    async with memo.loop.writing((namespace, name)):
        written = await _write_status(memo, namespace, name, build, read=tracked.gm)
    memory.ticked(written is not None, time.monotonic())
    if written is not None:
        memo.telemetry.status_writes.labels(why[0]).inc()
    if not notices:
        return interval  # the object is gone or reconcile owns this generation's status now
    for notice in notices[0]:
        post = kopf.warn if notice.warning else kopf.info
        post(subject, reason=notice.reason, message=notice.message)
    _export(memo.telemetry, namespace, name, spec, decision, observation, state)
    return interval


def _export(
    telemetry: OperatorMetrics,
    namespace: str,
    name: str,
    spec: api.GreenModelSpec,
    decision: Decision,
    observation: Observation,
    state: LoopState,
) -> None:
    telemetry.replicas.labels(namespace, name).set(decision.replicas)
    telemetry.set_variant(namespace, name, decision.variant)
    telemetry.set_reason(namespace, name, decision.kind)
    telemetry.power_limit.labels(namespace, name).set(decision.setting.limit_w or 0)
    if decision.expected_power_w is not None:
        telemetry.expected_power.labels(namespace, name).set(decision.expected_power_w)
    if observation.power_w is not None:
        telemetry.observed_power.labels(namespace, name).set(observation.power_w)
    telemetry.energy.labels(namespace, name).set(state.energy_kwh)
    telemetry.carbon.labels(namespace, name).set(state.carbon_grams)
    if spec.budget.energy_kwh is not None:
        telemetry.energy_remaining.labels(namespace, name).set(
            max(spec.budget.energy_kwh - state.energy_kwh, 0.0)
        )
