"""Every `greenllm run` setting can be set from the chart: the rendered operator container's args,
parsed by the real `greenllm` parser, give the config the values asked for."""

from __future__ import annotations

from typing import Any

import pytest
from chartkit import objects

from greenllm.cli import build_parser
from greenllm.controller.config import SETTINGS, OperatorConfig

OPERATOR = "Deployment"


def operator_container(values: dict[str, Any]) -> dict[str, Any]:
    deployments = [
        o for o in objects(values) if o["kind"] == OPERATOR and o["metadata"]["name"].endswith("-operator")
    ]
    (deployment,) = deployments
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "operator"
    found: dict[str, Any] = container
    return found


def config_from(values: dict[str, Any]) -> OperatorConfig:
    """The config `greenllm run` starts with in the rendered pod (no GREENLLM_* environment)."""
    args = operator_container(values)["args"]
    assert args[0] == "run"
    parsed = build_parser().parse_args(args)
    return OperatorConfig.from_sources({s.field: getattr(parsed, s.field) for s in SETTINGS}, {})


# field -> (values, expected field value)
CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "prometheus_url": ({"prometheus": {"url": "https://prom.example:9091"}}, "https://prom.example:9091"),
    "namespaces": ({"watchNamespaces": ["llm-a", "llm-b"]}, ("llm-a", "llm-b")),
    "metrics_port": ({"operator": {"metricsPort": 9555}}, 9555),
    "probe_port": ({"operator": {"probePort": 8555}}, 8555),
    "log_level": ({"logLevel": "debug"}, "debug"),
    "default_carbon_intensity_g_per_kwh": ({"carbon": {"defaultIntensityGPerKWh": 321.5}}, 321.5),
    "peering_name": ({"operator": {"peering": {"enabled": True, "name": "team"}}}, "team"),
    "priority": ({"operator": {"peering": {"enabled": True, "priority": 42}}}, 42),
    "peering_lifetime_s": ({"operator": {"peering": {"enabled": True, "lifetime": 120}}}, 120),
    "leader_election": ({"operator": {"leaderElection": {"enabled": False}}}, False),
    "leader_election_namespace": ({"operator": {"leaderElection": {"namespace": "ops"}}}, "ops"),
    "leader_election_id": ({"operator": {"leaderElection": {"id": "llm-shard-a"}}}, "llm-shard-a"),
    "lease_duration_s": ({"operator": {"leaderElection": {"leaseDuration": 30}}}, 30),
    "prometheus_timeout_s": ({"prometheus": {"timeout": 12.5}}, 12.5),
    "io_threads": ({"operator": {"ioThreads": 16}}, 16),
    "kube_qps": ({"operator": {"kubeApi": {"qps": 80}}}, 80.0),
    "kube_burst": ({"operator": {"kubeApi": {"burst": 160}}}, 160),
    "accounting_write_period_s": ({"operator": {"accountingWritePeriod": 120}}, 120.0),
    "rate_window": ({"prometheus": {"rateWindow": "2m"}}, "2m"),
    "queries": (
        {"prometheus": {"queries": {"power": 'sum(DCGM_FI_DEV_POWER_USAGE{pod=~"{pods}"})'}}},
        {"power": 'sum(DCGM_FI_DEV_POWER_USAGE{pod=~"{pods}"})'},
    ),
    "prometheus_ca_file": ({"prometheus": {"tls": {"caFile": "/etc/prom/ca.crt"}}}, "/etc/prom/ca.crt"),
    "prometheus_insecure_skip_verify": ({"prometheus": {"tls": {"insecureSkipVerify": True}}}, True),
    "prometheus_bearer_token_file": (
        {"prometheus": {"auth": {"bearerTokenFile": "/var/run/prom/token"}}},
        "/var/run/prom/token",
    ),
    "prometheus_username": (
        {"prometheus": {"auth": {"username": "green llm", "passwordFile": "/etc/prom/pw"}}},
        "green llm",
    ),
    "prometheus_password_file": (
        {"prometheus": {"auth": {"username": "u", "passwordFile": "/etc/prom/pw"}}},
        "/etc/prom/pw",
    ),
    "allowed_prometheus_urls": (
        {"trust": {"allowedPrometheusUrls": ["https://team-prom:9090", "http://other:9090"]}},
        ("https://team-prom:9090", "http://other:9090"),
    ),
    "allow_spec_queries": ({"trust": {"allowSpecQueries": True}}, True),
    "allowed_image_prefixes": (
        {"trust": {"allowedImagePrefixes": ["vllm/vllm-openai:", "ghcr.io/acme/"]}},
        ("vllm/vllm-openai:", "ghcr.io/acme/"),
    ),
}


def test_every_setting_has_a_chart_case() -> None:
    assert set(CASES) == {s.field for s in SETTINGS}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_chart_sets_each_setting(name: str) -> None:
    values, expected = CASES[name]
    assert getattr(OperatorConfig(), name) != expected, "the case must differ from the default"
    assert getattr(config_from(values), name) == expected


def test_the_defaults_render_the_operator_defaults() -> None:
    config = config_from({})
    default = OperatorConfig()
    assert config == default
    assert config.prometheus_connection().verify is True


def test_extra_env_and_secret_volumes_reach_the_operator() -> None:
    values = {
        "operator": {
            "extraEnv": [{"name": "GREENLLM_PROMETHEUS_USERNAME", "value": "greenllm"}],
            "extraVolumes": [{"name": "prom-auth", "secret": {"secretName": "prom-auth"}}],
            "extraVolumeMounts": [{"name": "prom-auth", "mountPath": "/etc/prom", "readOnly": True}],
        }
    }
    container = operator_container(values)
    assert {"name": "GREENLLM_PROMETHEUS_USERNAME", "value": "greenllm"} in container["env"]
    assert {"name": "prom-auth", "mountPath": "/etc/prom", "readOnly": True} in container["volumeMounts"]
    deployment = next(
        o for o in objects(values) if o["kind"] == OPERATOR and "operator" in o["metadata"]["name"]
    )
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "prom-auth", "secret": {"secretName": "prom-auth"}} in volumes


BAD = [
    ({"prometheus": {"timeout": 0}}, "/prometheus/timeout"),
    ({"prometheus": {"rateWindow": "soon"}}, "/prometheus/rateWindow"),
    ({"prometheus": {"queries": {"power": 5}}}, "/prometheus/queries/power"),
    ({"prometheus": {"tls": {"insecureSkipVerify": "yes"}}}, "/prometheus/tls/insecureSkipVerify"),
    ({"prometheus": {"tls": {"caFile": "relative/ca.crt"}}}, "/prometheus/tls/caFile"),
    ({"prometheus": {"auth": {"token": "inline"}}}, "additional properties 'token'"),
    ({"operator": {"ioThreads": 0}}, "/operator/ioThreads"),
    ({"trust": {"allowSpecQueries": "yes"}}, "/trust/allowSpecQueries"),
    ({"trust": {"allowedPrometheusUrls": ["ftp://x"]}}, "/trust/allowedPrometheusUrls/0"),
    ({"operator": {"peering": {"lifetime": 0}}}, "/operator/peering/lifetime"),
]


@pytest.mark.parametrize(("values", "where"), BAD, ids=[w for _, w in BAD])
def test_bad_setting_values_are_refused(values: dict[str, Any], where: str) -> None:
    import helm_python
    from chartkit import render

    with pytest.raises(helm_python.HelmValuesError) as refused:
        render(values)
    assert where in str(refused.value)
