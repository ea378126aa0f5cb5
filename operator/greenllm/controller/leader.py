"""Leader election over a coordination.k8s.io Lease, so that two operators never both act.

Two operators acting on the same GreenModels each add the fleet's energy to its status (the accounted
energy doubled) and fight over its Deployment. Controllers settle this with a Lease (client-go,
controller-runtime); this runs the Kubernetes client's own implementation (`kubernetes.leaderelection`,
the same protocol and timings) in a thread and bridges it to the operator's event loop.

A follower waits in the operator's start-up handler, before kopf watches anything, and answers its
liveness probe meanwhile (kopf serves /healthz only once start-up is done). A leader that cannot renew
its lease within the renew deadline stops acting at once and stops the operator, so its pod restarts as a
follower; the next leader takes over when the lease expires (a clean stop releases it at once). The
energy of a gap between leaders is not lost: the new one accounts from each GreenModel's last accounted
time.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from greenllm.controller.config import MIN_LEASE_DURATION_S

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's defaults are 15 s / 10 s / 2 s; the other two follow the lease duration in that ratio."""

    lease_duration_s: int = 15

    @property
    def renew_deadline_s(self) -> float:
        return self.lease_duration_s * 2 / 3

    @property
    def retry_period_s(self) -> float:
        return max(1.0, self.lease_duration_s * 2 / 15)


def candidate_identity() -> str:
    """As client-go: the host (the pod's name in a cluster) and a random suffix, unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderLease:
    """One candidate for the Lease `namespace/name`, campaigning in a thread from `start()` to `stop()`.

    Each attempt is the library's `try_acquire_or_renew` (read the Lease; take it when it is free or its
    holder has not renewed it for a lease duration by this candidate's clock; else renew it if ours,
    with the API's optimistic concurrency); this class only runs the attempts, which the library's own
    loop cannot stop or release, and turns them into `leading` / `on_lost`."""

    def __init__(
        self,
        namespace: str,
        name: str,
        timings: LeaseTimings,
        on_lost: Callable[[], None],
        identity: str | None = None,
    ) -> None:
        if timings.lease_duration_s < MIN_LEASE_DURATION_S:
            raise ValueError(f"lease duration must be >= {MIN_LEASE_DURATION_S} s")
        self.namespace, self.name = namespace, name
        self.identity = identity or candidate_identity()
        self._timings = timings
        self._on_lost = on_lost
        self._leading = threading.Event()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = LeaseLock(name, namespace, self.identity)  # type: ignore[no-untyped-call]
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            self._lock,
            lease_duration=timings.lease_duration_s,
            renew_deadline=timings.renew_deadline_s,
            retry_period=timings.retry_period_s,
            onstarted_leading=lambda: None,
            onstopped_leading=lambda: None,
        )
        self._election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]

    @property
    def leading(self) -> bool:
        """True from acquiring the lease until failing to renew it or stopping (never again after)."""
        return self._leading.is_set() and not self._lost.is_set() and not self._stop.is_set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def start(self) -> None:
        # The library logs every attempt at INFO (a follower's every retry period): shown at debug level only.
        debug = logger.isEnabledFor(logging.DEBUG)
        logging.getLogger("leaderelection").setLevel(logging.DEBUG if debug else logging.WARNING)
        self._thread = threading.Thread(target=self._campaign, name=f"lease {self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop campaigning; a leader releases the lease so that a successor need not wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _attempt(self) -> bool:
        try:
            return bool(self._election.try_acquire_or_renew())  # type: ignore[no-untyped-call]
        except Exception:  # an unreachable API server is a failed attempt, never the end of the thread
            logger.warning("leader lease %s/%s: attempt failed", self.namespace, self.name, exc_info=True)
            return False

    def _campaign(self) -> None:
        retry = self._timings.retry_period_s
        while not self._attempt():
            if self._stop.wait(retry):
                return
        self._leading.set()
        renewed = time.monotonic()
        while not self._stop.wait(retry):
            if self._attempt():
                renewed = time.monotonic()
            elif time.monotonic() - renewed > self._timings.renew_deadline_s:
                self._lost.set()
                where = f"{self.namespace}/{self.name}"
                logger.error("lost the leader lease %s: stopping (to restart as a follower)", where)
                self._on_lost()
                return
        try:
            self._release()
        except Exception:  # an unreachable API server at shutdown: the Lease then expires on its own
            logger.warning("could not release the leader lease %s", self.name, exc_info=True)

    def _release(self) -> None:
        """As client-go's ReleaseOnCancel: an empty holder with a 1 s duration, only onto our own record."""
        found, record = self._lock.get(self.name, self.namespace)  # type: ignore[no-untyped-call]
        if not found or record is None or record.holder_identity != self.identity:
            return
        now = str(datetime.datetime.now())
        released = LeaderElectionRecord(None, "1", now, now)  # type: ignore[no-untyped-call]
        if self._lock.update(self.name, self.namespace, released):  # type: ignore[no-untyped-call]
            logger.info("released the leader lease %s/%s", self.namespace, self.name)

    def _holder(self) -> str:
        record = self._election.observed_record
        if record is not None and record.holder_identity:
            return f"held by {record.holder_identity}"
        return (
            f"not taken (is there a namespace {self.namespace!r}? --leader-election-namespace; "
            "the log at debug level has the API's answers)"
        )

    async def wait_until_leading(self, log_every_s: float = 60.0) -> None:
        started = time.monotonic()
        next_log = started + 2 * self._timings.retry_period_s  # not at once: the first attempt may still run
        while not self._leading.is_set():
            if self._stop.is_set():
                raise RuntimeError("stopped before this operator led")
            if time.monotonic() >= next_log:
                where = f"{self.namespace}/{self.name}"
                logger.info("waiting for the leader lease %s: %s", where, self._holder())
                next_log += log_every_s
            await asyncio.sleep(min(0.2, self._timings.retry_period_s))
        logger.info(
            "leading as %s (lease %s/%s) after %.1f s",
            self.identity,
            self.namespace,
            self.name,
            time.monotonic() - started,
        )


class StandbyProbe:
    """/healthz while the operator waits for the lease: a follower is alive, and kopf's own liveness
    endpoint only starts after the start-up handler, i.e. once this one has stopped."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> StandbyProbe:
        if self._port > 0:
            app = web.Application()
            app.router.add_get("/healthz", self._healthz)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "0.0.0.0", self._port, reuse_address=True).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    async def _healthz(_: web.Request) -> web.Response:
        return web.json_response({"leader": False, "waiting": "for the leader lease"})
