"""The agent's Prometheus metrics: a lightweight per-GPU power exporter plus what the agent did.

Per GPU (labels uuid, node, pod, namespace, greenmodel): power W, energy J counter, requested / target /
enforced / default limit W, locked clock MHz, last error, and role. Served from the last cycle's report by
a collector, so a scrape never touches the GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from greenllm.agent.reconcile import Action, CycleReport, GpuReport
from greenllm.core.power import mj_to_joules, mw_to_watts

GPU_LABELS = ["uuid", "node", "pod", "namespace", "greenmodel"]


@dataclass
class _State:
    report: CycleReport | None = None
    backend_up: bool = False
    backend_error: str = ""
    cycles: dict[str, int] = field(default_factory=dict)  # result -> count
    changes: dict[str, int] = field(default_factory=dict)  # uuid -> applied/restored count
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (uuid, kind) -> count
    last_cycle_at: float | None = None


class AgentMetrics(Collector):
    def __init__(self, node_name: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node_name
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._state = _State()
        self.registry.register(self)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start the HTTP exporter in a daemon thread; returns the bound port (0 picks a free one)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)

    # -------------------------------------------------------------------------------- updates

    def backend_status(self, up: bool, error: str = "") -> None:
        with self._lock:
            self._state.backend_up = up
            self._state.backend_error = error

    def cycle(self, report: CycleReport | None, now: float, result: str) -> None:
        with self._lock:
            s = self._state
            s.cycles[result] = s.cycles.get(result, 0) + 1
            s.last_cycle_at = now
            if report is None:
                return
            s.report = report
            for gpu in report.gpus:
                if gpu.action in (Action.APPLIED, Action.CLAMPED, Action.RESTORED):
                    s.changes[gpu.uuid] = s.changes.get(gpu.uuid, 0) + 1
                if gpu.error:
                    key = (gpu.uuid, gpu.error)
                    s.errors[key] = s.errors.get(key, 0) + 1

    def gpus_changed(self, reports: list[GpuReport]) -> None:
        """Count changes made outside a cycle (start-up and shutdown restores)."""
        with self._lock:
            for gpu in reports:
                if gpu.action in (Action.APPLIED, Action.CLAMPED, Action.RESTORED):
                    self._state.changes[gpu.uuid] = self._state.changes.get(gpu.uuid, 0) + 1

    # -------------------------------------------------------------------------------- collect

    def _labels(self, gpu: GpuReport) -> list[str]:
        namespaces = sorted({p.split("/", 1)[0] for p in gpu.pods})
        pods = sorted({p.split("/", 1)[1] for p in gpu.pods})
        if gpu.greenmodel is not None:
            greenmodel = gpu.greenmodel.name
        else:
            greenmodel = ",".join(sorted({w.split("/", 1)[1] for w in gpu.wanted_by}))
        return [gpu.uuid, self.node, ",".join(pods), ",".join(namespaces), greenmodel]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            s = self._state
            report = s.report
            up = GaugeMetricFamily(
                "greenllm_agent_gpu_backend_up",
                "1 when the GPU backend (NVML) works; 0 with the error in the label",
                labels=["node", "error"],
            )
            up.add_metric([self.node, s.backend_error], 1.0 if s.backend_up else 0.0)
            yield up
            cycles = CounterMetricFamily(
                "greenllm_agent_reconcile", "Reconcile cycles by result", labels=["node", "result"]
            )
            for result, count in sorted(s.cycles.items()):
                cycles.add_metric([self.node, result], float(count))
            yield cycles
            if s.last_cycle_at is not None:
                last = GaugeMetricFamily(
                    "greenllm_agent_last_reconcile_timestamp_seconds",
                    "End of the last cycle",
                    labels=["node"],
                )
                last.add_metric([self.node], s.last_cycle_at)
                yield last
            changes = CounterMetricFamily(
                "greenllm_agent_gpu_setting_changes",
                "Power settings applied or restored",
                labels=["uuid", "node"],
            )
            for uuid, count in sorted(s.changes.items()):
                changes.add_metric([uuid, self.node], float(count))
            yield changes
            errors = CounterMetricFamily(
                "greenllm_agent_gpu_errors", "GPU errors by kind", labels=["uuid", "node", "error"]
            )
            for (uuid, kind), count in sorted(s.errors.items()):
                errors.add_metric([uuid, self.node, kind], float(count))
            yield errors
            if report is not None:
                yield from self._gpu_metrics(report)

    def _gpu_metrics(self, report: CycleReport) -> Iterator[Metric]:
        def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=GPU_LABELS + (extra or []))

        power = gauge("greenllm_agent_gpu_power_watts", "GPU power draw (NVML), W")
        energy = CounterMetricFamily(
            "greenllm_agent_gpu_energy_joules",
            "GPU energy since the driver loaded (NVML), J",
            labels=GPU_LABELS,
        )
        requested = gauge(
            "greenllm_agent_gpu_power_limit_requested_watts", "Limit the GreenModel asks for, W"
        )
        target = gauge(
            "greenllm_agent_gpu_power_limit_target_watts", "Limit the agent set (after clamping), W"
        )
        enforced = gauge("greenllm_agent_gpu_power_limit_enforced_watts", "Limit the driver enforces, W")
        default = gauge("greenllm_agent_gpu_power_limit_default_watts", "The device's default limit, W")
        clock = gauge("greenllm_agent_gpu_locked_clock_mhz", "Locked graphics clock set by the agent, MHz")
        role = gauge("greenllm_agent_gpu_role", "Whose the GPU is (owned, shared, free)", ["role", "action"])
        error = gauge(
            "greenllm_agent_gpu_last_error", "1 when the last cycle had an error, by kind", ["error"]
        )
        for gpu in report.gpus:
            labels = self._labels(gpu)
            if gpu.power_mw is not None:
                power.add_metric(labels, mw_to_watts(gpu.power_mw))
            if gpu.energy_mj is not None:
                energy.add_metric(labels, mj_to_joules(gpu.energy_mj))
            if gpu.requested_limit_w is not None:
                requested.add_metric(labels, gpu.requested_limit_w)
            if gpu.target_limit_mw is not None:
                target.add_metric(labels, mw_to_watts(gpu.target_limit_mw))
            if gpu.enforced_limit_mw is not None:
                enforced.add_metric(labels, mw_to_watts(gpu.enforced_limit_mw))
            if gpu.default_limit_mw is not None:
                default.add_metric(labels, mw_to_watts(gpu.default_limit_mw))
            if gpu.locked_clock_mhz is not None:
                clock.add_metric(labels, float(gpu.locked_clock_mhz))
            role.add_metric([*labels, gpu.role.value if gpu.role else "unknown", gpu.action.value], 1.0)
            if gpu.error is not None:
                error.add_metric([*labels, gpu.error], 1.0)
        yield from (power, energy, requested, target, enforced, default, clock, role, error)
