"""Decode load curves fitted to the measured sweeps.

The ML.ENERGY sweeps over the maximum batch (`max_num_seqs`) give, at each batch, the output tokens/s of
the replica, its average power and the median and p90 inter-token latency. `fit_profile` makes each
series non-decreasing in batch (isotonic regression, pool-adjacent-violators: `pav`) and adds a batch-1
point extrapolated from the two smallest batches, so that a trickle of requests costs what a single
stream costs, not a share of batch 8. `Profile.at` interpolates the fitted curve linearly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import median

from greenllm.core.calibration_records import Calibration, ProfileRow


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
                return lerp_point(lo, hi, batch)
        raise AssertionError("unreachable: batch within range")  # pragma: no cover


def lerp(a: float, b: float, t: float) -> float:
    """a + (b - a) t: linear interpolation (also used by the power response and the derived profiles)."""
    return a + (b - a) * t


def lerp_point(lo: CurvePoint, hi: CurvePoint, batch: float) -> CurvePoint:
    """The curve between two of its points at `batch`, every series linear in batch."""
    t = (batch - lo.batch) / (hi.batch - lo.batch)
    return CurvePoint(
        batch=batch,
        tokens_per_s=lerp(lo.tokens_per_s, hi.tokens_per_s, t),
        power_w=lerp(lo.power_w, hi.power_w, t),
        itl_ms=lerp(lo.itl_ms, hi.itl_ms, t),
        itl_p90_ms=lerp(lo.itl_p90_ms, hi.itl_p90_ms, t),
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
