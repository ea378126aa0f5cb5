"""Decode curves the calibration lacks, derived from measured ones.

* Other precisions: 8-bit (fp8, int8 W8A8) from the 16-bit curve through ML.ENERGY v3's published
  fp8-vs-bf16 medians per batch bucket (`derive_eight_bit`); int4 (W4A16) by the published batch-1
  decode speed-up applied to the batch-independent (weight-reading) part of the step time
  (`derive_int4`).
* 2:4 structured sparsity: the dense curve the vendor's claims were measured against, each step faster by
  the published one-request latency speed-up at one stream and by the saturated-throughput gain at the
  largest batch (`derive_sparse`).
* Other model sizes and GPU counts: a curve scaled as a memory-bound step, step time proportional to the
  weight bytes each GPU reads (`scale_profile`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

from greenllm.core.calibration_records import Fp8Ratio
from greenllm.core.profile_fit import CurvePoint, Profile, lerp, pav


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
            return lerp(ra.energy_ratio, rb.energy_ratio, t), lerp(ra.latency_ratio, rb.latency_ratio, t)
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


def sparse_speedup_at(profile: Profile, batch: float, latency: float, throughput: float) -> float:
    """The x-faster factor of a 2:4 sparse step at `batch`: `latency` (the published one-request speed-up)
    at the curve's first point (one stream), `throughput` (the published saturated-server gain) at its
    largest measured batch, linear in log(batch) between them and held outside."""
    lo, hi = profile.points[0].batch, profile.points[-1].batch
    if batch <= lo or hi <= lo:
        return latency
    if batch >= hi:
        return throughput
    return lerp(latency, throughput, math.log(batch / lo) / math.log(hi / lo))


def derive_sparse(profile: Profile, latency: float, throughput: float) -> Profile:
    """A 2:4 sparse curve from the dense curve the published claims were measured against.

    Each step is `sparse_speedup_at` times faster at the same batch (ITL and p90 divided, tokens/s
    multiplied); per-GPU power at a batch is the dense power (no energy of a sparse model was measured).
    """
    if latency <= 0.0 or throughput <= 0.0:
        raise ValueError(f"sparsity speed-ups must be positive, got {latency} and {throughput}")
    pts = []
    for p in profile.points:
        s = sparse_speedup_at(profile, p.batch, latency, throughput)
        pts.append(
            CurvePoint(
                batch=p.batch,
                tokens_per_s=p.tokens_per_s * s,
                power_w=p.power_w,
                itl_ms=p.itl_ms / s,
                itl_p90_ms=p.itl_p90_ms / s,
            )
        )
    return replace(profile, points=_monotone(pts))
