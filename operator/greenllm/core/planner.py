"""The planner: the least-power configuration that meets the SLOs and the budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, Power, Variant
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting, ReplicaPerformance


class PerformanceSource(Protocol):
    """What the planner needs from the energy model (greenllm.core.energy.EnergyModel satisfies it)."""

    def power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        """The per-GPU power settings the planner may choose from (just one for mode Fixed / Off)."""
        ...

    def performance(
        self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
    ) -> ReplicaPerformance | None:
        """One replica of `variant` at `setting`; None when it cannot meet the TPOT SLO at all."""
        ...


@dataclass(frozen=True, slots=True)
class Demand:
    """Token rates the GreenModel must serve (from the observation)."""

    prompt_tokens_per_s: float
    output_tokens_per_s: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configuration evaluated under the current demand."""

    variant: str
    quality: float
    setting: PowerSetting
    replicas: int
    power_w: float  # expected average power of all replicas at this demand
    served: float  # share of the demand the replicas can serve (capacity / demand, at most 1)
    slo_met: bool  # capacity with headroom, TTFT and TPOT all met
    why_not: str = ""  # why it breaks a constraint; empty when it meets them all


def plan(
    spec: GreenModelSpec,
    demand: Demand,
    allowed_power_w: float | None,
    source: PerformanceSource,
    current: Decision | None = None,
) -> Decision:
    """One-shot plan without stability (what `greenllm plan` prints); `step` adds the stability rules."""
    raise NotImplementedError
