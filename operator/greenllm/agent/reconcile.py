"""Desired vs applied GPU power settings: apply, verify, restore, remember.

One `Reconciler` per agent. Each cycle: read every GPU, work out which GPU belongs to which GreenModel
(core.power.assign), decide per GPU with a deadband, a hold time and retry backoff, then act through the
GpuBackend, keeping the UUID-keyed record (state.StateStore) ahead of every change.

Fast tier: a GPU owned by a GreenModel with `status.fastTier` gets a `FastGpu` here. The cycle keeps its
pods and pair of settings up to date; `fast_step` (about once a second, from the runner's fast loop) feeds
the pod's queue reading to core.fasttier.next_mode and applies `efficient` or `burst` through the same
clamping and apply path. The hold time does not apply to a switch within the pair (the rule has its own
hold); it applies to the pair itself: a new pair (or leaving the fast tier) waits until `min_hold_s` after
the current pair was adopted. Callers serialise `reconcile`, `fast_step` and the restores (one lock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from greenllm.agent.gpu.base import GpuBackend, GpuError, GpuErrorKind, GpuInfo, GpuReading
from greenllm.agent.kube import ClusterView
from greenllm.agent.ownership import GreenModelRef
from greenllm.agent.podresources import PodDevices
from greenllm.agent.state import RecordError, SettingRecord, StateStore
from greenllm.core.fasttier import FastState, FastTier, Mode, QueueReading, next_mode
from greenllm.core.performance import PowerSetting
from greenllm.core.power import (
    Applied,
    Assignment,
    Backoff,
    Change,
    Claim,
    HoldPolicy,
    Requested,
    Role,
    Target,
    assign,
    decide_change,
    is_absurd_power,
    mw_to_watts,
    resolve_device_id,
    target_for,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Restraint:
    """Restraint of the agent. Policy choices, not calibrated constants:
    - deadband 5 W: 1% of the H100 SXM5's settable range, 200-700 W (data/gpu_specs/gpu_power_specs.csv);
    - hold 60 s: four of the operator's default re-plan intervals (GreenModel spec.scaling.interval, 15 s);
    - a power reading above 1.5 x the device's maximum limit is a sensor fault, not a load;
    - retries back off from one agent interval, doubling, up to ten intervals."""

    hold: HoldPolicy = field(default_factory=lambda: HoldPolicy(deadband_mw=5_000, min_hold_s=60.0))
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=10.0, max_s=100.0))
    absurd_power_factor: float = 1.5
    restore_attempts: int = 3


class Action(StrEnum):
    UNCHANGED = "unchanged"  # already where it should be (or within the deadband)
    APPLIED = "applied"
    CLAMPED = "clamped"  # applied, but not the value asked for (below the device minimum, clock snapped)
    RESTORED = "restored"  # back to the device default
    HELD = "held"  # a change is due but the hold time has not passed
    REFUSED = "refused"  # absurd or invalid request ignored; GPU left as it was
    SHARED = "shared"  # GPU shared with another GreenModel or a foreign pod: left alone
    FAILED = "failed"  # the driver refused; retried with backoff
    BACKOFF = "backoff"  # waiting to retry after a failure
    UNKNOWN = "unknown"  # the cluster or the kubelet could not be read: nothing changed
    UNMANAGED = "unmanaged"  # the device has no settable power limit


@dataclass(frozen=True, slots=True)
class GpuReport:
    """One GPU after one cycle: what it holds, what was asked, what was set, what the driver enforces."""

    uuid: str
    index: int
    role: Role | None
    action: Action
    greenmodel: GreenModelRef | None = None  # the owning GreenModel (OWNED) if known
    wanted_by: tuple[str, ...] = ()  # GreenModels ("ns/name") whose pods hold the GPU
    pods: tuple[str, ...] = ()
    requested_limit_w: float | None = None
    target_limit_mw: int | None = None  # the (clamped) value chosen; None = default
    enforced_limit_mw: int | None = None
    default_limit_mw: int | None = None
    requested_clock_mhz: int | None = None
    locked_clock_mhz: int | None = None
    power_mw: int | None = None
    energy_mj: int | None = None
    error: str | None = None  # GpuErrorKind value or "absurd_power"
    message: str = ""


@dataclass(frozen=True, slots=True)
class FastPod:
    """A pod on a fast-tier GPU and where its vLLM metrics are (pod IP from the API server, spec.port)."""

    key: str  # "namespace/name"
    ip: str | None
    port: int
    terminating: bool = False


@dataclass
class FastGpu:
    """The fast tier of one GPU: the pair in force, the rule's state, and what it did (for metrics)."""

    gpu: GpuInfo
    owner: GreenModelRef
    pods: tuple[FastPod, ...]
    tier: FastTier
    since: float  # when `tier` was adopted: a new pair waits for the hold time from here
    state: FastState = field(default_factory=FastState)
    applied: Mode | None = None  # the mode whose setting is on the GPU (None: neither, yet)
    accounted_at: float | None = None
    seconds: dict[Mode, float] = field(default_factory=lambda: dict.fromkeys(Mode, 0.0))
    switches: int = 0  # changes of the applied mode
    failures: dict[str, int] = field(default_factory=dict)  # read failure reason -> count
    # pod key -> (waiting + running, vllm:request_success_total) at the pod's previous read, if that read
    # succeeded and had the counter: what `arrivals` compares the next read with
    counted: dict[str, tuple[float, float]] = field(default_factory=dict)

    def arrivals(self, pod: str, reading: QueueReading | None, succeeded: float | None) -> float | None:
        """Requests that arrived at `pod` since its previous read: the change of the requests in the
        system (waiting + running) plus the requests finished in between (the increase of the success
        counter), at least 0. None when unknown: no previous good read with the counter (the first read, or
        the previous one failed or lacked the counter), this read failed or lacks the counter, or the
        counter went down (vLLM restarted). Remembers this read for the next one either way."""
        if reading is None or succeeded is None:
            self.counted.pop(pod, None)  # the next good read starts afresh, never spans a gap
            return None
        in_system = reading.waiting + reading.running
        previous = self.counted.get(pod)
        self.counted[pod] = (in_system, succeeded)
        if previous is None or succeeded < previous[1]:
            return None
        return max(0.0, (in_system - previous[0]) + (succeeded - previous[1]))

    def account(self, now: float) -> None:
        """Add the time since the last call to the mode in force."""
        if self.applied is not None and self.accounted_at is not None:
            self.seconds[self.applied] += max(0.0, now - self.accounted_at)
        self.accounted_at = now


_SETTLED = (Action.APPLIED, Action.CLAMPED, Action.RESTORED, Action.UNCHANGED)  # the setting is on the GPU


def _requested(setting: PowerSetting) -> Requested:
    return Requested(limit_w=setting.limit_w, clock_mhz=setting.locked_clock_mhz)


@dataclass(frozen=True, slots=True)
class CycleReport:
    gpus: tuple[GpuReport, ...]
    cluster_known: bool
    error: str | None = None


class Reconciler:
    def __init__(
        self,
        backend: GpuBackend,
        store: StateStore | None,
        policy: Restraint | None = None,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.backend = backend
        self.store = store
        self.policy = policy or Restraint()
        self.dry_run = dry_run
        self._clock = clock
        self._sleep = sleep
        self.records: dict[str, SettingRecord] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # uuid -> (consecutive failures, retry at)
        # When a GreenModel-driven change last happened, also after a move back to the default (which
        # drops the record): the hold time runs from it. Urgent restores clear it.
        self._changed_at: dict[str, float] = {u: r.changed_at for u, r in self.records.items()}
        self._record_corrupt = False
        self._bad_records: dict[str, str] = {}  # uuid -> why its entry in the record was not sane
        self.fast: dict[str, FastGpu] = {}  # uuid -> fast tier of a GPU owned by a GreenModel with one
        if store is not None:
            try:
                self.records = store.load()
                self._bad_records = dict(store.bad)
            except RecordError as exc:
                log.error("GPU power record unreadable (%s): every GPU will be restored to its default", exc)
                self._record_corrupt = True
                if not dry_run:
                    moved = store.quarantine()
                    log.error("unreadable record moved to %s", moved)

    # -------------------------------------------------------------------------------- record

    def _save(self) -> None:
        if self.store is not None and not self.dry_run:
            self.store.save(self.records)

    # -------------------------------------------------------------------------------- start / stop

    def startup(self) -> list[GpuReport]:
        """Restore every GPU the record says was changed (a previous agent died without restoring).
        With an unreadable record, restore every GPU whose limit or clocks may have been changed; with a bad
        entry (numbers not finite or out of range), restore that GPU."""
        inventory = {g.uuid: g for g in self.backend.inventory()}
        if self._record_corrupt:
            for gpu in inventory.values():
                if gpu.constraints is not None:
                    self.records.setdefault(
                        gpu.uuid,
                        # Unknown what was set: pending makes the restore set the limit and reset clocks.
                        SettingRecord(
                            default_limit_mw=gpu.constraints.default_mw,
                            limit_mw=None,
                            clock_mhz=None,
                            changed_at=self._clock(),
                            pending=True,
                        ),
                    )
            self._record_corrupt = False
        for uuid, why in sorted(self._bad_records.items()):
            found = inventory.get(uuid)
            if found is None or found.constraints is None:
                log.warning("GPU %s has a bad record entry (%s) but is not a manageable GPU here", uuid, why)
                continue
            log.error("GPU %s: bad record entry (%s); restoring its defaults", uuid, why)
            # Unknown what was set: pending makes the restore set the default limit and reset clocks.
            self.records[uuid] = SettingRecord(
                default_limit_mw=found.constraints.default_mw,
                limit_mw=None,
                clock_mhz=None,
                changed_at=self._clock(),
                pending=True,
            )
        self._bad_records = {}
        for uuid in [u for u in self.records if u not in inventory or inventory[u].constraints is None]:
            log.warning(
                "GPU %s in the record is not a manageable GPU of this node; dropping its record", uuid
            )
            del self.records[uuid]
        self._save()
        reports = []
        for uuid in sorted(self.records):
            log.info("restoring GPU %s left changed by a previous agent (%s)", uuid, self.records[uuid])
            reports.append(self._restore_now(inventory[uuid]))
        return reports

    def restore_all(self) -> list[GpuReport]:
        """Restore every GPU this agent changed (on SIGTERM), retrying each a few times."""
        self.fast.clear()
        inventory = {g.uuid: g for g in self.backend.inventory()}
        reports = []
        for uuid in sorted(self.records):
            gpu = inventory.get(uuid)
            if gpu is None or gpu.constraints is None:
                continue
            reports.append(self._restore_now(gpu))
        return reports

    def _restore_now(self, gpu: GpuInfo) -> GpuReport:
        report = GpuReport(uuid=gpu.uuid, index=gpu.index, role=None, action=Action.FAILED)
        for attempt in range(self.policy.restore_attempts):
            try:
                report = self._change(gpu, None, None, greenmodel="", base=report, urgent=True)
            except Exception as exc:  # one GPU's fault never stops the restore of the others
                report = _internal_failure(report, exc)
            if report.action is not Action.FAILED:
                break
            self._sleep(min(0.2 * 2**attempt, 2.0))
        return report

    # -------------------------------------------------------------------------------- one cycle

    def reconcile(self, view: ClusterView | None, pods: list[PodDevices] | None) -> CycleReport:
        now = self._clock()
        inventory = self.backend.inventory()
        readings = {g.uuid: self._read(g) for g in inventory}
        if view is None or pods is None:
            what = "the Kubernetes API" if view is None else "the kubelet PodResources API"
            message = f"cannot read {what}: nothing changed"
            unknown = tuple(
                replace(
                    readings[g.uuid],
                    action=Action.UNKNOWN,
                    message="; ".join(m for m in (message, readings[g.uuid].message) if m),
                )
                for g in inventory
            )
            return CycleReport(gpus=unknown, cluster_known=False, error=message)
        claims = list(self._claims(view, pods, inventory))
        assignments = assign((g.uuid for g in inventory), claims)
        wanted: dict[str, set[str]] = {}
        for claim in claims:
            if claim.owner is not None:
                wanted.setdefault(claim.gpu_uuid, set()).add(claim.owner)
        reports = []
        for gpu in inventory:
            base = replace(
                readings[gpu.uuid],
                role=assignments[gpu.uuid].role,
                pods=assignments[gpu.uuid].pods,
                wanted_by=tuple(sorted(wanted.get(gpu.uuid, ()))),
            )
            try:
                reports.append(self._reconcile_gpu(gpu, assignments[gpu.uuid], view, base, now))
            except Exception as exc:  # one GPU's fault never stops the cycle for the others
                reports.append(_internal_failure(base, exc))
        return CycleReport(gpus=tuple(reports), cluster_known=True)

    def _claims(self, view: ClusterView, pods: list[PodDevices], inventory: list[GpuInfo]) -> Iterable[Claim]:
        identities = [g.identity for g in inventory]
        for pod in pods:
            known = view.pods.get(pod.key)
            owner = known.owner.key if known is not None and known.owner is not None else None
            for device in pod.devices:
                resolved = resolve_device_id(device.device_id, identities)
                if resolved is None:
                    continue
                yield Claim(pod=pod.key, gpu_uuid=resolved.uuid, owner=owner, partition=resolved.partition)

    def _read(self, gpu: GpuInfo) -> GpuReport:
        base = GpuReport(
            uuid=gpu.uuid,
            index=gpu.index,
            role=None,
            action=Action.UNCHANGED,
            default_limit_mw=gpu.constraints.default_mw if gpu.constraints else None,
        )
        record = self.records.get(gpu.uuid)
        if record is not None:
            base = replace(base, target_limit_mw=record.limit_mw, locked_clock_mhz=record.clock_mhz)
        try:
            reading = self.backend.read(gpu.uuid)
        except GpuError as exc:
            log.warning("cannot read GPU %s: %s", gpu.uuid, exc)
            return replace(base, error=exc.kind.value, message=str(exc))
        return self._with_reading(base, gpu, reading)

    def _with_reading(self, base: GpuReport, gpu: GpuInfo, reading: GpuReading) -> GpuReport:
        report = replace(base, energy_mj=reading.energy_mj, enforced_limit_mw=reading.enforced_limit_mw)
        if reading.power_mw is None:
            return report
        top = gpu.constraints.max_mw if gpu.constraints else None
        if top is not None and is_absurd_power(reading.power_mw, top, self.policy.absurd_power_factor):
            message = (
                f"ignored absurd power reading {mw_to_watts(reading.power_mw):g} W "
                f"(> {self.policy.absurd_power_factor:g} x {mw_to_watts(top):g} W)"
            )
            log.warning("GPU %s: %s", gpu.uuid, message)
            return replace(report, error="absurd_power", message=message)
        return replace(report, power_mw=reading.power_mw)

    def _reconcile_gpu(
        self, gpu: GpuInfo, assignment: Assignment, view: ClusterView, base: GpuReport, now: float
    ) -> GpuReport:
        if gpu.constraints is None:
            return replace(base, action=Action.UNMANAGED, message="the device has no settable power limit")
        requested: Requested | None = None
        setting = view.greenmodels.get(assignment.owner or "") if assignment.role is Role.OWNED else None
        fast = self.fast.get(gpu.uuid)
        if fast is not None and (setting is None or setting.ref.key != fast.owner.key):
            del self.fast[gpu.uuid]  # its pods left (or another GreenModel holds it): restored below
            fast = None
        if setting is not None:
            base = replace(base, greenmodel=setting.ref)
            if setting.problem is not None:
                return replace(base, action=Action.REFUSED, message=f"{setting.ref.key}: {setting.problem}")
            requested = setting.requested
        if setting is None or (fast is None and setting.fast is None):
            return self._move(gpu, assignment, requested, base, now, self.policy.hold)
        pods = tuple(
            FastPod(
                key=key,
                ip=view.pods[key].ip if key in view.pods else None,
                port=setting.port,
                terminating=key in view.pods and view.pods[key].terminating,
            )
            for key in assignment.pods
        )
        if fast is None:
            # Entering the fast tier is a change of setting like any other (hold as before); a GPU nobody
            # has read yet starts at `burst` (SLO first).
            assert setting.fast is not None
            tier = setting.fast
            report = self._move(gpu, assignment, _requested(tier.burst), base, now, self.policy.hold)
            if report.action in _SETTLED:
                self.fast[gpu.uuid] = FastGpu(
                    gpu=gpu,
                    owner=setting.ref,
                    pods=pods,
                    tier=tier,
                    since=now,
                    applied=Mode.BURST,
                    accounted_at=now,
                )
            return report
        fast.pods = pods
        fast.counted = {k: v for k, v in fast.counted.items() if k in {p.key for p in pods}}
        switch = replace(self.policy.hold, min_hold_s=0.0)  # within the pair: the rule's hold only
        held = ""
        if setting.fast != fast.tier:
            wait = self.policy.hold.min_hold_s - (now - fast.since)
            if wait > 0:
                held = f"hold time: next change of the fast-tier settings in {wait:.0f} s"
            elif setting.fast is None:
                del self.fast[gpu.uuid]  # back to status.powerLimitW / lockedClockMhz, held from `since`
                return self._move(gpu, assignment, requested, base, now, switch)
            else:
                fast.tier, fast.since = setting.fast, now
        report = self._apply_fast(fast, assignment, base, now, switch)
        if held and report.action is Action.UNCHANGED:
            return replace(report, action=Action.HELD, message=held)
        return report

    def _apply_fast(
        self, fast: FastGpu, assignment: Assignment, base: GpuReport, now: float, hold: HoldPolicy
    ) -> GpuReport:
        """Move the GPU to the setting of the rule's mode; remember the mode once it is on the GPU."""
        mode = fast.state.mode
        report = self._move(fast.gpu, assignment, _requested(fast.tier.setting(mode)), base, now, hold)
        if report.action in _SETTLED and fast.applied is not mode:
            fast.account(now)
            fast.applied = mode
            fast.switches += 1
        return report

    def _move(
        self,
        gpu: GpuInfo,
        assignment: Assignment,
        requested: Requested | None,
        base: GpuReport,
        now: float,
        hold: HoldPolicy,
    ) -> GpuReport:
        """Clamp `requested` to the device; apply it unless restraint (deadband, `hold`, backoff) says no."""
        assert gpu.constraints is not None
        record = self.records.get(gpu.uuid)
        target = target_for(
            assignment, requested, gpu.constraints, gpu.supported_clocks_mhz, record is not None
        )
        base = replace(
            base,
            requested_limit_w=target.limit.requested_w,
            requested_clock_mhz=target.clock.requested_mhz,
        )
        if target.leave:
            return self._left(base, assignment, target)
        failures, retry_at = self._failures.get(gpu.uuid, (0, 0.0))
        if failures and now < retry_at:
            return replace(base, action=Action.BACKOFF, message=f"retry after {retry_at - now:.0f} s")
        applied = (
            Applied(limit_mw=record.limit_mw, clock_mhz=record.clock_mhz, changed_at=record.changed_at)
            if record is not None
            else Applied(changed_at=self._changed_at.get(gpu.uuid))
        )
        if record is not None and record.pending:
            verdict = Change.APPLY  # the last attempt failed half-way: the GPU's state is unknown, redo it
        else:
            verdict = decide_change(
                applied,
                target.limit.target_mw,
                target.clock.target_mhz,
                gpu.constraints.default_mw,
                now,
                hold,
                urgent=target.urgent,
            )
        if verdict is Change.NONE:
            return replace(base, action=Action.SHARED if assignment.role is Role.SHARED else Action.UNCHANGED)
        if verdict is Change.HELD:
            held_for = hold.min_hold_s - (now - (applied.changed_at or now))
            return replace(base, action=Action.HELD, message=f"hold time: next change in {held_for:.0f} s")
        report = self._change(
            gpu,
            target.limit.target_mw,
            target.clock.target_mhz,
            greenmodel=assignment.owner or "",
            base=base,
            urgent=target.urgent,
        )
        if report.action is Action.APPLIED and (target.limit.clamped or target.clock.clamped):
            report = replace(report, action=Action.CLAMPED, message=_clamp_text(target, gpu))
        if assignment.role in (Role.SHARED, Role.FOREIGN) and report.action is Action.RESTORED:
            report = replace(report, message=f"restored: {assignment.reason}")
        return report

    # -------------------------------------------------------------------------------- fast tier

    def fast_step(self, uuid: str, reading: QueueReading | None, now: float) -> GpuReport | None:
        """One read of a fast-tier GPU's pod(s): the rule's next mode, applied at once if it changed
        (`reading` None: unreadable, which means burst). None when the GPU has no fast tier (any more)."""
        fast = self.fast.get(uuid)
        if fast is None or fast.gpu.constraints is None:
            return None
        fast.account(now)
        fast.state = next_mode(fast.tier.rule, fast.state, now, reading)
        assignment = Assignment(uuid, Role.OWNED, owner=fast.owner.key, pods=tuple(p.key for p in fast.pods))
        base = GpuReport(
            uuid=uuid,
            index=fast.gpu.index,
            role=Role.OWNED,
            action=Action.UNCHANGED,
            greenmodel=fast.owner,
            wanted_by=(fast.owner.key,),
            pods=assignment.pods,
            default_limit_mw=fast.gpu.constraints.default_mw,
        )
        if fast.applied is fast.state.mode:
            return base
        return self._apply_fast(fast, assignment, base, now, replace(self.policy.hold, min_hold_s=0.0))

    def _left(self, base: GpuReport, assignment: Assignment, target: Target) -> GpuReport:
        if target.refused:
            return replace(base, action=Action.REFUSED, message="; ".join(target.refused))
        if assignment.role is Role.SHARED:
            return replace(base, action=Action.SHARED, message=assignment.reason)
        return replace(base, action=Action.UNCHANGED)

    # -------------------------------------------------------------------------------- acting

    def _change(
        self,
        gpu: GpuInfo,
        limit_mw: int | None,
        clock_mhz: int | None,
        *,
        greenmodel: str,
        base: GpuReport,
        urgent: bool = False,
    ) -> GpuReport:
        """Move one GPU to (limit, clock); (None, None) = restore the defaults and forget the GPU.
        `urgent` (owner gone, start-up, shutdown) does not start a hold time for the next owner."""
        assert gpu.constraints is not None
        now = self._clock()
        record = self.records.get(gpu.uuid)
        default_mw = gpu.constraints.default_mw
        old_limit = record.limit_mw if record is not None else None
        old_clock = record.clock_mhz if record is not None else None
        pending = record.pending if record is not None else False
        restoring = limit_mw is None and clock_mhz is None
        if not restoring:
            self.records[gpu.uuid] = SettingRecord(
                default_limit_mw=record.default_limit_mw if record is not None else default_mw,
                limit_mw=limit_mw,
                clock_mhz=clock_mhz,
                changed_at=now,
                greenmodel=greenmodel,
                pending=True,
            )
            self._save()
        try:
            if limit_mw != old_limit or pending:
                self._set_limit(gpu.uuid, default_mw if limit_mw is None else limit_mw)
            if clock_mhz != old_clock or pending:
                self._set_clock(gpu.uuid, clock_mhz)
            enforced = self.backend.enforced_power_limit(gpu.uuid)
        except GpuError as exc:
            failures = self._failures.get(gpu.uuid, (0, 0.0))[0] + 1
            delay = self.policy.backoff.delay(failures)
            self._failures[gpu.uuid] = (failures, now + delay)
            log.error("GPU %s: %s (attempt %d, next in %.0f s)", gpu.uuid, exc, failures, delay)
            return replace(base, action=Action.FAILED, error=exc.kind.value, message=str(exc))
        self._failures.pop(gpu.uuid, None)
        if urgent:
            self._changed_at.pop(gpu.uuid, None)
        else:
            self._changed_at[gpu.uuid] = now
        if restoring:
            self.records.pop(gpu.uuid, None)
        else:
            self.records[gpu.uuid] = replace(self.records[gpu.uuid], pending=False)
        self._save()
        wanted = default_mw if limit_mw is None else limit_mw
        message = ""
        if not self.dry_run and enforced != wanted:
            message = (
                f"enforced limit {mw_to_watts(enforced):g} W differs from the {mw_to_watts(wanted):g} W set"
            )
            log.warning("GPU %s: %s", gpu.uuid, message)
        log.info(
            "GPU %s %s: limit %s, clock %s, enforced %g W%s",
            gpu.uuid,
            "restored" if restoring else "set",
            "default" if limit_mw is None else f"{mw_to_watts(limit_mw):g} W",
            "unlocked" if clock_mhz is None else f"{clock_mhz} MHz",
            mw_to_watts(enforced),
            " (dry run: nothing changed)" if self.dry_run else "",
        )
        return replace(
            base,
            action=Action.RESTORED if restoring else Action.APPLIED,
            target_limit_mw=limit_mw,
            locked_clock_mhz=clock_mhz,
            enforced_limit_mw=enforced,
            message=message,
        )

    def _set_limit(self, uuid: str, limit_mw: int) -> None:
        if self.dry_run:
            log.info("dry run: would set GPU %s power limit to %g W", uuid, mw_to_watts(limit_mw))
            return
        self.backend.set_power_limit(uuid, limit_mw)

    def _set_clock(self, uuid: str, clock_mhz: int | None) -> None:
        if self.dry_run:
            what = "reset locked clocks" if clock_mhz is None else f"lock clocks at {clock_mhz} MHz"
            log.info("dry run: would %s on GPU %s", what, uuid)
            return
        try:
            if clock_mhz is None:
                self.backend.reset_clocks(uuid)
            else:
                self.backend.lock_clocks(uuid, clock_mhz)
        except GpuError as exc:
            if clock_mhz is None and exc.kind is GpuErrorKind.NOT_SUPPORTED:
                return  # nothing to reset on a device without clock locking
            raise


def _internal_failure(base: GpuReport, exc: Exception) -> GpuReport:
    """A GPU whose step raised something other than a driver error (a bug or an input nothing refused)."""
    log.exception("GPU %s: %s", base.uuid, exc)
    message = f"internal error: {type(exc).__name__}: {exc}"
    return replace(base, action=Action.FAILED, error="internal", message=message[:300])


def _clamp_text(target: Target, gpu: GpuInfo) -> str:
    parts = []
    if target.limit.clamped and target.limit.target_mw is not None:
        assert gpu.constraints is not None
        parts.append(
            f"requested {target.limit.requested_w:g} W is below the device minimum; "
            f"set {mw_to_watts(target.limit.target_mw):g} W"
        )
    if target.clock.clamped:
        parts.append(
            f"requested clock {target.clock.requested_mhz} MHz is not supported; "
            f"locked {target.clock.target_mhz} MHz"
        )
    return "; ".join(parts)
