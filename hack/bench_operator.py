"""Benchmark of the operator at scale: N GreenModels against the API emulator and a real Prometheus.

    PYTHONPATH=operator python hack/bench_operator.py --n 100 500 1000 [--interval 15s] [--ticks 3]

For each N, in this process: the Kubernetes API emulator (tests/kube_emulator/, with the GreenModel CRD
registered); in a process of its own, a FakeFleet exporter publishing one serving pod's DCGM / Kepler / vLLM
series per GreenModel; and Debian's `prometheus` scraping it (tests/prometheus_server.py). The operator
runs as a separate process (`python -m greenllm.cli run`, KUBECONFIG pointing at the emulator) so that its
peak RSS (VmHWM from /proc/PID/status) and CPU time are its own.

Measured per N:
- convergence: the time from the first create until every GreenModel has its Deployment and a
  status.variant, and each GreenModel's own latency from its create (p50 / p99 / max);
- steady state: after convergence and `--warmup-ticks` ticks per GreenModel (the first decisions on
  measured demand, each a Deployment read, an Event and a status write, are a transient, not the steady
  state), wait for `--ticks` more ticks per GreenModel, then
  read the operator's `greenllm_loop_duration_seconds` histogram (the difference over the window: mean and
  p50 / p99 per tick per GreenModel, interpolated within buckets like PromQL's histogram_quantile; a
  quantile beyond the top finite bucket, 10 s, reads as 10 s), the operator's CPU time per tick, the
  achieved tick period (interval + loop time + any lag), the Prometheus queries it made per tick, and
  how long one GreenModel's queries take when run from here meanwhile (`probe_queries_ms`);
- API requests per second the operator sent (from the emulator's `api_calls`), while converging and in
  the steady state (mean and busiest second), with the busiest (verb, resource) pairs;
- peak RSS of the operator process (VmHWM) and its RSS at convergence and at the end.

All processes share this machine's cores: wall-clock numbers include contention with the emulator,
the exporter, Prometheus and whatever else runs (the result records their CPU use and the load average);
the CPU-time numbers are the operator's alone. `--workdir DIR` keeps each run's operator log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "operator", ROOT):  # greenllm, and tests.* for the emulator and the fake fleet
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import aiohttp  # noqa: E402
import aiohttp.web  # noqa: E402
import attrs  # noqa: E402
import kmock  # noqa: E402
import yaml  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.kube_emulator import INITIAL_NAMESPACES, ApiCall, KubeEmulator  # noqa: E402
from tests.prometheus_server import (  # noqa: E402
    PodSeries,
    PrometheusServer,
    free_port,
    instant_queries_answered,
)

from greenllm.api.crd import custom_resource_definition  # noqa: E402
from greenllm.api.durations import parse_duration  # noqa: E402
from greenllm.api.v1alpha1 import GreenModelSpec  # noqa: E402
from greenllm.controller.prometheus import prometheus_query  # noqa: E402
from greenllm.core.render import workload_name  # noqa: E402
from greenllm.loop import promql  # noqa: E402

EXAMPLE = ROOT / "examples" / "qwen3-8b-minimal.yaml"
GM = "greenllm.io/v1alpha1/greenmodels"
DEPLOY = "apps/v1/deployments"
BENCH_USER_AGENT = "greenllm-bench"
LOOP_HISTOGRAM = "greenllm_loop_duration_seconds"
LAG_HISTOGRAM = "greenllm_loop_lag_seconds"
IN_FLIGHT = "greenllm_loop_ticks_in_flight"
STATUS_WRITES = "greenllm_status_writes_total"
THROTTLED = "greenllm_kube_requests_throttled_total"
# Low, steady demand (one replica's worth): the steady state measures the loop, not scaling churn.
DEMAND = {"prompt_tokens_per_s": 2000.0, "output_tokens_per_s": 50.0, "tpot_s": 0.02}


# ---------------------------------------------------------------------------------------------- objects


def green_model(name: str, namespace: str, interval: str, example: Mapping[str, Any]) -> dict[str, Any]:
    """The shipped minimal example under another name, namespace and loop interval."""
    body = copy.deepcopy(dict(example))
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"].setdefault("scaling", {})["interval"] = interval
    return body


def layout(n: int, per_namespace: int) -> list[tuple[str, str]]:
    """(namespace, name) of N GreenModels, `per_namespace` to a namespace. Names are unique cluster-wide
    because the fake fleet keys pods by name."""
    return [(f"bench-{i // per_namespace:03d}", f"gm-{i:05d}") for i in range(n)]


def pod_name(deployment: str) -> str:
    """A pod name the operator's PromQL selects for `deployment` (<deployment>-<rs hash>-<suffix>)."""
    name = f"{deployment}-5d8f7c9b6-abcde"
    if re.fullmatch(promql.pod_regex(deployment), name) is None:
        raise ValueError(f"{name} is not selected by the operator's pod regex {promql.pod_regex(deployment)}")
    return name


# ---------------------------------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS (kB) and Threads of a live process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields after the command: state is field 3 of proc(5), utime 14 and stime 15.
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def source_commit() -> str:
    """The commit the operator ran from, with "+dirty" when operator/ has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "operator")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# ---------------------------------------------------------------------------------------------- histograms


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram's cumulative buckets (upper bound -> count), sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        before = dict(earlier.buckets)
        return Histogram(
            tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets),
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float:
        """PromQL's histogram_quantile: linear within the bucket holding rank q*count. A rank in the +Inf
        bucket answers the largest finite bound (a lower bound of the truth). NaN when empty."""
        if self.count <= 0:
            return float("nan")
        rank = q * self.count
        lower, below = 0.0, 0.0
        finite = [b for b in self.buckets if b[0] != float("inf")]
        for le, cumulative in finite:
            if cumulative >= rank:
                inside = cumulative - below
                if inside <= 0:
                    return le
                return lower + (le - lower) * (rank - below) / inside
            lower, below = le, cumulative
        return finite[-1][0] if finite else float("nan")

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count > 0 else float("nan")

    def summary_ms(self) -> tuple[float, float, float]:
        """Mean, p50 and p99, in milliseconds."""
        return self.mean * 1000, self.quantile(0.5) * 1000, self.quantile(0.99) * 1000


def parse_metrics(text: str) -> tuple[dict[str, Histogram], dict[str, float]]:
    """Unlabelled histograms by family name, and counter/gauge sample values summed by sample name."""
    histograms: dict[str, Histogram] = {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            buckets: dict[float, float] = {}
            total = count = 0.0
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
                elif s.name.endswith("_sum"):
                    total += s.value
                elif s.name.endswith("_count"):
                    count += s.value
            histograms[family.name] = Histogram(tuple(sorted(buckets.items())), total, count)
        else:
            for s in family.samples:
                totals[s.name] = totals.get(s.name, 0.0) + s.value
                if s.name == STATUS_WRITES:  # also by why: "change" or "accounting"
                    key = f"{s.name}:{s.labels.get('why', '')}"
                    totals[key] = totals.get(key, 0.0) + s.value
    return histograms, totals


def _http_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text: str = response.read().decode()
        return text


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    n: int
    interval_s: float
    ticks: int
    namespaces: int
    warmup_ticks: int = 0
    converged: int = 0
    create_s: float = float("nan")  # first create to last create answered
    converge_s: float = float("nan")  # first create until all converged (NaN if not within the timeout)
    deployments_s: float = float("nan")  # first create until every Deployment exists
    latency_p50_s: float = float("nan")  # per GreenModel: its create answered -> converged
    latency_p99_s: float = float("nan")
    latency_max_s: float = float("nan")
    ticks_observed: float = 0.0  # loop-duration observations in the steady window
    steady_s: float = float("nan")
    tick_period_s: float = float("nan")  # steady window * N / ticks observed
    loop_mean_ms: float = float("nan")
    loop_p50_ms: float = float("nan")
    loop_p99_ms: float = float("nan")
    loop_errors: float = 0.0
    # How late ticks started after they were due (the period's excess over the interval), and the ticks
    # running at each of the benchmark's reads of /metrics (mean, most) against the slots (--io-threads).
    lag_mean_ms: float = float("nan")
    lag_p50_ms: float = float("nan")
    lag_p99_ms: float = float("nan")
    in_flight_mean: float = float("nan")
    in_flight_max: float = float("nan")
    cpu_ms_per_tick: float = float("nan")  # operator CPU time in the steady window / ticks observed
    cpu_utilisation_steady: float = float("nan")  # operator CPU seconds per second in the steady window
    gc_ms_per_tick: float = float("nan")  # operator wall time in garbage collections / ticks (steady)
    status_writes_per_tick: dict[str, float] = field(default_factory=dict)  # by why: change, accounting
    cpu_converge_s: float = float("nan")  # operator CPU seconds from the first create to convergence
    # Operator requests that waited for its own client-side rate limit (--kube-api-qps / -burst) from its
    # start to convergence: at N = 5,000 the three requests of each new GreenModel at 200/s bound it.
    throttled_converge: float = float("nan")
    bench_cpu_utilisation_converge: float = float("nan")  # the emulator (this process), cores
    # Contention: the other processes' CPU in the steady window (cores), and the machine's load average.
    bench_cpu_utilisation_steady: float = float("nan")  # the emulator (this process)
    prometheus_cpu_utilisation_steady: float = float("nan")
    load_average_1m: float = float("nan")
    operator_threads: int = 0
    prometheus_queries_per_tick: float = float("nan")
    api_rps_converge: float = float("nan")
    api_rps_steady: float = float("nan")
    api_calls_per_tick: float = float("nan")
    api_top_converge: dict[str, int] = field(default_factory=dict)  # busiest "verb resource": calls
    api_top_steady: dict[str, int] = field(default_factory=dict)
    api_peak_rps_steady: float = float("nan")  # the busiest second of operator requests
    # One GreenModel's PromQL, run sequentially as a tick runs it, timed from here during the steady window:
    # how much of a tick is Prometheus round-trips under this load (median of the probes).
    probe_queries_ms: float = float("nan")
    peak_rss_mb: float = float("nan")
    rss_converged_mb: float = float("nan")
    rss_end_mb: float = float("nan")
    operator_startup_s: float = float("nan")
    operator_commit: str = field(default_factory=lambda: source_commit())
    notes: list[str] = field(default_factory=list)


def _operator_calls(calls: Sequence[ApiCall]) -> list[ApiCall]:
    return [c for c in calls if not c.user_agent.startswith(BENCH_USER_AGENT)]


def _peak_rate(times: Sequence[float]) -> float:
    """The most events in any one-second bin."""
    if not times:
        return 0.0
    start = min(times)
    return float(max(Counter(int(t - start) for t in times).values()))


def _top(calls: Sequence[ApiCall], k: int = 8) -> dict[str, int]:
    keys = Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}" for c in calls)
    return dict(keys.most_common(k))


# ---------------------------------------------------------------------------------------------- the run


@attrs.define(kw_only=True)
class BenchEmulator(KubeEmulator):
    """The test emulator, made to scale past a few thousand requests.

    kmock 0.8 decides which reaction serves a request by checking `request in reaction's source view`,
    which walks every request the server has recorded so far, for every reaction: each request costs
    O(requests so far) and a run O(R^2) (profiled: at N=100, 531 requests took 94 s of emulator CPU in
    kmock's filtering). Forgetting a request once it has been served keeps the walk to the requests in
    flight; the emulator's own record (`api_calls`) is unaffected. `call_times` adds when each of those
    calls arrived (monotonic seconds), for the request rate's peaks.
    """

    call_times: list[float] = attrs.field(factory=list, init=False)

    def _record(self, request: kmock.Request) -> None:
        before = len(self._api_calls)
        super()._record(request)
        if len(self._api_calls) > before:
            self.call_times.append(time.monotonic())

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            return await super()._handle(request)
        finally:
            self._requests[:] = [r for r in self._requests if r is not request]
            for reaction in self._payloads:
                reaction._requests[:] = [r for r in reaction._requests if r is not request]


class OperatorProcess:
    """`python -m greenllm.cli run` against the emulator, its log in `workdir`."""

    def __init__(self, kube_url: str, prometheus_url: str, workdir: Path, log_level: str) -> None:
        self.metrics_port = free_port()
        self.probe_port = free_port()
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": kube_url}}],
                    "users": [{"name": "bench", "user": {"token": "bench-token"}}],
                    "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "bench"}}],
                    "current-context": "emulator",
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "GREENLLM_"))}
        env["KUBECONFIG"] = str(kubeconfig)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "operator"), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        self.log_path = workdir / "operator.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "greenllm.cli",
                "run",
                f"--prometheus-url={prometheus_url}",
                f"--metrics-port={self.metrics_port}",
                f"--probe-port={self.probe_port}",
                f"--log-level={log_level}",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def metrics(self) -> tuple[dict[str, Histogram], dict[str, float]]:
        return parse_metrics(_http_text(f"http://127.0.0.1:{self.metrics_port}/metrics"))

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                return None
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def fleet_and_prometheus(pods: Sequence[PodSeries], scrape_interval_s: float) -> Iterator[PrometheusServer]:
    """The exporter runs in a process of its own (tests/prometheus_server.py's serve_fleet_forever):
    rendering thousands of pods' series on every scrape holds the GIL for a good part of a second, and in
    this process it stalled the API emulator (the N = 5,000 creates took 349 s with it here). A real
    cluster's exporters are not in its API server either."""
    exporter = subprocess.Popen(
        [sys.executable, "-m", "tests.prometheus_server"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert exporter.stdin is not None and exporter.stdout is not None
        exporter.stdin.write(json.dumps([asdict(p) for p in pods]))
        exporter.stdin.close()
        port = int(exporter.stdout.readline() or 0)
        if not port:
            raise RuntimeError(f"the exporter process did not start (exit code {exporter.poll()})")
        prometheus = PrometheusServer(port, scrape_interval_s=scrape_interval_s)
        try:
            prometheus.start()
            yield prometheus
        finally:
            prometheus.close()
    finally:
        exporter.kill()
        exporter.wait()


async def _poll(predicate: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    """Poll `predicate()` until true; return the loop time when it was. TimeoutError after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
    return loop.time()


async def run_one(
    n: int,
    *,
    interval: str = "15s",
    ticks: int = 3,
    warmup_ticks: int = 0,
    per_namespace: int = 100,
    scrape_interval_s: float = 5.0,
    concurrency: int = 16,
    converge_timeout_s: float | None = None,
    log_level: str = "info",
    workdir: Path | None = None,
    progress: bool = True,
) -> Result:
    """One benchmark run with N GreenModels; every process it starts is stopped before it returns.
    A phase that times out ends the run early with a note in the result (what was reached is kept)."""
    interval_s = parse_duration(interval)
    objects = layout(n, per_namespace)
    namespaces = len({ns for ns, _ in objects})
    result = Result(n=n, interval_s=interval_s, ticks=ticks, warmup_ticks=warmup_ticks, namespaces=namespaces)
    pods = [
        PodSeries(ns, pod_name(workload_name(name)), f"GPU-{ns}-{name}", power_w=300.0, **DEMAND)
        for ns, name in objects
    ]
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="greenllm-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        prometheus = stack.enter_context(fleet_and_prometheus(pods, scrape_interval_s))
        # The operator's own namespace exists in an install: its leader Lease lives there.
        emulator = BenchEmulator(namespaces=(*INITIAL_NAMESPACES, "greenllm-system"))
        emulator.register_crd(custom_resource_definition())
        async with emulator, kmock.Server(emulator, host="127.0.0.1"):
            kube_url = str(emulator.url).rstrip("/")
            operator = OperatorProcess(kube_url, prometheus.url, workdir, log_level)
            bench = _Bench(
                result=result,
                emulator=emulator,
                operator=operator,
                prometheus_url=prometheus.url,
                prometheus_pid=prometheus.pid,
                kube_url=kube_url,
                objects=objects,
                interval=interval,
                concurrency=concurrency,
                progress=progress,
            )
            try:
                await bench.start()
                await bench.create()
                await bench.converge(converge_timeout_s if converge_timeout_s is not None else 120 + 0.5 * n)
                await bench.steady()
            except TimeoutError as e:
                result.notes.append(str(e))
                bench.say(f"stopped early: {e}")
            finally:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    memory = proc_status(operator.pid)
                    result.peak_rss_mb = memory["VmHWM"] / 1024
                    result.rss_end_mb = memory["VmRSS"] / 1024
                    result.operator_threads = memory["Threads"]
                code = await asyncio.to_thread(operator.stop)
                if code not in (0, -signal.SIGTERM):
                    result.notes.append(f"operator exit code {code} after SIGTERM")
    return result


@dataclass
class _Bench:
    """The phases of one run, in order: start, create, converge, steady."""

    result: Result
    emulator: BenchEmulator
    operator: OperatorProcess
    prometheus_url: str
    prometheus_pid: int
    kube_url: str
    objects: Sequence[tuple[str, str]]
    interval: str
    concurrency: int
    progress: bool
    created: dict[tuple[str, str], float] = field(default_factory=dict)  # loop time each create answered
    first_create: float = 0.0
    calls_before_create: int = 0
    cpu_before_create: float = 0.0
    bench_cpu_before_create: float = 0.0

    @property
    def example(self) -> dict[str, Any]:
        example: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
        return example

    def say(self, message: str) -> None:
        if self.progress:
            print(f"[n={self.result.n}] {message}", file=sys.stderr, flush=True)

    def alive(self, predicate: Callable[[], bool]) -> Callable[[], bool]:
        """`predicate`, failing fast if the operator has died."""

        def check() -> bool:
            self.operator.check_alive()
            return predicate()

        return check

    async def start(self) -> None:
        """Wait until the operator watches GreenModels."""

        def watching() -> bool:
            return any(
                c.verb == "watch" and c.resource == "greenmodels" and c.user_agent.startswith("kopf")
                for c in self.emulator.api_calls
            )

        loop = asyncio.get_running_loop()
        started = loop.time()
        ready = await _poll(self.alive(watching), 120.0, 0.1, "the operator to watch greenmodels")
        self.result.operator_startup_s = ready - started
        self.say(f"operator watching after {self.result.operator_startup_s:.1f}s")

    async def create(self) -> None:
        """Namespaces, then every GreenModel, `concurrency` creates in flight."""
        loop = asyncio.get_running_loop()
        example, interval = self.example, self.interval
        headers = {"User-Agent": BENCH_USER_AGENT, "Content-Type": "application/json"}
        async with aiohttp.ClientSession(base_url=self.kube_url, headers=headers) as session:

            async def post(path: str, body: dict[str, Any]) -> None:
                async with session.post(path, json=body) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"POST {path}: HTTP {r.status}: {await r.text()}")

            for ns in sorted({ns for ns, _ in self.objects}):
                await post("/api/v1/namespaces", {"metadata": {"name": ns}})
            self.calls_before_create = len(self.emulator.api_calls)
            self.cpu_before_create = cpu_seconds(self.operator.pid)
            self.bench_cpu_before_create = cpu_seconds(os.getpid())
            queue = list(reversed(self.objects))

            async def creator() -> None:
                while queue:
                    ns, name = queue.pop()
                    path = f"/apis/greenllm.io/v1alpha1/namespaces/{ns}/greenmodels"
                    await post(path, green_model(name, ns, interval, example))
                    self.created[(ns, name)] = loop.time()

            self.first_create = loop.time()
            await asyncio.gather(*(creator() for _ in range(self.concurrency)))
        self.result.create_s = max(self.created.values()) - self.first_create
        self.say(f"created {len(self.created)} GreenModels in {self.result.create_s:.1f}s")

    async def converge(self, timeout: float) -> None:
        """Until every GreenModel has its Deployment and a status.variant."""
        result, emulator, loop = self.result, self.emulator, asyncio.get_running_loop()
        converged_at: dict[tuple[str, str], float] = {}
        deployments_at: list[float] = []

        def all_converged() -> bool:
            now = loop.time()
            have = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in emulator.stored(DEPLOY)}
            if not deployments_at and all((ns, workload_name(name)) in have for ns, name in self.objects):
                deployments_at.append(now)
            for gm in emulator.stored(GM):
                key = (gm["metadata"]["namespace"], gm["metadata"]["name"])
                if (
                    key not in converged_at
                    and (gm.get("status") or {}).get("variant")
                    and (key[0], workload_name(key[1])) in have
                ):
                    converged_at[key] = now
            return len(converged_at) == len(self.objects)

        try:
            done = await _poll(
                self.alive(all_converged), timeout, 0.25, f"{result.n} GreenModels to converge"
            )
        finally:
            result.converged = len(converged_at)
            if deployments_at:
                result.deployments_s = deployments_at[0] - self.first_create
            latencies = sorted(converged_at[k] - self.created[k] for k in converged_at if k in self.created)
            if latencies:
                result.latency_p50_s = statistics.median(latencies)
                result.latency_p99_s = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
                result.latency_max_s = latencies[-1]
            end = loop.time()
            calls = _operator_calls(emulator.api_calls[self.calls_before_create :])
            result.api_rps_converge = len(calls) / max(end - self.first_create, 1e-9)
            result.api_top_converge = _top(calls)
            result.cpu_converge_s = cpu_seconds(self.operator.pid) - self.cpu_before_create
            bench_cpu = cpu_seconds(os.getpid()) - self.bench_cpu_before_create
            result.bench_cpu_utilisation_converge = bench_cpu / max(end - self.first_create, 1e-9)
            result.rss_converged_mb = proc_status(self.operator.pid)["VmRSS"] / 1024
            _, totals = await asyncio.to_thread(self.operator.metrics)
            result.throttled_converge = totals.get(THROTTLED, float("nan"))
        result.converge_s = done - self.first_create
        self.say(f"converged in {result.converge_s:.1f}s; waiting for {result.ticks} ticks per GreenModel")

    async def warm_up(self) -> None:
        result, operator, loop = self.result, self.operator, asyncio.get_running_loop()
        if result.warmup_ticks <= 0:
            return
        histograms, _ = await asyncio.to_thread(operator.metrics)
        start, want = histograms[LOOP_HISTOGRAM].count, result.n * result.warmup_ticks
        deadline = loop.time() + result.warmup_ticks * result.interval_s * 4 + 120.0
        while True:
            await asyncio.sleep(min(max(1.0, result.interval_s), 15.0))
            operator.check_alive()
            histograms, _ = await asyncio.to_thread(operator.metrics)
            if histograms[LOOP_HISTOGRAM].count - start >= want:
                break
            if loop.time() >= deadline:
                result.notes.append(
                    f"warm-up: only {histograms[LOOP_HISTOGRAM].count - start:.0f} of {want} ticks"
                )
                break
        self.say(f"warmed up ({result.warmup_ticks} ticks per GreenModel)")

    async def steady(self) -> None:
        """From convergence until `ticks` ticks per GreenModel have run (in total), after
        `warmup_ticks` ticks per GreenModel that are not measured."""
        result, operator, loop = self.result, self.operator, asyncio.get_running_loop()
        await self.warm_up()
        histograms, totals0 = await asyncio.to_thread(operator.metrics)
        h0 = h1 = histograms[LOOP_HISTOGRAM]
        lag0 = lag1 = histograms.get(LAG_HISTOGRAM)
        totals1 = totals0
        in_flight: list[float] = []
        q0 = await asyncio.to_thread(instant_queries_answered, self.prometheus_url)
        cpu0, calls0, t0 = cpu_seconds(operator.pid), len(self.emulator.api_calls), loop.time()
        others0 = cpu_seconds(os.getpid()), cpu_seconds(self.prometheus_pid)
        want = result.n * result.ticks
        # The operator's /metrics grows with N (series per GreenModel): scrape it about as often as a
        # Prometheus would (each scrape costs the operator CPU that the window counts).
        every = min(max(1.0, result.interval_s), 15.0)
        deadline = t0 + result.ticks * result.interval_s * 4 + 120.0
        spec = GreenModelSpec.model_validate(self.example["spec"])
        probe = prometheus_query(self.prometheus_url, 10.0)
        probes: list[float] = []
        probe_queries: list[int] = []  # Prometheus counts these too: they are not the operator's

        def probe_once() -> None:
            ns, name = self.objects[len(probes) * 7919 % len(self.objects)]
            queries = promql.build_queries(spec, ns, workload_name(name), since_s=result.interval_s)
            probe_queries.append(len(queries.queries) + (queries.carbon_query is not None))
            started = time.perf_counter()
            promql.observe(probe, queries, time.time(), 3 * result.interval_s, None)
            probes.append(time.perf_counter() - started)

        while h1.count - h0.count < want:
            if loop.time() >= deadline:
                result.notes.append(f"only {h1.count - h0.count:.0f} of {want} ticks within the window")
                break
            await asyncio.gather(asyncio.sleep(every), asyncio.to_thread(probe_once))
            operator.check_alive()
            histograms, totals1 = await asyncio.to_thread(operator.metrics)
            h1, lag1 = histograms[LOOP_HISTOGRAM], histograms.get(LAG_HISTOGRAM)
            if IN_FLIGHT in totals1:
                in_flight.append(totals1[IN_FLIGHT])
        t1, cpu1, calls1 = loop.time(), cpu_seconds(operator.pid), len(self.emulator.api_calls)
        others1 = cpu_seconds(os.getpid()), cpu_seconds(self.prometheus_pid)
        result.load_average_1m = os.getloadavg()[0]
        q1 = await asyncio.to_thread(instant_queries_answered, self.prometheus_url)
        window = h1.minus(h0)
        window_calls = self.emulator.api_calls[calls0:calls1]
        calls = _operator_calls(window_calls)
        result.ticks_observed = window.count
        result.steady_s = t1 - t0
        if window.count > 0:
            result.tick_period_s = (t1 - t0) * result.n / window.count
            result.loop_mean_ms, result.loop_p50_ms, result.loop_p99_ms = window.summary_ms()
            result.cpu_ms_per_tick = (cpu1 - cpu0) * 1000 / window.count
            result.prometheus_queries_per_tick = (q1 - q0 - sum(probe_queries)) / window.count
            result.api_calls_per_tick = len(calls) / window.count
        if lag0 is not None and lag1 is not None and lag1.count > lag0.count:
            result.lag_mean_ms, result.lag_p50_ms, result.lag_p99_ms = lag1.minus(lag0).summary_ms()
        if in_flight:
            result.in_flight_mean, result.in_flight_max = statistics.mean(in_flight), max(in_flight)
        result.cpu_utilisation_steady = (cpu1 - cpu0) / max(t1 - t0, 1e-9)
        result.bench_cpu_utilisation_steady = (others1[0] - others0[0]) / max(t1 - t0, 1e-9)
        result.prometheus_cpu_utilisation_steady = (others1[1] - others0[1]) / max(t1 - t0, 1e-9)
        errors = "greenllm_loop_errors_total"
        result.loop_errors = totals1.get(errors, 0.0) - totals0.get(errors, 0.0)
        collections = "greenllm_operator_gc_seconds_total"
        if window.count > 0 and collections in totals1:
            result.gc_ms_per_tick = (totals1[collections] - totals0[collections]) * 1000 / window.count
        if window.count > 0:
            result.status_writes_per_tick = {
                key.partition(":")[2]: (totals1[key] - totals0.get(key, 0.0)) / window.count
                for key in totals1
                if key.startswith(f"{STATUS_WRITES}:")
            }
        result.api_rps_steady = len(calls) / max(t1 - t0, 1e-9)
        result.api_top_steady = _top(calls)
        times = self.emulator.call_times[calls0:calls1]
        result.api_peak_rps_steady = _peak_rate(
            [
                t
                for c, t in zip(window_calls, times, strict=True)
                if not c.user_agent.startswith(BENCH_USER_AGENT)
            ]
        )
        if probes:
            result.probe_queries_ms = statistics.median(probes) * 1000
        self.say(f"{window.count:.0f} ticks in {t1 - t0:.1f}s")


# ---------------------------------------------------------------------------------------------- output


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("n", "N", "{:d}"),
    ("converged", "conv", "{:d}"),
    ("converge_s", "converge s", "{:.1f}"),
    ("latency_p99_s", "GM p99 s", "{:.1f}"),
    ("tick_period_s", "tick period s", "{:.1f}"),
    ("loop_mean_ms", "loop mean ms", "{:.1f}"),
    ("loop_p50_ms", "loop p50 ms", "{:.1f}"),
    ("loop_p99_ms", "loop p99 ms", "{:.1f}"),
    ("lag_p99_ms", "lag p99 ms", "{:.0f}"),
    ("cpu_ms_per_tick", "CPU ms/tick", "{:.2f}"),
    ("gc_ms_per_tick", "GC ms/tick", "{:.2f}"),
    ("api_rps_converge", "API rps conv", "{:.1f}"),
    ("api_rps_steady", "API rps steady", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
)


def table(results: Sequence[Result]) -> str:
    header = [title for _, title, _ in COLUMNS]
    rows = [[fmt.format(getattr(r, key)) for key, _, fmt in COLUMNS] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        for note in r.notes:
            lines.append(f"N={r.n}: {note}")
    return "\n".join(lines)


def to_json(results: Sequence[Result]) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and value != value:  # NaN is not JSON
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps([clean(asdict(r)) for r in results], indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, nargs="+", default=[100, 500, 1000], help="GreenModel counts")
    parser.add_argument("--interval", default="15s", help="spec.scaling.interval of every GreenModel")
    parser.add_argument("--ticks", type=int, default=3, help="steady-state ticks per GreenModel to measure")
    parser.add_argument(
        "--warmup-ticks", type=int, default=2, help="ticks per GreenModel after convergence not measured"
    )
    parser.add_argument("--per-namespace", type=int, default=100, help="GreenModels per namespace")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval, s")
    parser.add_argument("--concurrency", type=int, default=16, help="creates in flight")
    parser.add_argument("--converge-timeout", type=float, default=None, help="s; default 120 + N/2")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--json", default=None, help="also write the JSON here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep kubeconfig and operator.log here")
    args = parser.parse_args(argv)
    results = []
    for n in args.n:
        results.append(
            asyncio.run(
                run_one(
                    n,
                    interval=args.interval,
                    ticks=args.ticks,
                    warmup_ticks=args.warmup_ticks,
                    per_namespace=args.per_namespace,
                    scrape_interval_s=args.scrape_interval,
                    concurrency=args.concurrency,
                    converge_timeout_s=args.converge_timeout,
                    log_level=args.log_level,
                    workdir=None if args.workdir is None else args.workdir / f"n{n}",
                )
            )
        )
    print(table(results))
    text = to_json(results)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
