"""A real Prometheus server (Debian's `prometheus`) on loopback, scraping a test exporter we control.

The exporter publishes DCGM, Kepler and vLLM series with the label sets those exporters use; a test
changes the values and Prometheus scrapes them every second, so the operator reads them exactly as
it would in a cluster.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PodSeries:
    """What one serving pod (one GPU) shows. Rates are per second; counters integrate them."""

    namespace: str
    pod: str
    gpu_uuid: str
    power_w: float = 300.0
    prompt_tokens_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    tpot_s: float = 0.02
    waiting: float = 0.0
    running: float = 0.0
    # Counters, advanced by `FakeFleet.advance` from the rates above.
    energy_mj: float = 1.0e9  # DCGM counts since driver load: a large arbitrary start
    kepler_joules: float = 0.0
    prompt_tokens: float = 0.0
    output_tokens: float = 0.0
    requests: float = 0.0
    tokens_per_request: float = 1500.0  # prompt tokens of one request: sets the completed-request rate
    tpot_count: float = 0.0


@dataclass(eq=False)  # registries key collectors by identity
class FakeFleet(Collector):
    """The series of every pod, exposed in DCGM / Kepler / vLLM shapes."""

    pods: dict[str, PodSeries] = field(default_factory=dict)
    extra_gauges: dict[str, float] = field(default_factory=dict)  # e.g. a carbon-intensity exporter
    extra_gauge_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # by gauge name
    lock: threading.Lock = field(default_factory=threading.Lock)
    _last: float = field(default_factory=time.monotonic)

    def set_pod(self, series: PodSeries) -> None:
        with self.lock:
            self.pods[series.pod] = series

    def update(self, pod: str, **values: float) -> None:
        with self.lock:
            for key, value in values.items():
                setattr(self.pods[pod], key, value)

    def remove_pod(self, pod: str) -> None:
        with self.lock:
            self.pods.pop(pod, None)

    def advance(self) -> None:
        """Integrate rates into counters up to now (called on every scrape)."""
        now = time.monotonic()
        dt, self._last = now - self._last, now
        for p in self.pods.values():
            p.energy_mj += p.power_w * dt * 1000
            p.kepler_joules += p.power_w * dt
            p.prompt_tokens += p.prompt_tokens_per_s * dt
            p.output_tokens += p.output_tokens_per_s * dt
            p.requests += p.prompt_tokens_per_s / p.tokens_per_request * dt
            p.tpot_count += p.output_tokens_per_s * dt

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            self.advance()
            yield from self._families()

    def _families(self) -> Iterator[Metric]:
        dcgm_labels = ["gpu", "UUID", "Hostname", "modelName", "pod", "namespace", "container"]
        power = GaugeMetricFamily("DCGM_FI_DEV_POWER_USAGE", "Power draw (W)", labels=dcgm_labels)
        # DCGM exposes this counter without a _total suffix; a gauge keeps the name as DCGM spells it.
        energy = GaugeMetricFamily("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Energy (mJ)", labels=dcgm_labels)
        kepler_w = GaugeMetricFamily(
            "kepler_pod_gpu_watts", "Pod GPU W", labels=["pod_name", "pod_namespace", "node_name"]
        )
        kepler_j = CounterMetricFamily(
            "kepler_pod_gpu_joules", "Pod GPU J", labels=["pod_name", "pod_namespace", "node_name"]
        )
        vllm = ["model_name", "namespace", "pod"]
        prompt = CounterMetricFamily("vllm:prompt_tokens", "Prompt tokens", labels=vllm)
        output = CounterMetricFamily("vllm:generation_tokens", "Generation tokens", labels=vllm)
        success = CounterMetricFamily("vllm:request_success", "Finished requests", labels=vllm)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Waiting", labels=vllm)
        running = GaugeMetricFamily("vllm:num_requests_running", "Running", labels=vllm)
        tpot = HistogramMetricFamily("vllm:time_per_output_token_seconds", "TPOT", labels=vllm)
        for i, p in enumerate(self.pods.values()):
            d = [str(i), p.gpu_uuid, "node-1", "NVIDIA H100 80GB HBM3", p.pod, p.namespace, "server"]
            power.add_metric(d, p.power_w)
            energy.add_metric(d, p.energy_mj)
            k = [p.pod, p.namespace, "node-1"]
            kepler_w.add_metric(k, p.power_w)
            kepler_j.add_metric(k, p.kepler_joules)
            v = ["model", p.namespace, p.pod]
            prompt.add_metric(v, p.prompt_tokens)
            output.add_metric(v, p.output_tokens)
            success.add_metric(v, p.requests)
            waiting.add_metric(v, p.waiting)
            running.add_metric(v, p.running)
            buckets = [(str(b), p.tpot_count if p.tpot_s <= b else 0.0) for b in TPOT_BUCKETS]
            tpot.add_metric(v, [*buckets, ("+Inf", p.tpot_count)], p.tpot_count * p.tpot_s)
        yield from (power, energy, kepler_w, kepler_j, prompt, output, success, waiting, running, tpot)
        for name, value in self.extra_gauges.items():
            labels = self.extra_gauge_labels.get(name) or {}
            gauge = GaugeMetricFamily(name, name, labels=list(labels))
            gauge.add_metric(list(labels.values()), value)
            yield gauge


def _text_format_handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    """Always the classic text format: prometheus_client's OpenMetrics output escapes the ':' in
    vLLM's names for scrapers that do not ask for UTF-8 names, which real vLLM pods do not do."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class Exporter:
    """Serves a FakeFleet on loopback."""

    def __init__(self, fleet: FakeFleet) -> None:
        registry = CollectorRegistry()
        registry.register(fleet)
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _text_format_handler(registry))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class PrometheusServer:
    """`prometheus` scraping the exporter every second, with its own config and data directory."""

    def __init__(self, target_port: int, port: int | None = None, scrape_interval_s: float = 1.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="greenllm-prom-"))
        every = f"{scrape_interval_s:g}s"
        (self._dir / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
            "scrape_configs:\n  - job_name: fleet\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self._dir / "prometheus.log").open("ab"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"prometheus did not start: {(self._dir / 'prometheus.log').read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("prometheus is not running")
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=20)
            self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def scraped(fleet: FakeFleet) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping `fleet` through an Exporter, both stopped on exit."""
    exporter = Exporter(fleet)
    prometheus = PrometheusServer(exporter.port)
    prometheus.start()
    try:
        yield prometheus
    finally:
        prometheus.close()
        exporter.close()


def instant_queries_answered(url: str) -> float:
    """Instant queries the Prometheus at `url` has answered so far (its prometheus_http_requests_total)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "prometheus_http_requests"
        for s in family.samples
        if s.name.endswith("_total") and s.labels.get("handler") == "/api/v1/query"
    )


def serve_fleet_forever() -> None:
    """`python -m tests.prometheus_server`: serve a FakeFleet of the pods read from stdin (a JSON list of
    PodSeries fields) in this process until killed; print the port once serving. For benchmarks, where
    rendering thousands of pods on every scrape must not share a GIL with the API emulator."""
    import json
    import sys

    fleet = FakeFleet()
    for pod in json.load(sys.stdin):
        fleet.set_pod(PodSeries(**pod))
    exporter = Exporter(fleet)
    print(exporter.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    serve_fleet_forever()
