"""kopf handlers for EnergyBudget: one budget shared by the GreenModels its selector picks (issue 13).

Per EnergyBudget, a daemon runs once per interval (the shortest `spec.scaling.interval` of its members):

1. members = the GreenModels of its namespace its selector matches (kopf's index `budget_members`, no
   GET per tick); none matching is condition Ready=False, reason NoMembers;
2. the period account: each member's tick leaves its own period account (`record_member`); the budget
   adds what each member used since it last counted (the member's reading is kept in the budget's status,
   so an operator restart resumes the count); a member deleted mid-period stays listed, not present, and
   its energy stays counted until the period ends;
3. the allowance now (core.allocation.team_allowance_w: powerW, and energy and carbon paced over the rest
   of the period) is divided among the members' power frontiers (core.frontier.power_frontier, from the
   demand each member saw last) by core.allocation.allocate;
4. the allocation is kept in the operator's memory (`Book.grants`), where each member's tick reads it
   (`effective_spec`): a member obeys every budget covering it and its own `spec.budget`, the tightest
   wins, and its `status.boundBy` names the budgets that bind it;
5. the budget's status is written when a reader would see a change, else (the accounting) at most every
   --accounting-write-period, as for GreenModels; Events mark condition transitions.

Everything in memory here is rebuilt within one interval after a restart: the allocation from the
members' next reports, the account from the status. Between a restart and a budget's first allocation
the members run on their own `spec.budget` only (at most one interval).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from pydantic import ValidationError

from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api
from greenllm.api.durations import parse_duration
from greenllm.api.timestamps import epoch_seconds, rfc3339
from greenllm.controller import leader
from greenllm.controller.config import OperatorConfig
from greenllm.controller.exporter import OperatorMetrics
from greenllm.controller.kube import Kube
from greenllm.core import budget as budget_rules
from greenllm.core import status as st
from greenllm.core.allocation import Allocation, Member, allocate, team_allowance_w
from greenllm.core.decision import Decision, Demand, Observation
from greenllm.core.frontier import power_frontier
from greenllm.core.step import LoopState, estimate_demand

RESOURCE = (api.GROUP, api.VERSION, eb.EB_PLURAL)
GREEN_MODELS = (api.GROUP, api.VERSION, api.PLURAL)
DEFAULT_INTERVAL_S = 15.0
EVENT_MESSAGE_MAX = 1000  # the API server refuses an Event message over 1 KiB
# Reports older than this many of the member's intervals are from a tick that stopped (the member is gone
# or its loop is stuck): its demand no longer moves watts to it.
STALE_INTERVALS = 10

Key = tuple[str, str]  # (namespace, name)


# ---------------------------------------------------------------------- what members and budgets share


@dataclass(frozen=True, slots=True)
class MemberReport:
    """What one GreenModel's tick leaves for the budgets covering it (`record_member`)."""

    spec: api.GreenModelSpec  # its own spec, before any budget lowered it
    time: float
    demand: Demand | None  # None: no demand observed yet
    power_w: float | None  # observed power of all its GPUs now
    period_start: float  # its own period account
    energy_kwh: float
    carbon_grams: float
    intensity_g_per_kwh: float | None
    own_allowed_w: float | None  # what its own spec.budget allows now (None: no limit)
    # (time, output tokens/s) of its ticks within its scale-down window: the frontier then values power
    # by the share of recent demand it serves (as the simulator's team mode does).
    recent: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Grant:
    """One budget's allocation, W per member name (math.inf: no limit): `power_w` is in force (what the
    members' ticks read), `target` what the allocator chose. They differ while a member waits to rise
    until the members giving up power have lowered theirs (`in_force`)."""

    budget: str
    power_w: Mapping[str, float]
    target: Mapping[str, float] = field(default_factory=dict)


def in_force(
    target: Mapping[str, float], previous: Mapping[str, float] | None, applied: Mapping[str, float]
) -> dict[str, float]:
    """What members may draw now on the way from `previous` to `target`: a cut applies at once, a rise
    only once every member that was cut has ticked with its cut (`applied`: the power limit each member
    last planned with, math.inf: none), so the members never hold more than the budget between two
    ticks. A member new to the budget gets its target at once (it was not limited by this budget before)."""
    if not previous:
        return dict(target)
    cut = [n for n, w in target.items() if n in previous and w < previous[n] - 1e-9]
    lowered = all(applied.get(n, math.inf) <= target[n] + 1e-6 for n in cut)
    out: dict[str, float] = {}
    for n, w in target.items():
        before = previous.get(n)
        out[n] = w if before is None or w <= before or lowered else before
    return out


@dataclass
class Book:
    """The operator's memory shared by the GreenModels' loops and the budgets' daemons (one per operator)."""

    reports: dict[Key, MemberReport] = field(default_factory=dict)
    own_specs: dict[Key, api.GreenModelSpec] = field(default_factory=dict)
    grants: dict[Key, Grant] = field(default_factory=dict)  # (namespace, budget name) -> allocation
    applied: dict[Key, float] = field(default_factory=dict)  # power limit each member last planned with
    # Specs read before a member's first tick, by generation (None: invalid).
    read_specs: dict[Key, tuple[int | None, api.GreenModelSpec | None]] = field(default_factory=dict)

    def grants_for(self, namespace: str, name: str) -> list[tuple[str, float]]:
        """(budget, W) of every budget in force that allocated to this GreenModel."""
        out = []
        for (ns, _), grant in self.grants.items():
            if ns == namespace and name in grant.power_w:
                out.append((grant.budget, grant.power_w[name]))
        return sorted(out)


def _book(memo: Mapping[str, Any]) -> Book | None:
    book = memo.get("budgets")
    return book if isinstance(book, Book) else None


def effective_spec(
    memo: Mapping[str, Any], namespace: str, name: str, spec: api.GreenModelSpec, now: float
) -> api.GreenModelSpec:
    """`spec` with `budget.powerW` lowered to the tightest allocation of the EnergyBudgets covering this
    GreenModel (unchanged when none covers it or its own powerW is tighter). Its own energy and carbon
    budgets stay: the loop paces them as before and the tightest of everything wins."""
    book = _book(memo)
    if book is None:
        return spec  # budgets not loaded (e.g. a loop driven without the operator's start-up)
    book.own_specs[(namespace, name)] = spec
    tightest = tightest_grant(book.grants_for(namespace, name))
    own = spec.budget.power_w
    book.applied[(namespace, name)] = min(
        own if own is not None else math.inf, tightest[0] if tightest is not None else math.inf
    )
    if tightest is None:
        return spec
    watts, _ = tightest
    if own is not None and own <= watts:
        return spec
    # model_copy does not validate: 0 W (a member cut to nothing) is meaningful to the loop (exhausted).
    return spec.model_copy(update={"budget": spec.budget.model_copy(update={"power_w": watts})})


def record_member(
    memo: Mapping[str, Any],
    namespace: str,
    name: str,
    spec: api.GreenModelSpec,
    decision: Decision,
    observation: Observation,
    state: LoopState,
) -> None:
    """Leave what the budgets covering this GreenModel need from its tick: demand, power, its account."""
    book = _book(memo)
    if book is None:
        return
    key = (namespace, name)
    own = book.own_specs.get(key, spec)  # the spec before effective_spec lowered it
    previous = book.reports.get(key)
    # What the loop planned for (peaks of the scale-down window, queued work); else the observation's.
    demand: Demand | None = decision.planned_demand
    if demand is None and observation.has_demand:
        demand = estimate_demand(own, observation)[0]
    if demand is None and previous is not None:
        demand = previous.demand
    power = observation.power_w
    if power is None and previous is not None and observation.time - previous.time < 60:
        power = previous.power_w
    recent = previous.recent if previous is not None else ()
    if observation.has_demand:
        window = own.scaling.scale_down_stabilization
        out = estimate_demand(own, observation)[0].output_tokens_per_s
        recent = tuple(
            (t, o)
            for t, o in (*recent, (observation.time, out))
            if observation.time - t <= parse_duration(window)
        )
    intensity = state.carbon_intensity_g_per_kwh
    allowed = budget_rules.allowed_power(
        own.budget, state.energy_kwh, state.carbon_grams, state.period_start, observation.time, intensity
    ).power_w
    book.reports[key] = MemberReport(
        spec=own,
        time=observation.time,
        demand=demand,
        power_w=power if power is not None else decision.expected_power_w,
        period_start=state.period_start,
        energy_kwh=state.energy_kwh,
        carbon_grams=state.carbon_grams,
        intensity_g_per_kwh=intensity,
        own_allowed_w=allowed,
        recent=recent,
    )


def tightest_grant(grants: Sequence[tuple[str, float]]) -> tuple[float, tuple[str, ...]] | None:
    """The smallest finite allocation among `grants` and the budgets that give it (None: no limit)."""
    finite = [(b, w) for b, w in grants if math.isfinite(w)]
    if not finite:
        return None
    watts = min(w for _, w in finite)
    return watts, tuple(sorted(b for b, w in finite if w <= watts + 1e-9))


def bound_by(grants: Sequence[tuple[str, float]], own_allowed_w: float | None) -> list[str]:
    """The budgets that bind a GreenModel: those giving its tightest allocation, when that is tighter
    than what its own spec.budget allows."""
    tightest = tightest_grant(grants)
    if tightest is None:
        return []
    watts, names = tightest
    if own_allowed_w is not None and own_allowed_w <= watts:
        return []
    return list(names)


# ------------------------------------------------------------------------------------------ the account


@dataclass
class MemberAccount:
    """One member as the budget counts it this period."""

    name: str
    energy_kwh: float = 0.0
    carbon_grams: float = 0.0
    reading: eb.MemberReading | None = None  # the member's own account when last counted
    present: bool = True


@dataclass
class Ledger:
    """The budget's period account, persisted in its status (period, members[].lastReading)."""

    period_start: float | None = None
    energy_kwh: float = 0.0
    carbon_grams: float = 0.0
    last_sample_time: float | None = None
    members: dict[str, MemberAccount] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Ledger:
        """Resume from a status an earlier operator wrote (a malformed one starts afresh)."""
        try:
            parsed = eb.EnergyBudgetStatus.model_validate(status or {})
        except ValidationError:
            return cls()
        ledger = cls(
            period_start=epoch_seconds(parsed.period.start),
            energy_kwh=parsed.period.energy_kwh,
            carbon_grams=parsed.period.carbon_grams,
            last_sample_time=epoch_seconds(parsed.period.last_sample_time),
        )
        for m in parsed.members:
            ledger.members[m.name] = MemberAccount(
                m.name, m.energy_kwh, m.carbon_grams, m.last_reading, m.present
            )
        return ledger

    def roll(self, period_s: float, now: float) -> bool:
        """Start a new period when the current one is over; True when it did. The members that are gone
        are forgotten then; the others keep their reading (what they use from now on counts)."""
        if self.period_start is None:
            self.period_start = now
            return False
        start = budget_rules.current_period_start(self.period_start, period_s, now)
        if start == self.period_start:
            return False
        self.period_start = start
        self.energy_kwh = self.carbon_grams = 0.0
        self.members = {n: MemberAccount(n, reading=m.reading) for n, m in self.members.items() if m.present}
        return True

    def count(self, name: str, report: MemberReport) -> None:
        """Add what `report` shows the member used since the budget last counted it. A member's own period
        that restarted (its period rolled, or it was re-created) counts from zero: what it used between
        the last count and its own roll is not seen (at most one interval's energy per member period)."""
        account = self.members.setdefault(name, MemberAccount(name))
        account.present = True
        start = rfc3339(report.period_start)
        seen = account.reading
        if seen is None:
            energy = carbon = 0.0  # first sight: it joins the budget now; what it used before is its own
        elif seen.period_start == start:
            energy = max(report.energy_kwh - seen.energy_kwh, 0.0)
            carbon = max(report.carbon_grams - seen.carbon_grams, 0.0)
        else:
            energy, carbon = report.energy_kwh, report.carbon_grams
        account.energy_kwh += energy
        account.carbon_grams += carbon
        self.energy_kwh += energy
        self.carbon_grams += carbon
        account.reading = eb.MemberReading(
            period_start=start, energy_kwh=report.energy_kwh, carbon_grams=report.carbon_grams
        )
        if self.last_sample_time is None or report.time > self.last_sample_time:
            self.last_sample_time = report.time

    def leave(self, name: str) -> None:
        """The member is gone or no longer selected: listed until the period ends, its energy counted."""
        if name in self.members:
            self.members[name].present = False


# ---------------------------------------------------------------------------------------------- one tick


@dataclass(frozen=True, slots=True)
class Candidate:
    """A GreenModel the selector matches, from the index."""

    name: str
    spec: api.GreenModelSpec
    bound_by: tuple[str, ...]  # status.boundBy as the watch last delivered it


def members_of(
    selector: eb.LabelSelector,
    entries: Iterable[Mapping[str, Any]],
    specs: Mapping[str, api.GreenModelSpec | None],
) -> tuple[list[Candidate], list[str]]:
    """The GreenModels the selector matches, with their spec from `specs` (None: invalid, so it runs
    nothing and gets nothing), and notes on those skipped."""
    found: list[Candidate] = []
    notes: list[str] = []
    for entry in sorted(entries, key=lambda e: str(e.get("name"))):
        if not selector.matches(entry.get("labels") or {}):
            continue
        name = str(entry["name"])
        spec = specs.get(name)
        if spec is None:
            notes.append(f"{name}: invalid spec, not allocated")
            continue
        found.append(Candidate(name, spec, tuple(entry.get("boundBy") or ())))
    return found, notes


async def member_specs(
    kube: Kube, book: Book, namespace: str, selector: eb.LabelSelector, entries: Iterable[Mapping[str, Any]]
) -> dict[str, api.GreenModelSpec | None]:
    """The spec of each selected GreenModel: as its last tick validated it, else (before its first tick,
    or an invalid spec that never ticks) read once per generation. Not in the index: thousands of specs
    held twice would be memory for nothing."""
    out: dict[str, api.GreenModelSpec | None] = {}
    for entry in entries:
        if not selector.matches(entry.get("labels") or {}):
            continue
        name = str(entry["name"])
        key = (namespace, name)
        ticked = book.own_specs.get(key)
        if ticked is not None:
            out[name] = ticked
            continue
        generation = entry.get("generation")
        cached = book.read_specs.get(key)
        if cached is None or cached[0] != generation:
            gm = await kube.get_green_model(namespace, name)
            try:
                spec = api.GreenModelSpec.model_validate((gm or {}).get("spec") or {}) if gm else None
            except ValidationError:
                spec = None
            cached = book.read_specs[key] = (generation, spec)
        out[name] = cached[1]
    return out


def frontier_members(
    namespace: str,
    candidates: Sequence[Candidate],
    book: Book,
    source: Any,
    now: float,
) -> tuple[list[Member], dict[str, MemberReport | None], list[str]]:
    """Each candidate's power frontier from the demand its last tick saw (no report yet, or a stale one:
    no demand, so its minimum configuration)."""
    members: list[Member] = []
    reports: dict[str, MemberReport | None] = {}
    notes: list[str] = []
    for c in candidates:
        report = book.reports.get((namespace, c.name))
        spec = book.own_specs.get((namespace, c.name), c.spec)
        fresh = report is not None and now - report.time <= STALE_INTERVALS * _interval_s(spec)
        reports[c.name] = report
        demand = report.demand if fresh and report is not None and report.demand is not None else None
        try:
            recent = [o for _, o in report.recent] if fresh and report is not None else []
            frontier = power_frontier(spec, demand or Demand(0.0, 0.0), source, recent_output=recent)
        except (ValueError, KeyError) as e:
            notes.append(f"{c.name}: no frontier ({e})")
            continue
        if not frontier:
            notes.append(f"{c.name}: no configuration to offer")
            continue
        members.append(Member(f"{namespace}/{c.name}", spec.priority, tuple(frontier)))
    return members, reports, notes


def _interval_s(spec: api.GreenModelSpec) -> float:
    return spec.scaling.interval.seconds


def budget_interval_s(candidates: Sequence[Candidate]) -> float:
    """The members' fleet tick: the shortest of their intervals (15 s with none)."""
    return min((_interval_s(c.spec) for c in candidates), default=DEFAULT_INTERVAL_S)


def _w(watts: float | None) -> float | None:
    return None if watts is None or not math.isfinite(watts) else round(watts, 1)


def _kw_text(watts: float | None) -> str:
    if watts is None or not math.isfinite(watts):
        return "-"
    return f"{watts / 1000:.3g} kW" if watts >= 1000 else f"{watts:.0f} W"


def power_text(allocated_w: float, allowance_w: float | None) -> str:
    """The Power column: "4.1 kW/6 kW" (allocated / allowed now), or the allocation alone with no limit."""
    if allowance_w is None or not math.isfinite(allowance_w):
        return f"{_kw_text(allocated_w)}/-"
    return f"{_kw_text(allocated_w)}/{_kw_text(allowance_w)}"


def build_status(
    *,
    namespace: str,
    spec: eb.EnergyBudgetSpec,
    candidates: Sequence[Candidate],
    reports: Mapping[str, MemberReport | None],
    allocation: Allocation | None,
    grant: Grant | None,
    allowance_w: float | None,
    ledger: Ledger,
    overlaps: Sequence[str],
    bound: Mapping[str, Sequence[str]],
    notes: Sequence[str],
    budget_name: str,
    conditions: Sequence[Mapping[str, Any]],
    stamp: str,
    generation: int | None,
) -> dict[str, Any]:
    """The budget's status for this tick (camelCase, as written)."""
    prefix = f"{namespace}/"
    alloc_w = dict(grant.power_w) if grant is not None else {}  # in force: what members may draw now
    served = {k.removeprefix(prefix): s for k, s in (allocation.served if allocation else {}).items()}
    degraded = [(k.removeprefix(prefix), why) for k, why in (allocation.degraded if allocation else ())]
    why_degraded = dict(degraded)
    names = [c.name for c in candidates]
    rows: list[dict[str, Any]] = []
    for c in candidates:
        report = reports.get(c.name)
        account = ledger.members.get(c.name, MemberAccount(c.name))
        rows.append(
            {
                "name": c.name,
                "priority": c.spec.priority,
                "allocatedPowerW": _w(alloc_w.get(c.name)),
                "powerW": _w(report.power_w) if report else None,
                "demandTokensPerSecond": _w(report.demand.output_tokens_per_s)
                if report and report.demand
                else None,
                "servedTokensPerSecond": _w(served.get(c.name)),
                "energyKwh": round(account.energy_kwh, 6),
                "carbonGrams": round(account.carbon_grams, 3),
                "bound": budget_name in bound.get(c.name, ()),
                "degraded": why_degraded.get(c.name),
                "present": True,
                "lastReading": account.reading.model_dump(by_alias=True) if account.reading else None,
            }
        )
    for name, account in sorted(ledger.members.items()):
        if name in names or account.present:
            continue
        rows.append(
            {
                "name": name,
                "priority": 0,
                "allocatedPowerW": None,
                "energyKwh": round(account.energy_kwh, 6),
                "carbonGrams": round(account.carbon_grams, 3),
                "bound": False,
                "present": False,
                "lastReading": account.reading.model_dump(by_alias=True) if account.reading else None,
            }
        )
    allocated = sum(w for w in alloc_w.values() if math.isfinite(w))
    remaining = {
        "powerW": _w(None if allowance_w is None else max(allowance_w - allocated, 0.0)),
        "energyKwh": None
        if spec.energy_kwh is None
        else round(max(spec.energy_kwh - ledger.energy_kwh, 0.0), 6),
        "carbonGrams": None
        if spec.carbon_grams is None
        else round(max(spec.carbon_grams - ledger.carbon_grams, 0.0), 3),
    }
    conditions = _conditions(
        conditions,
        namespace=namespace,
        spec=spec,
        candidates=candidates,
        reports=reports,
        allocation=allocation,
        allowance_w=allowance_w,
        allocated_w=allocated,
        ledger=ledger,
        overlaps=overlaps,
        notes=notes,
        stamp=stamp,
        generation=generation,
    )
    return {
        "observedGeneration": generation,
        "selector": spec.selector.text(),
        "memberCount": len(candidates),
        "allowancePowerW": _w(allowance_w),
        "allocatedPowerW": round(allocated, 1),
        "powerText": power_text(allocated, allowance_w),
        "energyText": st.energy_text(ledger.energy_kwh, spec.energy_kwh),
        "members": rows,
        "degraded": [{"name": n, "reason": st.short(why, 300)} for n, why in degraded],
        "overlaps": sorted(overlaps),
        "period": {
            "start": None if ledger.period_start is None else rfc3339(ledger.period_start),
            "energyKwh": round(ledger.energy_kwh, 6),
            "carbonGrams": round(ledger.carbon_grams, 3),
            "lastSampleTime": None if ledger.last_sample_time is None else rfc3339(ledger.last_sample_time),
        },
        "remaining": remaining,
        "conditions": conditions,
    }


def _conditions(
    conditions: Sequence[Mapping[str, Any]],
    *,
    namespace: str,
    spec: eb.EnergyBudgetSpec,
    candidates: Sequence[Candidate],
    reports: Mapping[str, MemberReport | None],
    allocation: Allocation | None,
    allowance_w: float | None,
    allocated_w: float,
    ledger: Ledger,
    overlaps: Sequence[str],
    notes: Sequence[str],
    stamp: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [dict(c) for c in conditions]
    kinds = eb.BudgetConditionType
    extra = ("; " + "; ".join(notes)) if notes else ""
    shared = (
        f"; also covered by {', '.join(sorted(overlaps))} (each obeyed, the tightest wins)"
        if overlaps
        else ""
    )
    if not candidates:
        which = f"selector {spec.selector.text()!r}" if spec.selector.text() else "an empty selector"
        ready = (False, "NoMembers", f"{which} matches no GreenModel in namespace {namespace}{extra}")
    elif allocation is None or not allocation.power_w:
        ready = (False, "NotAllocated", f"no member offered a configuration to allocate to{extra}")
    elif allowance_w is None:
        ready = (
            True,
            "NoLimit",
            "no budget limits power now (a carbon budget needs a known grid intensity)" + shared + extra,
        )
    else:
        n = len(allocation.power_w)
        ready = (
            True,
            "Allocated",
            f"{allocated_w:.0f} W of {allowance_w:.0f} W allowed now allocated among {n} GreenModel"
            f"{'s' if n != 1 else ''}{shared}{extra}",
        )
    out = _set_condition(out, kinds.READY, *ready, stamp, generation)

    if allocation is not None and allocation.overcommitted:
        cut = ", ".join(f"{k.split('/', 1)[-1]} ({why})" for k, why in allocation.degraded) or "none"
        over = (
            True,
            "MinimumsExceedBudget",
            f"the members' minimum configurations alone exceed the {allowance_w or 0:.0f} W allowed now; "
            f"onExhausted {spec.on_exhausted.value} degraded, in priority order: {cut}",
        )
    else:
        over = (False, "MinimumsFit", "the members' minimum configurations fit the budget")
    out = _set_condition(out, kinds.OVERCOMMITTED, *over, stamp, generation)

    powers = [r.power_w for r in reports.values() if r is not None and r.power_w is not None]
    measured = bool(powers) or ledger.last_sample_time is not None
    drawn = sum(powers)
    problems: list[str] = []
    reason = "WithinBudget"
    if spec.energy_kwh is not None and ledger.energy_kwh >= spec.energy_kwh:
        problems.append(f"energy {ledger.energy_kwh:.3g} kWh used of {spec.energy_kwh:g} kWh this period")
        reason = "EnergyExhausted"
    if spec.carbon_grams is not None and ledger.carbon_grams >= spec.carbon_grams:
        problems.append(f"carbon {ledger.carbon_grams:.0f} g of {spec.carbon_grams:g} g this period")
        reason = "CarbonExhausted" if reason == "WithinBudget" else reason
    if spec.power_w is not None and drawn > spec.power_w:
        problems.append(f"members draw {drawn:.0f} W of {spec.power_w:g} W")
        reason = "PowerExceeded" if reason == "WithinBudget" else reason
    if not measured:
        met: tuple[bool | None, str, str] = (None, "NoMetrics", "no member reported power or energy yet")
    elif problems:
        met = (False, reason, "; ".join(problems))
    else:
        parts = [f"members draw {drawn:.0f} W" + (f" of {spec.power_w:g} W" if spec.power_w else "")]
        parts.append(st.energy_text(ledger.energy_kwh, spec.energy_kwh) + " this period")
        met = (True, reason, ", ".join(parts))
    return _set_condition(out, kinds.BUDGET_MET, *met, stamp, generation)


def _set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: eb.BudgetConditionType,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """An EnergyBudget's conditions with `type_` set (wire form); lastTransitionTime moves only when the
    status itself changes. The GreenModel's own setter is typed to its condition kinds."""
    value = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.get("type") == type_.value), None)
    moved = previous is None or previous.get("status") != value
    new = {
        "type": type_.value,
        "status": value,
        "reason": reason,
        "message": st.short(message),
        "lastTransitionTime": now if moved or previous is None else previous.get("lastTransitionTime", now),
        "observedGeneration": generation,
    }
    if previous is None:
        return [*(dict(c) for c in conditions), new]
    return [new if c is previous else dict(c) for c in conditions]


# Fields of the budget's status that move with every measurement: written at most every
# --accounting-write-period unless something a reader acts on changed (as GreenModels' ACCOUNTING_FIELDS).
_MEMBER_ACCOUNTING = {
    "powerW",
    "demandTokensPerSecond",
    "servedTokensPerSecond",
    "energyKwh",
    "carbonGrams",
    "lastReading",
}
_ACCOUNTING = {"allowancePowerW", "powerText", "energyText", "period", "remaining"}


def reader_view(status: Mapping[str, Any]) -> object:
    """What a reader acts on: the allocation, who is covered, bound and degraded, and each condition's
    type, status and reason (not the measurements)."""
    view = {k: v for k, v in status.items() if k not in _ACCOUNTING | {"members", "conditions"}}
    view["members"] = [
        {k: v for k, v in m.items() if k not in _MEMBER_ACCOUNTING and v is not None}
        for m in status.get("members") or []
    ]
    return st.reader_view({**view, "conditions": status.get("conditions") or []})


def _status_of(conditions: Sequence[Mapping[str, Any]], kind: eb.BudgetConditionType) -> str | None:
    return next((c.get("status") for c in conditions if c.get("type") == kind.value), None)


def transition_events(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str, str]]:
    """(type Normal/Warning, reason, message) for each condition that changed status."""
    kinds = eb.BudgetConditionType
    events: list[tuple[str, str, str]] = []
    by_type = {c.get("type"): c for c in after}
    for kind, bad in ((kinds.READY, "False"), (kinds.BUDGET_MET, "False"), (kinds.OVERCOMMITTED, "True")):
        was, now = _status_of(before, kind), _status_of(after, kind)
        if was == now or now is None or now == "Unknown":
            continue
        cond = by_type[kind.value]
        message = st.short(str(cond.get("message") or ""), EVENT_MESSAGE_MAX)
        if now == bad:
            events.append(("Warning", str(cond.get("reason")), message))
        elif was is not None and was != "Unknown":  # no Normal event for a first good state
            events.append(("Normal", str(cond.get("reason")), message))
    return events


# ---------------------------------------------------------------------------------------------- handlers


@kopf.on.startup()
async def open_book(memo: kopf.Memo, **_: Any) -> None:
    # Shared by every GreenModel's loop and every budget's daemon: kopf hands each resource a shallow copy
    # of this memo, so the Book must exist before any of them starts.
    memo.budgets = Book()


@kopf.index(*GREEN_MODELS)
def budget_members(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[str | None, dict[str, Any]]:
    """GreenModels by namespace with what a budget needs to select them (labels) and to know whether their
    boundBy needs writing; not the spec (`member_specs`)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        namespace: {
            "name": name,
            "labels": dict(meta.get("labels") or {}),
            "generation": meta.get("generation"),
            "boundBy": list(status.get("boundBy") or []),
        }
    }


# cancellation_backoff: a stopped daemon first gets the time to exit on its own (its last act, on deletion,
# is to release its members' boundBy), before kopf cancels it.
@kopf.daemon(*RESOURCE, cancellation_backoff=5.0, cancellation_timeout=10.0)
async def keep_budget(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Every interval: count, allocate, publish the allocation to the members, write the status."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    index: kopf.Index[Any, Any] = kwargs["budget_members"]
    state = BudgetLoop(Ledger.from_status(body.get("status")))
    try:
        while not stopped:
            interval = DEFAULT_INTERVAL_S
            try:
                interval = await budget_tick(memo, body, index, state, logger)
            except Exception:  # one bad tick must not end the loop; the next one retries
                logger.exception("energy budget tick failed")
            await _sleep(stopped, interval)
    finally:
        book = _book(memo)
        if book is not None:
            grant = book.grants.pop((namespace, name), None)
            deleted = stopped.reason is not None and bool(
                stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
            )
            telemetry: OperatorMetrics | None = memo.get("telemetry")
            if deleted and telemetry is not None:
                telemetry.forget_budget(namespace, name)
            if grant is not None and deleted:
                # Deleted: its members are bound by what is left (possibly nothing).
                await _publish_bound_by(memo, namespace, grant.power_w.keys(), index, book, logger)


async def _sleep(stopped: kopf.DaemonStopped, seconds: float) -> None:
    await stopped.wait(seconds)


@dataclass
class BudgetLoop:
    """What one budget's daemon keeps between its ticks."""

    ledger: Ledger
    written_at: float = -math.inf  # time.monotonic() of the last status write
    written: dict[str, Any] | None = None  # the status as last written by this daemon


async def budget_tick(
    memo: kopf.Memo, body: kopf.Body, index: kopf.Index[Any, Any], loop: BudgetLoop, logger: kopf.Logger
) -> float:
    book = _book(memo)
    if book is None:
        return DEFAULT_INTERVAL_S
    lease: leader.LeaderLease | None = memo.get("leader")
    if lease is not None and not lease.leading:
        return 1.0  # stopping after a lost Lease: it must not write anything (as handlers._acting)
    obj = copy.deepcopy(dict(body))
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return DEFAULT_INTERVAL_S
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    # The status as this daemon last wrote it: the watch's copy may not have caught up with that write yet.
    current = loop.written if loop.written is not None else (obj.get("status") or {})
    subject = kopf.Body(cast(kopf.RawBody, obj))
    now = time.time()
    stamp = rfc3339(now)
    try:
        spec = eb.EnergyBudgetSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        book.grants.pop((namespace, name), None)
        message = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        conditions = _set_condition(
            current.get("conditions") or [],
            eb.BudgetConditionType.READY,
            False,
            "SpecInvalid",
            message,
            stamp,
            generation,
        )
        await _write(
            memo,
            subject,
            namespace,
            name,
            loop,
            {"observedGeneration": generation, "conditions": conditions},
        )
        return DEFAULT_INTERVAL_S

    entries = list(index.get(namespace, ()))
    specs = await member_specs(memo.kube, book, namespace, spec.selector, entries)
    candidates, notes = members_of(spec.selector, entries, specs)
    interval = budget_interval_s(candidates)
    ledger = loop.ledger
    if ledger.roll(spec.period_seconds, now):
        logger.info("energy budget period rolled over")
    names = {c.name for c in candidates}
    _forget_departed(book, namespace, {str(e.get("name")) for e in entries}, now)
    for c in candidates:
        report = book.reports.get((namespace, c.name))
        if report is not None:
            ledger.count(c.name, report)
    for gone in [n for n, m in ledger.members.items() if m.present and n not in names]:
        report = book.reports.get((namespace, gone))
        if report is not None:
            ledger.count(gone, report)  # what it used since the last count, then it leaves
        ledger.leave(gone)

    intensities = [
        r.intensity_g_per_kwh
        for c in candidates
        if (r := book.reports.get((namespace, c.name))) is not None and r.intensity_g_per_kwh is not None
    ]
    intensity = max(intensities) if intensities else None  # the dirtiest member's grid: never overspend
    assert ledger.period_start is not None
    allowance = team_allowance_w(
        spec, ledger.energy_kwh, ledger.carbon_grams, ledger.period_start, now, intensity
    )
    members, reports, frontier_notes = frontier_members(namespace, candidates, book, memo.energy, now)
    notes = [*notes, *frontier_notes]
    previous = book.grants.get((namespace, name))
    allocation: Allocation | None = None
    if members:
        prev_keys = (
            {f"{namespace}/{n}": w for n, w in (previous.target or previous.power_w).items()}
            if previous is not None
            else None
        )
        if prev_keys is not None and set(prev_keys) != {m.key for m in members}:
            prev_keys = None  # members came or went: allocate afresh
        allocation = allocate(
            members,
            math.inf if allowance is None else max(allowance, 0.0),
            previous=prev_keys,
            on_exhausted=spec.on_exhausted,
        )
        target = {k.split("/", 1)[1]: w for k, w in allocation.power_w.items()}
        previous_in_force = dict(previous.power_w) if previous is not None else None
        applied = {n: book.applied.get((namespace, n), math.inf) for n in target}
        grant = Grant(name, in_force(target, previous_in_force, applied), target)
        book.grants[(namespace, name)] = grant
        notes.extend(
            f"{n} gets {w:.0f} W once the members cut have lowered their power"
            for n, w in sorted(target.items())
            if grant.power_w[n] < w
        )
    else:
        book.grants.pop((namespace, name), None)

    overlaps = _overlaps(book, namespace, name, names)
    bound = {
        c.name: bound_by(book.grants_for(namespace, c.name), _own_allowed(c, reports)) for c in candidates
    }
    status = build_status(
        namespace=namespace,
        spec=spec,
        candidates=candidates,
        reports=reports,
        allocation=allocation,
        grant=book.grants.get((namespace, name)),
        allowance_w=allowance,
        ledger=ledger,
        overlaps=overlaps,
        bound=bound,
        notes=notes,
        budget_name=name,
        conditions=current.get("conditions") or [],
        stamp=stamp,
        generation=generation,
    )
    await _write(memo, subject, namespace, name, loop, status)
    telemetry: OperatorMetrics | None = memo.get("telemetry")
    if telemetry is not None:
        grant_now = book.grants.get((namespace, name))
        telemetry.set_budget(
            namespace,
            name,
            allowance,
            dict(grant_now.power_w) if grant_now is not None else {},
            ledger.energy_kwh,
            ledger.carbon_grams,
        )
    gone_from_this = set(previous.power_w) - names if previous is not None else set()
    await _publish_bound_by(memo, namespace, names | gone_from_this, index, book, logger)
    return interval


# How long the report of a deleted GreenModel is kept for the budgets that still have to count its last
# interval (each does within one of its intervals).
FORGET_AFTER_S = 3600.0


def _forget_departed(book: Book, namespace: str, present: set[str], now: float) -> None:
    for key in [k for k, r in book.reports.items() if k[0] == namespace and k[1] not in present]:
        if now - book.reports[key].time > FORGET_AFTER_S:
            del book.reports[key]
            book.own_specs.pop(key, None)
            book.applied.pop(key, None)
    for key in [k for k in book.read_specs if k[0] == namespace and k[1] not in present]:
        del book.read_specs[key]


def _own_allowed(candidate: Candidate, reports: Mapping[str, MemberReport | None]) -> float | None:
    report = reports.get(candidate.name)
    return report.own_allowed_w if report is not None else candidate.spec.budget.power_w


def _overlaps(book: Book, namespace: str, name: str, members: set[str]) -> list[str]:
    """Other budgets in force in this namespace that allocate to some of the same GreenModels."""
    return sorted(
        grant.budget
        for (ns, other), grant in book.grants.items()
        if ns == namespace and other != name and members & set(grant.power_w)
    )


async def _write(
    memo: kopf.Memo,
    subject: kopf.Body,
    namespace: str,
    name: str,
    loop: BudgetLoop,
    status: dict[str, Any],
) -> None:
    """Write the status when a reader would see a change, else at most every accounting write period;
    post an Event for each condition that changed status."""
    config: OperatorConfig = memo.config
    seen = loop.written if loop.written is not None else dict(subject.get("status") or {})
    changed = reader_view(status) != reader_view({k: seen.get(k) for k in status})
    due = time.monotonic() - loop.written_at >= config.accounting_write_period_s
    if not (changed or due):
        return
    kube: Kube = memo.kube
    written = await kube.patch_energy_budget_status(namespace, name, status)
    loop.written, loop.written_at = dict(written.get("status") or status), time.monotonic()
    for type_, reason, message in transition_events(
        seen.get("conditions") or [], status.get("conditions") or []
    ):
        if type_ == "Warning":
            kopf.warn(subject, reason=reason, message=message)
        else:
            kopf.info(subject, reason=reason, message=message)


async def _publish_bound_by(
    memo: kopf.Memo,
    namespace: str,
    names: Iterable[str],
    index: kopf.Index[Any, Any],
    book: Book,
    logger: kopf.Logger,
) -> None:
    """Write status.boundBy of each GreenModel whose binding budgets changed (only this writes it)."""
    kube: Kube = memo.kube
    known = {e["name"]: e for e in index.get(namespace, ())}
    for member in sorted(names):
        entry = known.get(member)
        if entry is None:
            continue  # deleted
        report = book.reports.get((namespace, member))
        own = report.own_allowed_w if report is not None else None
        names_now = bound_by(book.grants_for(namespace, member), own)
        if names_now == list(entry.get("boundBy") or []):
            continue
        try:
            await kube.patch_green_model_status(namespace, member, {"boundBy": names_now})
        except Exception as e:  # the member may be going away; the next tick retries
            logger.warning("could not write boundBy of GreenModel %s: %s", member, e)
