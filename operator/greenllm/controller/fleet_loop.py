"""One loop ticks every GreenModel this process owns, each at its own interval.

Until this module, each GreenModel had a kopf daemon: a task, a live copy of its whole body kept by kopf
(spec, status and kopf's own annotation, 23 KB at the benchmark's size), and a wait per tick. At thousands
of GreenModels that was most of the operator's memory. Here the watch feeds a registry of what a tick
reads (`track`, from an `on.event` handler), a `Schedule` says which GreenModels are due, and one task
starts their ticks, at most `concurrency` at a time. The schedule is fixed-rate on each GreenModel's own
phase: a tick is due an interval after the previous one was due, so the achieved period is the interval
whenever the process keeps up, and a late start does not move the ticks after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from greenllm.api import v1alpha1 as api
from greenllm.controller import fleet_observer, trust
from greenllm.controller.config import OperatorConfig
from greenllm.core import status as st
from greenllm.core.step import LoopState

Key = tuple[str, str]  # (namespace, name)

log = logging.getLogger(__name__)

# What a tick and the Deployment watcher read of a GreenModel's metadata. The spec is compiled when its
# generation is seen (LoopMemory.compile) and not kept raw; the status is kept as the watch delivered it.
TRACKED_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")


def tracked_view(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a GreenModel kept between events: identity, generation, resourceVersion and status.
    The status is the event's own object, not a copy: kopf replaces a body on each event and never
    changes one in place, and nothing here changes it."""
    meta = raw.get("metadata") or {}
    view: dict[str, Any] = {
        "apiVersion": raw.get("apiVersion"),
        "kind": raw.get("kind"),
        "metadata": {k: meta[k] for k in TRACKED_METADATA if k in meta},
    }
    if raw.get("status") is not None:
        view["status"] = raw["status"]
    return view


# LoopMemory.reconciled before this process reconciled the GreenModel (generations start at 1).
NOT_RECONCILED = -1


def spec_problem(error: ValueError) -> str:
    """What is wrong with a refused spec, as SpecValid and the InvalidSpec Event say it."""
    if not isinstance(error, ValidationError):
        return str(error)  # trust.UntrustedSpecError names the field itself
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{where}: {err['msg']}" if where else f"spec: {err['msg']}")
    return "; ".join(parts)


def ticks_per_period(period_s: float, interval_s: float) -> int:
    """The ticks of `interval_s` that make an accounting write period (at least 1)."""
    return max(1, math.ceil(period_s / interval_s)) if interval_s > 0 else 1


@dataclass
class LoopMemory:
    """What one GreenModel's loop keeps between its turns: the spec validated once per generation, the
    generation this process last reconciled, the loop state (in status.controllerState only as of the last
    write), and when the last status write was made."""

    generation: int | None = None
    spec: api.GreenModelSpec | None = None  # None: this generation's spec is invalid or untrusted
    spec_error: str = ""  # why it is, for SpecValid
    reconciled: int | None = NOT_RECONCILED  # the generation whose workloads this process last applied
    state: LoopState | None = None
    written_at: float = -math.inf  # time.monotonic() of the loop's last status write
    unwritten_ticks: float = math.inf  # the loop's ticks since that write (none yet: the first may write)
    energy: fleet_observer.EnergyReadings = field(default_factory=fleet_observer.EnergyReadings)

    def compile(self, gm: Mapping[str, Any], config: OperatorConfig) -> bool:
        """Validate and trust-check the spec of a generation not seen before; True when it was one."""
        generation = (gm.get("metadata") or {}).get("generation")
        if generation == self.generation:
            return False
        self.generation, self.spec, self.spec_error = generation, None, ""
        raw = gm.get("spec")
        try:  # a spec where the schema is not enforced can be any shape: null, a list, a string
            spec = api.GreenModelSpec.model_validate(dict(raw) if isinstance(raw, Mapping) else raw)
            trust.check(spec, gm["metadata"]["namespace"], config)
            self.spec = spec
        except ValueError as e:  # ValidationError and UntrustedSpecError: SpecValid=False, nothing to scale
            self.spec_error = spec_problem(e)
        return True

    @property
    def needs_reconcile(self) -> bool:
        """This process has not applied the generation it last saw (new to it, or the spec changed)."""
        return self.reconciled != self.generation

    def due(
        self, seen: Mapping[str, Any], new: Mapping[str, Any], now: float, period_s: float, interval_s: float
    ) -> str | None:
        """Why to write `new` over the status readers see now (`seen`): "change" when they would see a
        change, "accounting" when only the accounting moved and the period is over; None: no write.

        The period is also counted in ticks: an accounting-only write waits for period / interval ticks
        (4 at 60 s / 15 s), which a process keeping up reaches with the period itself. A process that is
        behind therefore writes less per second instead of more per tick (each write costs the request and
        kopf's processing of its watch event). At N = 5,000 one build wrote on every tick at a 73 s period,
        and the previous rule (every other tick) 0.52 writes per tick at 33 s; with this one a run behind
        at 26 s wrote 0.28, though it stayed at 26 s: writes were not what held it there. A restart loses
        no energy either way (the counters' increase since the persisted sample covers it); only the
        status shown is older, by at most period / interval of its late ticks."""
        if st.reader_view(new) != st.reader_view({k: seen.get(k) for k in new}):
            return "change"
        if now - self.written_at < period_s or self.unwritten_ticks + 1 < ticks_per_period(
            period_s, interval_s
        ):
            return None
        return "accounting"

    def ticked(self, wrote: bool, now: float) -> None:
        """Count a tick of the loop, and when it wrote the status (`now`, time.monotonic())."""
        if wrote:
            self.written_at, self.unwritten_ticks = now, 0
        else:
            self.unwritten_ticks += 1


@dataclass(eq=False)
class Tracked:
    """One GreenModel as the loop knows it: `gm` is its latest view (tracked_view), replaced by the response
    of each status write this process makes and by each event (but not by one older than that write)."""

    gm: dict[str, Any]
    memory: LoopMemory = field(default_factory=LoopMemory)
    # The resourceVersion of this process's last write until the watch delivers that write's event: the
    # watch is ordered, so the events before it are older than `gm` and must not replace it.
    written_version: str | None = None

    @property
    def key(self) -> Key:
        meta = self.gm["metadata"]
        return meta.get("namespace", ""), meta.get("name", "")

    @property
    def uid(self) -> str | None:
        uid: str | None = self.gm["metadata"].get("uid")
        return uid


def _newer_or_written(event_view: Mapping[str, Any], known: Tracked) -> bool:
    """Whether a watch event's view may replace the view of this process's last write: it is that write's
    own event, or a later generation (a spec change is never held back). resourceVersions are opaque, so
    order comes from the stream, not from comparing them. At N = 5,000 the watch ran seconds behind the
    writes, and an older event put back a stale resourceVersion: the next write was refused (409) and
    read the object again (3,379 GETs in one steady-state window)."""
    meta = event_view["metadata"]
    if meta.get("resourceVersion") == known.written_version:
        return True
    generation, held = meta.get("generation"), known.gm["metadata"].get("generation")
    return generation is not None and held is not None and generation > held


def phase_of(uid: str | None) -> float:
    """A stable share of the interval, from the uid: GreenModels created together would otherwise tick
    together forever, and their queries and writes would come in bursts."""
    return (zlib.crc32(str(uid).encode()) % 1000) / 1000


@dataclass
class _Slot:
    due: float
    seq: int
    phase: float
    ticks: int = 0
    running: bool = False
    woken: bool = False


class Schedule:
    """When each GreenModel's next tick is due. Pure: times are passed in, nothing waits.

    - A new GreenModel is due at once (its first tick finds what reconcile deployed, or nothing yet).
    - After its first tick (which started at `started` and asked for `interval`), a GreenModel is due at
      `started + interval * (1 + phase)`, which spreads GreenModels created together over the interval;
      after each later one, an interval after that tick was due, not after it started. At N = 5,000 the
      next tick counted from the start: ticks that started late together stayed together, every interval
      brought a burst of thousands of them (and of their status writes) and then idle seconds, and each
      burst left them later. A tick that ran more than an interval late skips the ticks it missed
      instead of running them back to back (the next tick accounts from the last sample: nothing is
      lost but re-planning).
    - A woken GreenModel (its spec changed) is due at once, or as soon as its running tick ends.
    - New and woken GreenModels go before ticks that are merely due: their turn reconciles (a new model has
      no Deployment until then), and a process that is behind had thousands of overdue ticks ahead of them.
      At N = 5,000 the GreenModels created first ticked several times each before the last had a
      Deployment. A periodic tick waits instead, for as long as new ones keep coming faster than they are
      reconciled; it accounts from its last sample, so no energy is lost, only re-planning waits.
    """

    def __init__(self) -> None:
        self._slots: dict[Key, _Slot] = {}
        self._heap: list[tuple[int, float, int, Key]] = []  # (0 new or woken, else 1; due; seq; key)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def add(self, key: Key, now: float, phase: float) -> None:
        """Track `key` (due at once); a key already tracked is left as it is."""
        if key not in self._slots:
            self._slots[key] = _Slot(due=now, seq=0, phase=phase)
            self._push(key, now, first=True)

    def remove(self, key: Key) -> None:
        self._slots.pop(key, None)  # its heap entries are skipped when they come up

    def wake(self, key: Key, now: float) -> None:
        slot = self._slots.get(key)
        if slot is None:
            return
        if slot.running:
            slot.woken = True
        else:
            self._push(key, now, first=True)

    def next_due(self) -> float | None:
        """The earliest due time of a GreenModel not ticking now (None: none)."""
        while self._heap:
            _, due, seq, key = self._heap[0]
            slot = self._slots.get(key)
            if slot is not None and slot.seq == seq and not slot.running:
                return due
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: float) -> Key | None:
        """A GreenModel due by `now`, marked running; None when none is due."""
        due = self.next_due()
        if due is None or due > now:
            return None
        *_, key = heapq.heappop(self._heap)
        self._slots[key].running = True
        return key

    def due(self, key: Key) -> float | None:
        """When `key`'s next (or running) tick was due; None: not tracked."""
        slot = self._slots.get(key)
        return None if slot is None else slot.due

    def finished(self, key: Key, started: float, interval: float, now: float) -> float | None:
        """Record the end of `key`'s tick; returns when the next one is due (None: no longer tracked)."""
        slot = self._slots.get(key)
        if slot is None:
            return None
        slot.running = False
        slot.ticks += 1
        if slot.ticks == 1:
            due = started + interval * (1 + slot.phase)
        else:
            due = slot.due + interval  # its own phase: a late start does not move the next tick
            if interval > 0 and due < now:  # more than an interval late: skip the missed ticks
                due += math.ceil((now - due) / interval) * interval
        if slot.woken:
            slot.woken = False
            self._push(key, now, first=True)
        else:
            self._push(key, max(due, now))
        return slot.due

    def _push(self, key: Key, due: float, first: bool = False) -> None:
        slot = self._slots[key]
        self._seq += 1
        slot.due, slot.seq = due, self._seq
        heapq.heappush(self._heap, (0 if first else 1, due, self._seq, key))


TickFunction = Callable[[Tracked], Awaitable[float]]


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0  # holding or waiting


class FleetLoop:
    """The registry of tracked GreenModels and the one task that ticks them on their `Schedule`.

    `tick(tracked)` returns the seconds until that GreenModel's next tick and must not raise (a raise is
    logged and retried after `retry_s`). `acting()` False pauses ticking (a lost leader Lease).
    `started(lag)` is told how late each tick started after it was due (waiting for the event loop or for
    one of the `concurrency` slots): the achieved period is the interval plus that lag.
    """

    def __init__(
        self,
        tick: TickFunction,
        *,
        concurrency: int,
        acting: Callable[[], bool] = lambda: True,
        retry_s: float = 15.0,
        started: Callable[[float], None] = lambda lag: None,
    ) -> None:
        self._tick = tick
        self._acting = acting
        self._started = started
        self._retry_s = retry_s
        self._slots = asyncio.Semaphore(concurrency)
        self._schedule = Schedule()
        self._entries: dict[Key, Tracked] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticking: set[asyncio.Task[None]] = set()
        self._turns: dict[Key, _Turn] = {}  # only while someone writes: most GreenModels have none

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        """Tick tasks not done yet: at most `concurrency` hold a slot, and a few more may be just ending."""
        return len(self._ticking)

    def track(self, raw: Mapping[str, Any]) -> Tracked:
        """Take a GreenModel as an event delivered it: a new one is due at once; a known one keeps its
        loop memory unless its uid changed (deleted and created again under the same name)."""
        entry = Tracked(tracked_view(raw))
        known = self._refresh(entry)
        if known is not None:
            return known
        self.forget(entry.key)  # another uid under this name, if any
        self._entries[entry.key] = entry
        self._schedule.add(entry.key, self._now(), phase_of(entry.uid))
        self._changed.set()
        return entry

    def saw(self, written: Mapping[str, Any] | None) -> None:
        """This process wrote the GreenModel and got `written` back: a fresher view than the last event's,
        so the next write on it does not start from a stale resourceVersion (a 409 and a GET)."""
        if written:
            self._refresh(Tracked(tracked_view(written)), written=True)

    def _refresh(self, seen: Tracked, written: bool = False) -> Tracked | None:
        """The tracked entry of the same GreenModel (same key and uid), now with `seen`'s view; None if
        there is none. `written`: the view is this process's write's response, not an event's."""
        known = self._entries.get(seen.key)
        if known is None or known.uid != seen.uid:
            return None
        if written:
            known.written_version = seen.gm["metadata"].get("resourceVersion")
        elif known.written_version is not None:
            if not _newer_or_written(seen.gm, known):
                return known  # the watch lags behind this process's own write: keep the write's view
            known.written_version = None
        known.gm = seen.gm
        return known

    def latest(self, key: Key) -> Tracked | None:
        return self._entries.get(key)

    @contextlib.asynccontextmanager
    async def writing(self, key: Key) -> AsyncIterator[None]:
        """Writers of one GreenModel's status (reconcile, its tick, the Deployment watcher) take turns.

        Each writes with the resourceVersion of the view it read. Reconcile creates the Deployment and
        then writes status; the Deployment's event reached the watcher in between, and the watcher wrote
        from the view before reconcile's write: one of the two was refused (409) and read the object
        again, two requests more per new GreenModel. Taking turns, the watcher reads the view after
        reconcile's write (`saw`) and most often has nothing to write.
        """
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        turn.holders += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.holders -= 1
            if turn.holders == 0:
                del self._turns[key]

    def forget(self, key: Key) -> Tracked | None:
        """Stop tracking `key`; returns what was tracked (None: nothing)."""
        self._schedule.remove(key)
        return self._entries.pop(key, None)

    def wake(self, key: Key) -> None:
        """Tick `key` now (its spec changed): a shorter interval applies at once, not after the old one."""
        self._schedule.wake(key, self._now())
        self._changed.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="greenllm fleet loop")

    async def stop(self) -> None:
        """Stop ticking; ticks in flight are cancelled."""
        tasks = [t for t in (self._task, *self._ticking) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _run(self) -> None:
        while True:
            if not self._acting():
                await asyncio.sleep(1.0)  # stopping after a lost Lease: a second leader may act already
                continue
            while (key := self._schedule.pop_due(self._now())) is not None:
                due = self._schedule.due(key)
                await self._slots.acquire()
                entry = self._entries.get(key)
                if entry is None:  # forgotten while waiting for a slot
                    self._slots.release()
                    continue
                if due is not None:
                    self._started(max(self._now() - due, 0.0))
                task = asyncio.create_task(self._run_one(key, entry))
                self._ticking.add(task)
                task.add_done_callback(self._ticking.discard)
            # No await between the last look at the schedule and this clear: a change made meanwhile
            # would be lost until the next due time otherwise.
            self._changed.clear()
            due = self._schedule.next_due()
            timeout = None if due is None else max(due - self._now(), 0.0)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result instead of raising
            # when the wait ends just as the task is cancelled, and `stop` then waited for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()

    async def _run_one(self, key: Key, entry: Tracked) -> None:
        started = self._now()
        interval = self._retry_s
        try:
            interval = await self._tick(entry)
        except Exception:  # the tick reports its own errors; this keeps the loop alive if it cannot
            log.exception("tick of %s/%s failed", *key)
        finally:
            self._slots.release()
            if self._entries.get(key) is entry:
                self._schedule.finished(key, started, interval, self._now())
                self._changed.set()
