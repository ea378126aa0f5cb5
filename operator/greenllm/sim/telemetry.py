"""What Prometheus would hold about the simulated fleet, and the answers it would give.

The fleet's exporters (vLLM, DCGM) keep counters and gauges that the simulation updates every step;
Prometheus scrapes them every `scrape_interval_s` and a query at time `now` sees only the samples scraped
at or before `now - lag_s`. Rates and increases use Prometheus' own extrapolation over the samples in
their range, so a decision sees demand averaged over a past window and as old as the last scrape: the
only view of the present greenllm and the HPA baseline ever get. Nothing here looks at the trace.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of every series, at `time` (seconds from the trace start)."""

    time: float
    prompt_tokens_total: float  # vllm:prompt_tokens_total (tokens served)
    generation_tokens_total: float  # vllm:generation_tokens_total
    energy_j_total: float  # DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, in J, summed over the fleet's GPUs
    busy_replica_s_total: float  # integral of GPU busy share over ready replicas (DCGM_FI_DEV_GPU_UTIL)
    ready_replica_s_total: float  # integral of the number of ready replicas
    power_w: float  # DCGM_FI_DEV_POWER_USAGE summed over the fleet's GPUs
    requests_waiting: float  # vllm:num_requests_waiting
    requests_running: float  # vllm:num_requests_running
    ready_replicas: int
    requests_total: float = 0.0  # vllm:request_success_total (requests completed)
    # vLLM's TTFT and per-request TPOT histograms, read as the operator reads them: the count within the SLO
    # (the bucket at the SLO) and the total count.
    ttft_ok_total: float = 0.0
    ttft_count_total: float = 0.0
    tpot_ok_total: float = 0.0
    tpot_count_total: float = 0.0
    # greenllm_agent_waiting_requests_peak summed over the pods: the most requests that waited at once on
    # each pod since the previous scrape (the fast tier's 1-s reads).
    waiting_peak: float = 0.0
    # greenllm_agent_arrivals_peak summed over the pods: the most requests that arrived at each pod between
    # two fast-tier reads since the previous scrape.
    arrivals_peak: float = 0.0


@dataclass(slots=True)
class _Counters:
    prompt: float = 0.0
    generation: float = 0.0
    energy_j: float = 0.0
    busy_s: float = 0.0
    ready_s: float = 0.0
    requests: float = 0.0
    ttft_ok: float = 0.0
    ttft_count: float = 0.0
    tpot_ok: float = 0.0
    tpot_count: float = 0.0
    waiting_peak: float = 0.0  # reset at every scrape
    arrivals_peak: float = 0.0  # reset at every scrape


@dataclass
class SimulatedPrometheus:
    """Exporter state plus the scraped time series; `view(now)` is the only way to read it back."""

    scrape_interval_s: float
    lag_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)
    _counters: _Counters = field(default_factory=_Counters)
    _next_scrape: float = 0.0
    # (time, seconds to first token, requests) for vllm:time_to_first_token_seconds
    _first_tokens: list[tuple[float, float, float]] = field(default_factory=list)
    _first_token_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.scrape_interval_s <= 0:
            raise ValueError("scrape interval must be > 0")
        if self.lag_s < 0:
            raise ValueError("metrics lag must be >= 0")

    def record_step(
        self,
        end: float,
        dt: float,
        *,
        prompt_served: float,
        output_served: float,
        energy_j: float,
        busy_replica_s: float,
        ready_replicas: int,
        power_w: float,
        requests_waiting: float,
        requests_running: float,
        first_tokens: list[tuple[float, float, float]],
        requests_completed: float = 0.0,
        latency: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        waiting_peak: float = 0.0,
        arrivals_peak: float = 0.0,
    ) -> None:
        """Advance the exporters by one step ending at `end`; scrape if a scrape falls due. `latency` is
        (TTFT within SLO, TTFT count, TPOT within SLO, TPOT count) of this step's requests."""
        c = self._counters
        c.requests += requests_completed
        c.ttft_ok += latency[0]
        c.ttft_count += latency[1]
        c.tpot_ok += latency[2]
        c.tpot_count += latency[3]
        c.waiting_peak = max(c.waiting_peak, waiting_peak)
        c.arrivals_peak = max(c.arrivals_peak, arrivals_peak)
        c.prompt += prompt_served
        c.generation += output_served
        c.energy_j += energy_j
        c.busy_s += busy_replica_s
        c.ready_s += ready_replicas * dt
        for event in first_tokens:
            self._first_tokens.append(event)
            self._first_token_times.append(event[0])
        if end + 1e-9 >= self._next_scrape:
            self.samples.append(
                Sample(
                    time=end,
                    prompt_tokens_total=c.prompt,
                    generation_tokens_total=c.generation,
                    energy_j_total=c.energy_j,
                    busy_replica_s_total=c.busy_s,
                    ready_replica_s_total=c.ready_s,
                    power_w=power_w,
                    requests_waiting=requests_waiting,
                    requests_running=requests_running,
                    ready_replicas=ready_replicas,
                    requests_total=c.requests,
                    ttft_ok_total=c.ttft_ok,
                    ttft_count_total=c.ttft_count,
                    tpot_ok_total=c.tpot_ok,
                    tpot_count_total=c.tpot_count,
                    waiting_peak=c.waiting_peak,
                    arrivals_peak=c.arrivals_peak,
                )
            )
            c.waiting_peak = 0.0
            c.arrivals_peak = 0.0
            self._times.append(end)
            while self._next_scrape <= end + 1e-9:
                self._next_scrape += self.scrape_interval_s

    def start(self, at: float, ready_replicas: int, power_w: float) -> None:
        """The scrape at the start of the simulation (counters at zero)."""
        self.samples.append(Sample(at, 0.0, 0.0, 0.0, 0.0, 0.0, power_w, 0.0, 0.0, ready_replicas))
        self._times.append(at)
        self._next_scrape = at + self.scrape_interval_s

    def view(self, now: float) -> PrometheusView:
        """Prometheus as a query at `now` sees it: samples scraped up to `now - lag_s` only."""
        visible_until = now - self.lag_s + 1e-9
        n = bisect.bisect_right(self._times, visible_until)
        m = bisect.bisect_right(self._first_token_times, visible_until)
        return PrometheusView(
            now, self.samples, self._times, n, self._first_tokens, self._first_token_times, m
        )


# Prometheus keeps answering an instant query with the last sample for this long (its lookback delta).
LOOKBACK_S = 300.0


class PrometheusView:
    """Answers computed from the visible samples only: the first `visible` scrapes and first-token events.

    It shares the telemetry's lists (no copies) but never reads past its bounds.
    """

    def __init__(
        self,
        now: float,
        samples: list[Sample],
        times: list[float],
        visible: int,
        first_tokens: list[tuple[float, float, float]],
        first_token_times: list[float],
        visible_first_tokens: int,
    ) -> None:
        self.now = now
        self._samples = samples
        self._times = times
        self._n = visible
        self._first_tokens = first_tokens
        self._first_token_times = first_token_times
        self._m = visible_first_tokens

    @property
    def samples(self) -> list[Sample]:
        """The visible scrapes (a copy)."""
        return self._samples[: self._n]

    @property
    def last_sample_time(self) -> float | None:
        return self._times[self._n - 1] if self._n else None

    def _in_range(self, range_s: float) -> list[Sample]:
        lo = bisect.bisect_left(self._times, self.now - range_s - 1e-9, 0, self._n)
        return self._samples[lo : self._n]

    def _latest(self) -> Sample | None:
        if not self._n or self.now - self._times[self._n - 1] > LOOKBACK_S:
            return None
        return self._samples[self._n - 1]

    def rate(self, counter: str, range_s: float) -> float | None:
        """`rate(counter[range])`, None without two samples in range (as Prometheus returns nothing)."""
        return self._extrapolated(counter, range_s, is_rate=True)

    def increase(self, counter: str, range_s: float) -> float | None:
        return self._extrapolated(counter, range_s, is_rate=False)

    def _extrapolated(self, counter: str, range_s: float, *, is_rate: bool) -> float | None:
        # Prometheus' extrapolatedRate (promql/functions.go), for a counter without resets.
        points = [(s.time, float(getattr(s, counter))) for s in self._in_range(range_s)]
        if len(points) < 2:
            return None
        (t0, v0), (t1, v1) = points[0], points[-1]
        result = v1 - v0
        sampled = t1 - t0
        if sampled <= 0:
            return None
        average = sampled / (len(points) - 1)
        threshold = average * 1.1
        to_start = t0 - (self.now - range_s)
        to_end = self.now - t1
        if to_start >= threshold:
            to_start = average / 2
        if result > 0 and v0 >= 0:
            to_zero = sampled * (v0 / result)
            to_start = min(to_start, to_zero)
        if to_end >= threshold:
            to_end = average / 2
        factor = (sampled + to_start + to_end) / sampled
        if is_rate:
            factor /= range_s
        return result * factor

    def gauge(self, name: str) -> float | None:
        latest = self._latest()
        return None if latest is None else float(getattr(latest, name))

    def max_over_time(self, name: str, range_s: float) -> float | None:
        """`max_over_time(gauge[range])`: None without a sample in range."""
        values = [float(getattr(s, name)) for s in self._in_range(range_s)]
        return max(values) if values else None

    def attainment(self, range_s: float) -> float | None:
        """Share of requests within both SLOs over the range, as the operator computes it from vLLM's
        histograms: 1 - TTFT misses - TPOT misses (a union bound), None without requests in range."""
        ttft_ok = self.increase("ttft_ok_total", range_s)
        ttft_n = self.increase("ttft_count_total", range_s)
        if ttft_ok is None or ttft_n is None or ttft_n <= 0:
            return None
        miss = 1.0 - ttft_ok / ttft_n
        tpot_ok = self.increase("tpot_ok_total", range_s)
        tpot_n = self.increase("tpot_count_total", range_s)
        if tpot_ok is not None and tpot_n is not None and tpot_n > 0:
            miss += 1.0 - tpot_ok / tpot_n
        return min(max(1.0 - miss, 0.0), 1.0)

    def gauge_age_s(self) -> float | None:
        latest = self._latest()
        return None if latest is None else self.now - latest.time

    def ratio_of_rates(self, numerator: str, denominator: str, range_s: float) -> float | None:
        top = self.increase(numerator, range_s)
        bottom = self.increase(denominator, range_s)
        if top is None or bottom is None or bottom <= 0:
            return None
        return top / bottom

    def ttft_quantile_s(self, q: float, range_s: float) -> float | None:
        """Weighted quantile of time to first token over requests started in the range and scraped (the
        histogram's buckets only blur this; the value is what `histogram_quantile` estimates)."""
        upto = self.last_sample_time
        if upto is None:
            return None
        lo = bisect.bisect_right(self._first_token_times, self.now - range_s, 0, self._m)
        hi = bisect.bisect_right(self._first_token_times, upto + 1e-9, 0, self._m)
        events = sorted((ttft, w) for _, ttft, w in self._first_tokens[lo:hi])
        if not events:
            return None
        total = sum(w for _, w in events)
        seen = 0.0
        for ttft, w in events:
            seen += w
            if seen >= q * total - 1e-12:
                return ttft
        return events[-1][0]
