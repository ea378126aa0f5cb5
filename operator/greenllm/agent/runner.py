"""The agent's main loop: read kubelet + API server, reconcile, export metrics, post Events, restore on stop.

Signals only set a flag; the restore on SIGTERM happens here, in the main loop, never in a handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from greenllm.agent.gpu import GpuBackend, GpuUnavailableError
from greenllm.agent.kube import ClusterReader, ClusterView, EventSink
from greenllm.agent.metrics import AgentMetrics
from greenllm.agent.ownership import GreenModelRef
from greenllm.agent.podresources import PodDevices, PodResourcesError
from greenllm.agent.reconcile import Action, CycleReport, GpuReport, Policy, Reconciler
from greenllm.agent.state import StateStore
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
        policy: Policy | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_name = node_name
        self._backend_factory = backend_factory
        self._pods = pod_resources
        self._cluster = cluster
        self._events = events
        self._store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self.policy = policy or Policy()
        self.dry_run = dry_run
        self._clock = clock
        self.backend: GpuBackend | None = None
        self.reconciler: Reconciler | None = None
        self._backend_error = ""
        self._last_event: dict[tuple[str, str], tuple[str, str]] = {}

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
        self.reconciler = Reconciler(
            backend, self._store, self.policy, dry_run=self.dry_run, clock=self._clock
        )
        self._backend_error = ""
        self.metrics.backend_status(True)
        log.info("GPU backend %s up: %d GPU(s)", backend.name, len(backend.inventory()))
        restored = self.reconciler.startup()
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
        report = self.reconciler.reconcile(view, pods)
        self.metrics.cycle(report, self._clock(), "ok" if report.cluster_known else "cluster_unknown")
        if view is not None:
            self._post_events(report, view)
        return report

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
        if self.reconciler is None or self.backend is None:
            return []
        restored = self.reconciler.restore_all()
        self.metrics.gpus_changed(restored)
        for gpu in restored:
            log.info("shutdown restore of GPU %s: %s %s", gpu.uuid, gpu.action.value, gpu.message)
        self.backend.close()
        return restored

    def run(self, stop: threading.Event) -> None:
        """Reconcile every interval until `stop` is set, then restore (in this thread)."""
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception:
                    log.exception("reconcile cycle failed; retrying next interval")
                    self.metrics.cycle(None, self._clock(), "error")
                stop.wait(self.interval_s)
        finally:
            self.shutdown()


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
