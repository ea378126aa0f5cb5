"""`greenllm run` settings: flag > GREENLLM_* environment > default, for every setting; the Prometheus
connection (TLS verification, CA bundle, bearer token file, basic auth) the client is built with."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from greenllm.cli import build_parser
from greenllm.controller.config import SETTINGS, ConfigError, OperatorConfig
from greenllm.controller.prometheus import PrometheusConnection, prometheus_client, prometheus_query

# field -> (flag text, value it gives, environment text, value it gives)
CASES: dict[str, tuple[str, Any, str, Any]] = {
    "prometheus_url": ("https://flag:9090", "https://flag:9090", "http://env:9090", "http://env:9090"),
    "namespaces": ("a", ("a",), "b, c", ("b", "c")),
    "metrics_port": ("9500", 9500, "9600", 9600),
    "probe_port": ("8500", 8500, "8600", 8600),
    "log_level": ("debug", "debug", "warning", "warning"),
    "default_carbon_intensity_g_per_kwh": ("100", 100.0, "200.5", 200.5),
    "peering_name": ("flagpeers", "flagpeers", "envpeers", "envpeers"),
    "priority": ("5", 5, "7", 7),
    "peering_lifetime_s": ("30", 30, "90", 90),
    "leader_election": ("true", True, "false", False),
    "leader_election_namespace": ("flagns", "flagns", "envns", "envns"),
    "leader_election_id": ("flag-lease", "flag-lease", "env-lease", "env-lease"),
    "lease_duration_s": ("5", 5, "30", 30),
    "prometheus_timeout_s": ("2.5", 2.5, "9", 9.0),
    "kube_qps": ("5", 5.0, "7.5", 7.5),
    "kube_burst": ("10", 10, "20", 20),
    "accounting_write_period_s": ("0", 0.0, "30", 30.0),
    "io_threads": ("8", 8, "16", 16),
    "rate_window": ("2m", "2m", "30s", "30s"),
    "queries": ('{"power": "up"}', {"power": "up"}, '{"power": "down"}', {"power": "down"}),
    "prometheus_ca_file": ("/flag/ca.pem", "/flag/ca.pem", "/env/ca.pem", "/env/ca.pem"),
    "prometheus_insecure_skip_verify": ("", True, "true", True),
    "prometheus_bearer_token_file": ("/flag/token", "/flag/token", "/env/token", "/env/token"),
    "prometheus_username": ("flaguser", "flaguser", "envuser", "envuser"),
    "prometheus_password_file": ("/flag/pw", "/flag/pw", "/env/pw", "/env/pw"),
    "allowed_prometheus_urls": (
        "https://a:9090",
        ("https://a:9090",),
        "http://b, http://c",
        ("http://b", "http://c"),
    ),
    "allow_spec_queries": ("", True, "true", True),
    "allowed_image_prefixes": ("ghcr.io/a/", ("ghcr.io/a/",), "ghcr.io/b/, vllm/", ("ghcr.io/b/", "vllm/")),
}
# Settings checked together with another one (basic auth needs both halves).
COMPANIONS: dict[str, dict[str, str]] = {
    "prometheus_username": {"GREENLLM_PROMETHEUS_PASSWORD_FILE": "/companion/pw"},
    "prometheus_password_file": {"GREENLLM_PROMETHEUS_USERNAME": "companion"},
}
BY_FIELD = {s.field: s for s in SETTINGS}


def test_every_config_field_has_a_case() -> None:
    assert set(CASES) == {f.name for f in fields(OperatorConfig)} == set(BY_FIELD)


def _config(argv: list[str], env: dict[str, str]) -> OperatorConfig:
    args = build_parser().parse_args(["run", *argv])
    return OperatorConfig.from_sources({s.field: getattr(args, s.field) for s in SETTINGS}, env)


def _flag(name: str, text: str) -> list[str]:
    setting = BY_FIELD[name]
    return [setting.flag] if setting.kind == "switch" else [setting.flag, text]


@pytest.mark.parametrize("name", sorted(CASES))
def test_flag_wins_over_environment_over_default(name: str) -> None:
    flag_text, flag_value, env_text, env_value = CASES[name]
    setting = BY_FIELD[name]
    env = {setting.env: env_text, **COMPANIONS.get(name, {})}
    default = getattr(OperatorConfig(), name)
    assert getattr(_config([], {}), name) == default
    assert getattr(_config([], env), name) == env_value
    assert getattr(_config(_flag(name, flag_text), env), name) == flag_value
    if setting.kind != "switch":
        assert env_value != default and flag_value != env_value, "the case must tell the sources apart"


def test_prometheus_url_from_the_environment_reaches_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    """`greenllm run` used to pass its flag's default and so ignored GREENLLM_PROMETHEUS_URL."""
    import kopf

    import greenllm.cli as cli
    from greenllm.controller import prometheus

    seen: dict[str, Any] = {}
    monkeypatch.setenv("GREENLLM_PROMETHEUS_URL", "http://from-env:9090")
    monkeypatch.setenv("GREENLLM_RATE_WINDOW", "5m")
    monkeypatch.setattr(cli, "kube_credentials_problem", lambda: None)
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setattr(cli, "_set_log_level", lambda level: None)
    monkeypatch.setattr(prometheus, "_default_connection", prometheus.PrometheusConnection())
    assert cli.main(["run", "--io-threads", "3"]) == 0
    config: OperatorConfig = seen["memo"].config
    assert config.prometheus_url == "http://from-env:9090"
    assert config.rate_window == "5m" and config.io_threads == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GREENLLM_IO_THREADS": "many"}, "GREENLLM_IO_THREADS='many'"),
        ({"GREENLLM_IO_THREADS": "0"}, "must be > 0"),
        ({"GREENLLM_RATE_WINDOW": "soon"}, "GREENLLM_RATE_WINDOW"),
        ({"GREENLLM_QUERIES": "[1]"}, "JSON object"),
        ({"GREENLLM_LOG_LEVEL": "loud"}, "GREENLLM_LOG_LEVEL"),
        ({"GREENLLM_PROMETHEUS_INSECURE_SKIP_VERIFY": "maybe"}, "true or false"),
        ({"GREENLLM_PROMETHEUS_USERNAME": "u"}, "needs both"),
        (
            {"GREENLLM_PROMETHEUS_BEARER_TOKEN_FILE": "/t", "GREENLLM_PROMETHEUS_USERNAME": "u",
             "GREENLLM_PROMETHEUS_PASSWORD_FILE": "/p"},
            "not both",
        ),
        (
            {"GREENLLM_PROMETHEUS_CA_FILE": "/ca", "GREENLLM_PROMETHEUS_INSECURE_SKIP_VERIFY": "1"},
            "exclude each other",
        ),
    ],
)  # fmt: skip
def test_a_bad_setting_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as error:
        OperatorConfig.from_env(env)
    assert message in str(error.value)


def test_to_env_round_trips() -> None:
    config = OperatorConfig(
        namespaces=("a", "b"),
        peering_name="p",
        queries={"power": "x"},
        default_carbon_intensity_g_per_kwh=12.5,
        prometheus_bearer_token_file="/t",
    )
    assert OperatorConfig.from_env(config.to_env()) == config


# ------------------------------------------------------------------------------------ the connection


def test_certificates_are_verified_by_default() -> None:
    assert OperatorConfig().prometheus_connection().verify is True
    client = prometheus_client("https://p:9090", 1.0, 0, PrometheusConnection())
    assert client._session.verify is True and client.auth is None


def test_a_ca_bundle_is_what_the_session_verifies_with() -> None:
    connection = OperatorConfig(prometheus_ca_file="/etc/ca.pem").prometheus_connection()
    assert prometheus_client("https://p:9090", 1.0, 0, connection)._session.verify == "/etc/ca.pem"


def test_skipping_verification_is_explicit_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    from greenllm.controller import prometheus

    connection = OperatorConfig(prometheus_insecure_skip_verify=True).prometheus_connection()
    assert prometheus_client("https://p:9090", 1.0, 0, connection)._session.verify is False
    previous = prometheus._default_connection
    try:
        prometheus.set_default_connection(connection)
    finally:
        prometheus._default_connection = previous
    assert "NOT verified" in caplog.text


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str | None]]]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_is_read_from_its_file_on_every_request(
    recorder: tuple[str, list[str | None]], tmp_path: Path
) -> None:
    url, seen = recorder
    token = tmp_path / "token"
    token.write_text("first\n")
    query = prometheus_query(url, 2.0, connection=PrometheusConnection(bearer_token_file=str(token)))
    query("up")
    token.write_text("rotated")
    query("up")
    assert seen == ["Bearer first", "Bearer rotated"]


def test_basic_auth_reads_the_password_file(recorder: tuple[str, list[str | None]], tmp_path: Path) -> None:
    url, seen = recorder
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    connection = OperatorConfig(
        prometheus_username="greenllm", prometheus_password_file=str(password)
    ).prometheus_connection()
    prometheus_query(url, 2.0, connection=connection)("up")
    assert seen == ["Basic " + base64.b64encode(b"greenllm:s3cret").decode()]


def test_no_auth_sends_no_authorization(recorder: tuple[str, list[str | None]]) -> None:
    url, seen = recorder
    prometheus_query(url, 2.0, connection=PrometheusConnection())("up")
    assert seen == [None]
