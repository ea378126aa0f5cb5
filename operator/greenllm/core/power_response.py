"""How a GPU responds to a power setting (a power cap or a locked SM clock), per GPU.

A cap binds only when the uncapped draw exceeds it. Decode is memory-bound: lowering the SM clock (by a
lock, or by the firmware under a cap) saves power above idle at a small cost in step time (published
locked-clock effect, `ClockEvidence`); beyond the range of that evidence, and for compute-bound prefill,
throughput follows the power-limit response measured by Zeus on compute-bound work
(`compute_bound_response`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from statistics import median

from greenllm.core.calibration_records import CapSweepPoint, ClockEvidence, GpuPowerLimits
from greenllm.core.performance import PowerSetting
from greenllm.core.profile_fit import lerp, pav


def compute_bound_response(points: Iterable[CapSweepPoint]) -> tuple[tuple[float, float], ...]:
    """Relative throughput of compute-bound work vs its relative power under a cap, from Zeus sweeps.

    Per series, reference = the highest limit; q = average power / reference power, r = reference time /
    time. Only series whose reference power is at least 70 % of their highest limit are used (the
    compute-bound ones, where a cap acts; memory- or input-bound series never reach their caps). Points
    are pooled in bins of 0.05 in q, the median r per bin is taken, made non-decreasing (PAV) and pinned
    to (1, 1). Returns (q, r) ascending.
    """
    series: dict[str, list[CapSweepPoint]] = {}
    for p in points:
        series.setdefault(p.series, []).append(p)
    bins: dict[int, list[float]] = {}
    for pts in series.values():
        ref = max(pts, key=lambda p: p.limit_w)
        if ref.power_w < 0.7 * ref.limit_w:
            continue
        for p in pts:
            q = p.power_w / ref.power_w
            bins.setdefault(round(q * 20), []).append(ref.time_s / p.time_s)
    if not bins:
        raise ValueError("no compute-bound power-limit series in the calibration")
    keys = sorted(k for k in bins if k < 20)
    qs = [k / 20 for k in keys]
    rs = pav([min(median(bins[k]), 1.0) for k in keys])
    curve = [(q, r) for q, r in zip(qs, rs, strict=True) if q > 0]
    curve.append((1.0, 1.0))
    return tuple(curve)


def response_at(curve: Sequence[tuple[float, float]], q: float) -> float:
    """r(q): relative throughput at relative power q; proportional below the lowest measured point."""
    if q >= 1.0:
        return 1.0
    q0, r0 = curve[0]
    if q <= q0:
        return max(r0 * q / q0, 0.0)
    for (qa, ra), (qb, rb) in itertools.pairwise(curve):
        if qa <= q <= qb:
            return lerp(ra, rb, (q - qa) / (qb - qa))
    return 1.0  # pragma: no cover - curve ends at q = 1


def power_for_response(curve: Sequence[tuple[float, float]], r: float) -> float:
    """The smallest relative power q with r(q) >= r (inverse of `response_at`)."""
    if r >= 1.0:
        return 1.0
    q0, r0 = curve[0]
    if r <= r0:
        return r * q0 / r0
    for (qa, ra), (qb, rb) in itertools.pairwise(curve):
        if ra < r <= rb:
            return lerp(qa, qb, (r - ra) / (rb - ra))
    return 1.0  # pragma: no cover


def scaled_clock(clock: ClockEvidence | None, scale: float) -> ClockEvidence | None:
    """The clock evidence with only `scale` of its measured energy saving."""
    return None if clock is None else replace(clock, energy_change=clock.energy_change * scale)


def scaled_savings(curve: Sequence[tuple[float, float]], scale: float) -> tuple[tuple[float, float], ...]:
    """The response with only `scale` of each point's energy saving: energy per unit of work q / r becomes
    1 - scale x (1 - q / r), so r' = q / (1 - scale x (1 - q / r)); scale 1 is the curve itself."""
    if scale == 1.0:
        return tuple(curve)
    out = []
    for q, r in curve:
        if r <= 0.0:
            out.append((q, r))
            continue
        saving = 1.0 - q / r
        out.append((q, min(1.0, q / (1.0 - scale * saving))))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PowerResponse:
    """How one GPU type responds to a power setting, per GPU."""

    limits: GpuPowerLimits
    idle_w: float
    clock: ClockEvidence | None
    curve: tuple[tuple[float, float], ...]

    def clock_ratio(self, setting: PowerSetting) -> float:
        if setting.locked_clock_mhz is None:
            return 1.0
        if self.clock is None:
            raise ValueError("no locked-clock evidence for this GPU type: locked clocks are not modelled")
        if setting.locked_clock_mhz <= 0:
            raise ValueError(f"locked clock must be positive, got {setting.locked_clock_mhz} MHz")
        return min(1.0, setting.locked_clock_mhz / self.clock.ref_mhz)

    def _clocked(self, power_w: float, x: float) -> tuple[float, float]:
        """Decode power and step-time factor at clock ratio x (x = 1: default)."""
        if self.clock is None or x >= 1.0:
            return power_w, 1.0
        above = max(power_w - self.idle_w, 0.0)
        p = self.idle_w + above * (1.0 - self.clock.gamma * (1.0 - x)) if above > 0 else power_w
        return p, 1.0 + self.clock.phi * (1.0 / x - 1.0)

    def decode(self, power_w: float, setting: PowerSetting) -> tuple[float, float]:
        """(per-GPU power, step-time factor) of decode that draws `power_w` at the default setting."""
        x = self.clock_ratio(setting)
        p, tf = self._clocked(power_w, x)
        if setting.limit_w is None:
            return p, tf
        cap = self.limits.clamp(setting.limit_w)
        if p <= cap:
            return p, tf  # the cap does not bind at this load
        base_x = x
        if self.clock is not None and power_w > self.idle_w:
            # The firmware lowers the clock until the draw meets the cap.
            share = (cap - self.idle_w) / (power_w - self.idle_w)
            x_cap = 1.0 - (1.0 - share) / self.clock.gamma
            if x_cap >= self.clock.low_ratio:
                return cap, 1.0 + self.clock.phi * (1.0 / x_cap - 1.0)
            base_x = min(x, self.clock.low_ratio)
        # Beyond the clock evidence: throughput falls as for compute-bound work (Zeus response).
        p_base, tf_base = self._clocked(power_w, base_x)
        r = response_at(self.curve, cap / p_base)
        if r <= 0.0:
            return cap, math.inf
        return cap, tf_base / r

    def prefill(self, power_w: float, setting: PowerSetting) -> tuple[float, float]:
        """(per-GPU power, relative throughput) of compute-bound prefill drawing `power_w` by default."""
        q = 1.0
        x = self.clock_ratio(setting)
        if x < 1.0:
            q = power_for_response(self.curve, x)  # compute-bound: throughput proportional to clock
        if setting.limit_w is not None:
            cap = self.limits.clamp(setting.limit_w)
            if cap <= q * power_w:  # the cap binds: it is the power (cap / W x W may be off by an ulp)
                return cap, response_at(self.curve, cap / power_w)
        return q * power_w, response_at(self.curve, q)
