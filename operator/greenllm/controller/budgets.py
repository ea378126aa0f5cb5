"""kopf handlers for EnergyBudget: one budget shared by the GreenModels its selector picks (issue 13).

Per EnergyBudget, a daemon runs once per interval (the shortest `spec.scaling.interval` of its members):

1. members = the GreenModels of its namespace its selector matches (kopf's index `budget_members`, no
   GET per tick); none matching is condition Ready=False, reason NoMembers;
2. the period account: each member's tick leaves its own period account (`record_member`); the budget
   adds what each member used since it last counted (the member's reading is kept in the budget's status,
   so an operator restart resumes the count); a member deleted mid-period stays listed, not present, and
   its energy stays counted until the period ends;
3. the two allowances now (core.allocation.team_allowances_w) are divided by core.allocation.allocate,
   each over the members' power frontiers (core.frontier.power_frontier, from the demand each member saw
   last) priced as the member spends it: `powerW` (a peak) over frontiers priced at the cap's peak, each
   share a member's `budget.powerW` cap; the energy and carbon paced over the rest of the period (an
   average) over frontiers priced at expected power, each share an average allowance the member's
   planner meets as it meets its own paced energy (paced energy handed out as a peak cap starves them);
4. the allocation is kept in the operator's memory (`Book.grants`, core.budget_book), where each
   member's tick reads it (`effective_spec`, `average_allowance_w`): a member obeys every budget covering
   it and its own `spec.budget`, the tightest wins, and its `status.boundBy` names the budgets that bind
   it;
5. the budget's status (an api EnergyBudgetStatus, built by core.budget_status, written with
   core.status.patch) is written when a reader would see a change, else (the accounting) at most every
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
from dataclasses import dataclass
from typing import Any, cast

import kopf
from pydantic import ValidationError

from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api
from greenllm.api.durations import parse_duration
from greenllm.api.timestamps import rfc3339
from greenllm.controller import leader
from greenllm.controller.config import OperatorConfig
from greenllm.controller.exporter import OperatorMetrics
from greenllm.controller.kube import Kube
from greenllm.controller.memo import OperatorMemo
from greenllm.core import budget as budget_rules
from greenllm.core import budget_status as bs
from greenllm.core import status as st
from greenllm.core.allocation import Allocation, Member, allocate, team_allowances_w
from greenllm.core.budget_book import Book, Grant, MemberReport, bound_by, in_force, tightest_grant
from greenllm.core.budget_status import Candidate, Ledger
from greenllm.core.decision import Decision, Demand, Observation
from greenllm.core.frontier import WarmFloor, power_frontier
from greenllm.core.step import LoopState, estimate_demand

RESOURCE = (api.GROUP, api.VERSION, eb.EB_PLURAL)
GREEN_MODELS = (api.GROUP, api.VERSION, api.PLURAL)
DEFAULT_INTERVAL_S = 15.0
# Reports older than this many of the member's intervals are from a tick that stopped (the member is gone
# or its loop is stuck): its demand no longer moves watts to it.
STALE_INTERVALS = 10

# ---------------------------------------------------------------------- what members and budgets share
# (the Book, its reports and grants: core.budget_book)


def _book(memo: OperatorMemo) -> Book | None:
    book = memo.get("budgets")
    return book if isinstance(book, Book) else None


def effective_spec(
    memo: OperatorMemo, namespace: str, name: str, spec: api.GreenModelSpec, now: float
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


def average_allowance_w(memo: OperatorMemo, namespace: str, name: str) -> float | None:
    """The tightest average-power allowance the EnergyBudgets covering this GreenModel grant it (their
    paced energy and carbon), for its planner (core.step.plan_step's `extra_allowance_w`); None: none."""
    book = _book(memo)
    if book is None:
        return None
    tightest = tightest_grant(book.average_grants_for(namespace, name))
    return None if tightest is None else tightest[0]


def record_member(
    memo: OperatorMemo,
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
        warm=WarmFloor(state.floor, observation, observation.time)
        if observation.has_demand or previous is None
        else previous.warm,
    )


# ---------------------------------------------------------------------------------------------- one tick


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
    expected: bool = False,
) -> tuple[list[Member], dict[str, MemberReport | None], list[str]]:
    """Each candidate's power frontier from the demand its last tick saw (no report yet, or a stale one:
    no demand, so its minimum configuration); priced at the powerW cap's peak, or with `expected` at
    expected power (core.frontier)."""
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
            warm = report.warm if fresh and report is not None else None
            frontier = power_frontier(
                spec,
                demand or Demand(0.0, 0.0),
                source,
                recent_output=recent,
                warm=None if expected else warm,
                expected=expected,
            )
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


# ---------------------------------------------------------------------------------------------- handlers


@kopf.on.startup()
async def open_book(memo: OperatorMemo, **_: Any) -> None:
    # Shared by every GreenModel's loop and every budget's daemon: kopf hands each resource a shallow copy
    # of this memo, so the Book must exist before any of them starts.
    memo.budgets = Book()


@kopf.index(*GREEN_MODELS)
async def budget_members(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[str | None, dict[str, Any]]:
    """GreenModels by namespace with what a budget needs to select them (labels) and to know whether their
    boundBy needs writing; not the spec (`member_specs`). Async although it awaits nothing: kopf runs a
    sync handler in a thread, a hop on every GreenModel event (each status write comes back as one)."""
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
    memo: OperatorMemo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Every interval: count, allocate, publish the allocation to the members, write the status."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    index: kopf.Index[Any, Any] = kwargs["budget_members"]
    state = BudgetLoop(Ledger.from_status(bs.read(body.get("status"))))
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
                names = {*grant.power_w, *grant.average_w}
                await _publish_bound_by(memo, namespace, names, index, book, logger)


async def _sleep(stopped: kopf.DaemonStopped, seconds: float) -> None:
    await stopped.wait(seconds)


@dataclass
class BudgetLoop:
    """What one budget's daemon keeps between its ticks."""

    ledger: Ledger
    written_at: float = -math.inf  # time.monotonic() of the last status write
    written: dict[str, Any] | None = None  # the status as last written by this daemon


async def budget_tick(
    memo: OperatorMemo, body: kopf.Body, index: kopf.Index[Any, Any], loop: BudgetLoop, logger: kopf.Logger
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
    current = bs.read(loop.written if loop.written is not None else obj.get("status"))
    subject = kopf.Body(cast(kopf.RawBody, obj))
    now = time.time()
    stamp = rfc3339(now)
    try:
        spec = eb.EnergyBudgetSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        book.grants.pop((namespace, name), None)
        message = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        await _write(
            memo, subject, namespace, name, loop, bs.spec_invalid(current, message, stamp, generation)
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
    allowance, average = team_allowances_w(
        spec, ledger.energy_kwh, ledger.carbon_grams, ledger.period_start, now, intensity
    )
    members, reports, frontier_notes = frontier_members(namespace, candidates, book, memo.energy, now)
    notes = [*notes, *frontier_notes]
    previous = book.grants.get((namespace, name))
    allocation: Allocation | None = None
    average_allocation: Allocation | None = None
    if members:
        if average is not None:
            expected, _, _ = frontier_members(namespace, candidates, book, memo.energy, now, expected=True)
            prev_avg = (
                {f"{namespace}/{n}": w for n, w in previous.average_w.items()}
                if previous is not None
                else None
            )
            if prev_avg is not None and set(prev_avg) != {m.key for m in expected}:
                prev_avg = None
            average_allocation = allocate(
                expected, max(average, 0.0), previous=prev_avg, on_exhausted=spec.on_exhausted
            )
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
        average_w = (
            {k.split("/", 1)[1]: w for k, w in average_allocation.power_w.items()}
            if average_allocation is not None
            else {}
        )
        grant = Grant(name, in_force(target, previous_in_force, applied), target, average_w)
        book.grants[(namespace, name)] = grant
        notes.extend(
            f"{n} gets {w:.0f} W once the members cut have lowered their power"
            for n, w in sorted(target.items())
            if grant.power_w[n] < w
        )
    else:
        book.grants.pop((namespace, name), None)

    overlaps = _overlaps(book, namespace, name, names)
    bound = {c.name: _bound_by(book, namespace, c.name, _own_allowed(c, reports)) for c in candidates}
    status = bs.build(
        namespace=namespace,
        spec=spec,
        candidates=candidates,
        reports=reports,
        allocation=allocation,
        average_allocation=average_allocation,
        grant=book.grants.get((namespace, name)),
        allowance_w=allowance,
        average_allowance_w=average,
        ledger=ledger,
        overlaps=overlaps,
        bound=bound,
        notes=notes,
        budget_name=name,
        conditions=current.conditions,
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


def _bound_by(book: Book, namespace: str, name: str, own_allowed_w: float | None) -> list[str]:
    """The budgets binding a GreenModel: by their powerW caps or by their average allowances."""
    peak = bound_by(book.grants_for(namespace, name), own_allowed_w)
    average = bound_by(book.average_grants_for(namespace, name), own_allowed_w)
    return sorted({*peak, *average})


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
    memo: OperatorMemo,
    subject: kopf.Body,
    namespace: str,
    name: str,
    loop: BudgetLoop,
    status: eb.EnergyBudgetStatus,
) -> None:
    """Write the status when a reader would see a change, else at most every accounting write period;
    post an Event for each condition that changed status."""
    config: OperatorConfig = memo.config
    change = st.patch(status)
    seen = loop.written if loop.written is not None else dict(subject.get("status") or {})
    changed = bs.reader_view(change) != bs.reader_view({k: seen.get(k) for k in change})
    due = time.monotonic() - loop.written_at >= config.accounting_write_period_s
    if not (changed or due):
        return
    kube: Kube = memo.kube
    written = await kube.patch_energy_budget_status(namespace, name, change)
    loop.written, loop.written_at = dict(written.get("status") or change), time.monotonic()
    for type_, reason, message in bs.transition_events(bs.read(seen).conditions, status.conditions):
        if type_ == "Warning":
            kopf.warn(subject, reason=reason, message=message)
        else:
            kopf.info(subject, reason=reason, message=message)


async def _publish_bound_by(
    memo: OperatorMemo,
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
        names_now = _bound_by(book, namespace, member, own)
        if names_now == list(entry.get("boundBy") or []):
            continue
        try:
            await kube.patch_green_model_status(
                namespace, member, st.patch(api.GreenModelStatus(bound_by=names_now))
            )
        except Exception as e:  # the member may be going away; the next tick retries
            logger.warning("could not write boundBy of GreenModel %s: %s", member, e)
