"""The operator's own Prometheus metrics, served on its metrics port."""

from __future__ import annotations

import contextlib
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LABELS = ("namespace", "greenmodel")


class Telemetry:
    """One registry per operator process (tests run several in one interpreter)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "greenllm_decisions",
            "Decisions that changed variant, replicas or power setting",
            LABELS,
            registry=r,
        )
        self.replicas = Gauge("greenllm_replicas", "Replicas chosen", LABELS, registry=r)
        self.variant = Gauge(
            "greenllm_variant_info",
            "Variant chosen (1 for the current one)",
            (*LABELS, "variant"),
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
        self.loop_errors = Counter("greenllm_loop_errors", "Ticks that failed", (*LABELS, "kind"), registry=r)
        self._variants: dict[tuple[str, str], str] = {}
        self._server: WSGIServer | None = None

    def set_variant(self, namespace: str, name: str, variant: str) -> None:
        previous = self._variants.get((namespace, name))
        if previous is not None and previous != variant:
            self.variant.remove(namespace, name, previous)
        self._variants[(namespace, name)] = variant
        self.variant.labels(namespace, name, variant).set(1)

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
        variant = self._variants.pop((namespace, name), None)
        if variant is not None:
            self.variant.remove(namespace, name, variant)

    def serve(self, port: int) -> None:
        if port > 0:
            self._server, _ = start_http_server(port, registry=self.registry)

    def stop(self) -> None:
        """Free the port, so an operator restarted in the same process can serve again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
