"""An EnergyBudget's status as api.energybudget says it: the period account it persists, the member rows,
what is left, and the conditions, built from one tick of its daemon (controller/budgets.py). Pure.

The daemon is the status's one writer: `build` sets every field, `spec_invalid` only the conditions and
the generation (the account stays as stored), and core.status.patch dumps what was set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from greenllm.api import energybudget as eb
from greenllm.api import v1alpha1 as api
from greenllm.api.timestamps import epoch_seconds, rfc3339
from greenllm.core import budget as budget_rules
from greenllm.core import status as st
from greenllm.core.allocation import Allocation
from greenllm.core.budget_book import Grant, MemberReport


def read(raw: Mapping[str, Any] | None) -> eb.EnergyBudgetStatus:
    """The stored status, read leniently (core.status.read_as): what a hand edit broke reads as unset."""
    return st.read_as(eb.EnergyBudgetStatus, raw)


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
    def from_status(cls, status: eb.EnergyBudgetStatus) -> Ledger:
        """Resume from a status an earlier operator wrote (`read`); without a period account that parses,
        start afresh (members' rows without the period they belong to would count twice)."""
        if "period" not in status.model_fields_set:
            return cls()
        ledger = cls(
            period_start=epoch_seconds(status.period.start),
            energy_kwh=status.period.energy_kwh,
            carbon_grams=status.period.carbon_grams,
            last_sample_time=epoch_seconds(status.period.last_sample_time),
        )
        for m in status.members:
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


# ---------------------------------------------------------------------------------------------- the status


@dataclass(frozen=True, slots=True)
class Candidate:
    """A GreenModel the selector matches, from the index."""

    name: str
    spec: api.GreenModelSpec
    bound_by: tuple[str, ...]  # status.boundBy as the watch last delivered it


def _w(watts: float | None) -> float | None:
    return None if watts is None or not math.isfinite(watts) else round(watts, 1)


def _kw_text(watts: float | None) -> str:
    if watts is None or not math.isfinite(watts):
        return "-"
    return f"{watts / 1000:.3g} kW" if watts >= 1000 else f"{watts:.0f} W"


def power_text(
    allocated_w: float,
    allowance_w: float | None,
    average_allocated_w: float | None = None,
    average_allowance_w: float | None = None,
) -> str:
    """The Power column: "4.1 kW/6 kW" (powerW allocated / allowed now), or the allocation alone with no
    limit; then ", avg 1.6 kW/1.7 kW" (the paced energy and carbon, allocated / allowed) when there is
    one."""
    if allowance_w is None or not math.isfinite(allowance_w):
        text = f"{_kw_text(allocated_w)}/-"
    else:
        text = f"{_kw_text(allocated_w)}/{_kw_text(allowance_w)}"
    if average_allowance_w is not None and math.isfinite(average_allowance_w):
        text += f", avg {_kw_text(average_allocated_w or 0.0)}/{_kw_text(average_allowance_w)}"
    return text


def _joined(peak: Allocation | None, average: Allocation | None) -> Allocation | None:
    """What the two allocations (powerW and the paced energy) give together: a member serves what both
    pay for (the smaller), is degraded or overcommitted when either says so."""
    if peak is None or average is None:
        return peak or average
    served = {k: min(s, average.served.get(k, s)) for k, s in peak.served.items()}
    degraded = (*peak.degraded, *(d for d in average.degraded if d not in peak.degraded))
    return Allocation(
        peak.power_w, served, peak.overcommitted or average.overcommitted, degraded, kept=peak.kept
    )


def _member_rows(
    namespace: str,
    candidates: Sequence[Candidate],
    reports: Mapping[str, MemberReport | None],
    allocation: Allocation | None,
    allocated_w: Mapping[str, float],
    average_w: Mapping[str, float],
    ledger: Ledger,
    bound: Mapping[str, Sequence[str]],
    budget_name: str,
) -> list[eb.MemberStatus]:
    """One row per covered GreenModel, then one per member that left this period (its energy counts)."""
    prefix = f"{namespace}/"
    served = {k.removeprefix(prefix): s for k, s in (allocation.served if allocation else {}).items()}
    why_degraded = {k.removeprefix(prefix): why for k, why in (allocation.degraded if allocation else ())}
    rows: list[eb.MemberStatus] = []
    for c in candidates:
        report = reports.get(c.name)
        account = ledger.members.get(c.name, MemberAccount(c.name))
        demand = report.demand if report else None
        rows.append(
            eb.MemberStatus(
                name=c.name,
                priority=c.spec.priority,
                allocated_power_w=_w(allocated_w.get(c.name)),
                allocated_average_w=_w(average_w.get(c.name)),
                power_w=_w(report.power_w) if report else None,
                demand_tokens_per_second=_w(demand.output_tokens_per_s) if demand else None,
                served_tokens_per_second=_w(served.get(c.name)),
                energy_kwh=round(account.energy_kwh, 6),
                carbon_grams=round(account.carbon_grams, 3),
                bound=budget_name in bound.get(c.name, ()),
                degraded=why_degraded.get(c.name),
                present=True,
                last_reading=account.reading,
            )
        )
    names = {c.name for c in candidates}
    for name, account in sorted(ledger.members.items()):
        if name in names or account.present:
            continue
        rows.append(
            eb.MemberStatus(
                name=name,
                priority=0,
                allocated_power_w=None,
                energy_kwh=round(account.energy_kwh, 6),
                carbon_grams=round(account.carbon_grams, 3),
                bound=False,
                present=False,
                last_reading=account.reading,
            )
        )
    return rows


def build(
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
    conditions: Sequence[api.Condition],
    stamp: str,
    generation: int | None,
    average_allocation: Allocation | None = None,
    average_allowance_w: float | None = None,
) -> eb.EnergyBudgetStatus:
    """The budget's status for this tick, every field set (the daemon writes it whole). `allocation` and
    `allowance_w`: the powerW part (a peak: the members' caps); `average_allocation` and
    `average_allowance_w`: the paced energy and carbon (an average: the members' planners' allowances)."""
    alloc_w = dict(grant.power_w) if grant is not None else {}  # in force: what members may draw now
    avg_w = dict(grant.average_w) if grant is not None else {}
    allocated_avg = sum(w for w in avg_w.values() if math.isfinite(w))
    has_avg = average_allowance_w is not None and math.isfinite(average_allowance_w)
    allocation = _joined(allocation, average_allocation)
    prefix = f"{namespace}/"
    degraded = [(k.removeprefix(prefix), why) for k, why in (allocation.degraded if allocation else ())]
    allocated = sum(w for w in alloc_w.values() if math.isfinite(w))
    remaining = eb.Remaining(
        power_w=_w(None if allowance_w is None else max(allowance_w - allocated, 0.0)),
        energy_kwh=None
        if spec.energy_kwh is None
        else round(max(spec.energy_kwh - ledger.energy_kwh, 0.0), 6),
        carbon_grams=None
        if spec.carbon_grams is None
        else round(max(spec.carbon_grams - ledger.carbon_grams, 0.0), 3),
    )
    return eb.EnergyBudgetStatus(
        observed_generation=generation,
        selector=spec.selector.text(),
        member_count=len(candidates),
        allowance_power_w=_w(allowance_w),
        allocated_power_w=round(allocated, 1),
        allowance_average_w=_w(average_allowance_w),
        allocated_average_w=round(allocated_avg, 1) if has_avg else None,
        power_text=power_text(allocated, allowance_w, allocated_avg, average_allowance_w),
        energy_text=st.energy_text(ledger.energy_kwh, spec.energy_kwh),
        members=_member_rows(
            namespace, candidates, reports, allocation, alloc_w, avg_w, ledger, bound, budget_name
        ),
        degraded=[eb.DegradedMember(name=n, reason=st.short(why, 300)) for n, why in degraded],
        overlaps=sorted(overlaps),
        period=api.PeriodAccount(
            start=None if ledger.period_start is None else rfc3339(ledger.period_start),
            energy_kwh=round(ledger.energy_kwh, 6),
            carbon_grams=round(ledger.carbon_grams, 3),
            last_sample_time=None if ledger.last_sample_time is None else rfc3339(ledger.last_sample_time),
        ),
        remaining=remaining,
        conditions=_conditions(
            conditions,
            namespace=namespace,
            spec=spec,
            candidates=candidates,
            reports=reports,
            allocation=allocation,
            allowance_w=allowance_w,
            allocated_w=allocated,
            average_allowance_w=average_allowance_w if has_avg else None,
            average_allocated_w=allocated_avg,
            ledger=ledger,
            overlaps=overlaps,
            notes=notes,
            stamp=stamp,
            generation=generation,
        ),
    )


def spec_invalid(
    current: eb.EnergyBudgetStatus, message: str, stamp: str, generation: int | None
) -> eb.EnergyBudgetStatus:
    """Ready=False, reason SpecInvalid, with the validation errors; the account and the rows stay."""
    conditions = st.set_condition(
        current.conditions, eb.BudgetConditionType.READY, False, "SpecInvalid", message, stamp, generation
    )
    return eb.EnergyBudgetStatus(observed_generation=generation, conditions=conditions)


def _conditions(
    conditions: Sequence[api.Condition],
    *,
    namespace: str,
    spec: eb.EnergyBudgetSpec,
    candidates: Sequence[Candidate],
    reports: Mapping[str, MemberReport | None],
    allocation: Allocation | None,
    allowance_w: float | None,
    allocated_w: float,
    average_allowance_w: float | None,
    average_allocated_w: float,
    ledger: Ledger,
    overlaps: Sequence[str],
    notes: Sequence[str],
    stamp: str,
    generation: int | None,
) -> list[api.Condition]:
    """Ready, Overcommitted and BudgetMet for this tick; other conditions are kept."""
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
    elif allowance_w is None and average_allowance_w is None:
        ready = (
            True,
            "NoLimit",
            "no budget limits power now (a carbon budget needs a known grid intensity)" + shared + extra,
        )
    else:
        n = len(allocation.power_w)
        parts = []
        if allowance_w is not None:
            parts.append(f"{allocated_w:.0f} W of powerW {allowance_w:.0f} W (peak, as powerW caps)")
        if average_allowance_w is not None:
            parts.append(
                f"{average_allocated_w:.0f} W of {average_allowance_w:.0f} W of energy/carbon paced "
                "(average, planned at expected power)"
            )
        ready = (
            True,
            "Allocated",
            f"{' and '.join(parts)} allocated among {n} GreenModel{'s' if n != 1 else ''}{shared}{extra}",
        )
    out = st.set_condition(conditions, kinds.READY, *ready, stamp, generation)

    if allocation is not None and allocation.overcommitted:
        limits = [f"powerW {allowance_w:.0f} W"] if allowance_w is not None else []
        if average_allowance_w is not None:
            limits.append(f"energy/carbon paced {average_allowance_w:.0f} W average")
        allowed_text = ", ".join(limits) or "0 W"
        cut = ", ".join(f"{k.split('/', 1)[-1]} ({why})" for k, why in allocation.degraded) or "none"
        over = (
            True,
            "MinimumsExceedBudget",
            f"the members' minimum configurations alone exceed what is allowed now ({allowed_text}); "
            f"onExhausted {spec.on_exhausted.value} degraded, in priority order: {cut}",
        )
    else:
        over = (False, "MinimumsFit", "the members' minimum configurations fit the budget")
    out = st.set_condition(out, kinds.OVERCOMMITTED, *over, stamp, generation)

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
    return st.set_condition(out, kinds.BUDGET_MET, *met, stamp, generation)


# Fields of the budget's status that move with every measurement: written at most every
# --accounting-write-period unless something a reader acts on changed (as GreenModels' ACCOUNTING_FIELDS).
_MEMBER_ACCOUNTING = frozenset(
    {"powerW", "demandTokensPerSecond", "servedTokensPerSecond", "energyKwh", "carbonGrams", "lastReading"}
)
_ACCOUNTING = frozenset({"allowancePowerW", "powerText", "energyText", "period", "remaining"})


def reader_view(status: Mapping[str, Any]) -> object:
    """What a reader acts on: the allocation, who is covered, bound and degraded, and each condition's
    type, status and reason (not the measurements)."""
    view = {k: v for k, v in status.items() if k not in _ACCOUNTING | {"members", "conditions"}}
    view["members"] = [
        {k: v for k, v in m.items() if k not in _MEMBER_ACCOUNTING and v is not None}
        for m in status.get("members") or []
    ]
    return st.reader_view({**view, "conditions": status.get("conditions") or []})


def transition_events(
    before: Sequence[api.Condition], after: Sequence[api.Condition]
) -> list[tuple[str, str, str]]:
    """(type Normal/Warning, reason, message) for each condition that changed status."""
    kinds = eb.BudgetConditionType
    events: list[tuple[str, str, str]] = []
    for kind, bad in ((kinds.READY, "False"), (kinds.BUDGET_MET, "False"), (kinds.OVERCOMMITTED, "True")):
        was, cond = st.find_condition(before, kind), st.find_condition(after, kind)
        if cond is None or cond.status == "Unknown" or (was is not None and was.status == cond.status):
            continue
        message = st.short(cond.message, st.EVENT_MESSAGE_MAX)
        if cond.status == bad:
            events.append(("Warning", cond.reason, message))
        elif was is not None and was.status != "Unknown":  # no Normal event for a first good state
            events.append(("Normal", cond.reason, message))
    return events
