"""Inputs and outputs of the decision step, shared by the operator loop and the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field

from greenllm.api.v1alpha1 import ReasonKind as ReasonKind  # re-exported: Decision.kind's type
from greenllm.core.fasttier import FastTier
from greenllm.core.performance import PowerSetting


@dataclass(frozen=True, slots=True)
class Demand:
    """Token rates the GreenModel must serve (from the observation)."""

    prompt_tokens_per_s: float
    output_tokens_per_s: float

    def label(self) -> str:
        return f"{self.output_tokens_per_s:.0f} out + {self.prompt_tokens_per_s:.0f} prompt tok/s"


@dataclass(frozen=True, slots=True)
class Observation:
    """What Prometheus shows about one GreenModel at `time` (epoch s). None = unknown, never zero."""

    time: float
    prompt_tokens_per_s: float | None = None
    output_tokens_per_s: float | None = None
    requests_waiting: float | None = None
    requests_running: float | None = None
    power_w: float | None = None  # all of the GreenModel's GPUs together
    energy_j_total: float | None = None  # monotonic energy counter of those GPUs, J (None = integrate power)
    carbon_intensity_g_per_kwh: float | None = None
    tpot_p90_ms: float | None = None
    ttft_p90_ms: float | None = None
    # Completed requests per second over the rate window (vLLM `vllm:request_success_total`): with the
    # token rates it gives the mean tokens of a request, which prices the waiting queue (core.step).
    requests_per_s: float | None = None
    # Share of requests within both the TTFT and the TPOT SLO over the attainment window (vLLM histograms:
    # the bucket at the SLO over the count), and the most requests that waited at once in the burst window
    # (the node agent's per-GPU peak gauge, summed over the GreenModel's GPUs).
    attainment: float | None = None
    peak_waiting_requests: float | None = None
    # The most requests that arrived at the pods within one fast-tier read (about a second) in the
    # attainment window (the agent's arrivals gauge, summed over the pods): the size of the largest
    # burst, which, unlike a queue, does not shrink when a larger fleet absorbs the burst.
    peak_arrivals: float | None = None

    @property
    def has_demand(self) -> bool:
        return self.prompt_tokens_per_s is not None and self.output_tokens_per_s is not None


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration the planner considered."""

    variant: str
    replicas: int
    setting: PowerSetting
    power_w: float  # expected average power of the whole GreenModel, W
    why_not: str = ""  # empty for the chosen one


@dataclass(frozen=True, slots=True)
class Decision:
    variant: str
    replicas: int
    setting: PowerSetting
    expected_power_w: float | None
    reason: str
    budget_met: bool = True
    alternatives: tuple[Option, ...] = field(default_factory=tuple)
    # The fast tier (node agent, per GPU, about once a second): `setting` is its efficient setting; None =
    # no switching, `setting` applies as it is (power mode Off or Fixed, or no burst setting worth having).
    fast_tier: FastTier | None = None
    # vLLM's --max-num-batched-tokens for the variant's pods (core.burst.token_budget); None = leave vLLM's.
    token_budget: int | None = None
    # The demand the plan was made for (served rates + the queue, at the down-window's peak: core.step);
    # None when no demand was observed.
    planned_demand: Demand | None = None
    # Why, from a closed set (ReasonKind): set next to `reason` by the code that makes the decision; a
    # metric label, unlike `reason`. The default is what a decision carried from before the kinds reads as.
    kind: ReasonKind = ReasonKind.HOLD
