"""Energy model: what one replica can serve, and at what power, for a variant, a GPU and a power setting.

Pure: it works on a `Calibration` (plain data parsed from the CSVs shipped in `greenllm/data`, see
`greenllm.calibration`) and never reads files, the clock or the environment. Every number it uses comes
from that calibration, whose rows carry their sources; `docs/energy-model.md` explains each rule and says
which numbers are measured and which are derived.

The pieces:

* Decode load curve (per GPU type, model size, precision): the ML.ENERGY sweeps over the maximum batch
  (`max_num_seqs`) give, at each batch, the output tokens/s of the replica, its average power and the
  median and p90 inter-token latency. `fit_profile` makes each series non-decreasing in batch (isotonic
  regression, pool-adjacent-violators) and adds a batch-1 point extrapolated from the two smallest
  batches, so that a trickle of requests costs what a single stream costs, not a share of batch 8.
* Variants the data lacks: 8-bit (fp8, int8 W8A8) from the 16-bit curve through ML.ENERGY v3's published
  fp8-vs-bf16 medians per batch bucket; int4 (W4A16) by the published batch-1 decode speed-up applied to
  the batch-independent (weight-reading) part of the step time. A measured fp8 sweep is used as is when
  one of comparable size (within 2x) exists for the GPU.
* Model size: the closest calibrated model (same GPU; 16-bit or 8-bit family), scaled to the spec's
  parameter count and GPU count as a memory-bound step (step time proportional to weight bytes per GPU).
* Prefill: no measurement exists, so it is derived: 2 FLOPs per parameter per prompt token at a stated
  share (`prefill_utilization`) of the GPU's dense peak for the precision, at the default power limit.
* Power settings: a cap binds only when the uncapped draw exceeds it. Decode is memory-bound: lowering
  the SM clock (by a lock, or by the firmware under a cap) saves power above idle at a small cost in
  step time (published locked-clock effect); beyond the range of that evidence, and for compute-bound
  prefill, throughput follows the power-limit response measured by Zeus on compute-bound work.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from statistics import median

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, Power, PowerMode, Precision, Variant
from greenllm.core.performance import PowerSetting, ReplicaPerformance

# ------------------------------------------------------------------------------------------ calibration


@dataclass(frozen=True, slots=True)
class GpuPowerLimits:
    """Per-GPU power limits the device accepts, W."""

    min_w: float
    max_w: float
    default_w: float

    def clamp(self, watts: float) -> float:
        return min(max(watts, self.min_w), self.max_w)


@dataclass(frozen=True, slots=True)
class ClockEvidence:
    """A published effect of locking the SM clock below the clock the GPU runs at by default.

    `time_change` and `energy_change` are fractions (+0.013 = 1.3 % longer). Two coefficients follow:
    `phi`, the share of a decode step that scales with 1/clock (t(x) = 1 + phi (1/x - 1) for a clock ratio
    x), and `gamma`, the share of the power above idle saved per unit of clock reduction
    (P(x) = idle + (P - idle)(1 - gamma (1 - x))). Attributing the whole measured saving to the power
    above idle understates the saving, which is the conservative side.
    """

    ref_mhz: float
    low_mhz: float
    time_change: float
    energy_change: float

    @property
    def low_ratio(self) -> float:
        return self.low_mhz / self.ref_mhz

    @property
    def phi(self) -> float:
        return self.time_change / (1.0 / self.low_ratio - 1.0)

    @property
    def gamma(self) -> float:
        power_ratio = (1.0 + self.energy_change) / (1.0 + self.time_change)
        return (1.0 - power_ratio) / (1.0 - self.low_ratio)


@dataclass(frozen=True, slots=True)
class GpuRecord:
    """One GPU product (one row of gpus.csv)."""

    name: str  # canonical name as used in GreenModel specs, e.g. "H100-SXM"
    aliases: tuple[str, ...]
    profile_gpu: str  # the GPU name of its rows in gpu_energy_profiles.csv ("H100", "A100", "B200")
    limits: GpuPowerLimits
    idle_w: float  # per GPU, model loaded, no requests
    peak_bf16_tflops: float  # dense
    peak_fp8_tflops: float | None  # dense; None = no FP8 tensor cores
    peak_int8_tops: float | None  # dense
    clock: ClockEvidence | None  # None = no clock-locking evidence: no locked clocks offered


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One measured point of a decode sweep (one row of gpu_energy_profiles.csv)."""

    gpu: str
    model: str
    params_b: float
    precision: str  # "bf16" (16-bit) or "fp8"
    num_gpus: int
    task: str
    batch: int  # the swept maximum batch (max_num_seqs / max_batch)
    output_tokens_per_s: float  # whole replica
    power_w: float  # whole replica (sum over num_gpus)
    itl_ms: float  # median inter-token latency (v3) or mean time per output token (v2)
    itl_p90_ms: float | None  # p90 inter-token latency where the source has it (v3)
    source: str  # short source tag, e.g. "ML.ENERGY v3"

    @property
    def power_per_gpu_w(self) -> float:
        return self.power_w / self.num_gpus


@dataclass(frozen=True, slots=True)
class Fp8Ratio:
    """fp8 / bf16 medians for one batch bucket (ML.ENERGY v3 blog, 'Precision')."""

    batch_lo: int
    batch_hi: int
    energy_ratio: float  # fp8 J/token / bf16 J/token
    latency_ratio: float  # fp8 ITL / bf16 ITL


@dataclass(frozen=True, slots=True)
class QuantSpeedup:
    """A published single-stream decode speed-up of a quantized format over 16-bit."""

    gpu: str  # profile GPU name
    precision: str  # "int4"
    params_b: float
    speedup: float


@dataclass(frozen=True, slots=True)
class CapSweepPoint:
    """One point of a power-limit sweep of compute-bound work (Zeus, NSDI'23 traces)."""

    series: str
    limit_w: float
    time_s: float
    power_w: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """Everything the model knows, parsed from the shipped CSVs."""

    gpus: tuple[GpuRecord, ...]
    profiles: tuple[ProfileRow, ...]
    fp8_ratios: tuple[Fp8Ratio, ...]
    quant_speedups: tuple[QuantSpeedup, ...]
    cap_sweeps: tuple[CapSweepPoint, ...]
    prefill_utilization: float
    prefill_power_share: float  # of the default power limit


# ------------------------------------------------------------------------------------------- fitting


def pav(values: Sequence[float]) -> tuple[float, ...]:
    """Least-squares non-decreasing fit (pool-adjacent-violators); equal weights."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out: list[float] = []
    for s, c in blocks:
        out.extend([s / c] * int(c))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One replica at one batch and default power: replica tokens/s, per-GPU W, latencies in ms."""

    batch: float
    tokens_per_s: float
    power_w: float
    itl_ms: float
    itl_p90_ms: float


@dataclass(frozen=True, slots=True)
class Profile:
    """A fitted decode load curve: non-decreasing in batch, with the measured rows it came from."""

    gpu: str
    model: str
    params_b: float
    precision: str
    num_gpus: int
    task: str
    source: str
    points: tuple[CurvePoint, ...]  # ascending batch; starts at batch 1
    rows: tuple[ProfileRow, ...]

    def at(self, batch: float) -> CurvePoint:
        """The curve at `batch`, linear between points, clamped to the fitted range."""
        pts = self.points
        if batch <= pts[0].batch:
            return pts[0]
        if batch >= pts[-1].batch:
            return pts[-1]
        for lo, hi in itertools.pairwise(pts):
            if lo.batch <= batch <= hi.batch:
                return _lerp_point(lo, hi, batch)
        raise AssertionError("unreachable: batch within range")  # pragma: no cover


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _lerp_point(lo: CurvePoint, hi: CurvePoint, batch: float) -> CurvePoint:
    t = (batch - lo.batch) / (hi.batch - lo.batch)
    return CurvePoint(
        batch=batch,
        tokens_per_s=_lerp(lo.tokens_per_s, hi.tokens_per_s, t),
        power_w=_lerp(lo.power_w, hi.power_w, t),
        itl_ms=_lerp(lo.itl_ms, hi.itl_ms, t),
        itl_p90_ms=_lerp(lo.itl_p90_ms, hi.itl_p90_ms, t),
    )


def p90_ratio_by_batch(rows: Iterable[ProfileRow]) -> dict[int, float]:
    """Median p90 / median inter-token latency per swept batch, over the rows that have both (v3).

    Used to give a p90 to sources that only report a mean (ML.ENERGY v2): DERIVED. A mean is at least the
    median for right-skewed latencies, so mean x ratio errs on the slow (safe) side.
    """
    by_batch: dict[int, list[float]] = {}
    for r in rows:
        if r.itl_p90_ms is not None and r.itl_ms > 0:
            by_batch.setdefault(r.batch, []).append(r.itl_p90_ms / r.itl_ms)
    return {b: median(v) for b, v in sorted(by_batch.items())}


def _nearest_ratio(ratios: dict[int, float], batch: int) -> float:
    best = min(ratios, key=lambda b: (abs(math.log(b / batch)), b))
    return ratios[best]


def fit_profile(rows: Sequence[ProfileRow], p90_ratios: dict[int, float]) -> Profile:
    """Fit one sweep (same GPU, model, precision, GPU count, task and source).

    Each series (tokens/s, power per GPU, median and p90 latency) is made non-decreasing in batch by
    isotonic regression; rows that already are stay exactly as measured. A batch-1 point is added by
    linear extrapolation of latency and power from the two smallest batches (DERIVED), with its
    throughput 1000 / ITL(1) (one stream), power clamped to [0, P(b0)] (the model raises it to the GPU's
    idle power when used) and latency to (0, ITL(b0)].
    """
    if not rows:
        raise ValueError("empty sweep")
    srt = sorted(rows, key=lambda r: r.batch)
    batches = [float(r.batch) for r in srt]
    if len(set(batches)) != len(batches):
        raise ValueError(f"duplicate batch sizes in sweep of {srt[0].model}")
    tput = pav([r.output_tokens_per_s for r in srt])
    power = pav([r.power_per_gpu_w for r in srt])
    itl = pav([r.itl_ms for r in srt])
    p90_raw = [
        r.itl_p90_ms if r.itl_p90_ms is not None else r.itl_ms * _nearest_ratio(p90_ratios, r.batch)
        for r in srt
    ]
    p90 = pav([max(p, i) for p, i in zip(p90_raw, itl, strict=True)])
    points = [
        CurvePoint(batch=b, tokens_per_s=t, power_w=p, itl_ms=i, itl_p90_ms=q)
        for b, t, p, i, q in zip(batches, tput, power, itl, p90, strict=True)
    ]
    if batches[0] > 1.0:
        first = points[0]
        if len(points) > 1:
            second = points[1]
            span = second.batch - first.batch
            back = first.batch - 1.0

            def extrapolate(lo: float, hi: float) -> float:
                return lo - (hi - lo) * back / span

            itl1 = extrapolate(first.itl_ms, second.itl_ms)
            p901 = extrapolate(first.itl_p90_ms, second.itl_p90_ms)
            pow1 = extrapolate(first.power_w, second.power_w)
        else:
            itl1, p901, pow1 = first.itl_ms, first.itl_p90_ms, first.power_w
        itl1 = itl1 if 0.0 < itl1 <= first.itl_ms else first.itl_ms
        p901 = min(max(p901, itl1), first.itl_p90_ms)
        pow1 = min(max(pow1, 0.0), first.power_w)
        tput1 = 1000.0 / itl1  # one stream: one token per inter-token interval
        if tput1 < first.tokens_per_s:
            points.insert(0, CurvePoint(1.0, tput1, pow1, itl1, p901))
    head = srt[0]
    return Profile(
        gpu=head.gpu,
        model=head.model,
        params_b=head.params_b,
        precision=head.precision,
        num_gpus=head.num_gpus,
        task=head.task,
        source=head.source,
        points=tuple(points),
        rows=tuple(srt),
    )


def sweep_key(row: ProfileRow) -> tuple[str, str, str, int, str, str]:
    return (row.gpu, row.model, row.precision, row.num_gpus, row.task, row.source)


def fit_all(calibration: Calibration) -> tuple[Profile, ...]:
    ratios = p90_ratio_by_batch(calibration.profiles)
    groups: dict[tuple[str, str, str, int, str, str], list[ProfileRow]] = {}
    for row in calibration.profiles:
        groups.setdefault(sweep_key(row), []).append(row)
    return tuple(fit_profile(rows, ratios) for _, rows in sorted(groups.items()))


# ------------------------------------------------------------------------------------ power response


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
            return _lerp(ra, rb, (q - qa) / (qb - qa))
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
            return _lerp(qa, qb, (r - ra) / (rb - ra))
    return 1.0  # pragma: no cover


def _scaled_clock(clock: ClockEvidence | None, scale: float) -> ClockEvidence | None:
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


# ------------------------------------------------------------------------------- precision derivation


_SIXTEEN_BIT = frozenset({Precision.BF16, Precision.FP16})
_EIGHT_BIT = frozenset({Precision.FP8, Precision.INT8})


def fp8_ratio_at(ratios: Sequence[Fp8Ratio], batch: float) -> tuple[float, float]:
    """(energy ratio, latency ratio) fp8/bf16 at `batch`.

    Bucket medians sit at the geometric centre of their bucket; between centres the ratios are
    interpolated linearly in log(batch); outside, the nearest bucket's value holds.
    """
    if not ratios:
        raise ValueError("no fp8/bf16 ratios in the calibration")
    centres = sorted(((math.sqrt(r.batch_lo * r.batch_hi), r) for r in ratios), key=lambda c: c[0])
    if batch <= centres[0][0]:
        r0 = centres[0][1]
        return r0.energy_ratio, r0.latency_ratio
    if batch >= centres[-1][0]:
        r1 = centres[-1][1]
        return r1.energy_ratio, r1.latency_ratio
    for (ca, ra), (cb, rb) in itertools.pairwise(centres):
        if ca <= batch <= cb:
            t = math.log(batch / ca) / math.log(cb / ca)
            return _lerp(ra.energy_ratio, rb.energy_ratio, t), _lerp(ra.latency_ratio, rb.latency_ratio, t)
    raise AssertionError("unreachable")  # pragma: no cover


def _monotone(points: Sequence[CurvePoint]) -> tuple[CurvePoint, ...]:
    tput = pav([p.tokens_per_s for p in points])
    power = pav([p.power_w for p in points])
    itl = pav([p.itl_ms for p in points])
    p90 = pav([max(p.itl_p90_ms, i) for p, i in zip(points, itl, strict=True)])
    return tuple(
        CurvePoint(p.batch, t, w, i, q) for p, t, w, i, q in zip(points, tput, power, itl, p90, strict=True)
    )


def derive_eight_bit(profile: Profile, ratios: Sequence[Fp8Ratio]) -> Profile:
    """An 8-bit curve from a 16-bit one: ITL x latency ratio, power x (energy ratio / latency ratio)."""
    pts = []
    for p in profile.points:
        energy, latency = fp8_ratio_at(ratios, p.batch)
        pts.append(
            CurvePoint(
                batch=p.batch,
                tokens_per_s=p.tokens_per_s / latency,
                power_w=p.power_w * energy / latency,
                itl_ms=p.itl_ms * latency,
                itl_p90_ms=p.itl_p90_ms * latency,
            )
        )
    return replace(profile, precision="fp8", points=_monotone(pts))


def weight_read_ms(profile: Profile) -> float:
    """The batch-independent part of a decode step: median ITL extrapolated to batch 0 (DERIVED)."""
    pts = profile.points
    if len(pts) < 2:
        return pts[0].itl_ms
    a, b = pts[0], pts[1]
    slope = (b.itl_ms - a.itl_ms) / (b.batch - a.batch)
    return min(max(a.itl_ms - slope * a.batch, 0.0), a.itl_ms)


def derive_int4(profile: Profile, speedup: float) -> Profile:
    """A W4A16 curve: the batch-independent part of each step shrinks by the published batch-1 speed-up.

    Per-sequence costs (KV cache, activations, which stay 16-bit) are unchanged; per-GPU power at a
    given batch is taken as the 16-bit power at that batch (no int4 power measurement exists).
    """
    if speedup <= 1.0:
        raise ValueError(f"int4 speed-up must exceed 1, got {speedup}")
    saved = weight_read_ms(profile) * (1.0 - 1.0 / speedup)
    pts = []
    for p in profile.points:
        itl = p.itl_ms - saved
        pts.append(
            CurvePoint(
                batch=p.batch,
                tokens_per_s=p.tokens_per_s * p.itl_ms / itl,
                power_w=p.power_w,
                itl_ms=itl,
                itl_p90_ms=p.itl_p90_ms - saved,
            )
        )
    return replace(profile, precision="int4", points=_monotone(pts))


def scale_profile(profile: Profile, params_b: float, num_gpus: int) -> Profile:
    """Move a curve to another model size and GPU count, as a memory-bound step.

    Step time is taken proportional to the weight bytes each GPU reads (params / GPUs): ITL x k and
    replica tokens/s / k with k = (params / params_cal) x (GPUs_cal / GPUs); per-GPU power at the same
    batch is unchanged. First-order only (tensor-parallel overheads and KV capacity are ignored).
    """
    k = (params_b / profile.params_b) * (profile.num_gpus / num_gpus)
    if k == 1.0:
        return profile
    pts = tuple(
        CurvePoint(p.batch, p.tokens_per_s / k, p.power_w, p.itl_ms * k, p.itl_p90_ms * k)
        for p in profile.points
    )
    return replace(profile, params_b=params_b, num_gpus=num_gpus, points=pts)


# ---------------------------------------------------------------------------------------- model names

_SIZE_MOE = re.compile(r"(?<![\w.])(\d+)x(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
_SUFFIXES = ("-instruct", "-it", "-hf", "-fp8", "-chat")


def normalize_model_name(name: str) -> str:
    base = name.strip().lower().rsplit("/", 1)[-1]
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                changed = True
    return base.removeprefix("meta-")


def params_from_name(name: str) -> float | None:
    """Parameter count in billions written in a model name ("Llama-3.1-8B" -> 8), or None."""
    base = name.rsplit("/", 1)[-1]
    moe = _SIZE_MOE.search(base)
    if moe:
        return float(moe.group(1)) * float(moe.group(2))
    m = _SIZE.search(base)
    return float(m.group(1)) if m else None


def normalize_gpu_name(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().upper())


# -------------------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class _ReplicaBase:
    """One variant on one GPU type and count, at the default power setting, before the SLO cut."""

    points: tuple[CurvePoint, ...]  # replica tokens/s, per-GPU W; latencies None-free
    slo_declared: bool  # True for a spec profile: its point is within the SLO by declaration
    gpus: int
    idle_w: float  # per GPU
    prompt_tokens_per_s: float  # replica
    prefill_power_w: float  # per GPU
    provenance: str


_Hit = tuple[Variant, ReplicaPerformance | None]
_FastKey = tuple[int, float | None, int | None]  # id(variant), limit W, locked clock MHz
_IDENTITY_LIMIT = 64  # specs remembered by identity (one per GreenModel and spec generation in use)
_TASK_PREFERENCE = ("lm-arena-chat", "chat")
_SOURCE_PREFERENCE = ("ML.ENERGY v3", "ML.ENERGY v2")
_MEASURED_FP8_MAX_SIZE_RATIO = 2.0  # a measured 8-bit sweep is used only within 2x of the spec's size


class EnergyModel:
    """Capacity and power of one replica, per variant and power setting. Results are cached per key."""

    def __init__(self, calibration: Calibration, *, cap_saving_scale: float = 1.0) -> None:
        """`cap_saving_scale` < 1 keeps only that share of the energy a power cap or a lower clock saves by
        the compute-bound response and the clock evidence (an uncertainty corner, not calibration)."""
        if not 0.0 < cap_saving_scale <= 1.0:
            raise ValueError(f"cap_saving_scale must be in (0, 1], got {cap_saving_scale}")
        self._cal = calibration
        self._gpus: dict[str, GpuRecord] = {}
        for g in calibration.gpus:
            for alias in (g.name, *g.aliases):
                self._gpus[normalize_gpu_name(alias)] = g
        self._profiles = fit_all(calibration)
        self._curve = scaled_savings(compute_bound_response(calibration.cap_sweeps), cap_saving_scale)
        if cap_saving_scale != 1.0:
            self._gpus = {
                k: replace(g, clock=_scaled_clock(g.clock, cap_saving_scale)) for k, g in self._gpus.items()
            }
        self._known_params = {normalize_model_name(p.model): p.params_b for p in self._profiles}
        self._base_cache: dict[tuple[object, ...], _ReplicaBase] = {}
        self._perf_cache: dict[tuple[object, ...], ReplicaPerformance | None] = {}
        # Fast path keyed by object identity: the operator and the simulator hand the same (frozen) spec
        # and variant objects on every tick, so a lookup needs no name normalising or profile hashing.
        # Each entry keeps its objects, so an id is never mistaken for a later object's reused id.
        self._by_identity: dict[int, tuple[GreenModelSpec, dict[_FastKey, _Hit]]] = {}
        self._settings: dict[tuple[str, PowerMode, float | None], tuple[PowerSetting, ...]] = {}

    # ---- public helpers

    @property
    def calibration(self) -> Calibration:
        return self._cal

    @property
    def profiles(self) -> tuple[Profile, ...]:
        """Every fitted sweep of the calibration (default power, as measured)."""
        return self._profiles

    @property
    def compute_bound_curve(self) -> tuple[tuple[float, float], ...]:
        return self._curve

    def gpu(self, gpu_type: str) -> GpuRecord:
        try:
            return self._gpus[normalize_gpu_name(gpu_type)]
        except KeyError:
            known = ", ".join(g.name for g in self._cal.gpus)
            raise ValueError(
                f"unknown GPU type {gpu_type!r}: the energy model is calibrated for {known} "
                "(add a row to greenllm/data/gpus.csv with its power limits and profiles)"
            ) from None

    def gpu_limits(self, gpu_type: str) -> GpuPowerLimits:
        return self.gpu(gpu_type).limits

    def response(self, gpu_type: str) -> PowerResponse:
        g = self.gpu(gpu_type)
        return PowerResponse(limits=g.limits, idle_w=g.idle_w, clock=g.clock, curve=self._curve)

    def model_params(self, spec: GreenModelSpec) -> float:
        """Parameter count (billions): spec.model.paramsBillions, a calibrated model's, or the name's."""
        if spec.model.params_billions is not None:
            return spec.model.params_billions
        known = self._known_params.get(normalize_model_name(spec.model.name))
        if known is not None:
            return known
        parsed = params_from_name(spec.model.name)
        if parsed is None or parsed <= 0:
            raise ValueError(
                f"cannot tell the size of model {spec.model.name!r}: set spec.model.paramsBillions"
            )
        return parsed

    def power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        """Off: the default only. Fixed: the limit clamped to the device. Auto: default first, then power
        caps evenly spaced from the device minimum up to (not including) the default, and locked clocks
        evenly spaced over the range the clock evidence covers (at most 8 settings). Cached per
        (GPU type, mode, limit): the planner asks on every tick."""
        key = (gpu.type, power.mode, power.limit_w)
        hit = self._settings.get(key)
        if hit is None:
            if len(self._settings) >= _IDENTITY_LIMIT:
                self._settings.clear()
            hit = self._settings[key] = self._power_settings(gpu, power)
        return hit

    def _power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        limits = self.gpu_limits(gpu.type)
        if power.mode is PowerMode.OFF:
            return (PowerSetting(),)
        if power.mode is PowerMode.FIXED:
            watts = power.limit_w if power.limit_w is not None else limits.default_w
            return (PowerSetting(limit_w=limits.clamp(watts)),)
        settings = [PowerSetting()]
        if limits.min_w < limits.default_w:
            n = 4
            step = (limits.default_w - limits.min_w) / n
            settings.extend(PowerSetting(limit_w=round(limits.min_w + i * step, 1)) for i in range(n))
        clock = self.gpu(gpu.type).clock
        if clock is not None:
            n = 3
            step = (clock.ref_mhz - clock.low_mhz) / n
            clocks = sorted({round(clock.low_mhz + i * step) for i in range(n)})
            settings.extend(PowerSetting(locked_clock_mhz=int(c)) for c in clocks)
        return tuple(settings[:8])

    def explain(self, spec: GreenModelSpec, variant: Variant) -> str:
        """Which profile and rules produce this variant's numbers (measured vs derived)."""
        return self._base(spec, variant).provenance

    def performance(
        self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
    ) -> ReplicaPerformance | None:
        """One replica of `variant` on `spec.gpu` at `setting`; None if no batch meets spec.slo.tpotP90Ms."""
        entry = self._by_identity.get(id(spec))
        if entry is None or entry[0] is not spec:
            if len(self._by_identity) >= _IDENTITY_LIMIT:
                self._by_identity.clear()
            entry = (spec, {})
            self._by_identity[id(spec)] = entry
        fast = (id(variant), setting.limit_w, setting.locked_clock_mhz)
        hit = entry[1].get(fast)
        if hit is not None and hit[0] is variant:
            return hit[1]
        result = self._performance(spec, variant, setting)
        entry[1][fast] = (variant, result)
        return result

    def _performance(
        self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
    ) -> ReplicaPerformance | None:
        key = (
            _base_key(spec, variant),
            spec.slo.tpot_p90_ms,
            setting.limit_w,
            setting.locked_clock_mhz,
        )
        try:
            return self._perf_cache[key]
        except KeyError:
            pass
        base = self._base(spec, variant)
        response = replace(self.response(spec.gpu.type), idle_w=base.idle_w)  # a spec profile's own idle
        result = _evaluate(base, response, setting, spec.slo.tpot_p90_ms)
        self._perf_cache[key] = result
        return result

    # ---- internals

    def _base(self, spec: GreenModelSpec, variant: Variant) -> _ReplicaBase:
        key = _base_key(spec, variant)
        try:
            return self._base_cache[key]
        except KeyError:
            pass
        base = self._build_base(spec, variant)
        self._base_cache[key] = base
        return base

    def _prefill(
        self, gpu: GpuRecord, precision: Precision, params_b: float, count: int
    ) -> tuple[float, str]:
        if precision is Precision.FP8 and gpu.peak_fp8_tflops is not None:
            peak, what = gpu.peak_fp8_tflops, "FP8"
        elif precision is Precision.INT8 and gpu.peak_int8_tops is not None:
            peak, what = gpu.peak_int8_tops, "INT8"
        else:
            peak, what = gpu.peak_bf16_tflops, "BF16"
        u = self._cal.prefill_utilization
        tokens = u * peak * 1e12 * count / (2.0 * params_b * 1e9)
        why = (
            f"prefill DERIVED: 2 x {params_b:g}e9 FLOP/token at {u:g} of {count} x {peak:g} dense {what} "
            f"TFLOPS = {tokens:,.0f} prompt tokens/s, at {self._cal.prefill_power_share:g} x the "
            f"{gpu.limits.default_w:g} W default limit per GPU"
        )
        return tokens, why

    def _build_base(self, spec: GreenModelSpec, variant: Variant) -> _ReplicaBase:
        gpu = self.gpu(spec.gpu.type)
        count = spec.gpu.count
        prefill_power = self._cal.prefill_power_share * gpu.limits.default_w
        if variant.profile is not None:
            prof = variant.profile
            if prof.prompt_tokens_per_second is not None:
                prompt = prof.prompt_tokens_per_second
                why_prefill = f"prefill from the variant's profile: {prompt:g} prompt tokens/s"
            else:
                prompt, why_prefill = self._prefill(gpu, variant.precision, self.model_params(spec), count)
            point = CurvePoint(
                batch=1.0,
                tokens_per_s=prof.output_tokens_per_second,
                power_w=prof.loaded_power_w,
                itl_ms=0.0,
                itl_p90_ms=0.0,
            )
            return _ReplicaBase(
                points=(point,),
                slo_declared=True,
                gpus=count,
                idle_w=prof.idle_power_w,
                prompt_tokens_per_s=prompt,
                prefill_power_w=prefill_power,
                provenance=(
                    f"decode from the variant's profile (spec): {prof.output_tokens_per_second:g} tokens/s "
                    f"within SLO at {prof.loaded_power_w:g} W/GPU, idle {prof.idle_power_w:g} W/GPU; "
                    + why_prefill
                ),
            )
        params = self.model_params(spec)
        profile, why = self._decode_profile(gpu, variant.precision, params, count, spec.model.name)
        prompt, why_prefill = self._prefill(gpu, variant.precision, params, count)
        points = tuple(replace(p, power_w=max(p.power_w, gpu.idle_w)) for p in profile.points)
        return _ReplicaBase(
            points=points,
            slo_declared=False,
            gpus=count,
            idle_w=gpu.idle_w,
            prompt_tokens_per_s=prompt,
            prefill_power_w=prefill_power,
            provenance=f"{why}; idle {gpu.idle_w:g} W/GPU; {why_prefill}",
        )

    def _candidates(self, gpu: GpuRecord, precision: str) -> list[Profile]:
        return [p for p in self._profiles if p.gpu == gpu.profile_gpu and p.precision == precision]

    def _closest(self, candidates: list[Profile], params_b: float, count: int, name: str) -> Profile | None:
        if not candidates:
            return None
        wanted = normalize_model_name(name)

        def rank(p: Profile) -> tuple[int, float, int, int, int, int, str]:
            return (
                0 if normalize_model_name(p.model) == wanted and p.params_b == params_b else 1,
                round(abs(math.log(params_b / p.params_b)), 9),
                0 if p.num_gpus == count else 1,
                _index(_TASK_PREFERENCE, p.task),
                _index(_SOURCE_PREFERENCE, p.source),
                -len(p.rows),
                p.model,
            )

        return min(candidates, key=rank)

    def _decode_profile(
        self, gpu: GpuRecord, precision: Precision, params_b: float, count: int, name: str
    ) -> tuple[Profile, str]:
        def described(p: Profile, how: str) -> str:
            k = (params_b / p.params_b) * (p.num_gpus / count)
            return (
                f"decode {how}: ML.ENERGY sweep {p.source} {p.model} ({p.params_b:g}B, {p.precision}) on "
                f"{p.num_gpus}x {gpu.profile_gpu}, task {p.task}, {len(p.rows)} measured batches"
                + ("" if k == 1.0 else f", step time scaled x{k:.3g} to {params_b:g}B on {count} GPU(s)")
            )

        sixteen = self._closest(self._candidates(gpu, "bf16"), params_b, count, name)
        if precision in _EIGHT_BIT:
            eight = self._closest(self._candidates(gpu, "fp8"), params_b, count, name)
            if eight is not None and abs(math.log(params_b / eight.params_b)) <= math.log(
                _MEASURED_FP8_MAX_SIZE_RATIO
            ):
                how = (
                    "MEASURED (fp8)"
                    if precision is Precision.FP8
                    else "from the measured fp8 sweep (int8 W8A8)"
                )
                return scale_profile(eight, params_b, count), described(eight, how)
        if sixteen is None:
            raise ValueError(f"no 16-bit decode sweep for {gpu.name} in the calibration")
        if precision in _SIXTEEN_BIT:
            return scale_profile(sixteen, params_b, count), described(sixteen, "MEASURED")
        if precision in _EIGHT_BIT:
            derived = derive_eight_bit(sixteen, self._cal.fp8_ratios)
            return scale_profile(derived, params_b, count), described(
                sixteen,
                f"DERIVED for {precision.value} from 16-bit by ML.ENERGY v3 fp8/bf16 medians per batch",
            )
        speedup, src = self._int4_speedup(gpu, params_b)
        derived = derive_int4(sixteen, speedup)
        return scale_profile(derived, params_b, count), described(
            sixteen, f"DERIVED for int4 (W4A16) from 16-bit with batch-1 speed-up {speedup:.3g} ({src})"
        )

    def _int4_speedup(self, gpu: GpuRecord, params_b: float) -> tuple[float, str]:
        rows = [q for q in self._cal.quant_speedups if q.precision == "int4"]
        own = [q for q in rows if q.gpu == gpu.profile_gpu]
        pool, where = (
            (own, f"published for {gpu.profile_gpu}") if own else (rows, "borrowed from another GPU")
        )
        if not pool:
            raise ValueError("no int4 speed-up in the calibration")
        best = min(pool, key=lambda q: (abs(math.log(params_b / q.params_b)), q.gpu, q.params_b))
        return best.speedup, f"{where}: {best.gpu}, {best.params_b:g}B"


def _index(order: Sequence[str], value: str) -> int:
    return order.index(value) if value in order else len(order)


def _base_key(spec: GreenModelSpec, variant: Variant) -> tuple[object, ...]:
    return (
        normalize_gpu_name(spec.gpu.type),
        spec.gpu.count,
        spec.model.name,
        spec.model.params_billions,
        variant.precision,
        variant.profile,
    )


def _evaluate(
    base: _ReplicaBase, response: PowerResponse, setting: PowerSetting, slo_ms: float
) -> ReplicaPerformance | None:
    """Apply a power setting to a replica's curve and cut it at the TPOT SLO (p90 inter-token latency)."""

    def under(p: CurvePoint) -> tuple[float, float, float]:
        watts, time_factor = response.decode(p.power_w, setting)
        return p.tokens_per_s / time_factor, watts * base.gpus, p.itl_p90_ms * time_factor

    evaluated = [under(p) for p in base.points]
    if not base.slo_declared:
        over = next((i for i, (_, _, p90) in enumerate(evaluated) if p90 > slo_ms), None)
        if over == 0:
            return None
        if over is not None:
            lo, hi = base.points[over - 1], base.points[over]
            crossing = _bisect(lambda b: under(_lerp_point(lo, hi, b))[2] - slo_ms, lo.batch, hi.batch)
            evaluated = [*evaluated[:over], under(_lerp_point(lo, hi, crossing))]
    curve: list[tuple[float, float]] = [(0.0, base.idle_w * base.gpus)]
    for rate, watts, _ in evaluated:
        if rate > curve[-1][0] and math.isfinite(rate):
            curve.append((rate, watts))
    if len(curve) < 2:
        return None
    prefill_w, prefill_rel = response.prefill(base.prefill_power_w, setting)
    if prefill_rel <= 0.0:
        return None
    batches: list[tuple[float, float, float]] = []
    if not base.slo_declared:
        for p in base.points:
            watts, time_factor = response.decode(p.power_w, setting)
            if math.isfinite(time_factor):
                batches.append((p.batch, p.itl_ms * time_factor / 1000.0, watts * base.gpus))
    return ReplicaPerformance(
        output_tokens_per_s=curve[-1][0],
        prompt_tokens_per_s=base.prompt_tokens_per_s * prefill_rel,
        prefill_power_w=prefill_w * base.gpus,
        decode_curve=tuple(curve),
        batch_curve=tuple(batches),
    )


def _bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The largest b in [lo, hi] found with f(b) <= 0, given f(lo) <= 0 < f(hi)."""
    for _ in range(40):
        mid = (lo + hi) / 2.0
        if f(mid) <= 0.0:
            lo = mid
        else:
            hi = mid
    return lo
