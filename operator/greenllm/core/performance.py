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
    # (batch, median decode step s, whole-replica W) at this setting over every measured batch, not cut at
    # the SLO: what one decode iteration of `batch` running requests takes and draws (the simulator's
    # per-request TPOT). Empty when the source has no batch data (a declared profile).
    batch_curve: tuple[tuple[float, float, float], ...] = ()

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

    def decode_step_s(self, batch: float, slo_s: float) -> float:
        """Median decode iteration time with `batch` running requests (at least one).

        Linear in batch between measured batches; beyond the largest measured batch the iteration grows
        in proportion to the batch (the replica is throughput-bound there). Without batch data (a
        declared profile) the iteration takes the TPOT SLO up to the batch the profile sustains within
        it, as the profile declares, and proportionally more beyond."""
        b = max(batch, 1.0)
        curve = self.batch_curve
        if not curve:
            return max(slo_s, b / self.output_tokens_per_s)
        if b <= curve[0][0]:
            return curve[0][1]
        last = curve[-1]
        if b >= last[0]:
            return last[1] * b / last[0]
        i = bisect_left(curve, (b, float("-inf"), float("-inf")))
        (b0, t0, _), (b1, t1, _) = curve[i - 1], curve[i]
        return t0 + (t1 - t0) * (b - b0) / (b1 - b0)

    def decode_batch_power_w(self, batch: float) -> float:
        """Whole-replica power while decoding `batch` requests (idle at 0, linear between batches)."""
        curve = self.batch_curve
        if batch <= 0.0:
            return self.idle_power_w
        if not curve:
            return self.decode_curve[-1][1]
        if batch <= curve[0][0]:
            b0, w0 = curve[0][0], curve[0][2]
            return self.idle_power_w + (w0 - self.idle_power_w) * batch / b0
        if batch >= curve[-1][0]:
            return curve[-1][2]
        i = bisect_left(curve, (batch, float("-inf"), float("-inf")))
        (b0, _, w0), (b1, _, w1) = curve[i - 1], curve[i]
        return w0 + (w1 - w0) * (batch - b0) / (b1 - b0)
