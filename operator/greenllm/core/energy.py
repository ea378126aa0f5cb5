"""Energy model: what one replica can serve, and at what power, for a variant, a GPU and a power setting.

Pure: it works on a `Calibration` (plain data parsed from the CSVs shipped in `greenllm/data`, see
`greenllm.calibration` and `core.calibration_records`) and never reads files, the clock or the
environment. Every number it uses comes from that calibration, whose rows carry their sources;
`docs/energy-model.md` explains each rule and says which numbers are measured and which are derived.

The pieces (this module picks and combines them: `EnergyModel`):

* Decode load curve (per GPU type, model size, precision; `core.profile_fit`): the ML.ENERGY sweeps over
  the maximum batch (`max_num_seqs`) give, at each batch, the output tokens/s of the replica, its average
  power and the median and p90 inter-token latency. `fit_profile` makes each series non-decreasing in
  batch (isotonic regression, pool-adjacent-violators) and adds a batch-1 point extrapolated from the two
  smallest batches, so that a trickle of requests costs what a single stream costs, not a share of
  batch 8.
* Variants the data lacks (`core.derived_profiles`): 8-bit (fp8, int8 W8A8) from the 16-bit curve
  through ML.ENERGY v3's published fp8-vs-bf16 medians per batch bucket; int4 (W4A16) by the published
  batch-1 decode speed-up applied to the batch-independent (weight-reading) part of the step time. A
  measured fp8 sweep is used as is when one of comparable size (within 2x) exists for the GPU.
* Model size: the closest calibrated model (same GPU; 16-bit or 8-bit family; names compared by
  `core.model_names`), scaled to the parameter count (the variant's own model's, else the spec's) and GPU
  count (the variant's gpuCount, else the spec's) as a memory-bound step (step time proportional to
  weight bytes per GPU; `core.derived_profiles`). A size more than 2x beyond the GPU's measured sizes is
  refused (`ValueError`).
* 2:4 sparsity: the vendor's published latency and throughput gains over the dense model (H100, vLLM)
  applied to the decode curve at one stream and at the largest batch (`core.derived_profiles`); prefill
  and power per GPU as dense. Another GPU or int4 is refused unless the variant gives a measured profile.
* Prefill: no measurement exists, so it is derived: 2 FLOPs per parameter per prompt token at a stated
  share (`prefill_utilization`) of the GPU's dense peak for the precision, at the default power limit.
* Power settings (`core.power_response`): a cap binds only when the uncapped draw exceeds it. Decode is
  memory-bound: lowering the SM clock (by a lock, or by the firmware under a cap) saves power above idle
  at a small cost in step time (published locked-clock effect); beyond the range of that evidence, and
  for compute-bound prefill, throughput follows the power-limit response measured by Zeus on
  compute-bound work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from greenllm.api.v1alpha1 import (
    GpuSpec,
    GreenModelSpec,
    ModelRef,
    Power,
    PowerMode,
    Precision,
    Sparsity,
    Variant,
)
from greenllm.core.calibration_records import Calibration, GpuPowerLimits, GpuRecord, SparsityClaim
from greenllm.core.derived_profiles import derive_eight_bit, derive_int4, derive_sparse, scale_profile
from greenllm.core.model_names import normalize_gpu_name, normalize_model_name, params_from_name
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_catalog import CatalogMemo
from greenllm.core.power_response import PowerResponse, compute_bound_response, scaled_clock, scaled_savings
from greenllm.core.profile_fit import CurvePoint, Profile, fit_all, lerp_point


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


_SIXTEEN_BIT = frozenset({Precision.BF16, Precision.FP16})
_EIGHT_BIT = frozenset({Precision.FP8, Precision.INT8})
_Hit = tuple[Variant, ReplicaPerformance | None]
_FastKey = tuple[int, float | None, int | None]  # id(variant), limit W, locked clock MHz
_IDENTITY_LIMIT = 64  # specs remembered by identity (one per GreenModel and spec generation in use)
_TASK_PREFERENCE = ("lm-arena-chat", "chat")
_SOURCE_PREFERENCE = ("ML.ENERGY v3", "ML.ENERGY v2")
_MEASURED_FP8_MAX_SIZE_RATIO = 2.0  # a measured 8-bit sweep is used only within 2x of the spec's size
# Scaling a sweep to another size is first order (memory-bound step): it is trusted up to 2x beyond the
# smallest and largest model measured on the GPU, as the measured-fp8 rule above, and refused further out.
_SIZE_EXTRAPOLATION = 2.0


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
                k: replace(g, clock=scaled_clock(g.clock, cap_saving_scale)) for k, g in self._gpus.items()
            }
        self._known_params = {normalize_model_name(p.model): p.params_b for p in self._profiles}
        # What the model remembers lives in this instance, none in the module: its answers depend only on
        # its calibration (fixed for its life) and the spec's content, so they stay true while it lives.
        # By content: a replica's base curve; its performance per TPOT SLO and setting; the settings per GPU
        # type and power mode (bounded); the planner's catalogs of its answers (bounded, one per spec in use).
        self._base_cache: dict[tuple[object, ...], _ReplicaBase] = {}
        self._perf_cache: dict[tuple[object, ...], ReplicaPerformance | None] = {}
        self._settings: dict[tuple[str, PowerMode, float | None], tuple[PowerSetting, ...]] = {}
        self.catalogs = CatalogMemo()
        # A fast path by object identity (bounded): a caller that keeps its parsed spec between ticks (the
        # simulator does) hands the same frozen spec and variant objects every time, so a lookup needs no
        # name normalising or profile hashing. Each entry holds its spec and variant, so no other object
        # can take their ids while it exists: an id is never mistaken for a later object's.
        self._by_identity: dict[int, tuple[GreenModelSpec, dict[_FastKey, _Hit]]] = {}

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
        return self._params_of(spec.model, "spec.model.paramsBillions")

    def variant_params(self, spec: GreenModelSpec, variant: Variant) -> float:
        """Parameter count (billions) of the model `variant` serves: its own model's, else the spec's."""
        if variant.model is None:
            return self.model_params(spec)
        return self._params_of(variant.model, f"paramsBillions in variant {variant.name!r}'s model")

    def _params_of(self, model: ModelRef, field: str) -> float:
        if model.params_billions is not None:
            return model.params_billions
        known = self._known_params.get(normalize_model_name(model.name))
        if known is not None:
            return known
        parsed = params_from_name(model.name)
        if parsed is None or parsed <= 0:
            raise ValueError(f"cannot tell the size of model {model.name!r}: set {field}")
        return parsed

    def calibrated_sizes(self, gpu_type: str) -> tuple[float, float]:
        """(smallest, largest) model size, billions, measured on this GPU type (any precision)."""
        gpu = self.gpu(gpu_type)
        sizes = [p.params_b for p in self._profiles if p.gpu == gpu.profile_gpu]
        if not sizes:
            raise ValueError(f"no decode sweep for {gpu.name} in the calibration")
        return min(sizes), max(sizes)

    def _check_size(self, gpu: GpuRecord, variant: Variant, name: str, params_b: float) -> None:
        lo, hi = self.calibrated_sizes(gpu.name)
        if not lo / _SIZE_EXTRAPOLATION <= params_b <= hi * _SIZE_EXTRAPOLATION:
            raise ValueError(
                f"variant {variant.name!r}: model {name} has paramsBillions {params_b:g}, outside the range "
                f"calibrated for {gpu.name} ({lo / _SIZE_EXTRAPOLATION:g}-{hi * _SIZE_EXTRAPOLATION:g}B: "
                f"within {_SIZE_EXTRAPOLATION:g}x of the {lo:g}-{hi:g}B models measured on it); give the "
                "variant a measured profile"
            )

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
        count = spec.gpus_per_replica(variant)  # a variant's own gpuCount, else spec.gpu.count
        prefill_power = self._cal.prefill_power_share * gpu.limits.default_w
        if variant.profile is not None:
            prof = variant.profile
            if prof.prompt_tokens_per_second is not None:
                prompt = prof.prompt_tokens_per_second
                why_prefill = f"prefill from the variant's profile: {prompt:g} prompt tokens/s"
            else:
                params = self.variant_params(spec, variant)
                prompt, why_prefill = self._prefill(gpu, variant.precision, params, count)
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
        params = self.variant_params(spec, variant)
        name = (variant.model or spec.model).name
        self._check_size(gpu, variant, name, params)
        if variant.sparsity is Sparsity.NONE:
            profile, why = self._decode_profile(gpu, variant.precision, params, count, name)
        else:
            profile, why = self._sparse_profile(gpu, variant, params, count, name)
        # Prefill as dense: no published claim isolates a 2:4 prefill (docs/energy-model.md, section 3b).
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

    def _sparsity_claims(self, gpu: GpuRecord, variant: Variant) -> tuple[SparsityClaim, SparsityClaim]:
        """The (latency, throughput) claims for a 2:4 variant on `gpu`; a ValueError says what is missing."""
        if variant.precision in _SIXTEEN_BIT:
            family = "bf16"
        elif variant.precision in _EIGHT_BIT:
            family = "fp8"  # int8 W8A8 by the 8-bit rule (same bytes per weight, same tensor peak)
        else:
            raise ValueError(
                f"variant {variant.name!r}: 2:4 sparsity with {variant.precision.value} has no published "
                "speed evidence (sparsity_speed_claims.csv covers bf16 and fp8); give the variant a measured "
                "profile"
            )
        claims = [c for c in self._cal.sparsity_claims if c.precision == family]
        mine = [c for c in claims if c.gpu == gpu.profile_gpu]
        by_metric = {c.metric: c for c in mine}
        if "latency" not in by_metric or "throughput" not in by_metric:
            covered = ", ".join(sorted({c.gpu for c in claims})) or "no GPU"
            raise ValueError(
                f"variant {variant.name!r}: 2:4 sparsity has no published speed evidence on {gpu.name} "
                f"(sparsity_speed_claims.csv covers {covered} only); give the variant a measured profile"
            )
        return by_metric["latency"], by_metric["throughput"]

    def _sparse_profile(
        self, gpu: GpuRecord, variant: Variant, params_b: float, count: int, name: str
    ) -> tuple[Profile, str]:
        latency, throughput = self._sparsity_claims(gpu, variant)
        if latency.baseline != throughput.baseline:
            raise ValueError("sparsity claims of one precision must share their dense baseline")
        sixteen = self._closest(self._candidates(gpu, "bf16"), params_b, count, name)
        if sixteen is None:
            raise ValueError(f"no 16-bit decode sweep for {gpu.name} in the calibration")
        # Each claim is applied to the dense curve it was measured against (dense bf16 for both rows of
        # the source, "same precision" for the bf16 sparse model), never to a derived 8-bit curve.
        dense = sixteen if latency.baseline == "bf16" else derive_eight_bit(sixteen, self._cal.fp8_ratios)
        derived = scale_profile(derive_sparse(dense, latency.speedup, throughput.speedup), params_b, count)
        k = (params_b / sixteen.params_b) * (sixteen.num_gpus / count)
        why = (
            f"decode DERIVED for 2:4 sparse {variant.precision.value}: dense {latency.baseline} ML.ENERGY "
            f"sweep {sixteen.source} {sixteen.model} ({sixteen.params_b:g}B) on {sixteen.num_gpus}x "
            f"{gpu.profile_gpu}, task {sixteen.task}, steps {latency.speedup:.3g}x faster at one stream "
            f"(published latency) to {throughput.speedup:.3g}x at batch {sixteen.points[-1].batch:g} "
            f"(published throughput; {latency.source}), power per GPU as dense (no sparse energy measured)"
            + ("" if k == 1.0 else f", step time scaled x{k:.3g} to {params_b:g}B on {count} GPU(s)")
        )
        return derived, why

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
        spec.gpus_per_replica(variant),
        spec.model.name,
        spec.model.params_billions,
        variant.model,
        variant.sparsity,
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
            crossing = _bisect(lambda b: under(lerp_point(lo, hi, b))[2] - slo_ms, lo.batch, hi.batch)
            evaluated = [*evaluated[:over], under(lerp_point(lo, hi, crossing))]
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
