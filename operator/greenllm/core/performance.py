"""What one replica can do at a power setting: the contract between the energy model and the planner."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PowerSetting:
    """A per-GPU power knob. Both None means the GPU's defaults (no cap, clocks not locked)."""

    limit_w: float | None = None
    locked_clock_mhz: int | None = None

    @property
    def is_default(self) -> bool:
        return self.limit_w is None and self.locked_clock_mhz is None

    def label(self) -> str:
        if self.locked_clock_mhz is not None:
            return f"clock {self.locked_clock_mhz} MHz"
        if self.limit_w is not None:
            return f"{self.limit_w:.0f} W/GPU"
        return "default power"


@dataclass(frozen=True, slots=True)
class ReplicaPerformance:
    """One replica (all of its GPUs) of one variant at one power setting, within the TPOT SLO.

    Fluid model: a replica spends a share of its time prefilling (compute-bound, at `prefill_power_w`)
    and the rest decoding; while decoding at a given output rate it draws the power of the batch that
    yields that rate (`decode_curve`, measured points from idle up to the largest batch within SLO).
    """

    output_tokens_per_s: float  # decode capacity when decoding all the time, at the SLO batch
    prompt_tokens_per_s: float  # prefill capacity when prefilling all the time
    prefill_power_w: float  # whole replica while prefilling
    decode_curve: tuple[
        tuple[float, float], ...
    ]  # (output tokens/s, whole-replica W), ascending, starts at 0

    @property
    def idle_power_w(self) -> float:
        return self.decode_curve[0][1]

    def utilization(self, prompt_rate: float, output_rate: float) -> float:
        """Share of the replica's time that this load keeps busy (1.0 = saturated)."""
        return prompt_rate / self.prompt_tokens_per_s + output_rate / self.output_tokens_per_s

    def power_w(self, prompt_rate: float, output_rate: float) -> float:
        """Average power of the replica serving this load; loads above capacity are served at capacity."""
        prefill_share = min(prompt_rate / self.prompt_tokens_per_s, 1.0)
        decode_share = 1.0 - prefill_share
        if decode_share <= 0.0:
            return self.prefill_power_w
        decode_rate = min(output_rate / decode_share, self.output_tokens_per_s)
        return prefill_share * self.prefill_power_w + decode_share * self.decode_power_w(decode_rate)

    def decode_power_w(self, rate: float) -> float:
        """Power while decoding at `rate` output tokens/s: linear between measured points."""
        curve = self.decode_curve
        if rate <= curve[0][0]:
            return curve[0][1]
        if rate >= curve[-1][0]:
            return curve[-1][1]
        i = bisect_left(curve, (rate, float("-inf")))
        (r0, p0), (r1, p1) = curve[i - 1], curve[i]
        return p0 + (p1 - p0) * (rate - r0) / (r1 - r0)
