"""PromQL for DCGM / Kepler / vLLM / carbon, and Prometheus answers -> an Observation (pure: the asking is
controller/prometheus.py's, or the simulator's).

Every query is a named template, overridable per GreenModel (`spec.metrics.queries`) and in the
operator config. A missing, NaN or stale answer is "unknown" (None), never zero: the decision step
holds its last decision rather than scaling down on a gap in the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.utils import floatToGoString

from greenllm.api import v1alpha1 as api
from greenllm.core.decision import Observation
from greenllm.loop.promql_scope import scope_promql

# Placeholders: {namespace}, {pods} (regex of the GreenModel's pod names), {window} (rate window),
# {since} (time since the last accounted sample, for increase()), {attainment_window}
# (spec.slo.attainmentWindow in seconds), {ttft_le} / {ttft_le_hi} / {ttft_frac} and the same for tpot
# (the `le` labels of the histogram buckets around the TTFT / TPOT SLO and the SLO's place between them,
# see `slo_interpolation`).
_POD = '{namespace="{namespace}",pod=~"{pods}"}'  # DCGM (pod mapping on) and vLLM via kubernetes_sd
_KEPLER_POD = '{pod_namespace="{namespace}",pod_name=~"{pods}"}'

# The bucket boundaries (seconds) of vLLM's latency histograms, from vLLM v0.11.1,
# vllm/v1/metrics/loggers.py (PrometheusStatLogger.__init__), read in the v0.11.1 source distribution.
# - vllm:time_to_first_token_seconds: one observation per request, when its first token is produced.
# - vllm:request_time_per_output_token_seconds: one observation per finished request, its mean time per
#   output token: (last token time - first token time) / (generated tokens - 1), 0 for a single-token
#   request. This is the per-request TPOT the SLO is about. (vllm:time_per_output_token_seconds, deprecated
#   in 0.11 for vllm:inter_token_latency_seconds, has the same buckets but one observation per decode
#   step per request: a share of tokens, not of requests.)
VLLM_TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
VLLM_TPOT_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0,
)  # fmt: skip
TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
TPOT_HISTOGRAM = "vllm:request_time_per_output_token_seconds"
# How prometheus_client (vLLM's exporter) spells a bucket's `le`: Go's float formatting ("1.0", "0.05").
_LE_LABEL: Callable[[float], str] = floatToGoString


def slo_bucket(buckets: tuple[float, ...], slo_s: float) -> str | None:
    """The `le` label of the largest bucket boundary <= `slo_s`, spelled as vLLM's prometheus_client
    exports it ("2.5", "0.05", "10.0"); None when the SLO is below the smallest boundary.

    Conservative: a request counted in that bucket certainly met the SLO; one between the boundary and
    the SLO counts as a miss (a 2 s TTFT SLO reads the 1.0 bucket: vLLM has no 2.0). Below the smallest
    boundary the histogram cannot tell a single request within the SLO, so attainment is unknown (None),
    not 0: a number that is low only because of the bucket layout would scale the fleet to its maximum.
    """
    within = [b for b in buckets if b <= slo_s * (1 + 1e-9)]  # ms -> s rounding must not skip an edge
    return _LE_LABEL(max(within)) if within else None


def _p90_ms(histogram: str) -> str:
    return f"histogram_quantile(0.9, sum by (le) (rate({histogram}{_POD}[{{window}}]))) * 1000"


def slo_interpolation(buckets: tuple[float, ...], slo_s: float) -> tuple[str, str, float] | None:
    """The `le` labels of the bucket boundaries around `slo_s` and the SLO's place between them, for a
    count within the SLO read as `histogram_quantile` reads buckets (observations spread evenly within a
    bucket): count(<= lo) + fraction x (count(<= hi) - count(<= lo)). An SLO on a boundary reads that
    bucket alone (fraction 0); above the largest boundary, the largest bucket (the +Inf bucket cannot be
    interpolated into); below the smallest, None (`slo_bucket`)."""
    lo = slo_bucket(buckets, slo_s)
    if lo is None:
        return None
    low = max(b for b in buckets if b <= slo_s * (1 + 1e-9))
    above = [b for b in buckets if b > slo_s * (1 + 1e-9)]
    if not above or abs(low - slo_s) <= 1e-9 * slo_s:
        return lo, lo, 0.0
    high = min(above)
    return lo, _LE_LABEL(high), (slo_s - low) / (high - low)


def _within(histogram: str, key: str) -> str:
    """The share of a histogram's observations within the SLO over the attainment window (interpolated
    between the buckets around it, `slo_interpolation`)."""
    lo = _POD[:-1] + f',le="{{{key}_le}}"}}'
    hi = _POD[:-1] + f',le="{{{key}_le_hi}}"}}'
    at_lo = f"sum(rate({histogram}_bucket{lo}[{{attainment_window}}]))"
    at_hi = f"sum(rate({histogram}_bucket{hi}[{{attainment_window}}]))"
    return (
        f"({at_lo} + {{{key}_frac}} * ({at_hi} - {at_lo}))"
        f" / sum(rate({histogram}_count{_POD}[{{attainment_window}}]))"
    )


# Attainment in one query: 1 - (share missing TTFT) - (share missing TPOT) = within TTFT + within TPOT - 1,
# clamped to [0, 1]. A union bound: exact when no request misses both SLOs, low (conservative) otherwise.
# Empty when either histogram has no series and NaN when no request was counted in the window: both read
# as unknown. The TTFT histogram counts a request once it has its first token: requests still waiting
# are not in it (the queue gauges and the peak below see them).
_ATTAINMENT = f"clamp({_within(TTFT_HISTOGRAM, 'ttft')} + {_within(TPOT_HISTOGRAM, 'tpot')} - 1, 0, 1)"


DEFAULT_QUERIES: dict[str, str] = {
    "dcgm_power_w": f"sum(DCGM_FI_DEV_POWER_USAGE{_POD})",
    # Instant queries return gauges up to 5 minutes old; these ages let us call a silent exporter stale.
    "dcgm_power_age_s": f"time() - max(timestamp(DCGM_FI_DEV_POWER_USAGE{_POD}))",
    # DCGM's counter is per GPU since driver load, in mJ: only its increase over our own window means a thing.
    "dcgm_energy_j": f"sum(increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{_POD}[{{since}}])) / 1000",
    "kepler_power_w": f"sum(kepler_pod_gpu_watts{_KEPLER_POD})",
    "kepler_power_age_s": f"time() - max(timestamp(kepler_pod_gpu_watts{_KEPLER_POD}))",
    "kepler_energy_j": f"sum(increase(kepler_pod_gpu_joules_total{_KEPLER_POD}[{{since}}]))",
    "prompt_tokens_per_s": f"sum(rate(vllm:prompt_tokens_total{_POD}[{{window}}]))",
    "output_tokens_per_s": f"sum(rate(vllm:generation_tokens_total{_POD}[{{window}}]))",
    "requests_per_s": f"sum(rate(vllm:request_success_total{_POD}[{{window}}]))",
    "requests_waiting": f"sum(vllm:num_requests_waiting{_POD})",
    "requests_running": f"sum(vllm:num_requests_running{_POD})",
    "tpot_p90_ms": _p90_ms("vllm:time_per_output_token_seconds_bucket"),
    "ttft_p90_ms": _p90_ms("vllm:time_to_first_token_seconds_bucket"),
    "attainment": _ATTAINMENT,
    # The node agent's per-GPU gauge: the most requests its pod had waiting since the agent's last scrape.
    # The highest of the window per pod (a pod's GPUs repeat its value), summed over the pods.
    # The node agent's per-GPU gauge of the most requests that arrived at its pod between two reads (about
    # a second) since its last scrape. Summed over the pods at each scrape (a pod's GPUs repeat its value),
    # then the highest such sum of the window: the largest burst the fleet saw, whatever its size then.
    "peak_arrivals": (
        f"max_over_time(sum(max by (pod) (greenllm_agent_arrivals_peak{_POD}))[{{attainment_window}}:])"
    ),
    "peak_waiting_requests": (
        "sum(max by (pod) (max_over_time(greenllm_agent_waiting_requests_peak"
        f"{_POD}[{{attainment_window}}])))"
    ),
}


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace {name} placeholders only: PromQL's own braces need no escaping in user queries."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


DEMAND_QUERIES = ("prompt_tokens_per_s", "output_tokens_per_s")
LOAD_QUERIES = ("requests_per_s", "requests_waiting", "requests_running", "tpot_p90_ms", "ttft_p90_ms")
SLO_QUERIES = ("attainment", "peak_waiting_requests", "peak_arrivals")
# Every query a GreenModel's observation is made of (power_* and energy_j from its power source's templates).
QUERY_NAMES = ("power_w", "power_age_s", "energy_j", *DEMAND_QUERIES, *LOAD_QUERIES, *SLO_QUERIES)
# Answers that are a share (in [0, 1]) or a count (>= 0): anything else is garbage, hence unknown.
_SHARES = ("attainment",)
_COUNTS = ("peak_waiting_requests", "peak_arrivals")


def pod_regex(deployment: str) -> str:
    """Pods of a Deployment are named <deployment>-<replicaset hash>-<suffix>."""
    return f"{deployment}-[a-z0-9]+-[a-z0-9]+"


@dataclass(frozen=True)
class QuerySet:
    """The PromQL to run for one GreenModel, with every placeholder filled in."""

    queries: dict[str, str]
    carbon_query: str | None
    carbon_static: float | None


def template_key(name: str, source: str) -> str:
    """The DEFAULT_QUERIES key a chosen query comes from: power_w -> dcgm_power_w, ..."""
    return f"{source}_{name}" if name in ("power_w", "power_age_s", "energy_j") else name


def attainment_window(seconds: float) -> str:
    """In whole seconds: PromQL (2.x) refuses the fractional durations a spec may hold ("1.5h")."""
    return f"{max(1, round(seconds))}s"


def slo_edges(ttft_slo_ms: float, tpot_slo_ms: float) -> dict[str, str | None]:
    """The attainment query's placeholders: {ttft_le}, {ttft_le_hi}, {ttft_frac} and the same for tpot
    (`slo_interpolation`); None for an SLO below its histogram's first bucket."""
    edges: dict[str, str | None] = {}
    for key, buckets, slo_ms in (
        ("ttft", VLLM_TTFT_BUCKETS_S, ttft_slo_ms),
        ("tpot", VLLM_TPOT_BUCKETS_S, tpot_slo_ms),
    ):
        around = slo_interpolation(buckets, slo_ms / 1000)
        edges[f"{key}_le"] = None if around is None else around[0]
        edges[f"{key}_le_hi"] = None if around is None else around[1]
        edges[f"{key}_frac"] = None if around is None else repr(round(around[2], 9))
    return edges


def build_queries(
    spec: api.GreenModelSpec,
    namespace: str,
    deployment: str,
    *,
    window: str = "1m",
    since_s: float | None = None,
    overrides: Mapping[str, str] | None = None,
    default_carbon_g_per_kwh: float | None = None,
    names: Collection[str] = QUERY_NAMES,
) -> QuerySet:
    """Operator-config overrides first, then the GreenModel's own (which win). Only `names` are filled:
    the fleet loop takes most from the fleet's answers, and filling all of them anyway was about 8 % of
    a tick (py-spy at N = 5,000)."""
    templates = {**DEFAULT_QUERIES, **(overrides or {}), **spec.metrics.queries}
    source = spec.metrics.power_source.value
    # In milliseconds: the window queried is the window the account adds (whole seconds over- or
    # under-counted every tick whose spacing was not a whole number of seconds).
    since = f"{max(1, round(since_s * 1000))}ms" if since_s is not None else window
    values = {
        "namespace": namespace,
        "pods": pod_regex(deployment),
        "window": window,
        "since": since,
        "attainment_window": attainment_window(spec.slo.attainment_window.seconds),
    }
    edges = slo_edges(spec.slo.ttft_p90_ms, spec.slo.tpot_p90_ms)
    values.update({key: edge for key, edge in edges.items() if edge is not None})
    chosen = {name: templates[template_key(name, source)] for name in QUERY_NAMES if name in names}
    if since_s is None:
        chosen.pop("energy_j", None)  # nothing to account yet: the first tick only sets the baseline
    attainment = chosen.get("attainment", "")
    if any(edge is None and "{" + key + "}" in attainment for key, edge in edges.items()):
        chosen.pop("attainment")  # an SLO below the histogram's first bucket: attainment is unknown
    carbon = spec.metrics.carbon_intensity
    # PromQL from the GreenModel sees only its own namespace (trust.scope_promql; UnscopableQueryError if not
    # parseable). The operator's own templates and config overrides are run as they are.
    carbon_query = scope_promql(fill(carbon.query, values), namespace) if carbon.query else None
    static = carbon.grams_per_kwh if carbon.grams_per_kwh is not None else default_carbon_g_per_kwh
    own = {name for name in chosen if template_key(name, source) in spec.metrics.queries}
    return QuerySet(
        queries={
            name: scope_promql(fill(q, values), namespace) if name in own else fill(q, values)
            for name, q in chosen.items()
        },
        carbon_query=carbon_query,
        carbon_static=static,
    )


def max_age_s(interval_s: float) -> float:
    """How old a power reading may be before it counts as stale: three ticks, at least 30 s
    (two missed DCGM scrapes at the usual 15 s scrape interval are normal, not a dead exporter)."""
    return max(3 * interval_s, 30.0)


class MetricsError(Exception):
    """Prometheus could not be asked or answered garbage; the message says which query."""


def scalar(result: Any) -> float | None:
    """One number from an instant-query result: None when empty or NaN/Inf; MetricsError when malformed."""
    if not isinstance(result, list):
        raise MetricsError(f"unexpected result type {type(result).__name__}")
    if not result:
        return None
    if len(result) != 1:
        raise MetricsError(f"expected one series, got {len(result)} (wrap the query in sum())")
    return sample_value(result[0])


def sample_value(sample: Any) -> float | None:
    """One sample's number: None when NaN/Inf (unknown, never a quantity); MetricsError when malformed."""
    try:
        _, text = sample["value"]
        value = float(text)
    except (KeyError, TypeError, ValueError) as e:
        raise MetricsError(f"malformed sample {sample!r}") from e
    return None if math.isnan(value) or math.isinf(value) else value


Query = Callable[[str], Any]  # PromQL -> the result list of an instant query


def observe(
    query: Query, queries: QuerySet, now: float, max_age_s: float, previous_energy_j: float | None
) -> Observation:
    """Run every query. MetricsError (with the failing query named) if Prometheus fails; None per unknown."""
    values = fetch(query, queries)
    return observation_from(values, values.pop("carbon_intensity", None), now, max_age_s, previous_energy_j)


def fetch(query: Query, queries: QuerySet) -> dict[str, float | None]:
    """Each query's value by name, and "carbon_intensity" (the query's or the static one)."""
    values: dict[str, float | None] = {}
    for name, promql in queries.queries.items():
        values[name] = run(query, name, promql)
    values["carbon_intensity"] = queries.carbon_static
    if queries.carbon_query is not None:
        values["carbon_intensity"] = run(query, "carbon_intensity", queries.carbon_query)
    return values


def run(query: Query, name: str, promql: str) -> float | None:
    """One query's number; MetricsError naming the query if Prometheus fails or answers garbage."""
    try:
        return scalar(query(promql))
    except MetricsError as e:
        raise MetricsError(f"{name}: {e}") from e
    except Exception as e:  # the client raises several types for one outcome: no answer
        raise MetricsError(f"{name}: {type(e).__name__}: {e}") from e


def observation_from(
    values: dict[str, float | None],
    carbon: float | None,
    now: float,
    max_age_s: float,
    previous_energy_j: float | None,
) -> Observation:
    """The observation the answers (by query name) make: unknown (None) where they are missing, NaN,
    negative or out of range; power unknown when its reading is older than `max_age_s`."""
    values = dict(values)
    # Rates, gauges, latencies and power cannot be negative: a negative answer (a counter reset seen by
    # rate(), a bad override query) is unknown data, never zero demand, so the loop holds its decision.
    rates = ("prompt_tokens_per_s", "output_tokens_per_s", "requests_per_s", "requests_waiting")
    more = ("requests_running", "power_w", "tpot_p90_ms", "ttft_p90_ms")
    for name in _SHARES + _COUNTS + rates + more:
        value = values.get(name)
        if value is not None and (value < 0 or (name in _SHARES and value > 1)):
            values[name] = None
    if carbon is not None and carbon < 0:
        carbon = None
    age = values.get("power_age_s")
    if age is None or age > max_age_s:
        values["power_w"] = None
    energy = values.get("energy_j")
    energy_total = None
    if energy is not None:
        # A running total of our own, so the core sees one monotonic counter across pod changes.
        energy_total = (previous_energy_j or 0.0) + max(energy, 0.0)
    return Observation(
        time=now,
        prompt_tokens_per_s=values.get("prompt_tokens_per_s"),
        output_tokens_per_s=values.get("output_tokens_per_s"),
        requests_per_s=values.get("requests_per_s"),
        requests_waiting=values.get("requests_waiting"),
        requests_running=values.get("requests_running"),
        power_w=values.get("power_w"),
        energy_j_total=energy_total,
        carbon_intensity_g_per_kwh=carbon,
        tpot_p90_ms=values.get("tpot_p90_ms"),
        ttft_p90_ms=values.get("ttft_p90_ms"),
        attainment=values.get("attainment"),
        peak_waiting_requests=values.get("peak_waiting_requests"),
        peak_arrivals=values.get("peak_arrivals"),
    )
