"""Operator settings: read once at start-up, never at import.

One source for every `greenllm run` setting: the command-line flag, else the GREENLLM_* environment
variable, else the default. `SETTINGS` lists each (field, flag, variable, parser, help); the CLI builds
its flags from it and the Helm chart sets each through its flag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from greenllm.api.durations import parse_duration

if TYPE_CHECKING:
    from greenllm.controller.prometheus import PrometheusConnection


# The Lease library needs a retry period >= 1 s under a renew deadline under the lease duration.
MIN_LEASE_DURATION_S = 3


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the flag or the variable."""


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    namespaces: tuple[str, ...] = field(default_factory=tuple)  # empty = all namespaces
    metrics_port: int = 9400
    probe_port: int = 8080
    log_level: str = "info"
    default_carbon_intensity_g_per_kwh: float | None = None
    peering_name: str | None = None  # None = standalone (one operator replica)
    priority: int = 0
    peering_lifetime_s: int = 60  # how long a silent peer (e.g. a crashed leader) still counts
    # Leader election (controller/leader.py) for standalone operators: one Lease, so that a second
    # operator started by accident waits instead of acting (and counting the energy) twice.
    leader_election: bool = True
    leader_election_namespace: str = "greenllm-system"  # the chart sets its release's namespace
    leader_election_id: str = "greenllm-operator"  # the Lease's name; shards need distinct ones
    lease_duration_s: int = 15
    prometheus_timeout_s: float = 5.0
    # The operator's own API requests (controller/kube.py), as controller-runtime's --kube-api-qps/-burst.
    kube_qps: float = 200.0
    kube_burst: int = 400
    # Status is written when something its readers see changes (decision, replicas, conditions), else
    # the accounting (energy, observed power) at most this often: a restart resumes from the persisted
    # sample time, and the energy counter's increase covers the time since (nothing is lost).
    accounting_write_period_s: float = 60.0
    io_threads: int = 64  # threads for blocking Prometheus and Kubernetes calls
    rate_window: str = "1m"  # PromQL range for rate() and histogram quantiles
    queries: dict[str, str] = field(default_factory=dict)  # overrides of metrics.DEFAULT_QUERIES by name
    # Prometheus connection: certificates are verified unless insecure_skip_verify is set explicitly.
    prometheus_ca_file: str | None = None  # PEM bundle to verify the server with (default: system CAs)
    prometheus_insecure_skip_verify: bool = False
    prometheus_bearer_token_file: str | None = None  # re-read on every request (rotated tokens)
    prometheus_username: str | None = None  # basic auth, with the password from prometheus_password_file
    prometheus_password_file: str | None = None
    # Trust (README "Trust model"): what a GreenModel author may make the operator do (controller/trust.py).
    allowed_prometheus_urls: tuple[str, ...] = field(default_factory=tuple)  # empty: only prometheus_url
    allow_spec_queries: bool = False  # spec.metrics.queries / carbonIntensity.query, namespace-scoped
    allowed_image_prefixes: tuple[str, ...] = field(default_factory=tuple)  # empty: any image

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        return cls.from_sources({}, env)

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Each setting from `flags` (field name -> value, None = not given), else `env`, else the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for s in SETTINGS:
            given = flags.get(s.field)
            if given is not None and given != []:
                values[s.field] = s.from_flag(given)
            elif env.get(s.env, "") != "":
                try:
                    values[s.field] = s.parse(env[s.env])
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{s.env}={env[s.env]!r}: {exc}") from exc
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Settings that only make sense together."""
        if bool(self.prometheus_username) != bool(self.prometheus_password_file):
            raise ConfigError(
                "basic auth needs both --prometheus-username and --prometheus-password-file "
                "(GREENLLM_PROMETHEUS_USERNAME, GREENLLM_PROMETHEUS_PASSWORD_FILE)"
            )
        if self.prometheus_username and self.prometheus_bearer_token_file:
            raise ConfigError("give either a bearer token file or basic auth for Prometheus, not both")
        if self.lease_duration_s < MIN_LEASE_DURATION_S:
            raise ConfigError(f"--lease-duration must be >= {MIN_LEASE_DURATION_S}: {self.lease_duration_s}")
        if self.prometheus_insecure_skip_verify and self.prometheus_ca_file:
            raise ConfigError("--prometheus-ca-file and --prometheus-insecure-skip-verify exclude each other")

    @property
    def elects_leader(self) -> bool:
        """Peered operators follow kopf's peering instead; a Lease as well would block the one to resume."""
        return self.leader_election and self.peering_name is None

    def prometheus_connection(self) -> PrometheusConnection:
        from greenllm.controller.prometheus import PrometheusConnection

        return PrometheusConnection(
            ca_file=self.prometheus_ca_file,
            insecure_skip_verify=self.prometheus_insecure_skip_verify,
            bearer_token_file=self.prometheus_bearer_token_file,
            username=self.prometheus_username,
            password_file=self.prometheus_password_file,
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` return this config."""
        env: dict[str, str] = {}
        for s in SETTINGS:
            value = getattr(self, s.field)
            if value is None:
                continue
            env[s.env] = s.render(value)
        return env


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise ValueError(f"not a TCP port: {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def _window(text: str) -> str:
    parse_duration(text)  # raises ValueError with the reason
    return text


def _queries(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError('expected a JSON object of query name -> PromQL, e.g. {"power": "..."}')
    return value


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _log_level(text: str) -> str:
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return text


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Setting:
    """One `greenllm run` setting: its config field, flag, environment variable and parser."""

    field: str
    flag: str
    env: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    kind: str = "value"  # "value" | "list" (repeatable flag, comma-separated variable) | "switch"

    def from_flag(self, value: Any) -> Any:
        if self.kind == "list":  # each flag value is parsed like the variable: a tuple of names
            return tuple(n for v in value for n in (v if isinstance(v, tuple) else (v,)))
        if self.kind == "switch":
            return bool(value)
        return value

    def render(self, value: Any) -> str:
        if self.kind == "list":
            return ",".join(value)
        if self.kind == "switch":
            return "true" if value else "false"
        if isinstance(value, dict):
            return json.dumps(value)
        return str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("prometheus_url", "--prometheus-url", "GREENLLM_PROMETHEUS_URL", str,
            "Prometheus base URL (http:// or https://)", "URL"),
    Setting("namespaces", "--namespace", "GREENLLM_NAMESPACES", _namespaces,
            "watch only this namespace (repeat; the variable is comma-separated)", "NS",
            "list"),
    Setting("metrics_port", "--metrics-port", "GREENLLM_METRICS_PORT", _port,
            "port of the operator's own /metrics (0: not served)", "PORT"),
    Setting("probe_port", "--probe-port", "GREENLLM_PROBE_PORT", _port,
            "port of the liveness endpoint /healthz", "PORT"),
    Setting("log_level", "--log-level", "GREENLLM_LOG_LEVEL", _log_level,
            f"one of {', '.join(LOG_LEVELS)}", "LEVEL"),
    Setting("default_carbon_intensity_g_per_kwh", "--default-carbon-intensity",
            "GREENLLM_DEFAULT_CARBON_INTENSITY", _nonneg_float,
            "gCO2/kWh used when a GreenModel has no live carbon intensity", "G"),
    Setting("peering_name", "--peering", "GREENLLM_PEERING", str,
            "kopf peering name for several operators (default: standalone)", "NAME"),
    Setting("priority", "--priority", "GREENLLM_PRIORITY", int,
            "peering priority; give replicas distinct ones", "N"),
    Setting("peering_lifetime_s", "--peering-lifetime", "GREENLLM_PEERING_LIFETIME", _positive_int,
            "seconds a silent peer (e.g. a crashed operator) still counts", "SECONDS"),
    Setting("leader_election", "--leader-election", "GREENLLM_LEADER_ELECTION", _bool,
            "elect one leader through a Lease (true/false; standalone operators only: --peering replaces it)",
            "BOOL"),
    Setting("leader_election_namespace", "--leader-election-namespace", "GREENLLM_LEADER_ELECTION_NAMESPACE",
            str, "namespace of the leader Lease (the in-cluster operator's)", "NS"),
    Setting("leader_election_id", "--leader-election-id", "GREENLLM_LEADER_ELECTION_ID", str,
            "name of the leader Lease; operators that serve disjoint namespaces need distinct ones", "NAME"),
    Setting("lease_duration_s", "--lease-duration", "GREENLLM_LEASE_DURATION", _positive_int,
            "seconds a leader's Lease lasts without renewal (renewed every 2/15 of it, given up at 2/3)",
            "SECONDS"),
    Setting("prometheus_timeout_s", "--prometheus-timeout", "GREENLLM_PROMETHEUS_TIMEOUT", _positive_float,
            "seconds before a Prometheus query times out", "SECONDS"),
    Setting("kube_qps", "--kube-api-qps", "GREENLLM_KUBE_API_QPS", _positive_float,
            "sustained requests per second of the operator's own Kubernetes client", "QPS"),
    Setting("kube_burst", "--kube-api-burst", "GREENLLM_KUBE_API_BURST", _positive_int,
            "requests the operator's own Kubernetes client may send at once above its QPS", "N"),
    Setting("accounting_write_period_s", "--accounting-write-period", "GREENLLM_ACCOUNTING_WRITE_PERIOD",
            _nonneg_float, "seconds between status writes that only carry accounting (energy, observed "
            "power), and at least as many ticks as make that period at the interval (a process that is "
            "behind writes less often); changes readers see are written at once (0: every tick)", "SECONDS"),
    Setting("io_threads", "--io-threads", "GREENLLM_IO_THREADS", _positive_int,
            "threads for blocking Prometheus and Kubernetes calls", "N"),
    Setting("rate_window", "--rate-window", "GREENLLM_RATE_WINDOW", _window,
            "PromQL range of rate() and histogram quantiles, e.g. 1m", "DURATION"),
    Setting("queries", "--queries", "GREENLLM_QUERIES", _queries,
            "JSON object overriding PromQL templates by name (as spec.metrics.queries)", "JSON"),
    Setting("prometheus_ca_file", "--prometheus-ca-file", "GREENLLM_PROMETHEUS_CA_FILE", str,
            "PEM CA bundle to verify Prometheus' certificate (default: the system's CAs)", "FILE"),
    Setting("prometheus_insecure_skip_verify", "--prometheus-insecure-skip-verify",
            "GREENLLM_PROMETHEUS_INSECURE_SKIP_VERIFY", _bool,
            "do not verify Prometheus' TLS certificate (unsafe; logged as a warning)", None, "switch"),
    Setting("prometheus_bearer_token_file", "--prometheus-bearer-token-file",
            "GREENLLM_PROMETHEUS_BEARER_TOKEN_FILE", str,
            "file holding a bearer token for Prometheus (re-read on every request)", "FILE"),
    Setting("prometheus_username", "--prometheus-username", "GREENLLM_PROMETHEUS_USERNAME", str,
            "basic-auth user for Prometheus (with --prometheus-password-file)", "USER"),
    Setting("prometheus_password_file", "--prometheus-password-file", "GREENLLM_PROMETHEUS_PASSWORD_FILE",
            str, "file holding the basic-auth password for Prometheus", "FILE"),
    Setting("allowed_prometheus_urls", "--allowed-prometheus-url", "GREENLLM_ALLOWED_PROMETHEUS_URLS",
            _namespaces, "a spec.metrics.prometheusUrl GreenModels may use (repeat; the variable is "
            "comma-separated; default: none, only --prometheus-url)", "URL", "list"),
    Setting("allow_spec_queries", "--allow-spec-queries", "GREENLLM_ALLOW_SPEC_QUERIES", _bool,
            "run PromQL from spec.metrics.queries / carbonIntensity.query, scoped to the GreenModel's "
            "namespace (default: refused)", None, "switch"),
    Setting("allowed_image_prefixes", "--allowed-image-prefix", "GREENLLM_ALLOWED_IMAGE_PREFIXES",
            _namespaces, "an image prefix variants must start with (repeat; the variable is comma-separated; "
            "default: any image)", "PREFIX", "list"),
)  # fmt: skip

assert {s.field for s in SETTINGS} == {f.name for f in fields(OperatorConfig)}, "a setting has no flag"
