"""EnergyBudget (greenllm.io/v1alpha1): one energy budget shared by the GreenModels of a team.

A namespaced object, the energy analogue of a ResourceQuota: a label selector picks the GreenModels it
covers in its own namespace (empty: all of them) and the same budget fields a GreenModel's `spec.budget`
has (powerW, energyKwh, carbonGrams per period, onExhausted). The operator divides the budget among the
covered GreenModels every interval (core.allocation) and reports the split in the status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, JsonValue, model_validator

from greenllm.api.v1alpha1 import (
    API_VERSION,
    Budget,
    Condition,
    PeriodAccount,
    _Model,
)

__all__ = [
    "API_VERSION",
    "EB_KIND",
    "EB_PLURAL",
    "EB_SHORT_NAMES",
    "EB_SINGULAR",
    "BudgetConditionType",
    "DegradedMember",
    "EnergyBudget",
    "EnergyBudgetSpec",
    "EnergyBudgetStatus",
    "LabelSelector",
    "LabelSelectorRequirement",
    "MemberReading",
    "MemberStatus",
    "Remaining",
    "SelectorOperator",
]

EB_KIND = "EnergyBudget"
EB_PLURAL = "energybudgets"
EB_SINGULAR = "energybudget"
EB_SHORT_NAMES = ["eb"]

# Label keys and values as Kubernetes spells them; checked here so a bad selector is refused by the API
# server (and by `greenllm simulate`), not discovered by the operator.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?" + _LABEL_NAME + "$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_REQUIREMENT_RULES: list[JsonValue] = [
    {
        "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
        "message": "operators In and NotIn need values; Exists and DoesNotExist take none",
    }
]


class LabelSelectorRequirement(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _REQUIREMENT_RULES})

    key: str = Field(min_length=1, max_length=317, pattern=_LABEL_KEY)
    operator: SelectorOperator
    values: list[Annotated[str, Field(max_length=63, pattern=_LABEL_VALUE)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        # metav1.LabelSelectorRequirement's own rule.
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values and not self.values:
            raise ValueError(f"selector operator {self.operator} needs values")
        if not needs_values and self.values:
            raise ValueError(f"selector operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is SelectorOperator.EXISTS:
            return self.key in labels
        if self.operator is SelectorOperator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator is SelectorOperator.IN:
            return self.key in labels and labels[self.key] in self.values
        return labels.get(self.key) not in self.values  # NotIn: an absent key matches, as in Kubernetes


class LabelSelector(_Model):
    """A metav1.LabelSelector: all of matchLabels and matchExpressions must hold; empty matches all."""

    match_labels: dict[str, Annotated[str, Field(max_length=63, pattern=_LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=32
    )
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _label_keys(self) -> LabelSelector:
        # Keys are checked here, not in the schema: a structural schema cannot constrain map keys.
        bad = [k for k in self.match_labels if len(k) > 317 or not re.match(_LABEL_KEY, k)]
        if bad:
            raise ValueError(f"selector.matchLabels: not a label key: {', '.join(sorted(bad))}")
        return self

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(r.matches(labels) for r in self.match_expressions)

    def text(self) -> str:
        """The selector as kubectl prints it, e.g. `team=search,tier in (gold,silver)`; empty: all."""
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        for r in self.match_expressions:
            if r.operator is SelectorOperator.EXISTS:
                parts.append(r.key)
            elif r.operator is SelectorOperator.DOES_NOT_EXIST:
                parts.append(f"!{r.key}")
            else:
                op = "in" if r.operator is SelectorOperator.IN else "notin"
                parts.append(f"{r.key} {op} ({','.join(r.values)})")
        return ",".join(parts)


_SPEC_RULES: list[JsonValue] = [
    {
        "rule": "has(self.powerW) || has(self.energyKwh) || has(self.carbonGrams)",
        "message": "an EnergyBudget needs at least one of powerW, energyKwh, carbonGrams",
    }
]


class EnergyBudgetSpec(Budget):
    """The budget fields of a GreenModel's `spec.budget`, shared by every GreenModel the selector picks.

    A subclass of `Budget`, so the pacing that serves one GreenModel (core.budget) serves a team too.
    Values are strictly positive (the CRD refuses zero and negative ones, like `spec.budget`'s).
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="GreenModels in this namespace the budget covers; empty: all of them.",
    )
    power_w: float | None = Field(
        default=None, gt=0, description="Power cap shared by all covered GreenModels at any moment, W."
    )
    energy_kwh: float | None = Field(
        default=None, gt=0, description="Energy per period shared by all covered GreenModels, kWh."
    )
    carbon_grams: float | None = Field(
        default=None, gt=0, description="Carbon per period shared by all covered GreenModels, gCO2."
    )

    @model_validator(mode="after")
    def _some_limit(self) -> EnergyBudgetSpec:
        # The CEL rule's twin, for files the API server never sees (simulate).
        if self.power_w is None and self.energy_kwh is None and self.carbon_grams is None:
            raise ValueError("an EnergyBudget needs at least one of powerW, energyKwh, carbonGrams")
        return self

    def budget(self) -> Budget:
        """The plain `Budget` (without the selector), e.g. to compare with a GreenModel's own."""
        return Budget(
            power_w=self.power_w,
            energy_kwh=self.energy_kwh,
            carbon_grams=self.carbon_grams,
            period=self.period,
            on_exhausted=self.on_exhausted,
        )


# ---------------------------------------------------------------------------------------------- status


class BudgetConditionType(StrEnum):
    READY = "Ready"  # the budget was allocated this interval among at least one GreenModel
    BUDGET_MET = "BudgetMet"  # the members' power and the period's energy and carbon are within the budget
    OVERCOMMITTED = "Overcommitted"  # the members' minimum configurations alone exceed the allowance


class MemberReading(_Model):
    """A member's own period account as this budget last counted it: the next count adds only what it
    used since (and resumes from here after an operator restart)."""

    period_start: str | None = None
    energy_kwh: float = Field(default=0.0, ge=0)
    carbon_grams: float = Field(default=0.0, ge=0)


class MemberStatus(_Model):
    """One covered GreenModel: its share of the budget and what it used this period."""

    name: str
    priority: int = 0
    allocated_power_w: float | None = Field(
        default=None,
        description="Its share of powerW: the peak power this GreenModel may draw now (its budget.powerW "
        "cap), W (null: not allocated yet, or the budget has no powerW).",
    )
    allocated_average_w: float | None = Field(
        default=None,
        description="Its share of the energy and carbon left paced over the rest of the period: the "
        "average power its planner may plan for now (at expected power, as its own energyKwh), W (null: "
        "not allocated yet, or the budget has no energy or carbon limit).",
    )
    power_w: float | None = Field(default=None, description="Power it drew at its last tick, W.")
    demand_tokens_per_second: float | None = Field(
        default=None, description="Output tokens/s asked of it at its last tick."
    )
    served_tokens_per_second: float | None = Field(
        default=None,
        description="Output tokens/s its allocation serves within the SLO (as the allocator expects).",
    )
    energy_kwh: float = Field(default=0.0, ge=0, description="Energy it used this period, kWh.")
    carbon_grams: float = Field(default=0.0, ge=0, description="Carbon it emitted this period, gCO2.")
    bound: bool = Field(
        default=False, description="This budget's allocation is what limits it (tighter than its own budget)."
    )
    degraded: str | None = Field(
        default=None, description="Why it got less than its minimum configuration (null: it did not)."
    )
    present: bool = Field(
        default=True,
        description="False: deleted (or no longer selected) this period; its energy still counts.",
    )
    last_reading: MemberReading | None = None


class DegradedMember(_Model):
    name: str
    reason: str


class Remaining(_Model):
    """What is left of the budget: power now, energy and carbon for the rest of the period."""

    power_w: float | None = Field(default=None, description="Allowance now minus the allocations, W.")
    energy_kwh: float | None = Field(default=None, description="Energy left this period, kWh (null: no cap).")
    carbon_grams: float | None = Field(
        default=None, description="Carbon left this period, gCO2 (null: no cap)."
    )


class EnergyBudgetStatus(_Model):
    # Written by the operator only; tolerate fields a newer operator may add.
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    selector: str | None = Field(default=None, description="The selector as text (kubectl's form).")
    member_count: int | None = Field(default=None, description="GreenModels the budget covers now.")
    allowance_power_w: float | None = Field(
        default=None,
        description="powerW: the peak power all members may draw at once, W, divided as their powerW caps "
        "(null: no powerW).",
    )
    allocated_power_w: float | None = Field(
        default=None, description="Sum of the members' powerW allocations (peak), W."
    )
    allowance_average_w: float | None = Field(
        default=None,
        description="The energy and carbon left paced over the rest of the period, the smaller, W: an "
        "average, divided as the members' average allowances (null: no energy or carbon limit).",
    )
    allocated_average_w: float | None = Field(
        default=None, description="Sum of the members' average allowances, W."
    )
    power_text: str | None = Field(
        default=None,
        description='Allocated / allowed power, peak then average, e.g. "4.1 kW/6 kW, avg 1.6 kW/1.7 kW".',
    )
    energy_text: str | None = Field(
        default=None, description='Energy this period / budget, e.g. "12/40 kWh".'
    )
    members: list[MemberStatus] = Field(default_factory=list)
    degraded: list[DegradedMember] = Field(
        default_factory=list,
        description="Members cut below their minimum configuration, in priority order, and why.",
    )
    overlaps: list[str] = Field(
        default_factory=list,
        description="Other EnergyBudgets covering some of the same GreenModels (each obeys all of them; "
        "the tightest wins).",
    )
    period: PeriodAccount = Field(default_factory=PeriodAccount)
    remaining: Remaining = Field(default_factory=Remaining)
    conditions: list[Condition] = Field(default_factory=list)


class EnergyBudget(_Model):
    """A whole object, as read from a file (simulate) or the API server."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["greenllm.io/v1alpha1"]
    kind: Literal["EnergyBudget"]
    metadata: Annotated[dict[str, Any], Field(default_factory=dict)]
    spec: EnergyBudgetSpec
    status: EnergyBudgetStatus | None = None
