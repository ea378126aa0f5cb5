"""What a GreenModel author may make the operator do (issue 11: not what the operator itself can reach).

- `spec.metrics.prometheusUrl`: only a URL in the operator's allowlist (`allowed_prometheus_urls`,
  default none: the operator's own URL only); otherwise SpecValid=False and no request is sent.
- `spec.metrics.queries` / `spec.metrics.carbonIntensity.query`: only when the operator enables them
  (`allow_spec_queries`, default off), and then every vector selector is scoped to the GreenModel's own
  namespace (`scope_promql`, as prom-label-proxy does); PromQL it cannot parse is refused, never run.
- `variants[].image`: only with one of the allowed prefixes when the operator sets any.
- A failed query is reported by a fixed text (query name, error class, HTTP status), never the body.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from greenllm.api import v1alpha1 as api
from greenllm.loop.promql_scope import UnscopableQueryError, scope_promql

if TYPE_CHECKING:
    from greenllm.controller.config import OperatorConfig


class UntrustedSpecError(ValueError):
    """The spec asks for something the operator's configuration does not allow; the message says what."""


# --- the checks reconcile and the loop make ------------------------------------------------------------


def _normal_url(url: str) -> str:
    return url.strip().rstrip("/")


def prometheus_url(spec: api.GreenModelSpec, config: OperatorConfig) -> str:
    """The Prometheus to ask for this GreenModel; UntrustedSpecError when its own URL is not allowed."""
    own = spec.metrics.prometheus_url
    if own is None or _normal_url(own) == _normal_url(config.prometheus_url):
        return config.prometheus_url
    if _normal_url(own) in {_normal_url(u) for u in config.allowed_prometheus_urls}:
        return own
    raise UntrustedSpecError(
        "spec.metrics.prometheusUrl: not in the operator's allowed Prometheus URLs "
        "(--allowed-prometheus-url, GREENLLM_ALLOWED_PROMETHEUS_URLS); remove it to use the operator's own"
    )


def spec_queries(spec: api.GreenModelSpec) -> dict[str, str]:
    """The PromQL a GreenModel brings, by the field that holds it."""
    found = {f"spec.metrics.queries.{name}": q for name, q in spec.metrics.queries.items()}
    if spec.metrics.carbon_intensity.query:
        found["spec.metrics.carbonIntensity.query"] = spec.metrics.carbon_intensity.query
    return found


def check(spec: api.GreenModelSpec, namespace: str, config: OperatorConfig) -> None:
    """UntrustedSpecError naming the field when the spec asks for what the operator config does not allow."""
    prometheus_url(spec, config)
    own = spec_queries(spec)
    if own and not config.allow_spec_queries:
        raise UntrustedSpecError(
            f"{', '.join(sorted(own))}: PromQL from a GreenModel is not allowed by the operator "
            "(--allow-spec-queries, GREENLLM_ALLOW_SPEC_QUERIES)"
        )
    from greenllm.loop.promql import fill

    for where, promql in sorted(own.items()):
        try:  # filled with placeholder-free stand-ins: what is parsed is what would run
            scope_promql(fill(promql, _SAMPLE_VALUES), namespace)
        except UnscopableQueryError as e:
            raise UntrustedSpecError(f"{where}: cannot be scoped to the namespace, not run ({e})") from e
    prefixes = config.allowed_image_prefixes
    if prefixes:
        for variant in spec.variants:
            if not any(variant.image.startswith(p) for p in prefixes):
                raise UntrustedSpecError(
                    f"variants[{variant.name}].image {variant.image!r}: not under an allowed image prefix "
                    "(--allowed-image-prefix, GREENLLM_ALLOWED_IMAGE_PREFIXES)"
                )


_SAMPLE_VALUES = {
    "namespace": "ns",
    "pods": "p-[a-z0-9]+-[a-z0-9]+",
    "window": "1m",
    "since": "60s",
    "attainment_window": "300s",
    "ttft_le": "1.0",
    "ttft_le_hi": "2.5",
    "ttft_frac": "0.5",
    "tpot_le": "0.1",
    "tpot_le_hi": "0.15",
    "tpot_frac": "0.5",
}

_QUERY_NAME = re.compile(r"^([A-Za-z0-9_]+): ")
_HTTP_STATUS = re.compile(r"HTTP Status Code (\d{3})")


def metrics_failure(error: BaseException) -> str:
    """A fixed text for MetricsAvailable and its Event: the query's name, the error's class and HTTP
    status only. Never the response body (an error page may hold whatever the server chose to send)."""
    named = _QUERY_NAME.match(str(error))
    query = named.group(1) if named else "unknown"
    cause = error.__cause__ or error
    status = getattr(getattr(cause, "response", None), "status_code", None)
    if status is None:
        found = _HTTP_STATUS.search(str(cause))
        status = found.group(1) if found else None
    text = f"query {query} failed: {type(cause).__name__}"
    return f"{text} (HTTP {status})" if status is not None else text
