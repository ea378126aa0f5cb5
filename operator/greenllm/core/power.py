"""Per-GPU power decisions of the node agent, with no I/O: units, clamping, restraint, which GPU gets what.

Units: NVML speaks milliwatts (limits, power) and millijoules (energy); the API speaks watts. Convert once,
at the edge, with `watts_to_mw` / `mw_to_watts`.

Everything here is a plain function of its inputs; time is an argument (`now`, epoch seconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

MW_PER_W = 1000
MJ_PER_J = 1000


MAX_W = 1e6  # no GPU limit comes near a megawatt: beyond it a value is nonsense, not a power


def watts_to_mw(watts: float) -> int:
    """Watts to the integer milliwatts NVML takes (nearest mW). ValueError beyond +-MAX_W, NaN, inf."""
    if not (math.isfinite(watts) and -MAX_W <= watts <= MAX_W):
        raise ValueError(f"not a power in [-{MAX_W:g}, {MAX_W:g}] W: {watts!r}")
    return round(watts * MW_PER_W)


def mw_to_watts(milliwatts: int) -> float:
    return milliwatts / MW_PER_W


def mj_to_joules(millijoules: int) -> float:
    return millijoules / MJ_PER_J


# ------------------------------------------------------------------------------------- clamping


@dataclass(frozen=True, slots=True)
class LimitConstraints:
    """What the device allows (nvmlDeviceGetPowerManagementLimitConstraints / ...DefaultLimit), mW."""

    min_mw: int
    max_mw: int
    default_mw: int

    def __post_init__(self) -> None:
        if not 0 < self.min_mw <= self.max_mw:
            raise ValueError(f"bad constraints: min {self.min_mw} mW, max {self.max_mw} mW")
        if not self.min_mw <= self.default_mw <= self.max_mw:
            raise ValueError(f"default {self.default_mw} mW outside [{self.min_mw}, {self.max_mw}] mW")


@dataclass(frozen=True, slots=True)
class LimitPlan:
    """What to do with a requested per-GPU limit. `target_mw` None = the device default (no cap)."""

    requested_w: float | None
    target_mw: int | None = None
    clamped: bool = False
    refused: str | None = None  # why the request is ignored; the GPU then keeps its current setting


def plan_limit(requested_w: float | None, constraints: LimitConstraints) -> LimitPlan:
    """Clamp a request to the device: below the minimum it is raised to the minimum (and reported);
    above the maximum it is absurd for this device and refused, as is anything not a positive number."""
    if requested_w is None:
        return LimitPlan(requested_w=None)
    if not math.isfinite(requested_w) or requested_w <= 0:
        return LimitPlan(
            requested_w=requested_w, refused=f"power limit {requested_w!r} W is not a positive number"
        )
    # Compared in watts first: an absurd number (1e308) is refused before it is converted.
    if requested_w > MAX_W or watts_to_mw(requested_w) > constraints.max_mw:
        return LimitPlan(
            requested_w=requested_w,
            refused=(
                f"power limit {requested_w:g} W is above the device maximum "
                f"{mw_to_watts(constraints.max_mw):g} W"
            ),
        )
    requested_mw = watts_to_mw(requested_w)
    if requested_mw < constraints.min_mw:
        return LimitPlan(requested_w=requested_w, target_mw=constraints.min_mw, clamped=True)
    return LimitPlan(requested_w=requested_w, target_mw=requested_mw)


@dataclass(frozen=True, slots=True)
class ClockPlan:
    """What to do with a requested locked graphics clock. `target_mhz` None = clocks not locked."""

    requested_mhz: int | None
    target_mhz: int | None = None
    clamped: bool = False  # the target differs from the request (snapped to a supported clock)
    refused: str | None = None


def plan_clock(requested_mhz: int | None, supported_mhz: Sequence[int]) -> ClockPlan:
    """Pick the supported graphics clock to lock: the highest one not above the request, or the lowest
    supported clock when the request is below all of them. Above the highest supported clock is refused."""
    if requested_mhz is None:
        return ClockPlan(requested_mhz=None)
    if requested_mhz <= 0:
        return ClockPlan(requested_mhz=requested_mhz, refused=f"clock {requested_mhz} MHz is not positive")
    clocks = sorted({c for c in supported_mhz if c > 0})
    if not clocks:
        return ClockPlan(
            requested_mhz=requested_mhz, refused="the device reports no supported graphics clocks"
        )
    if requested_mhz > clocks[-1]:
        return ClockPlan(
            requested_mhz=requested_mhz,
            refused=f"clock {requested_mhz} MHz is above the highest supported clock {clocks[-1]} MHz",
        )
    below = [c for c in clocks if c <= requested_mhz]
    target = below[-1] if below else clocks[0]
    return ClockPlan(requested_mhz=requested_mhz, target_mhz=target, clamped=target != requested_mhz)


def is_absurd_power(power_mw: int, max_limit_mw: int, factor: float) -> bool:
    """A power reading above `factor` x the device's maximum limit (its TDP) is a sensor or driver fault."""
    return power_mw < 0 or power_mw > factor * max_limit_mw


# ------------------------------------------------------------------------------------- restraint


@dataclass(frozen=True, slots=True)
class HoldPolicy:
    """No change storms: ignore moves smaller than the deadband; keep a setting at least `min_hold_s`."""

    deadband_mw: int
    min_hold_s: float

    def __post_init__(self) -> None:
        if self.deadband_mw < 0 or self.min_hold_s < 0:
            raise ValueError("deadband and hold time must not be negative")


@dataclass(frozen=True, slots=True)
class Applied:
    """What the agent last set on a GPU. limit/clock None = the device default. `changed_at` epoch s."""

    limit_mw: int | None = None
    clock_mhz: int | None = None
    changed_at: float | None = None

    @property
    def is_default(self) -> bool:
        return self.limit_mw is None and self.clock_mhz is None


class Change(StrEnum):
    NONE = "none"  # already there (or within the deadband)
    HELD = "held"  # a change is wanted but the minimum hold time has not passed
    APPLY = "apply"


def decide_change(
    applied: Applied,
    target_limit_mw: int | None,
    target_clock_mhz: int | None,
    default_mw: int,
    now: float,
    policy: HoldPolicy,
    *,
    urgent: bool = False,
) -> Change:
    """Whether to move a GPU from `applied` to the target. `urgent` (restoring the default because its
    owner is gone or the agent stops) ignores the hold time; the deadband never blocks a restore of
    locked clocks, and only compares two limits."""
    if applied.limit_mw == target_limit_mw and applied.clock_mhz == target_clock_mhz:
        return Change.NONE
    if applied.clock_mhz == target_clock_mhz and not (urgent and target_limit_mw is None):
        current = default_mw if applied.limit_mw is None else applied.limit_mw
        wanted = default_mw if target_limit_mw is None else target_limit_mw
        if abs(current - wanted) < policy.deadband_mw:
            return Change.NONE
    if urgent or applied.changed_at is None:
        return Change.APPLY
    if now - applied.changed_at < policy.min_hold_s:
        return Change.HELD
    return Change.APPLY


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delay after `failures` consecutive failures: base, 2 x base, 4 x base, ... up to `max_s`."""

    base_s: float
    max_s: float

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(min(self.base_s * 2 ** (failures - 1), self.max_s))


# ------------------------------------------------------------------------------------- which GPU


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """How the kubelet may name a GPU: by UUID, by index, or by one of its MIG device UUIDs."""

    uuid: str
    index: int
    mig_uuids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Resolved:
    uuid: str
    partition: bool  # a MIG instance or a time-slicing / MPS replica rather than the whole GPU


def resolve_device_id(device_id: str, gpus: Iterable[GpuIdentity]) -> Resolved | None:
    """Map a device-plugin device ID to the GPU's UUID. Accepts `GPU-<uuid>`, `<index>`, `MIG-<uuid>`
    and replica IDs of time-slicing / MPS sharing (`<id>::<n>`). None = not a GPU of this node."""
    base, sep, _replica = device_id.partition("::")
    partition = bool(sep)
    gpus = tuple(gpus)
    for gpu in gpus:
        if base == gpu.uuid:
            return Resolved(gpu.uuid, partition)
        if base in gpu.mig_uuids:
            return Resolved(gpu.uuid, True)
    # An index is a few ASCII digits: str.isdigit() also takes "²" and "٣", which int() refuses or reads
    # as another number, and int() refuses a string of thousands of digits.
    if base.isascii() and base.isdigit() and len(base) <= 9:
        for gpu in gpus:
            if gpu.index == int(base):
                return Resolved(gpu.uuid, partition)
    return None


@dataclass(frozen=True, slots=True)
class Claim:
    """One pod holds (part of) one GPU. `owner` is the key of the GreenModel that owns the pod, verified
    by UID through Pod -> ReplicaSet -> Deployment -> GreenModel, or None for anything else."""

    pod: str  # "namespace/name"
    gpu_uuid: str
    owner: str | None
    partition: bool = False


class Role(StrEnum):
    OWNED = "owned"  # every holder is a pod of one GreenModel: apply that GreenModel's setting
    SHARED = "shared"  # held by a GreenModel's pod and by a pod of anyone else: leave alone, report
    FOREIGN = "foreign"  # held only by pods no GreenModel owns: not ours, leave alone
    FREE = "free"  # no pod holds it: default


@dataclass(frozen=True, slots=True)
class Assignment:
    uuid: str
    role: Role
    owner: str | None = None  # OWNED: the GreenModel; SHARED: the GreenModel(s) that wanted it, comma-joined
    pods: tuple[str, ...] = ()
    reason: str = ""
    partition: bool = False


def assign(gpu_uuids: Iterable[str], claims: Iterable[Claim]) -> dict[str, Assignment]:
    """Which GPU gets whose setting. A GPU is OWNED by a GreenModel only when every pod holding any part
    of it is owned by that same GreenModel; otherwise it is SHARED or FOREIGN (left alone) or FREE."""
    by_gpu: dict[str, list[Claim]] = {uuid: [] for uuid in gpu_uuids}
    for claim in claims:
        by_gpu.setdefault(claim.gpu_uuid, []).append(claim)
    result: dict[str, Assignment] = {}
    for uuid, held in by_gpu.items():
        pods = tuple(sorted({c.pod for c in held}))
        partition = any(c.partition for c in held)
        if not held:
            result[uuid] = Assignment(uuid, Role.FREE)
            continue
        owners = {c.owner for c in held}
        named = sorted(o for o in owners if o is not None)
        if len(owners) == 1 and None not in owners:
            result[uuid] = Assignment(uuid, Role.OWNED, owner=named[0], pods=pods, partition=partition)
            continue
        if not named:
            reason = f"held by pods no GreenModel owns: {', '.join(pods)}"
            result[uuid] = Assignment(uuid, Role.FOREIGN, pods=pods, reason=reason, partition=partition)
            continue
        foreign = sorted({c.pod for c in held if c.owner is None})
        if foreign:
            reason = f"shared with pods not owned by a GreenModel: {', '.join(foreign)}"
        else:
            reason = f"shared by pods of several GreenModels: {', '.join(named)}"
        result[uuid] = Assignment(
            uuid, Role.SHARED, owner=",".join(named) or None, pods=pods, reason=reason, partition=partition
        )
    return result


# ------------------------------------------------------------------------------------- desired setting


@dataclass(frozen=True, slots=True)
class Requested:
    """The setting a GreenModel's status asks for (powerLimitW, lockedClockMhz); both None = default."""

    limit_w: float | None = None
    clock_mhz: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one GPU should go this cycle."""

    limit: LimitPlan
    clock: ClockPlan
    urgent: bool = False  # a restore that must not wait for the hold time
    leave: bool = False  # do not touch (shared and never changed by us, or refused input)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def refused(self) -> tuple[str, ...]:
        return tuple(r for r in (self.limit.refused, self.clock.refused) if r is not None)


def target_for(
    assignment: Assignment,
    requested: Requested | None,
    constraints: LimitConstraints,
    supported_clocks_mhz: Sequence[int],
    changed_by_us: bool,
) -> Target:
    """The target of one GPU. `requested` is the owning GreenModel's setting (None: its owner is gone
    or sets nothing we may apply). Refused inputs leave the GPU as it is."""
    default = Target(limit=LimitPlan(requested_w=None), clock=ClockPlan(requested_mhz=None))
    if assignment.role is not Role.OWNED or requested is None:
        if changed_by_us:
            return Target(limit=default.limit, clock=default.clock, urgent=True)
        return Target(limit=default.limit, clock=default.clock, leave=True)
    limit = plan_limit(requested.limit_w, constraints)
    clock = plan_clock(requested.clock_mhz, supported_clocks_mhz)
    if limit.refused is not None or clock.refused is not None:
        return Target(limit=limit, clock=clock, leave=True)
    return Target(limit=limit, clock=clock)
