"""What a performance source can run of a spec: every (variant, power setting) pair that meets the TPOT
SLO and the quality floor, and why each other variant never runs (`Catalog`); and the memo a source keeps
of them (`CatalogMemo`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from greenllm.api.v1alpha1 import GreenModelSpec, Variant
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_rules import CurveFacts, PerformanceSource, curve_facts

Runnable = tuple[tuple[Variant, PowerSetting, ReplicaPerformance], ...]


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every (variant, setting) of a spec a source can run, in spec and setting order, with the curve facts
    of each (same order), and why each other variant never runs."""

    runnable: Runnable
    facts: tuple[CurveFacts, ...]  # curve_facts of each runnable pair's performance
    unusable: Mapping[str, str]  # variant -> why it is never considered


def build_catalog(spec: GreenModelSpec, source: PerformanceSource) -> Catalog:
    """Ask `source` about every variant of `spec` (variants below slo.minQuality left out) at every
    setting it offers."""
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
    facts = tuple(curve_facts(perf) for _, _, perf in runnable)
    return Catalog(tuple(runnable), facts, MappingProxyType(unusable))


def _catalog_key(spec: GreenModelSpec) -> tuple[object, ...]:
    """What a source's answers may depend on (PerformanceSource)."""
    gpu, model, slo, power = spec.gpu, spec.model, spec.slo, spec.power
    variants = tuple(
        (v.name, v.quality, v.precision, v.model, v.sparsity, v.gpu_count, v.profile) for v in spec.variants
    )
    return (gpu.type, gpu.count, model.name, model.params_billions, slo.tpot_p90_ms, slo.min_quality,
            power.mode, power.limit_w, variants)  # fmt: skip


class CatalogMemo:
    """The catalogs one source gave, by the spec fields its answers may depend on, so an operator that
    parses the spec again asks the source once and computes each pair's curve facts once, not on every
    tick. A source keeps its own (its `catalogs` attribute): the memo lives exactly as long as the source
    whose answers it holds, and its keys are spec content, never an object's id. Sources are taken as
    immutable (the energy model is; a table source's table is read-only). At most `limit` catalogs (one
    per GreenModel and spec generation in use): all are dropped when it is full."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._catalogs: dict[tuple[object, ...], Catalog] = {}

    def get(self, spec: GreenModelSpec, source: PerformanceSource) -> Catalog:
        """`spec`'s catalog; `source` is the memo's owner (asked on a miss)."""
        key = _catalog_key(spec)
        hit = self._catalogs.get(key)
        if hit is None:
            if len(self._catalogs) >= self._limit:
                self._catalogs.clear()
            hit = self._catalogs[key] = build_catalog(spec, source)
        return hit


def catalog_of(spec: GreenModelSpec, source: PerformanceSource) -> Catalog:
    """`spec`'s catalog from `source`: remembered when the source keeps a CatalogMemo as `catalogs`, else
    built afresh (a source without one is asked on every call)."""
    memo = getattr(source, "catalogs", None)
    return memo.get(spec, source) if isinstance(memo, CatalogMemo) else build_catalog(spec, source)


def catalog(spec: GreenModelSpec, source: PerformanceSource) -> tuple[Runnable, Mapping[str, str]]:
    """Every (variant, setting) of `spec` the source can run, and why each other variant never runs
    (`catalog_of` without the curve facts)."""
    found = catalog_of(spec, source)
    return found.runnable, found.unusable
