"""Whether kopf's peering pauses this operator, for the fleet loop, which kopf does not pause.

kopf pauses a peered operator by closing its watch streams: its handlers stop, but the fleet loop is the
operator's own task and kept ticking (and reconciling) every GreenModel it already tracked, so two peers
both created a Deployment (tests/e2e/test_peering.py). kopf keeps its pause to itself, so this watches
the same peering objects and applies kopf's rule (kopf 1.45, `_core/engines/peering.py`,
`process_peering_event`) to what it reads.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping
from typing import Any

from kubernetes import client, watch

logger = logging.getLogger(__name__)

GROUP, VERSION = "kopf.dev", "v1"
WATCH_TIMEOUT_S = 30  # the server ends each watch after this; the thread then watches again
RETRY_S = 1.0


def _live_priority(record: Any, now: datetime.datetime) -> int | None:
    """A peer's priority while its record lives (kopf: until lastseen + lifetime); None when it has expired
    or cannot be read (kopf writes every field; anything else is not a peer of ours)."""
    try:
        lastseen = datetime.datetime.fromisoformat(str(record["lastseen"]))
        lifetime = datetime.timedelta(seconds=int(record.get("lifetime", 60)))
        priority = int(record.get("priority", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if lastseen.tzinfo is None:
        lastseen = lastseen.replace(tzinfo=datetime.UTC)
    return priority if lastseen + lifetime > now else None


def conflicting(status: Mapping[str, Any] | None, priority: int, now: datetime.datetime) -> bool:
    """Whether kopf pauses an operator of `priority` given a peering object's status (peer id -> record).

    kopf pauses while a live peer (its record not expired) has a higher priority, or another live peer
    has the same one. kopf compares peers with its own identity, which it does not expose, so here the
    same-priority rule counts this operator's own record too: more than one live record of `priority` is a
    conflict, and so is none (this operator's first keep-alive not written yet, or expired): the loop waits
    for it rather than act where kopf might not."""
    live = [p for r in (status or {}).values() if (p := _live_priority(r, now)) is not None]
    return any(p > priority for p in live) or live.count(priority) != 1


class PeeringWatch:
    """Watches the peering object `name` (cluster-wide, or in each of `namespaces`) in a thread and says
    whether this operator may act by kopf's rule. kopf pauses the whole operator when any of them has a
    conflict; so does `acting`. Until a watch has read its object, or while the object is missing (kopf
    requires it), the answer is no."""

    def __init__(
        self,
        name: str,
        priority: int,
        namespaces: tuple[str, ...],
        api: client.CustomObjectsApi | None = None,
    ) -> None:
        self.name, self.priority = name, priority
        self._api = api or client.CustomObjectsApi(client.ApiClient(client.Configuration.get_default_copy()))
        self._places: tuple[str | None, ...] = namespaces or (None,)
        self._status: dict[str | None, Mapping[str, Any] | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watches: list[watch.Watch] = []
        self._was_acting: bool | None = None

    def start(self) -> None:
        for place in self._places:
            name = f"peering {place or 'cluster'}"
            threading.Thread(target=self._follow, args=(place,), name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop watching; the threads end with their current watch (at most WATCH_TIMEOUT_S), not joined."""
        self._stop.set()
        for w in list(self._watches):
            w.stop()  # type: ignore[no-untyped-call]

    def acting(self, now: datetime.datetime | None = None) -> bool:
        now = now or datetime.datetime.now(datetime.UTC)
        with self._lock:
            read = [self._status.get(p) for p in self._places]  # None: missing, or not read yet
        acting = all(s is not None and not conflicting(s, self.priority, now) for s in read)
        if acting != self._was_acting:
            self._was_acting = acting
            if acting:
                logger.info(
                    "peering %s: no live peer above priority %d; the fleet loop acts",
                    self.name,
                    self.priority,
                )
            else:
                logger.info(
                    "peering %s: paused (a peer of higher or equal priority, or no record of ours yet)",
                    self.name,
                )
        return acting

    def _set(self, place: str | None, status: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._status[place] = status

    def _follow(self, place: str | None) -> None:
        """List the object, then watch from the list's resourceVersion; again after an error or a timeout."""
        while not self._stop.is_set():
            try:
                version = self._list(place)
                w = watch.Watch()  # type: ignore[no-untyped-call]
                self._watches.append(w)
                try:
                    for event in w.stream(  # type: ignore[no-untyped-call]
                        *self._call(place), resource_version=version, timeout_seconds=WATCH_TIMEOUT_S
                    ):
                        obj = event.get("object") or {}
                        if (obj.get("metadata") or {}).get("name") != self.name:
                            continue
                        self._set(
                            place, None if event.get("type") == "DELETED" else (obj.get("status") or {})
                        )
                        if self._stop.is_set():
                            break
                finally:
                    self._watches.remove(w)
            except Exception as e:  # an unreachable API or a broken stream: keep what was read, retry
                if self._stop.is_set():
                    return
                logger.warning("peering %s: watch of %s failed: %s", self.name, place or "the cluster", e)
                self._stop.wait(RETRY_S)

    def _call(self, place: str | None) -> tuple[Any, ...]:
        if place is None:
            return (self._api.list_cluster_custom_object, GROUP, VERSION, "clusterkopfpeerings")
        return (self._api.list_namespaced_custom_object, GROUP, VERSION, place, "kopfpeerings")

    def _list(self, place: str | None) -> str:
        listed = self._call(place)
        answer: dict[str, Any] = listed[0](*listed[1:])
        found = [o for o in answer.get("items") or [] if (o.get("metadata") or {}).get("name") == self.name]
        self._set(place, (found[0].get("status") or {}) if found else None)
        version: str = (answer.get("metadata") or {}).get("resourceVersion") or ""
        return version
