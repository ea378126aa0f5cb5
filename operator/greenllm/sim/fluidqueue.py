"""A fluid first-come-first-served queue of requests in front of a fleet of replicas.

The model, in full:
- Each request of the trace is a fluid cohort of `prompt` and `output` tokens that arrives at its exact
  trace time. Requests are served in arrival order, each by the whole fleet at once (work-conserving
  FCFS); a request cannot be served before it arrives.
- The fleet is a set of groups of identical ready replicas. One replica of group g needs
  `p / P_g + o / O_g` seconds for a request of p prompt and o output tokens (`ReplicaPerformance`
  capacities, which already hold the TPOT SLO), so the fleet finishes it in
  `tau = 1 / sum_g(n_g / (p / P_g + o / O_g))` seconds, group g doing the share
  `tau * n_g / (p / P_g + o / O_g)` of it. The fleet is constant within a simulation step.
- Capacity short of demand leaves a backlog that carries over to the next step, in order.
- Latency SLO: a token counts as served within the SLO when the fleet serves it at most `allowance_s`
  (the spec's TTFT p90 SLO) after its request arrived; the part of a request served later counts as
  late, and whatever is still queued when the simulation ends counts as unserved (also a miss).
  The TPOT SLO is held by construction: replicas never run above their within-SLO capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from greenllm.core.performance import ReplicaPerformance
from greenllm.sim.trace import FloatArray


@dataclass(frozen=True, slots=True)
class ServerGroup:
    """`replicas` ready replicas that all perform as `perf`."""

    perf: ReplicaPerformance
    replicas: int


@dataclass(slots=True)
class GroupLoad:
    """Tokens one group served during a step."""

    prompt_tokens: float = 0.0
    output_tokens: float = 0.0


@dataclass(slots=True)
class StepService:
    """What the queue did during one step."""

    prompt_served: float = 0.0
    output_served: float = 0.0
    prompt_on_time: float = 0.0
    output_on_time: float = 0.0
    requests_completed: float = 0.0
    loads: list[GroupLoad] = field(default_factory=list)
    # (time service started, time to first token in s, requests) for each request started in this step
    first_tokens: list[tuple[float, float, float]] = field(default_factory=list)


class FluidQueue:
    """FCFS fluid queue over the requests of a trace (arrays sorted by arrival)."""

    def __init__(
        self,
        arrival_s: FloatArray,
        prompt_tokens: FloatArray,
        output_tokens: FloatArray,
        weight: float,
        allowance_s: float,
    ) -> None:
        if allowance_s < 0:
            raise ValueError("allowance_s must be >= 0")
        self._arrival = arrival_s
        self._prompt = prompt_tokens
        self._output = output_tokens
        self._weight = weight
        self._allowance = allowance_s
        self._head = 0  # first request not fully served
        self._left = 1.0  # share of the head request still to serve
        self._clock = 0.0  # when the fleet is next free (never before the step start)

    # -- state ------------------------------------------------------------------------------------------
    def backlog_tokens(self, now: float, *, inclusive: bool = True) -> tuple[float, float]:
        """Prompt and output tokens arrived by `now` (before it unless `inclusive`) and not yet served."""
        end = int(np.searchsorted(self._arrival, now, side="right" if inclusive else "left"))
        if end <= self._head:
            return 0.0, 0.0
        prompt = float(self._prompt[self._head : end].sum()) - (1.0 - self._left) * float(
            self._prompt[self._head]
        )
        output = float(self._output[self._head : end].sum()) - (1.0 - self._left) * float(
            self._output[self._head]
        )
        return max(prompt, 0.0), max(output, 0.0)

    def waiting_requests(self, now: float) -> float:
        """Requests arrived by `now` whose service has not started (vLLM's num_requests_waiting)."""
        end = int(np.searchsorted(self._arrival, now, side="right"))
        started = 1 if self._left < 1.0 else 0
        return max(end - self._head - started, 0) * self._weight

    def running_requests(self, now: float) -> float:
        """Requests in service at `now` (the partly served head, if any)."""
        if self._head < len(self._arrival) and self._left < 1.0 and self._arrival[self._head] <= now:
            return self._weight
        return 0.0

    # -- service ----------------------------------------------------------------------------------------
    def serve(self, start: float, dt: float, groups: Sequence[ServerGroup]) -> StepService:
        """Serve from `start` for `dt` seconds with a fixed fleet; returns what was served."""
        out = StepService(loads=[GroupLoad() for _ in groups])
        active = [(i, g) for i, g in enumerate(groups) if g.replicas > 0]
        end = start + dt
        clock = max(self._clock, start)
        n = len(self._arrival)
        while active and self._head < n:
            i = self._head
            arrival = float(self._arrival[i])
            if arrival >= end:
                break
            clock = max(clock, arrival)
            if clock >= end:
                break
            prompt = float(self._prompt[i])
            output = float(self._output[i])
            # Requests-per-second each group would give alone; the fleet's is their sum.
            speeds = [g.replicas / _seconds(g.perf, prompt, output) for _, g in active]
            total_speed = sum(speeds)
            tau = 1.0 / total_speed  # seconds for the whole request at full fleet speed
            if self._left == 1.0:
                best = max(range(len(active)), key=lambda k: speeds[k])
                one_replica_prefill = prompt / self._weight / active[best][1].perf.prompt_tokens_per_s
                out.first_tokens.append((clock, clock - arrival + one_replica_prefill, self._weight))
            share = min(self._left, (end - clock) / tau)
            finish = clock + share * tau
            deadline = arrival + self._allowance
            late_share = max(0.0, finish - max(clock, deadline)) / tau
            on_time_share = share - late_share
            out.prompt_served += share * prompt
            out.output_served += share * output
            out.prompt_on_time += on_time_share * prompt
            out.output_on_time += on_time_share * output
            for (k, _), speed in zip(active, speeds, strict=True):
                load = out.loads[k]
                load.prompt_tokens += share * prompt * speed * tau
                load.output_tokens += share * output * speed * tau
            clock = finish
            self._left -= share
            if self._left <= 1e-12:
                self._head += 1
                self._left = 1.0
                out.requests_completed += self._weight
            else:
                break  # the step ended inside this request
        self._clock = clock if active else max(self._clock, end)
        return out


def _seconds(perf: ReplicaPerformance, prompt: float, output: float) -> float:
    """Seconds one replica needs for `prompt` and `output` tokens (at least a tiny positive time)."""
    busy = prompt / perf.prompt_tokens_per_s + output / perf.output_tokens_per_s
    return max(busy, 1e-12)
