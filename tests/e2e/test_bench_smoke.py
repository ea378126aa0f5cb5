"""hack/bench_operator.py kept from rotting: its pure helpers, its emulator fix, and a tiny run (N=3).

The run starts the real operator process against the API emulator and a real Prometheus, exactly as the
benchmark does at N=1000; assertions are about what was measured being present and consistent, never
about how fast anything was.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import kmock
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from greenllm.loop.promql import pod_regex

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    name = "bench_operator"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / "bench_operator.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


bench = _load()


def test_quantile_interpolates_within_buckets_like_promql() -> None:
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.5], 2 in (0.5, 1].
    h = bench.Histogram(((0.1, 4.0), (0.5, 8.0), (1.0, 10.0), (math.inf, 10.0)), 4.2, 10.0)
    assert h.quantile(0.4) == pytest.approx(0.1)
    assert h.quantile(0.6) == pytest.approx(0.1 + 0.4 * 2 / 4)
    assert h.quantile(0.9) == pytest.approx(0.5 + 0.5 * 1 / 2)
    assert h.mean == pytest.approx(0.42)
    # Ranks in +Inf answer the largest finite bound; an empty histogram has no quantile.
    tail = bench.Histogram(((0.1, 1.0), (math.inf, 3.0)), 9.0, 3.0)
    assert tail.quantile(0.99) == 0.1
    assert math.isnan(bench.Histogram(((0.1, 0.0), (math.inf, 0.0)), 0.0, 0.0).quantile(0.5))


def test_window_is_the_difference_of_two_scrapes() -> None:
    before = bench.Histogram(((0.1, 2.0), (1.0, 3.0), (math.inf, 3.0)), 0.5, 3.0)
    after = bench.Histogram(((0.1, 2.0), (1.0, 7.0), (math.inf, 8.0)), 6.5, 8.0)
    window = after.minus(before)
    assert window.buckets == ((0.1, 0.0), (1.0, 4.0), (math.inf, 5.0))
    assert (window.sum, window.count) == (6.0, 5.0)
    assert window.quantile(0.5) == pytest.approx(0.1 + 0.9 * 2.5 / 4)


def test_parse_metrics_reads_the_operators_exposition() -> None:
    registry = CollectorRegistry()
    loop = Histogram("greenllm_loop_duration_seconds", "t", registry=registry, buckets=(0.01, 0.1, 1))
    errors = Counter("greenllm_loop_errors", "e", ("kind",), registry=registry)
    for value in (0.005, 0.05, 0.05, 2.0):
        loop.observe(value)
    errors.labels("A").inc(2)
    errors.labels("B").inc()
    histograms, totals = bench.parse_metrics(generate_latest(registry).decode())
    h = histograms["greenllm_loop_duration_seconds"]
    assert h.count == 4 and h.sum == pytest.approx(2.105)
    assert dict(h.buckets) == {0.01: 1.0, 0.1: 3.0, 1.0: 3.0, math.inf: 4.0}
    assert totals["greenllm_loop_errors_total"] == 3.0


def test_layout_and_pod_names_match_the_operators_queries() -> None:
    objects = bench.layout(250, per_namespace=100)
    assert len({name for _, name in objects}) == 250  # the fake fleet keys pods by name
    assert sorted({ns for ns, _ in objects}) == ["bench-000", "bench-001", "bench-002"]

    pod = bench.pod_name("gm-00042")
    assert re.fullmatch(pod_regex("gm-00042"), pod)
    assert not re.fullmatch(pod_regex("gm-0004"), pod)


async def test_emulator_forgets_served_requests_but_records_every_call() -> None:
    emulator = bench.BenchEmulator()
    async with emulator, kmock.Server(emulator, host="127.0.0.1"):
        base = str(emulator.url).rstrip("/")
        async with aiohttp.ClientSession(base_url=base) as session:
            ns = {"metadata": {"name": "smoke"}}
            async with session.post("/api/v1/namespaces", json=ns) as r:
                assert r.status == 201
            for _ in range(40):
                async with session.get("/api/v1/namespaces/smoke/services/missing") as r:
                    assert r.status == 404
            async with session.get("/api/v1/namespaces/smoke") as r:
                assert r.status == 200 and (await r.json())["metadata"]["name"] == "smoke"
        assert emulator._requests == []
        assert all(reaction._requests == [] for reaction in emulator._payloads)
        verbs = [c.verb for c in emulator.api_calls]
        assert verbs == ["create", *["get"] * 41]


async def test_smoke_run_measures_every_phase(tmp_path: Path) -> None:
    # Warm-up past the transient: a new GreenModel's first tick finds nothing deployed yet, and its first
    # decisions on measured demand (each a status write and an Event) come in the ticks after it.
    result = await bench.run_one(
        3, interval="1s", ticks=2, warmup_ticks=3, scrape_interval_s=1.0, workdir=tmp_path, progress=False
    )
    log = (tmp_path / "operator.log").read_text(errors="replace")[-3000:]
    assert result.notes == [], log
    assert result.converged == 3
    assert 0 < result.deployments_s <= result.converge_s
    assert 0 < result.latency_p50_s <= result.latency_p99_s <= result.latency_max_s
    assert result.ticks_observed >= 3 * 2
    assert result.loop_mean_ms > 0 and result.loop_p50_ms <= result.loop_p99_ms
    assert result.loop_errors == 0, log
    assert result.gc_ms_per_tick >= 0  # the operator exports its time in the garbage collector (NaN: not)
    # How late ticks started and how many ran, and the requests its rate limit held (NaN: not exported).
    assert 0 <= result.lag_p50_ms <= result.lag_p99_ms
    assert 0 <= result.in_flight_mean <= result.in_flight_max  # read at moments: often 0 at N = 3
    assert result.throttled_converge >= 0
    assert result.prometheus_queries_per_tick > 0  # every converged GreenModel's tick asks Prometheus
    # Ticks read their GreenModel from kopf's watch (no GET; a 409 would re-read one) and write status
    # only when readers would see a change or the accounting is due (60 s): fewer writes than ticks.
    assert result.api_top_steady.get("get greenmodels", 0) <= 1
    assert result.api_top_steady.get("patch greenmodels/status", 0) < result.ticks_observed
    # The operator's own count of its status writes, by why, is what the API saw (scraped around it).
    assert set(result.status_writes_per_tick) <= {"change", "accounting"}
    written = sum(result.status_writes_per_tick.values()) * result.ticks_observed
    assert written == pytest.approx(result.api_top_steady.get("patch greenmodels/status", 0), abs=2)
    assert result.api_top_converge.get("create deployments") == 3
    # A new GreenModel's Deployment and Service are created without a GET first (a tick may read its
    # Deployment to apply a decision, never its Service).
    assert result.api_top_converge.get("get services", 0) == 0
    assert result.peak_rss_mb >= result.rss_converged_mb > 0
    # kopf's "succeeded" line for each call of a per-event handler is dropped (SuccessOfPerEventHandlers)
    whole_log = (tmp_path / "operator.log").read_text(errors="replace")
    assert not re.search(r"Handler 'track'.*succeeded", whole_log)

    text = bench.table([result])
    assert text.splitlines()[1].split()[:2] == ["3", "3"]
    (row,) = json.loads(bench.to_json([result]))
    assert row["n"] == 3 and row["converged"] == 3 and row["ticks_observed"] == result.ticks_observed
