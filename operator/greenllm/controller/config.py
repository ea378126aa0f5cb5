"""Operator settings: read once at start-up (CLI flags, else GREENLLM_* environment), never at import."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


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
    prometheus_timeout_s: float = 5.0
    io_threads: int = 64  # threads for blocking Prometheus and Kubernetes calls
    rate_window: str = "1m"  # PromQL range for rate() and histogram quantiles
    queries: dict[str, str] = field(default_factory=dict)  # overrides of metrics.DEFAULT_QUERIES by name

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        defaults = cls()
        carbon = env.get("GREENLLM_DEFAULT_CARBON_INTENSITY")
        namespaces = env.get("GREENLLM_NAMESPACES", "")
        return cls(
            prometheus_url=env.get("GREENLLM_PROMETHEUS_URL", defaults.prometheus_url),
            namespaces=tuple(n.strip() for n in namespaces.split(",") if n.strip()),
            metrics_port=int(env.get("GREENLLM_METRICS_PORT", defaults.metrics_port)),
            probe_port=int(env.get("GREENLLM_PROBE_PORT", defaults.probe_port)),
            log_level=env.get("GREENLLM_LOG_LEVEL", defaults.log_level),
            default_carbon_intensity_g_per_kwh=float(carbon) if carbon else None,
            peering_name=env.get("GREENLLM_PEERING") or None,
            priority=int(env.get("GREENLLM_PRIORITY", defaults.priority)),
            peering_lifetime_s=int(env.get("GREENLLM_PEERING_LIFETIME", defaults.peering_lifetime_s)),
            prometheus_timeout_s=float(env.get("GREENLLM_PROMETHEUS_TIMEOUT", defaults.prometheus_timeout_s)),
            rate_window=env.get("GREENLLM_RATE_WINDOW", defaults.rate_window),
            io_threads=int(env.get("GREENLLM_IO_THREADS", defaults.io_threads)),
            queries=json.loads(env.get("GREENLLM_QUERIES", "{}")),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` return this config (for `greenllm run` -> kopf)."""
        env = {
            "GREENLLM_PROMETHEUS_URL": self.prometheus_url,
            "GREENLLM_NAMESPACES": ",".join(self.namespaces),
            "GREENLLM_METRICS_PORT": str(self.metrics_port),
            "GREENLLM_PROBE_PORT": str(self.probe_port),
            "GREENLLM_LOG_LEVEL": self.log_level,
            "GREENLLM_PRIORITY": str(self.priority),
            "GREENLLM_PEERING_LIFETIME": str(self.peering_lifetime_s),
            "GREENLLM_PROMETHEUS_TIMEOUT": str(self.prometheus_timeout_s),
            "GREENLLM_RATE_WINDOW": self.rate_window,
            "GREENLLM_IO_THREADS": str(self.io_threads),
            "GREENLLM_QUERIES": json.dumps(self.queries),
        }
        if self.default_carbon_intensity_g_per_kwh is not None:
            env["GREENLLM_DEFAULT_CARBON_INTENSITY"] = str(self.default_carbon_intensity_g_per_kwh)
        if self.peering_name:
            env["GREENLLM_PEERING"] = self.peering_name
        return env
