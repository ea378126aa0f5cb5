"""A performance source from a fixed table, for the planner and step tests and the planner benchmark
(hack/bench_planner.py)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, Power, Variant
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_catalog import CatalogMemo


class TableSource:
    """A PerformanceSource from a fixed table: (variant name, setting) -> ReplicaPerformance. Settings are
    offered in the order given; a missing entry means the pair cannot meet the TPOT SLO."""

    def __init__(
        self,
        settings: tuple[PowerSetting, ...],
        table: Mapping[tuple[str, PowerSetting], ReplicaPerformance],
    ):
        self.settings = settings
        # Read-only: the planner remembers what a source answered for a spec, in the source's own memo.
        self.table: Mapping[tuple[str, PowerSetting], ReplicaPerformance] = MappingProxyType(dict(table))
        self.catalogs = CatalogMemo()

    def power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        return self.settings

    def performance(
        self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
    ) -> ReplicaPerformance | None:
        return self.table.get((variant.name, setting))
