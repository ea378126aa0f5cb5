"""What a performance source can run of a spec: every (variant, power setting) pair that meets the TPOT
SLO and the quality floor, and why each other variant never runs."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from greenllm.api.v1alpha1 import GreenModelSpec, Variant
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_rules import PerformanceSource

Runnable = tuple[tuple[Variant, PowerSetting, ReplicaPerformance], ...]
_CATALOG_MEMO: dict[tuple[object, ...], tuple[object, Runnable, Mapping[str, str]]] = {}
_CATALOG_LIMIT = 64


def _catalog_key(spec: GreenModelSpec, source: PerformanceSource) -> tuple[object, ...]:
    """What a source's answers may depend on (PerformanceSource), and the source itself."""
    gpu, model, slo, power = spec.gpu, spec.model, spec.slo, spec.power
    variants = tuple((v.name, v.quality, v.precision, v.profile) for v in spec.variants)
    return (id(source), gpu.type, gpu.count, model.name, model.params_billions, slo.tpot_p90_ms,
            slo.min_quality, power.mode, power.limit_w, variants)  # fmt: skip


def catalog(spec: GreenModelSpec, source: PerformanceSource) -> tuple[Runnable, Mapping[str, str]]:
    """Every (variant, setting) of `spec` the source can run (variants below slo.minQuality left out), in
    spec and setting order, and why each other variant never runs. Memoised per source object and the
    spec fields a source's answers may depend on, so an operator that parses the spec again on every
    tick still asks the source once: sources are taken as immutable (the energy model is; TableSource's
    table is read-only), and each entry keeps its source, so an id is never mistaken for a later one's."""
    key = _catalog_key(spec, source)
    hit = _CATALOG_MEMO.get(key)
    if hit is not None and hit[0] is source:
        return hit[1], hit[2]
    runnable: list[tuple[Variant, PowerSetting, ReplicaPerformance]] = []
    unusable: dict[str, str] = {}
    settings = source.power_settings(spec.gpu, spec.power)
    for variant in spec.variants:
        if variant.quality < spec.slo.min_quality:
            unusable[variant.name] = f"quality {variant.quality:g} < slo.minQuality {spec.slo.min_quality:g}"
            continue
        count = len(runnable)
        for setting in settings:
            perf = source.performance(spec, variant, setting)
            if perf is not None:
                runnable.append((variant, setting, perf))
        if len(runnable) == count:
            unusable[variant.name] = f"cannot meet TPOT p90 {spec.slo.tpot_p90_ms:g} ms at any setting"
    if len(_CATALOG_MEMO) >= _CATALOG_LIMIT:
        _CATALOG_MEMO.clear()
    frozen, pairs = MappingProxyType(unusable), tuple(runnable)
    _CATALOG_MEMO[key] = (source, pairs, frozen)
    return pairs, frozen
