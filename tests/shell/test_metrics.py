"""PromQL builders and the parsing of Prometheus answers (empty, NaN, stale, malformed)."""

from __future__ import annotations

from typing import Any

import pytest

from greenllm.api import v1alpha1 as api
from greenllm.controller import metrics


def spec(**metrics_spec: Any) -> api.GreenModelSpec:
    return api.GreenModelSpec.model_validate(
        {
            "model": {"name": "m"},
            "variants": [{"name": "bf16", "precision": "bf16", "image": "i"}],
            "metrics": metrics_spec,
        }
    )


def test_dcgm_queries_select_the_deployments_pods() -> None:
    qs = metrics.build_queries(spec(), "team-a", "llama", since_s=15.2)
    sel = '{namespace="team-a",pod=~"llama-[a-z0-9]+-[a-z0-9]+"}'
    assert qs.queries["power_w"] == f"sum(DCGM_FI_DEV_POWER_USAGE{sel})"
    assert qs.queries["energy_j"] == f"sum(increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{sel}[15s])) / 1000"
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
    qs = metrics.build_queries(spec(powerSource="kepler"), "ns", "d", since_s=30, window="2m")
    sel = '{pod_namespace="ns",pod_name=~"d-[a-z0-9]+-[a-z0-9]+"}'
    assert qs.queries["power_w"] == f"sum(kepler_pod_gpu_watts{sel})"
    assert qs.queries["energy_j"] == f"sum(increase(kepler_pod_gpu_joules_total{sel}[30s]))"
    assert "[2m]" in qs.queries["output_tokens_per_s"]


def test_first_tick_has_no_energy_query() -> None:
    assert "energy_j" not in metrics.build_queries(spec(), "ns", "d").queries


def test_overrides_spec_beats_operator_config() -> None:
    qs = metrics.build_queries(
        spec(queries={"output_tokens_per_s": "sum(my_tokens{ns='{namespace}'})"}),
        "ns",
        "d",
        overrides={"output_tokens_per_s": "operator", "prompt_tokens_per_s": "sum(p{pod=~'{pods}'})"},
    )
    assert qs.queries["output_tokens_per_s"] == "sum(my_tokens{ns='ns'})"
    assert qs.queries["prompt_tokens_per_s"] == "sum(p{pod=~'d-[a-z0-9]+-[a-z0-9]+'})"


def test_carbon_static_query_and_operator_default() -> None:
    assert metrics.build_queries(spec(), "n", "d", default_carbon_g_per_kwh=300).carbon_static == 300
    qs = metrics.build_queries(
        spec(carbonIntensity={"gramsPerKwh": 56}), "n", "d", default_carbon_g_per_kwh=300
    )
    assert qs.carbon_static == 56
    qs = metrics.build_queries(spec(carbonIntensity={"query": "grid_intensity{zone='FR'}"}), "n", "d")
    assert qs.carbon_query == "grid_intensity{zone='FR'}"


def sample(value: str) -> list[dict[str, Any]]:
    return [{"metric": {}, "value": [1700000000.0, value]}]


@pytest.mark.parametrize(
    ("result", "expected"),
    [(sample("12.5"), 12.5), ([], None), (sample("NaN"), None), (sample("+Inf"), None), (sample("0"), 0.0)],
)
def test_scalar(result: Any, expected: float | None) -> None:
    assert metrics.scalar(result) == expected


@pytest.mark.parametrize(
    "result", [{"resultType": "matrix"}, [{"metric": {}}], [{"value": [1, "abc"]}], sample("1") + sample("2")]
)
def test_scalar_refuses_garbage(result: Any) -> None:
    with pytest.raises(metrics.MetricsError):
        metrics.scalar(result)


def answers(values: dict[str, str | None]) -> metrics.Query:
    def query(promql: str) -> Any:
        for needle, value in values.items():
            if needle in promql:
                return [] if value is None else sample(value)
        return []

    return query


def test_observe_builds_an_observation_and_accumulates_energy() -> None:
    qs = metrics.build_queries(spec(carbonIntensity={"gramsPerKwh": 100}), "n", "d", since_s=15)
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
    obs = metrics.observe(query, qs, now=1000.0, max_age_s=45, previous_energy_j=500.0)
    assert obs.power_w == 1400 and obs.output_tokens_per_s == 900 and obs.prompt_tokens_per_s == 30000
    assert obs.energy_j_total == 21500.0
    assert obs.requests_waiting == 3 and obs.carbon_intensity_g_per_kwh == 100
    assert obs.requests_per_s == 20
    assert obs.has_demand


def test_missing_series_are_unknown_not_zero() -> None:
    qs = metrics.build_queries(spec(), "n", "d", since_s=15)
    obs = metrics.observe(answers({}), qs, now=1000.0, max_age_s=45, previous_energy_j=None)
    assert obs.power_w is None and obs.output_tokens_per_s is None and obs.energy_j_total is None
    assert not obs.has_demand


def test_stale_power_is_unknown() -> None:
    qs = metrics.build_queries(spec(), "n", "d", since_s=15)
    obs = metrics.observe(answers({"timestamp(": "120", "POWER_USAGE": "1400"}), qs, 1000.0, 45, None)
    assert obs.power_w is None


def test_prometheus_errors_name_the_query() -> None:
    def broken(promql: str) -> Any:
        raise ConnectionError("refused")

    qs = metrics.build_queries(spec(), "n", "d")
    with pytest.raises(metrics.MetricsError, match="power_w: ConnectionError: refused"):
        metrics.observe(broken, qs, 1000.0, 45, None)
