"""The fast tier: which of two operator-chosen power settings a GPU runs at, from its pod's own queue.

The operator (slow tier, every `scaling.interval`) picks two settings per GreenModel: `efficient`, the
least energy per token while requests do not queue, and `burst`, the capacity the SLOs need once they do.
Power caps and locked clocks take effect in milliseconds, so the node agent switches between the two about
once a second, per GPU, from the vLLM metrics of the pod on that GPU (and the simulator does the same per
simulated replica, through this same function):

- a queue on the pod (`waiting >= burst_at_waiting`) -> `burst` at once: a request that waits is a request
  whose TTFT is being spent, and a throttled GPU spends it faster;
- metrics that cannot be read or parse badly -> `burst`: the SLO comes first, and the pod cannot lower
  its own GPU's setting by hiding its metrics;
- back to `efficient` only once no queue has been seen for `hold_s` (debounce: one empty reading between
  two queued ones must not flap the GPU).

Trust: the reading only chooses between the two settings; it never names a value. Each setting is
clamped to the GPU's range where it is applied (agent) as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from greenllm.core.performance import PowerSetting

# The agent reads each pod about once a second (vLLM's metrics are cheap to scrape; NVML applies a limit in
# milliseconds). A queue seen in any of the last 3 reads keeps `burst`: one missed or empty read between
# queued ones never switches back (debounce), and the number of switches is at most one pair per 3 s.
READ_PERIOD_S = 1.0
DEFAULT_HOLD_S = 3.0 * READ_PERIOD_S
# One waiting request is a queue: vLLM admits a request to the running batch as soon as its token budget
# allows, so `num_requests_waiting > 0` means prompt work the GPU could not take in this iteration.
DEFAULT_BURST_AT_WAITING = 1.0


class Mode(StrEnum):
    EFFICIENT = "efficient"
    BURST = "burst"


@dataclass(frozen=True, slots=True)
class SwitchRule:
    burst_at_waiting: float = DEFAULT_BURST_AT_WAITING
    hold_s: float = DEFAULT_HOLD_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.burst_at_waiting) and self.burst_at_waiting >= 0):
            raise ValueError(f"burst_at_waiting must be a finite number >= 0, got {self.burst_at_waiting}")
        if not (math.isfinite(self.hold_s) and self.hold_s >= 0):
            raise ValueError(f"hold_s must be a finite number >= 0, got {self.hold_s}")


@dataclass(frozen=True, slots=True)
class QueueReading:
    """One read of a pod's vLLM metrics: requests waiting and running (summed over its engines)."""

    waiting: float
    running: float

    @property
    def valid(self) -> bool:
        return all(math.isfinite(v) and v >= 0 for v in (self.waiting, self.running))


@dataclass(frozen=True, slots=True)
class FastState:
    """What the rule remembers per GPU."""

    mode: Mode = Mode.BURST  # a GPU nobody has read yet runs at burst (SLO first)
    queue_seen_at: float | None = None  # last time a queue (or an unreadable pod) was seen
    switches: int = 0


def next_mode(rule: SwitchRule, state: FastState, now: float, reading: QueueReading | None) -> FastState:
    """The mode after a read at `now`; `reading` None (or invalid) means the pod could not be read."""
    queued = reading is None or not reading.valid or reading.waiting >= max(rule.burst_at_waiting, 1e-9)
    seen: float | None
    if queued:
        mode, seen = Mode.BURST, now
    else:
        seen = state.queue_seen_at
        held = seen is not None and now - seen < rule.hold_s
        mode = Mode.BURST if state.mode is Mode.BURST and held else Mode.EFFICIENT
    switches = state.switches + (1 if mode is not state.mode else 0)
    return FastState(mode=mode, queue_seen_at=seen, switches=switches)


@dataclass(frozen=True, slots=True)
class FastTier:
    """The operator's choice for one GreenModel: the two settings and the rule between them."""

    efficient: PowerSetting
    burst: PowerSetting
    rule: SwitchRule = SwitchRule()

    def setting(self, mode: Mode) -> PowerSetting:
        return self.efficient if mode is Mode.EFFICIENT else self.burst
