"""PromQL builders and the parsing of Prometheus answers (empty, NaN, stale, malformed)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from tests.unit.test_step import fp16_cheaper, make_spec, started

from greenllm.api import v1alpha1 as api
from greenllm.core.step import step
from greenllm.loop import promql


def spec(**metrics_spec: Any) -> api.GreenModelSpec:
    return api.GreenModelSpec.model_validate(
        {
            "model": {"name": "m"},
            "variants": [{"name": "bf16", "precision": "bf16", "image": "i"}],
            "metrics": metrics_spec,
        }
    )


def test_dcgm_queries_select_the_deployments_pods() -> None:
    qs = promql.build_queries(spec(), "team-a", "llama", since_s=15.2)
    sel = '{namespace="team-a",pod=~"llama-[a-z0-9]+-[a-z0-9]+"}'
    assert qs.queries["power_w"] == f"sum(DCGM_FI_DEV_POWER_USAGE{sel})"
    # The exact time since the last accounted sample (ms), not rounded to seconds: it is what is added.
    assert (
        qs.queries["energy_j"] == f"sum(increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{sel}[15200ms])) / 1000"
    )
    assert qs.queries["output_tokens_per_s"] == f"sum(rate(vllm:generation_tokens_total{sel}[1m]))"
    assert qs.queries["prompt_tokens_per_s"] == f"sum(rate(vllm:prompt_tokens_total{sel}[1m]))"
    assert qs.queries["requests_per_s"] == f"sum(rate(vllm:request_success_total{sel}[1m]))"
    histogram = "vllm:time_per_output_token_seconds_bucket"
    assert (
        qs.queries["tpot_p90_ms"]
        == f"histogram_quantile(0.9, sum by (le) (rate({histogram}{sel}[1m]))) * 1000"
    )
    assert qs.queries["power_age_s"] == f"time() - max(timestamp(DCGM_FI_DEV_POWER_USAGE{sel}))"


def test_kepler_source_uses_kepler_labels() -> None:
    qs = promql.build_queries(spec(powerSource="kepler"), "ns", "d", since_s=30, window="2m")
    sel = '{pod_namespace="ns",pod_name=~"d-[a-z0-9]+-[a-z0-9]+"}'
    assert qs.queries["power_w"] == f"sum(kepler_pod_gpu_watts{sel})"
    assert qs.queries["energy_j"] == f"sum(increase(kepler_pod_gpu_joules_total{sel}[30000ms]))"
    assert "[2m]" in qs.queries["output_tokens_per_s"]


def test_first_tick_has_no_energy_query() -> None:
    assert "energy_j" not in promql.build_queries(spec(), "ns", "d").queries


def test_overrides_spec_beats_operator_config() -> None:
    qs = promql.build_queries(
        spec(queries={"output_tokens_per_s": "sum(my_tokens{ns='{namespace}'})"}),
        "ns",
        "d",
        overrides={"output_tokens_per_s": "operator", "prompt_tokens_per_s": "sum(p{pod=~'{pods}'})"},
    )
    # the GreenModel's PromQL is scoped to its namespace, the operator's own override is not
    assert qs.queries["output_tokens_per_s"] == "sum(my_tokens{ns='ns', namespace=\"ns\"})"
    assert qs.queries["prompt_tokens_per_s"] == "sum(p{pod=~'d-[a-z0-9]+-[a-z0-9]+'})"


def test_carbon_static_query_and_operator_default() -> None:
    assert promql.build_queries(spec(), "n", "d", default_carbon_g_per_kwh=300).carbon_static == 300
    qs = promql.build_queries(
        spec(carbonIntensity={"gramsPerKwh": 56}), "n", "d", default_carbon_g_per_kwh=300
    )
    assert qs.carbon_static == 56
    qs = promql.build_queries(spec(carbonIntensity={"query": "grid_intensity{zone='FR'}"}), "n", "d")
    assert qs.carbon_query == "grid_intensity{zone='FR', namespace=\"n\"}"  # scoped to the GreenModel's


def sample(value: str) -> list[dict[str, Any]]:
    return [{"metric": {}, "value": [1700000000.0, value]}]


@pytest.mark.parametrize(
    ("result", "expected"),
    [(sample("12.5"), 12.5), ([], None), (sample("NaN"), None), (sample("+Inf"), None), (sample("0"), 0.0)],
)
def test_scalar(result: Any, expected: float | None) -> None:
    assert promql.scalar(result) == expected


@pytest.mark.parametrize(
    "result", [{"resultType": "matrix"}, [{"metric": {}}], [{"value": [1, "abc"]}], sample("1") + sample("2")]
)
def test_scalar_refuses_garbage(result: Any) -> None:
    with pytest.raises(promql.MetricsError):
        promql.scalar(result)


def answers(values: dict[str, str | None]) -> promql.Query:
    def query(promql: str) -> Any:
        for needle, value in values.items():
            if needle in promql:
                return [] if value is None else sample(value)
        return []

    return query


def test_observe_builds_an_observation_and_accumulates_energy() -> None:
    qs = promql.build_queries(spec(carbonIntensity={"gramsPerKwh": 100}), "n", "d", since_s=15)
    query = answers(
        {
            "timestamp(": "5",
            "DCGM_FI_DEV_POWER_USAGE": "1400",
            "ENERGY": "21000",
            "generation_tokens": "900",
            "request_success": "20",
            "prompt_tokens": "30000",
            "waiting": "3",
        }
    )
    obs = promql.observe(query, qs, now=1000.0, max_age_s=45, previous_energy_j=500.0)
    assert obs.power_w == 1400 and obs.output_tokens_per_s == 900 and obs.prompt_tokens_per_s == 30000
    assert obs.energy_j_total == 21500.0
    assert obs.requests_waiting == 3 and obs.carbon_intensity_g_per_kwh == 100
    assert obs.requests_per_s == 20
    assert obs.has_demand


def test_missing_series_are_unknown_not_zero() -> None:
    qs = promql.build_queries(spec(), "n", "d", since_s=15)
    obs = promql.observe(answers({}), qs, now=1000.0, max_age_s=45, previous_energy_j=None)
    assert obs.power_w is None and obs.output_tokens_per_s is None and obs.energy_j_total is None
    assert not obs.has_demand


def test_stale_power_is_unknown() -> None:
    qs = promql.build_queries(spec(), "n", "d", since_s=15)
    obs = promql.observe(answers({"timestamp(": "120", "POWER_USAGE": "1400"}), qs, 1000.0, 45, None)
    assert obs.power_w is None


def test_prometheus_errors_name_the_query() -> None:
    def broken(promql: str) -> Any:
        raise ConnectionError("refused")

    qs = promql.build_queries(spec(), "n", "d")
    with pytest.raises(promql.MetricsError, match="power_w: ConnectionError: refused"):
        promql.observe(broken, qs, 1000.0, 45, None)


# ------------------------------------------------------------------------------- attainment and peak queue


def slo_spec(**slo: Any) -> api.GreenModelSpec:
    return api.GreenModelSpec.model_validate(
        {
            "model": {"name": "m"},
            "variants": [{"name": "bf16", "precision": "bf16", "image": "i"}],
            "slo": slo,
        }
    )


def test_attainment_is_one_query_on_the_buckets_at_the_slos() -> None:
    qs = promql.build_queries(slo_spec(ttftP90Ms=2000, tpotP90Ms=50, attainmentWindow="1h30m"), "ns", "d")
    sel = 'namespace="ns",pod=~"d-[a-z0-9]+-[a-z0-9]+"'
    ttft, tpot = "vllm:time_to_first_token_seconds", "vllm:request_time_per_output_token_seconds"
    t_lo = f'sum(rate({ttft}_bucket{{{sel},le="1.0"}}[5400s]))'
    t_hi = f'sum(rate({ttft}_bucket{{{sel},le="2.5"}}[5400s]))'
    p_at = f'sum(rate({tpot}_bucket{{{sel},le="0.05"}}[5400s]))'
    assert qs.queries["attainment"] == (
        f"clamp(({t_lo} + 0.666666667 * ({t_hi} - {t_lo})) / sum(rate({ttft}_count{{{sel}}}[5400s]))"
        f" + ({p_at} + 0.0 * ({p_at} - {p_at})) / sum(rate({tpot}_count{{{sel}}}[5400s]))"
        " - 1, 0, 1)"
    )


@pytest.mark.parametrize(
    ("slo_s", "around"),
    [
        (2.0, ("1.0", "2.5", 2.0 / 3.0)),  # between edges: interpolated
        (2.5, ("2.5", "2.5", 0.0)),  # on an edge: that bucket alone
        (3000.0, ("2560.0", "2560.0", 0.0)),  # above the largest edge: the largest bucket
        (0.0005, None),  # below the smallest edge: unknown
    ],
)
def test_slo_interpolation(slo_s: float, around: tuple[str, str, float] | None) -> None:
    got = promql.slo_interpolation(promql.VLLM_TTFT_BUCKETS_S, slo_s)
    if around is None:
        assert got is None
    else:
        assert got is not None
        assert got[:2] == around[:2]
        assert got[2] == pytest.approx(around[2])


def test_peak_waiting_takes_each_pods_highest_over_the_window() -> None:
    qs = promql.build_queries(slo_spec(attainmentWindow="1.5h"), "ns", "d")
    assert qs.queries["peak_waiting_requests"] == (
        "sum(max by (pod) (max_over_time(greenllm_agent_waiting_requests_peak"
        '{namespace="ns",pod=~"d-[a-z0-9]+-[a-z0-9]+"}[5400s])))'  # PromQL 2.x has no "1.5h"
    )


@pytest.mark.parametrize(
    ("buckets", "slo_s", "le"),
    [
        (promql.VLLM_TTFT_BUCKETS_S, 2.5, "2.5"),  # exactly on an edge: that bucket
        (promql.VLLM_TTFT_BUCKETS_S, 2.0, "1.0"),  # between edges: the one below (conservative)
        (promql.VLLM_TTFT_BUCKETS_S, 10.0, "10.0"),
        (promql.VLLM_TTFT_BUCKETS_S, 0.001, "0.001"),  # the smallest edge
        (promql.VLLM_TTFT_BUCKETS_S, 0.0005, None),  # below it: unknown, not 0
        (promql.VLLM_TTFT_BUCKETS_S, 1e6, "2560.0"),  # above the largest finite edge: the largest
        (promql.VLLM_TPOT_BUCKETS_S, 50 / 1000, "0.05"),  # ms -> s as build_queries converts
        (promql.VLLM_TPOT_BUCKETS_S, 75 / 1000, "0.075"),
        (promql.VLLM_TPOT_BUCKETS_S, 60 / 1000, "0.05"),
        (promql.VLLM_TPOT_BUCKETS_S, 5 / 1000, None),
    ],
)
def test_slo_bucket(buckets: tuple[float, ...], slo_s: float, le: str | None) -> None:
    assert promql.slo_bucket(buckets, slo_s) == le


def test_every_slo_bucket_is_spelled_as_vllms_exporter_spells_le() -> None:
    # vLLM's histograms are prometheus_client Histograms: its exposition is the ground truth for `le`.
    registry = CollectorRegistry()
    for name, buckets in (("ttft", promql.VLLM_TTFT_BUCKETS_S), ("tpot", promql.VLLM_TPOT_BUCKETS_S)):
        Histogram(name, name, buckets=buckets, registry=registry).observe(0.0)
    text = generate_latest(registry).decode()
    for name, buckets in (("ttft", promql.VLLM_TTFT_BUCKETS_S), ("tpot", promql.VLLM_TPOT_BUCKETS_S)):
        for edge in buckets:
            assert f'{name}_bucket{{le="{promql.slo_bucket(buckets, edge)}"}} 1.0' in text


def test_an_slo_below_the_first_bucket_leaves_attainment_unknown() -> None:
    qs = promql.build_queries(slo_spec(tpotP90Ms=5), "ns", "d")
    assert "attainment" not in qs.queries and "peak_waiting_requests" in qs.queries
    query = answers({"clamp(": "0.5", "waiting_requests_peak": "4"})
    obs = promql.observe(query, qs, now=1000.0, max_age_s=45, previous_energy_j=None)
    assert obs.attainment is None and obs.peak_waiting_requests == 4


def test_an_attainment_override_without_bucket_placeholders_is_kept() -> None:
    override = {"attainment": "avg_over_time(my_slo_ratio{namespace='{namespace}'}[{attainment_window}])"}
    qs = promql.build_queries(slo_spec(tpotP90Ms=5), "ns", "d", overrides=override)
    assert qs.queries["attainment"] == "avg_over_time(my_slo_ratio{namespace='ns'}[3600s])"


@pytest.mark.parametrize(
    ("attainment", "peak", "expected"),
    [
        ("0.93", "12", (0.93, 12.0)),
        ("1", "0", (1.0, 0.0)),  # zero is a measurement: no queue in the window
        (None, None, (None, None)),  # no series: unknown
        ("NaN", "+Inf", (None, None)),  # no request in the window (0 / 0)
        ("1.2", "-1", (None, None)),  # not a share / not a count: garbage from an override
        ("-0.1", "3", (None, 3.0)),
    ],
)
def test_observe_reads_attainment_and_peak(
    attainment: str | None, peak: str | None, expected: tuple[float | None, float | None]
) -> None:
    qs = promql.build_queries(slo_spec(), "n", "d", since_s=15)
    # Needles unique to each query: both hold "waiting", and the peak's must not match requests_waiting.
    query = answers({"clamp(": attainment, "waiting_requests_peak": peak, "num_requests_waiting": "2"})
    obs = promql.observe(query, qs, now=1000.0, max_age_s=45, previous_energy_j=None)
    assert (obs.attainment, obs.peak_waiting_requests) == expected
    assert obs.requests_waiting == 2


def test_peak_arrivals_is_the_fleets_largest_burst_over_the_window() -> None:
    qs = promql.build_queries(slo_spec(attainmentWindow="1h"), "ns", "d")
    assert qs.queries["peak_arrivals"] == (
        "max_over_time(sum(max by (pod) (greenllm_agent_arrivals_peak"
        '{namespace="ns",pod=~"d-[a-z0-9]+-[a-z0-9]+"}))[3600s:])'
    )


@pytest.mark.parametrize(
    ("needle", "field"),
    [
        ("generation_tokens", "output_tokens_per_s"),
        ("prompt_tokens", "prompt_tokens_per_s"),
        ("request_success", "requests_per_s"),
        ("num_requests_waiting", "requests_waiting"),
        ("num_requests_running", "requests_running"),
        ("sum(DCGM_FI_DEV_POWER_USAGE", "power_w"),
        ("time_per_output_token", "tpot_p90_ms"),
        ("time_to_first_token", "ttft_p90_ms"),
    ],
)
def test_a_negative_answer_is_unknown_not_zero(needle: str, field: str) -> None:
    # A counter reset seen by rate() or a bad override query: not a quantity that can be negative.
    qs = promql.build_queries(spec(), "n", "d", since_s=15)
    text = qs.queries[field]
    assert needle in text

    def query(q: str) -> Any:
        if q == text:
            return sample("-3.5")
        return sample("5") if "timestamp(" in q else sample("100")

    obs = promql.observe(query, qs, now=1000.0, max_age_s=45, previous_energy_j=None)
    assert getattr(obs, field) is None
    assert obs.output_tokens_per_s in (None, 100.0)


def test_a_negative_carbon_intensity_is_unknown() -> None:
    qs = promql.build_queries(spec(carbonIntensity={"query": "grid"}), "n", "d", since_s=15)
    obs = promql.observe(answers({"grid": "-20"}), qs, now=1000.0, max_age_s=45, previous_energy_j=None)
    assert obs.carbon_intensity_g_per_kwh is None


def test_negative_token_rates_hold_the_decision_instead_of_scaling_down() -> None:
    fleet = make_spec(scaling={"scaleDownStabilization": "0s", "switchHold": "0s"})
    src = fp16_cheaper()
    state = started(fleet, src, out=3500.0)  # several replicas for this demand
    assert state.replicas is not None and state.replicas > 1
    qs = promql.build_queries(fleet, "n", "d", since_s=15)
    negative = answers({"generation_tokens": "-3500", "prompt_tokens": "-100", "request_success": "-2"})
    obs = promql.observe(negative, qs, now=60.0, max_age_s=45, previous_energy_j=None)
    assert obs.output_tokens_per_s is None and obs.prompt_tokens_per_s is None
    assert not obs.has_demand  # the operator reports MetricsAvailable=False (no vLLM token rates)
    after, decision = step(fleet, state, obs, 60.0, src)
    assert (decision.variant, decision.replicas) == (state.variant, state.replicas)
    assert after.replicas == state.replicas


@pytest.mark.parametrize(
    ("since_s", "window"), [(1.6, "1600ms"), (1.4, "1400ms"), (15.0, "15000ms"), (0.0001, "1ms")]
)
def test_the_energy_window_is_the_time_accounted(since_s: float, window: str) -> None:
    # Rounded to whole seconds, a tick 1.6 s after the last one added 2 s of energy (x1.25), one after 1.4 s
    # added 1 s: the account adds exactly the time since its last sample, so the query covers exactly that.
    qs = promql.build_queries(spec(), "n", "d", since_s=since_s)
    assert f"[{window}]" in qs.queries["energy_j"]
