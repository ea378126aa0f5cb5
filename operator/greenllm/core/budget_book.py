"""What a team's GreenModels and its EnergyBudgets share in the operator's memory (issue 13). Pure.

Each GreenModel's tick leaves a `MemberReport` for the budgets covering it; each budget's daemon leaves
its allocation as a `Grant`, which the members' ticks read. The `Book` holds both (one per operator, in
kopf's memo: controller.memo.OperatorMemo.budgets); controller/budgets.py reads and writes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from greenllm.api import v1alpha1 as api
from greenllm.core.decision import Demand
from greenllm.core.frontier import WarmFloor

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class MemberReport:
    """What one GreenModel's tick leaves for the budgets covering it (controller.budgets.record_member)."""

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
    # Its warm floor's inputs at that tick: the frontier prices each configuration with the floor, as
    # the member's power cap counts it (core.frontier).
    warm: WarmFloor | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """One budget's allocation, W per member name (math.inf: no limit): `power_w` is in force (what the
    members' ticks read as their `budget.powerW` cap, a peak), `target` what the allocator chose. They
    differ while a member waits to rise until the members giving up power have lowered theirs
    (`in_force`). `average_w`: each member's share of the energy and carbon paced over the rest of the
    period, an average power its planner meets at expected power (core.step.plan_step's
    `extra_allowance_w`); empty when the budget has no energy or carbon limit. It applies at once: it
    bounds energy over the period, not what the members draw together at one moment."""

    budget: str
    power_w: Mapping[str, float]
    target: Mapping[str, float] = field(default_factory=dict)
    average_w: Mapping[str, float] = field(default_factory=dict)


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
        """(budget, W) of every budget in force that allocated to this GreenModel (its powerW caps)."""
        return self._granted(namespace, name, lambda grant: grant.power_w)

    def average_grants_for(self, namespace: str, name: str) -> list[tuple[str, float]]:
        """(budget, W) of every budget in force that granted this GreenModel an average allowance."""
        return self._granted(namespace, name, lambda grant: grant.average_w)

    def _granted(
        self, namespace: str, name: str, part: Callable[[Grant], Mapping[str, float]]
    ) -> list[tuple[str, float]]:
        return sorted(
            (grant.budget, part(grant)[name])
            for (ns, _), grant in self.grants.items()
            if ns == namespace and name in part(grant)
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
