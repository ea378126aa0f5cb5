"""The agent's main loop: read kubelet + API server, reconcile, export metrics, post Events, restore on stop.

Signals only set a flag; the restore on SIGTERM happens here, in the main loop, never in a handler.

Two loops share one Reconciler under one lock: the reconcile cycle (`interval_s`, reads the cluster and the
kubelet) and the fast loop (`fast_interval_s`, about once a second): it reads the vLLM metrics of the pods on
fast-tier GPUs (in parallel, outside the lock, each read bounded in time and size) and hands each GPU's
reading to `Reconciler.fast_step`, and each pod's waiting requests and arrivals since its previous read
(`FastGpu.arrivals`) to the metrics. Events about unreadable pods are queued by the fast loop and posted by
the cycle, so a slow API server never stalls the fast loop, and a pod that has left by then gets none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from greenllm.agent.exporter import AgentMetrics
from greenllm.agent.gpu.base import GpuBackend, GpuUnavailableError
from greenllm.agent.kube import ClusterReader, ClusterView, EventSink
from greenllm.agent.ownership import GreenModelRef
from greenllm.agent.podmetrics import ReadResult, endpoint_url, read_queue
from greenllm.agent.podresources import PodDevices, PodResourcesError
from greenllm.agent.reconcile import Action, CycleReport, FastPod, GpuReport, Reconciler, Restraint
from greenllm.agent.state import StateStore
from greenllm.core.fasttier import READ_PERIOD_S, QueueReading
from greenllm.core.power import mw_to_watts

log = logging.getLogger(__name__)


class PodLister(Protocol):
    def list(self) -> list[PodDevices]: ...


_EVENTS: dict[Action, tuple[str, str]] = {
    Action.APPLIED: ("Normal", "PowerSettingApplied"),
    Action.CLAMPED: ("Warning", "PowerSettingClamped"),
    Action.RESTORED: ("Normal", "PowerSettingRestored"),
    Action.REFUSED: ("Warning", "PowerSettingRefused"),
    Action.SHARED: ("Warning", "GpuShared"),
    Action.FAILED: ("Warning", "PowerSettingFailed"),
}
_ALWAYS = {Action.APPLIED, Action.CLAMPED, Action.RESTORED}  # each is a real change: never deduplicated

UNREADABLE = "FastTierMetricsUnreadable"
READABLE = "FastTierMetricsReadable"
# vLLM serves /metrics only once its model is loaded (minutes): a pod never read yet is reported unreadable
# only after this long; one read before, at once. One Warning per pod at most this often (a flapping pod).
STARTUP_GRACE_S = 600.0
WARN_EVERY_S = 300.0
READ_WORKERS = 8

PodReader = Callable[[str | None, int], ReadResult]


@dataclass
class _PodHealth:
    ever_read: bool = False
    failing_since: float | None = None
    warned: bool = False  # a Warning was queued for the current failure
    warned_at: float | None = None


@dataclass(frozen=True, slots=True)
class _FastEvent:
    ref: GreenModelRef
    pod: str
    type_: str
    reason: str
    message: str


class Agent:
    def __init__(
        self,
        *,
        node_name: str,
        backend_factory: Callable[[], GpuBackend],
        pod_resources: PodLister,
        cluster: ClusterReader,
        events: EventSink | None,
        store: StateStore,
        metrics: AgentMetrics,
        interval_s: float,
        policy: Restraint | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        fast_interval_s: float = READ_PERIOD_S,
        read_pod: PodReader = read_queue,
    ) -> None:
        self.node_name = node_name
        self._backend_factory = backend_factory
        self._pods = pod_resources
        self._cluster = cluster
        self._events = events
        self._store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self.policy = policy or Restraint()
        self.dry_run = dry_run
        self._clock = clock
        self.backend: GpuBackend | None = None
        self.reconciler: Reconciler | None = None
        self._backend_error = ""
        self._last_event: dict[tuple[str, str], tuple[str, str]] = {}
        self.fast_interval_s = fast_interval_s
        self._read_pod = read_pod
        self._lock = threading.Lock()  # one Reconciler, two loops
        self._pool: ThreadPoolExecutor | None = None
        self._health: dict[str, _PodHealth] = {}  # pod key -> readability of its metrics
        self._fast_events: list[_FastEvent] = []

    # -------------------------------------------------------------------------------- backend

    def ensure_backend(self) -> bool:
        """Start the GPU backend if it is not running; on failure report it and try again next cycle."""
        if self.reconciler is not None:
            return True
        try:
            backend = self._backend_factory()
        except GpuUnavailableError as exc:
            message = f"GPU backend unavailable ({exc.kind.value}): {exc}"
            if message != self._backend_error:
                log.error("%s; the agent stays up and retries every %g s", message, self.interval_s)
            self._backend_error = message
            self.metrics.backend_status(False, exc.kind.value)
            return False
        self.backend = backend
        reconciler = Reconciler(backend, self._store, self.policy, dry_run=self.dry_run, clock=self._clock)
        self._backend_error = ""
        self.metrics.backend_status(True)
        log.info("GPU backend %s up: %d GPU(s)", backend.name, len(backend.inventory()))
        with self._lock:
            self.reconciler = reconciler
            restored = reconciler.startup()
        self.metrics.gpus_changed(restored)
        for gpu in restored:
            log.info("start-up restore of GPU %s: %s %s", gpu.uuid, gpu.action.value, gpu.message)
        return True

    # -------------------------------------------------------------------------------- cycle

    def run_once(self) -> CycleReport | None:
        if not self.ensure_backend():
            self.metrics.cycle(None, self._clock(), "backend_unavailable")
            return None
        assert self.reconciler is not None
        pods: list[PodDevices] | None
        try:
            pods = self._pods.list()
        except PodResourcesError as exc:
            log.warning("cannot list pod resources (changing nothing): %s", exc)
            pods = None
        view = self._cluster.snapshot()
        with self._lock:
            report = self.reconciler.reconcile(view, pods)
            fast = list(self.reconciler.fast.values())
            self.metrics.fast_tier(fast, ())
            pending, self._fast_events = self._fast_events, []
            on_gpus = {p.key: p for f in fast for p in f.pods}
            self._health = {k: v for k, v in self._health.items() if k in on_gpus}
        self.metrics.cycle(report, self._clock(), "ok" if report.cluster_known else "cluster_unknown")
        if view is not None:
            self._post_events(report, view)
        for event in pending:
            pod = on_gpus.get(event.pod)
            if pod is not None and not pod.terminating:  # a pod that left or is leaving: not news
                self._emit(event.ref, event.type_, event.reason, event.message)
        return report

    # -------------------------------------------------------------------------------- fast loop

    def fast_once(self) -> list[GpuReport]:
        """Read the pods of every fast-tier GPU once and apply each GPU's mode; returns what was done."""
        with self._lock:
            if self.reconciler is None:
                return []
            targets = {uuid: (f.owner, f.pods) for uuid, f in self.reconciler.fast.items()}
        pods = {p.key: p for _owner, fast_pods in targets.values() for p in fast_pods}
        owners = {p.key: owner for owner, fast_pods in targets.values() for p in fast_pods}
        if not pods:
            return []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="fast-read")
        answers = self._pool.map(lambda p: self._read_pod(p.ip, p.port), pods.values())
        results = dict(zip(pods, answers, strict=True))
        now = self._clock()
        reports = []
        waiting: list[tuple[str, str, float]] = []
        arrivals: list[tuple[str, str, float]] = []
        with self._lock:
            if self.reconciler is None:
                return []
            for uuid, (owner, fast_pods) in targets.items():
                fast = self.reconciler.fast.get(uuid)
                if fast is None or fast.owner != owner:
                    continue  # gone since (pod left, agent stopping)
                read = [results[p.key] for p in fast_pods]
                for result in read:
                    if result.failure is not None:
                        fast.failures[result.failure.value] = fast.failures.get(result.failure.value, 0) + 1
                for pod, result in zip(fast_pods, read, strict=True):
                    if result.reading is not None:
                        waiting.append((uuid, pod.key, result.reading.waiting))
                    arrived = fast.arrivals(pod.key, result.reading, result.succeeded)
                    if arrived is not None:
                        arrivals.append((uuid, pod.key, arrived))
                try:
                    report = self.reconciler.fast_step(uuid, _combined(read), now)
                except Exception:  # one GPU's fault never stops the fast step of the others
                    log.exception("fast-tier step of GPU %s failed", uuid)
                    continue
                if report is not None:
                    reports.append(report)
            self.metrics.fast_tier(list(self.reconciler.fast.values()), waiting, arrivals)
            self.metrics.gpus_changed(reports)
            for key, pod in pods.items():
                self._health_of(pod, owners[key], results[key], now)
        return reports

    def _health_of(self, pod: FastPod, owner: GreenModelRef, result: ReadResult, now: float) -> None:
        """Queue an Event when a pod's metrics become unreadable (once per outage) and when they recover."""
        health = self._health.setdefault(pod.key, _PodHealth())
        url = endpoint_url(pod.ip, pod.port)
        if result.failure is None:
            if health.warned:
                message = f"pod {pod.key}: vLLM metrics at {url} readable again; its GPUs follow its queue"
                self._fast_events.append(_FastEvent(owner, pod.key, "Normal", READABLE, message))
            health.ever_read, health.failing_since, health.warned = True, None, False
            return
        if health.failing_since is None:
            health.failing_since = now
        if health.warned or pod.terminating:
            return
        if not health.ever_read and now - health.failing_since < STARTUP_GRACE_S:
            return
        if health.warned_at is not None and now - health.warned_at < WARN_EVERY_S:
            return
        health.warned, health.warned_at = True, now
        message = (
            f"pod {pod.key}: cannot read vLLM metrics at {url} ({result.failure.value}: {result.detail}); "
            f"its GPUs on {self.node_name} run the burst setting until they can be read"
        )
        self._fast_events.append(_FastEvent(owner, pod.key, "Warning", UNREADABLE, message))

    def run_fast(self, halt: threading.Event) -> None:
        """The fast loop: `fast_once` every `fast_interval_s` until `halt` is set."""
        while not halt.is_set():
            started = time.monotonic()
            try:
                self.fast_once()
            except Exception:
                log.exception("fast-tier step failed; retrying")
            halt.wait(max(0.0, self.fast_interval_s - (time.monotonic() - started)))

    def _post_events(self, report: CycleReport, view: ClusterView) -> None:
        for gpu in report.gpus:
            kind = _EVENTS.get(gpu.action)
            if kind is None:
                continue
            refs = [gpu.greenmodel] if gpu.greenmodel is not None else []
            if not refs:
                refs = [view.greenmodels[key].ref for key in gpu.wanted_by if key in view.greenmodels]
            for ref in refs:
                message = _event_text(gpu, self.node_name)
                dedupe = (gpu.uuid, ref.key)
                if gpu.action not in _ALWAYS and self._last_event.get(dedupe) == (kind[1], message):
                    continue
                self._last_event[dedupe] = (kind[1], message)
                self._emit(ref, kind[0], kind[1], message)

    def _emit(self, ref: GreenModelRef, type_: str, reason: str, message: str) -> None:
        if self._events is None or self.dry_run:
            log.info("event on %s: %s %s: %s", ref.key, type_, reason, message)
            return
        self._events.emit(ref, type_, reason, message)

    # -------------------------------------------------------------------------------- loop

    def shutdown(self) -> list[GpuReport]:
        """Restore every GPU this agent changed and release the driver."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self.reconciler is None or self.backend is None:
            return []
        with self._lock:
            restored = self.reconciler.restore_all()
        self.metrics.gpus_changed(restored)
        for gpu in restored:
            log.info("shutdown restore of GPU %s: %s %s", gpu.uuid, gpu.action.value, gpu.message)
        self.backend.close()
        return restored

    def run(self, stop: threading.Event) -> None:
        """Reconcile every interval (and run the fast loop in a thread) until `stop` is set, then stop the
        fast loop and restore (in this thread)."""
        halt = threading.Event()
        fast = threading.Thread(target=self.run_fast, args=(halt,), name="fast-tier", daemon=True)
        fast.start()
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception:
                    log.exception("reconcile cycle failed; retrying next interval")
                    self.metrics.cycle(None, self._clock(), "error")
                stop.wait(self.interval_s)
        finally:
            halt.set()
            fast.join(timeout=10.0)
            self.shutdown()


def _combined(results: list[ReadResult]) -> QueueReading | None:
    """The queue of a GPU from the reads of its pods (several when time-sliced): None if any failed."""
    readings = [r.reading for r in results]
    if not readings or any(r is None for r in readings):
        return None
    return QueueReading(
        waiting=sum(r.waiting for r in readings if r is not None),
        running=sum(r.running for r in readings if r is not None),
    )


def _event_text(gpu: GpuReport, node: str) -> str:
    where = f"GPU {gpu.uuid} (index {gpu.index}) on {node}"
    if gpu.action in (Action.APPLIED, Action.CLAMPED):
        limit = "default" if gpu.target_limit_mw is None else f"{mw_to_watts(gpu.target_limit_mw):g} W"
        asked = "default" if gpu.requested_limit_w is None else f"{gpu.requested_limit_w:g} W"
        enforced = "?" if gpu.enforced_limit_mw is None else f"{mw_to_watts(gpu.enforced_limit_mw):g} W"
        clock = "" if gpu.locked_clock_mhz is None else f", clock locked at {gpu.locked_clock_mhz} MHz"
        text = f"{where}: power limit {limit} (requested {asked}, enforced {enforced}){clock}"
        return f"{text}. {gpu.message}" if gpu.message else text
    if gpu.action is Action.RESTORED:
        return f"{where}: restored the default power limit and clocks"
    return f"{where}: {gpu.message}"
