"""The agent's Prometheus exporter (what it serves, not what it reads: the pods' vLLM metrics are read in
podmetrics.py): a lightweight per-GPU power exporter plus what the agent did.

Per GPU (labels uuid, node, pod, namespace, greenmodel): power W, energy J counter, requested / target /
enforced / default limit W, locked clock MHz, last error, and role. Served from the last cycle's report by
a collector, so a scrape never touches the GPU.

Fast tier, per GPU with the same labels: seconds in each setting (`mode`), switches, failed reads of its pod's
metrics (`reason`), the mode in force, `greenllm_agent_waiting_requests_peak`: the most requests waiting
read on the pod since the previous scrape (reset by each collect, so a 15 s scrape sees a 1 s spike; with no
read since, the last value read), and `greenllm_agent_arrivals_peak`: the most requests that arrived at the
pod between two consecutive reads since the previous scrape (reset by each collect; with no estimate since,
no sample: an arrival count belongs to the interval it was measured over, and repeating it would report a
burst nobody saw). Unlike the waiting peak it does not shrink when more replicas absorb the same burst. The
labels `namespace` and `pod` are the serving pod's: the chart's ServiceMonitor / PodMonitor set
honorLabels: true so that Prometheus keeps them rather than the agent pod's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from greenllm.agent.reconcile import Action, CycleReport, FastGpu, GpuReport
from greenllm.core.fasttier import Mode
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
    fast: tuple[_FastSample, ...] = ()
    peaks: dict[tuple[str, str], _Peak] = field(default_factory=dict)  # (uuid, pod key) -> waiting
    arrivals: dict[tuple[str, str], _Peak] = field(default_factory=dict)  # (uuid, pod key) -> arrivals


@dataclass(frozen=True, slots=True)
class _FastSample:
    """A copy of one GPU's fast tier for the collector (the FastGpu itself changes under another lock)."""

    labels: tuple[str, ...]  # GPU_LABELS values
    greenmodel: str
    mode: Mode | None
    seconds: tuple[tuple[Mode, float], ...]
    switches: int
    failures: tuple[tuple[str, int], ...]


@dataclass
class _Peak:
    labels: tuple[str, ...]
    last: float
    peak: float | None = None  # largest since the last collect; None: no value since


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

    def fast_tier(
        self,
        gpus: list[FastGpu],
        waiting: Iterable[tuple[str, str, float]],
        arrivals: Iterable[tuple[str, str, float]] = (),
    ) -> None:
        """The fast-tier GPUs now, and the requests waiting just read and the requests that arrived since the
        previous read, per (uuid, pod key)."""
        samples = []
        for fast in gpus:
            keys = [p.key for p in fast.pods]
            labels = (
                fast.gpu.uuid,
                self.node,
                ",".join(sorted({k.split("/", 1)[1] for k in keys})),
                ",".join(sorted({k.split("/", 1)[0] for k in keys})),
                fast.owner.name,
            )
            samples.append(
                _FastSample(
                    labels=labels,
                    greenmodel=fast.owner.name,
                    mode=fast.applied,
                    seconds=tuple(sorted(fast.seconds.items())),
                    switches=fast.switches,
                    failures=tuple(sorted(fast.failures.items())),
                )
            )
        owners = {(f.gpu.uuid, p.key): f.owner.name for f in gpus for p in f.pods}
        with self._lock:
            s = self._state
            s.fast = tuple(samples)
            s.peaks = self._note_peaks(s.peaks, owners, waiting)
            s.arrivals = self._note_peaks(s.arrivals, owners, arrivals)

    def _note_peaks(
        self,
        peaks: dict[tuple[str, str], _Peak],
        owners: dict[tuple[str, str], str],
        values: Iterable[tuple[str, str, float]],
    ) -> dict[tuple[str, str], _Peak]:
        """`peaks` of the (uuid, pod key)s still on the fast tier, raised by `values`."""
        peaks = {k: v for k, v in peaks.items() if k in owners}
        for uuid, pod, value in values:
            if (uuid, pod) not in owners:
                continue
            namespace, name = pod.split("/", 1)
            peak = peaks.setdefault(
                (uuid, pod),
                _Peak(labels=(uuid, self.node, name, namespace, owners[uuid, pod]), last=value),
            )
            peak.last = value
            peak.peak = value if peak.peak is None else max(peak.peak, value)
        return peaks

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
            yield from self._fast_metrics(s)

    def _fast_metrics(self, s: _State) -> Iterator[Metric]:
        """Called with the lock held; resets the waiting and arrivals peaks."""
        seconds = CounterMetricFamily(
            "greenllm_agent_fast_tier_seconds",
            "Seconds a GPU spent at each fast-tier setting (mode efficient or burst)",
            labels=[*GPU_LABELS, "mode"],
        )
        switches = CounterMetricFamily(
            "greenllm_agent_fast_tier_switches",
            "Switches of a GPU between the efficient and the burst setting",
            labels=GPU_LABELS,
        )
        failures = CounterMetricFamily(
            "greenllm_agent_fast_tier_read_failures",
            "Reads of the pod's vLLM metrics that failed (the GPU then runs burst), by reason",
            labels=[*GPU_LABELS, "reason"],
        )
        mode = GaugeMetricFamily(
            "greenllm_agent_fast_tier_mode",
            "1 for the fast-tier setting a GPU runs at (mode efficient or burst)",
            labels=[*GPU_LABELS, "mode"],
        )
        for sample in s.fast:
            labels = list(sample.labels)
            for name, value in sample.seconds:
                seconds.add_metric([*labels, name.value], value)
            switches.add_metric(labels, float(sample.switches))
            for reason, count in sample.failures:
                failures.add_metric([*labels, reason], float(count))
            for m in Mode:
                mode.add_metric([*labels, m.value], 1.0 if sample.mode is m else 0.0)
        peak = GaugeMetricFamily(
            "greenllm_agent_waiting_requests_peak",
            "Most requests waiting (vllm:num_requests_waiting) read on the pod since the previous scrape",
            labels=GPU_LABELS,
        )
        for entry in s.peaks.values():
            peak.add_metric(list(entry.labels), entry.last if entry.peak is None else entry.peak)
            entry.peak = None
        arrivals = GaugeMetricFamily(
            "greenllm_agent_arrivals_peak",
            "Most requests that arrived at the pod between two consecutive reads (about a second) since the "
            "last scrape",
            labels=GPU_LABELS,
        )
        for entry in s.arrivals.values():
            if entry.peak is not None:  # no estimate since the last scrape: no sample (not the last one)
                arrivals.add_metric(list(entry.labels), entry.peak)
            entry.peak = None
        yield from (seconds, switches, failures, mode, peak, arrivals)

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
