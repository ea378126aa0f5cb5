"""The operator's own Prometheus metrics, served on its metrics port."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from greenllm.controller import heap
from greenllm.core.decision import ReasonKind

LABELS = ("namespace", "greenmodel")


class OperatorMetrics:
    """One registry per operator process (tests run several in one interpreter)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(heap.CollectionTimeCollector())
        # `reason` is always a ReasonKind (a closed set), never the free-text reason: bounded cardinality.
        self.decisions = Counter(
            "greenllm_decisions",
            "Decisions that changed variant, replicas or power setting, by the kind of their reason",
            (*LABELS, "reason"),
            registry=r,
        )
        self.replicas = Gauge("greenllm_replicas", "Replicas chosen", LABELS, registry=r)
        self.variant = Gauge(
            "greenllm_variant_info",
            "Variant chosen (1 for the current one)",
            (*LABELS, "variant"),
            registry=r,
        )
        self.decision_reason = Gauge(
            "greenllm_decision_reason_info",
            "Kind of the reason for the decision in force (1 for the current one)",
            (*LABELS, "reason"),
            registry=r,
        )
        self.power_limit = Gauge(
            "greenllm_power_limit_watts", "Per-GPU power limit chosen (0 = GPU default)", LABELS, registry=r
        )
        self.expected_power = Gauge(
            "greenllm_expected_power_watts", "Planner's expected power", LABELS, registry=r
        )
        self.observed_power = Gauge(
            "greenllm_observed_power_watts", "Power observed in Prometheus", LABELS, registry=r
        )
        self.energy = Gauge(
            "greenllm_period_energy_kwh", "Energy used in the current budget period", LABELS, registry=r
        )
        self.carbon = Gauge(
            "greenllm_period_carbon_grams", "Carbon emitted in the current budget period", LABELS, registry=r
        )
        self.energy_remaining = Gauge(
            "greenllm_energy_budget_remaining_kwh", "Energy budget left in the period", LABELS, registry=r
        )
        self.loop_duration = Histogram(
            "greenllm_loop_duration_seconds",
            "Time of one autoscaling tick",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        # How late ticks start after they are due, and how many run: a period above the interval shows here
        # first (as controller-runtime's workqueue queue duration and depth).
        self.loop_lag = Histogram(
            "greenllm_loop_lag_seconds",
            "How late an autoscaling tick started after it was due",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.ticks_in_flight = Gauge(
            "greenllm_loop_ticks_in_flight",
            "Autoscaling ticks running now (--io-threads of them at most hold a slot)",
            registry=r,
        )
        self.loop_errors = Counter("greenllm_loop_errors", "Ticks that failed", (*LABELS, "kind"), registry=r)
        self.kube_throttled = Counter(
            "greenllm_kube_requests_throttled",
            "Operator API requests that waited for the client-side rate limit (--kube-api-qps / -burst)",
            registry=r,
        )
        self.status_writes = Counter(
            "greenllm_status_writes",
            "Status writes of the autoscaling loop, by why: a change readers see, or accounting only",
            ("why",),
            registry=r,
        )
        # EnergyBudgets (controller/budgets.py), per namespace and budget; allocations per member too.
        budget_labels = ("namespace", "energybudget")
        self.budget_allowance = Gauge(
            "greenllm_energybudget_allowance_watts",
            "An EnergyBudget's powerW: the peak power its members may draw at once",
            budget_labels,
            registry=r,
        )
        self.budget_allocated = Gauge(
            "greenllm_energybudget_allocated_watts",
            "An EnergyBudget's share of its powerW for one of its GreenModels now (its peak cap)",
            (*budget_labels, "greenmodel"),
            registry=r,
        )
        self.budget_energy = Gauge(
            "greenllm_energybudget_period_energy_kwh",
            "Energy an EnergyBudget's members used in its current period",
            budget_labels,
            registry=r,
        )
        self.budget_carbon = Gauge(
            "greenllm_energybudget_period_carbon_grams",
            "Carbon an EnergyBudget's members emitted in its current period",
            budget_labels,
            registry=r,
        )
        self._budget_members: dict[tuple[str, str], set[str]] = {}
        self._variants: dict[tuple[str, str], str] = {}
        self._reasons: dict[tuple[str, str], str] = {}
        self._server: WSGIServer | None = None

    def set_variant(self, namespace: str, name: str, variant: str) -> None:
        _set_info(self.variant, self._variants, namespace, name, variant)

    def set_reason(self, namespace: str, name: str, kind: ReasonKind) -> None:
        """The kind of the decision in force: its series at 1, the previous kind's series removed."""
        _set_info(self.decision_reason, self._reasons, namespace, name, ReasonKind(kind).value)

    def count_decision(self, namespace: str, name: str, kind: ReasonKind) -> None:
        """One more decision that changed variant, replicas or power setting."""
        self.decisions.labels(namespace, name, ReasonKind(kind).value).inc()

    def forget(self, namespace: str, name: str) -> None:
        """Drop the series of a deleted GreenModel."""
        for gauge in (
            self.replicas,
            self.power_limit,
            self.expected_power,
            self.observed_power,
            self.energy,
            self.carbon,
            self.energy_remaining,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for gauge, memory in ((self.variant, self._variants), (self.decision_reason, self._reasons)):
            value = memory.pop((namespace, name), None)
            if value is not None:
                gauge.remove(namespace, name, value)

    def set_budget(
        self,
        namespace: str,
        budget: str,
        allowance_w: float | None,
        allocated_w: Mapping[str, float],
        energy_kwh: float,
        carbon_grams: float,
    ) -> None:
        """One EnergyBudget's tick: no allowance series without a limit, none for a member no longer
        allocated (infinite allocations, i.e. no limit, are not exported either)."""
        key = (namespace, budget)
        if allowance_w is None or not math.isfinite(allowance_w):
            with contextlib.suppress(KeyError):
                self.budget_allowance.remove(namespace, budget)
        else:
            self.budget_allowance.labels(namespace, budget).set(allowance_w)
        finite = {m: w for m, w in allocated_w.items() if math.isfinite(w)}
        for member in self._budget_members.get(key, set()) - set(finite):
            with contextlib.suppress(KeyError):
                self.budget_allocated.remove(namespace, budget, member)
        for member, watts in finite.items():
            self.budget_allocated.labels(namespace, budget, member).set(watts)
        self._budget_members[key] = set(finite)
        self.budget_energy.labels(namespace, budget).set(energy_kwh)
        self.budget_carbon.labels(namespace, budget).set(carbon_grams)

    def forget_budget(self, namespace: str, budget: str) -> None:
        """Drop the series of a deleted EnergyBudget."""
        for gauge in (self.budget_allowance, self.budget_energy, self.budget_carbon):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, budget)
        for member in self._budget_members.pop((namespace, budget), set()):
            with contextlib.suppress(KeyError):
                self.budget_allocated.remove(namespace, budget, member)

    def serve(self, port: int) -> None:
        if port > 0:
            self._server, _ = start_http_server(port, registry=self.registry)

    def stop(self) -> None:
        """Free the port, so an operator restarted in the same process can serve again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _set_info(
    gauge: Gauge, memory: dict[tuple[str, str], str], namespace: str, name: str, value: str
) -> None:
    """An info-style gauge: 1 on the series of `value`, the GreenModel's previous value's series removed."""
    previous = memory.get((namespace, name))
    if previous is not None and previous != value:
        gauge.remove(namespace, name, previous)
    memory[(namespace, name)] = value
    gauge.labels(namespace, name, value).set(1)
