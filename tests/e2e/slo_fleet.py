"""A FakeFleet that also serves what the slow tier reads: vLLM's per-request latency histograms and the
node agent's per-GPU peak-queue gauge.

- `vllm:time_to_first_token_seconds` and `vllm:request_time_per_output_token_seconds`, with vLLM v0.11.1's
  bucket boundaries (`loop.promql.VLLM_*_BUCKETS_S`) and its `le` spelling (prometheus_client's),
  labels `model_name`, `engine`, `namespace`, `pod`;
- `greenllm_agent_waiting_requests_peak{namespace, pod, greenmodel, gpu, node}`, one series per GPU.

Each pod's traffic is a request rate and a latency mix: (seconds, share of requests) pairs. Every scrape
adds rate x elapsed x share to each bucket a latency falls in, so the counters only grow and a test may
change the mix at any time: the share within a bucket over a window is exact, whatever rate() extrapolates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from greenllm.loop.promql import TPOT_HISTOGRAM, TTFT_HISTOGRAM, VLLM_TPOT_BUCKETS_S, VLLM_TTFT_BUCKETS_S
from tests.prometheus_server import FakeFleet

Mix = tuple[tuple[float, float], ...]  # (latency s, share of requests); shares sum to 1


@dataclass
class SloSeries:
    """The latency histograms and agent gauge of one serving pod."""

    namespace: str
    pod: str
    requests_per_s: float = 0.0
    ttft: Mix = ((0.2, 1.0),)
    tpot: Mix = ((0.02, 1.0),)
    tpot_histogram: bool = True  # False: a vLLM without the per-request TPOT histogram
    peak_waiting: dict[str, float] | None = None  # GPU -> the agent's gauge; None = no agent on the node
    peak_arrivals: dict[str, float] | None = None  # GPU -> the agent's arrivals gauge; None = not exported
    greenmodel: str = "llama"
    # Cumulative histogram state, advanced by `advance`.
    ttft_buckets: list[float] = field(default_factory=lambda: [0.0] * len(VLLM_TTFT_BUCKETS_S))
    tpot_buckets: list[float] = field(default_factory=lambda: [0.0] * len(VLLM_TPOT_BUCKETS_S))
    ttft_sum: float = 0.0
    tpot_sum: float = 0.0
    requests: float = 0.0

    def advance(self, dt: float) -> None:
        new = self.requests_per_s * dt
        self.requests += new
        for buckets, edges, mix in (
            (self.ttft_buckets, VLLM_TTFT_BUCKETS_S, self.ttft),
            (self.tpot_buckets, VLLM_TPOT_BUCKETS_S, self.tpot),
        ):
            for i, edge in enumerate(edges):
                buckets[i] += new * sum(share for latency, share in mix if latency <= edge)
        self.ttft_sum += new * sum(latency * share for latency, share in self.ttft)
        self.tpot_sum += new * sum(latency * share for latency, share in self.tpot)


def _histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    edges: tuple[float, ...],
    counts: list[float],
    total: float,
    sum_s: float,
) -> None:
    """One series of a classic histogram, `le` spelled as prometheus_client's Histogram spells it."""
    buckets = [(floatToGoString(edge), count) for edge, count in zip(edges, counts, strict=True)]
    family.add_metric(labels, [*buckets, ("+Inf", total)], sum_s)


@dataclass(eq=False)
class SloFleet(FakeFleet):
    slo: dict[tuple[str, str], SloSeries] = field(default_factory=dict)  # by (namespace, pod)

    def set_slo(self, series: SloSeries) -> None:
        with self.lock:
            self.slo[series.namespace, series.pod] = series

    def update_slo(self, namespace: str, pod: str, **values: object) -> None:
        with self.lock:
            for key, value in values.items():
                setattr(self.slo[namespace, pod], key, value)

    def remove_slo(self, namespace: str, pod: str) -> None:
        with self.lock:
            self.slo.pop((namespace, pod), None)

    def advance(self) -> None:
        dt = time.monotonic() - self._last
        super().advance()
        for series in self.slo.values():
            series.advance(dt)

    def _families(self) -> Iterator[Metric]:
        yield from super()._families()
        vllm = ["model_name", "engine", "namespace", "pod"]
        ttft = HistogramMetricFamily(
            TTFT_HISTOGRAM, "Histogram of time to first token in seconds.", labels=vllm
        )
        tpot = HistogramMetricFamily(
            TPOT_HISTOGRAM, "Histogram of time_per_output_token_seconds per request.", labels=vllm
        )
        agent = ["namespace", "pod", "greenmodel", "gpu", "node"]
        peak = GaugeMetricFamily(
            "greenllm_agent_waiting_requests_peak",
            "Most requests waiting since the last scrape",
            labels=agent,
        )
        arrivals = GaugeMetricFamily(
            "greenllm_agent_arrivals_peak",
            "Most requests that arrived at the pod between two consecutive reads since the last scrape",
            labels=agent,
        )
        for s in self.slo.values():
            labels = ["model", "0", s.namespace, s.pod]
            _histogram(ttft, labels, VLLM_TTFT_BUCKETS_S, s.ttft_buckets, s.requests, s.ttft_sum)
            if s.tpot_histogram:
                _histogram(tpot, labels, VLLM_TPOT_BUCKETS_S, s.tpot_buckets, s.requests, s.tpot_sum)
            for gpu, value in (s.peak_waiting or {}).items():
                peak.add_metric([s.namespace, s.pod, s.greenmodel, gpu, "node-1"], value)
            for gpu, value in (s.peak_arrivals or {}).items():
                arrivals.add_metric([s.namespace, s.pod, s.greenmodel, gpu, "node-1"], value)
        yield from (ttft, tpot, peak, arrivals)
