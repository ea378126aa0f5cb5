"""One Prometheus query per metric kind for every GreenModel, instead of one per GreenModel (pure).

The per-GreenModel templates (`metrics.DEFAULT_QUERIES`) filter on one GreenModel's pods: ten of them per
tick made 650 queries a second at a thousand GreenModels. The fleet templates here ask once for every pod
and group the answer by namespace and Deployment: a pod's Deployment is its name without the ReplicaSet
hash and the pod suffix (`metrics.pod_regex`), recovered with `label_replace`. Each GreenModel reads its
row; a missing row or NaN is unknown (None), as an empty per-GreenModel answer is. The numbers are those of
the per-GreenModel queries (tests/shell/test_fleet_queries.py compares both on a real Prometheus).

Energy is the exception to "same query": `increase(...[since])` depends on each GreenModel's own last
sample. The fleet query reads the raw per-GPU energy counters instead, and each GreenModel adds the
per-series increase since its previous reading (`energy_increase_j`): the windows of consecutive readings
join exactly, nothing is counted twice or dropped, and a counter reset counts as a restart from zero, as
Prometheus' increase() does. Its first reading after a start only sets the baseline; the per-GreenModel
`increase` query covers the time since the persisted sample then.

What cannot be batched stays per GreenModel: queries a GreenModel or the operator config overrides, a
GreenModel's own Prometheus URL, a carbon-intensity query.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from greenllm.loop.promql import (
    TPOT_HISTOGRAM,
    TTFT_HISTOGRAM,
    MetricsError,
    attainment_window,
    fill,
    sample_value,
    slo_edges,
)

Row = tuple[str, str]  # (namespace, deployment)
SeriesKey = tuple[tuple[str, str], ...]  # a series' labels, sorted: one GPU's counter

_SUFFIX = "(.+)-[a-z0-9]+-[a-z0-9]+"  # metrics.pod_regex without the Deployment's name
_BY = "namespace, deployment"


def _rows(expr: str) -> str:
    """`expr` with a `deployment` label from its `pod` label (DCGM with pod mapping, vLLM, the agent)."""
    return f'label_replace({expr}, "deployment", "$1", "pod", "{_SUFFIX}")'


def _kepler_rows(expr: str) -> str:
    """Kepler names them pod_namespace / pod_name."""
    named = f'label_replace({expr}, "deployment", "$1", "pod_name", "{_SUFFIX}")'
    return f'label_replace({named}, "namespace", "$1", "pod_namespace", "(.+)")'


_POD = '{pod!=""}'
_KEPLER_POD = '{pod_name!=""}'


def _p90_ms(bucket: str) -> str:
    return (
        f"histogram_quantile(0.9, sum by ({_BY}, le) ({_rows(f'rate({bucket}{_POD}[{{window}}])')})) * 1000"
    )


def _within(histogram: str, key: str) -> str:
    def at(le: str) -> str:
        selector = '{pod!="",le="{' + le + '}"}'
        return f"sum by ({_BY}) ({_rows(f'rate({histogram}_bucket{selector}[{{attainment_window}}])')})"

    lo, hi = at(f"{key}_le"), at(f"{key}_le_hi")
    count = f"sum by ({_BY}) ({_rows(f'rate({histogram}_count{_POD}[{{attainment_window}}])')})"
    return f"({lo} + {{{key}_frac}} * ({hi} - {lo})) / {count}"


def _sum(expr: str) -> str:
    return f"sum by ({_BY}) ({_rows(expr)})"


def _rate(counter: str, window: str = "{window}") -> str:
    return _sum(f"rate({counter}{_POD}[{window}])")


_ARRIVALS = f"max by (namespace, pod) (greenllm_agent_arrivals_peak{_POD})"
_WAITING = (
    "max by (namespace, pod) "
    f"(max_over_time(greenllm_agent_waiting_requests_peak{_POD}[{{attainment_window}}]))"
)

# Same names, same meaning, as metrics.DEFAULT_QUERIES (energy_j: see the module's docstring).
FLEET_QUERIES: dict[str, str] = {
    "dcgm_power_w": _sum(f"DCGM_FI_DEV_POWER_USAGE{_POD}"),
    "dcgm_power_age_s": f"time() - max by ({_BY}) ({_rows(f'timestamp(DCGM_FI_DEV_POWER_USAGE{_POD})')})",
    "dcgm_energy_j": _rows(f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{_POD} / 1000"),
    "kepler_power_w": f"sum by ({_BY}) ({_kepler_rows(f'kepler_pod_gpu_watts{_KEPLER_POD}')})",
    "kepler_power_age_s": (
        f"time() - max by ({_BY}) ({_kepler_rows(f'timestamp(kepler_pod_gpu_watts{_KEPLER_POD})')})"
    ),
    "kepler_energy_j": _kepler_rows(f"kepler_pod_gpu_joules_total{_KEPLER_POD}"),
    "prompt_tokens_per_s": _rate("vllm:prompt_tokens_total"),
    "output_tokens_per_s": _rate("vllm:generation_tokens_total"),
    "requests_per_s": _rate("vllm:request_success_total"),
    "requests_waiting": _sum(f"vllm:num_requests_waiting{_POD}"),
    "requests_running": _sum(f"vllm:num_requests_running{_POD}"),
    "tpot_p90_ms": _p90_ms("vllm:time_per_output_token_seconds_bucket"),
    "ttft_p90_ms": _p90_ms("vllm:time_to_first_token_seconds_bucket"),
    "attainment": f"clamp({_within(TTFT_HISTOGRAM, 'ttft')} + {_within(TPOT_HISTOGRAM, 'tpot')} - 1, 0, 1)",
    "peak_arrivals": f"max_over_time({_sum(_ARRIVALS)}[{{attainment_window}}:])",
    "peak_waiting_requests": _sum(_WAITING),
}
COUNTERS = frozenset({"dcgm_energy_j", "kepler_energy_j"})  # raw per-series counters, not one row each


@dataclass(frozen=True)
class FleetQuery:
    """One fleet query with its placeholders filled: GreenModels whose SLOs and windows fill a template
    alike share it (in practice a handful of distinct SLOs, not one query per GreenModel)."""

    template: str  # the key of FLEET_QUERIES
    promql: str


@functools.lru_cache(maxsize=1024)  # pure; every tick asks for each of its ~14, a handful distinct in all
def fleet_query(
    template: str, *, window: str, attainment_window_s: float, ttft_slo_ms: float, tpot_slo_ms: float
) -> FleetQuery | None:
    """The filled query; None when this GreenModel's answer would be unknown anyway (an SLO below the
    histogram's first bucket for attainment)."""
    values = {"window": window, "attainment_window": attainment_window(attainment_window_s)}
    if template == "attainment":
        edges = slo_edges(ttft_slo_ms, tpot_slo_ms)
        if None in edges.values():
            return None
        values.update({key: edge for key, edge in edges.items() if edge is not None})
    return FleetQuery(template, fill(FLEET_QUERIES[template], values))


def rows(result: Any) -> dict[Row, float | None]:
    """A grouped answer by (namespace, deployment); series without a Deployment are not a GreenModel's."""
    if not isinstance(result, list):
        raise MetricsError(f"unexpected result type {type(result).__name__}")
    out: dict[Row, float | None] = {}
    for sample in result:
        labels = sample.get("metric") or {}
        namespace, deployment = labels.get("namespace"), labels.get("deployment")
        if namespace and deployment:
            out[(namespace, deployment)] = sample_value(sample)
    return out


@dataclass(frozen=True)
class CounterReading:
    """Every energy counter series of one GreenModel's pods at one read: labels -> (value, sample time)."""

    series: Mapping[SeriesKey, tuple[float, float]]


def counter_rows(result: Any) -> dict[Row, CounterReading]:
    """The raw counter answer split by (namespace, deployment), one entry per series."""
    if not isinstance(result, list):
        raise MetricsError(f"unexpected result type {type(result).__name__}")
    grouped: dict[Row, dict[SeriesKey, tuple[float, float]]] = {}
    for sample in result:
        labels = sample.get("metric") or {}
        namespace, deployment = labels.get("namespace"), labels.get("deployment")
        value = sample_value(sample)
        if not (namespace and deployment) or value is None:
            continue
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))
        grouped.setdefault((namespace, deployment), {})[key] = (value, float(sample["value"][0]))
    return {row: CounterReading(series) for row, series in grouped.items()}


def energy_increase_j(previous: CounterReading, current: CounterReading) -> float:
    """The energy of the series read both times, between their two samples: a drop is a counter reset
    (counted from zero, as increase() does); a series seen for the first time is only a baseline."""
    total = 0.0
    for key, (value, when) in current.series.items():
        before = previous.series.get(key)
        if before is None or when <= before[1]:
            continue
        total += value - before[0] if value >= before[0] else value
    return total
