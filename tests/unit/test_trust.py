"""Issue 11: a GreenModel author must not reach what the operator can reach. Per-GreenModel Prometheus URLs
only from the operator's allowlist, and no response body in status or Events; PromQL from a GreenModel only
when enabled, and then scoped to its namespace (refused when it cannot be parsed); no service-account token
in the serving pod; images restricted to allowed prefixes when the operator says so."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kopf
import pytest

from greenllm.api import v1alpha1 as api
from greenllm.calibration import default_energy_model
from greenllm.controller import handlers, prometheus
from greenllm.controller.config import OperatorConfig
from greenllm.controller.exporter import OperatorMetrics
from greenllm.controller.fleet_loop import FleetLoop
from greenllm.core import render
from greenllm.core import status as st
from greenllm.core.step import initial_decision
from greenllm.loop import promql

NS = "team-a"
EVIL = "http://169.254.169.254/latest/meta-data"
SECRET = "AKIA-SECRET-FROM-THE-ERROR-BODY"


def spec_body(**metrics_spec: Any) -> dict[str, Any]:
    return {
        "model": {"name": "m", "paramsBillions": 8},
        "variants": [
            {"name": "bf16", "precision": "bf16", "image": "vllm/vllm-openai:v0.11.1", "quality": 1.0},
            {"name": "int4", "precision": "int4", "image": "vllm/vllm-openai:v0.11.1", "quality": 0.95},
        ],
        "slo": {"minQuality": 0.5},
        "replicas": {"min": 1, "max": 6},
        "metrics": metrics_spec,
    }


class FakeKube:
    """get_green_model / patch_green_model_status / Deployments, in memory."""

    def __init__(self, gm: dict[str, Any]) -> None:
        self.gm = gm
        self.patches: list[dict[str, Any]] = []

    async def get_green_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        copy: dict[str, Any] = json.loads(json.dumps(self.gm))
        return copy

    async def patch_green_model_status(
        self, namespace: str, name: str, change: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.patches.append(change)
        self.gm["status"] = {**(self.gm.get("status") or {}), **change}
        return self.gm

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    async def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return patch


T0 = "2026-01-01T00:00:00Z"


def run_tick(
    body: dict[str, Any], config: OperatorConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[str], FakeKube, list[str]]:
    """One loop tick against a Prometheus that answers every query with an HTTP 500 holding a secret."""
    energy = default_energy_model()
    spec = api.GreenModelSpec.model_validate(body)
    decision = initial_decision(spec, energy)
    gm = {
        "metadata": {"name": "gm", "namespace": NS, "uid": "u-1", "generation": 1, "resourceVersion": "1"},
        "spec": body,
        "status": st.patch(
            api.GreenModelStatus(last_decision=st.decision_record(decision, "2026-01-01T00:00:00Z"))
        ),
    }
    kube = FakeKube(gm)
    urls: list[str] = []
    asked: list[str] = []

    def fake_query(url: str, timeout_s: float, retries: int = 2, connection: Any = None) -> promql.Query:
        urls.append(url)

        def run(q: str) -> Any:
            asked.append(q)
            raise RuntimeError(f"HTTP Status Code 500 (b'{SECRET}')")

        return run

    events: list[str] = []
    monkeypatch.setattr(prometheus, "prometheus_query", fake_query)
    monkeypatch.setattr(kopf, "warn", lambda _o, *, reason, message: events.append(message))
    monkeypatch.setattr(kopf, "info", lambda _o, *, reason, message: events.append(message))
    loop = FleetLoop(lambda _: asyncio.sleep(0, 60.0), concurrency=1)
    memo = kopf.Memo(
        config=config,
        prometheus={},
        fleet={},
        kube=kube,
        energy=energy,
        telemetry=OperatorMetrics(),
        loop=loop,
    )

    async def one_tick() -> None:
        tracked = loop.track(gm)
        tracked.memory.compile(gm, config)  # what the watch handler does with each event
        await handlers.tick(memo, tracked, _Logger())  # type: ignore[arg-type]

    asyncio.run(one_tick())
    return urls, events, kube, asked


class _Logger:
    def warning(self, *args: Any) -> None: ...

    def info(self, *args: Any) -> None: ...


# --- 7: spec.metrics.prometheusUrl ---------------------------------------------------------------------


def test_a_prometheus_url_not_in_the_allowlist_is_never_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    urls, _, _, _ = run_tick(spec_body(prometheusUrl=EVIL), OperatorConfig(), monkeypatch)
    assert EVIL not in urls
    assert urls == []


def test_a_prometheus_url_not_in_the_allowlist_makes_the_spec_invalid() -> None:
    from greenllm.controller import trust

    spec = api.GreenModelSpec.model_validate(spec_body(prometheusUrl=EVIL))
    with pytest.raises(ValueError, match=r"spec\.metrics\.prometheusUrl"):
        trust.check(spec, NS, OperatorConfig())
    allowed = OperatorConfig(allowed_prometheus_urls=(EVIL + "/",))
    trust.check(spec, NS, allowed)
    assert trust.prometheus_url(spec, allowed) == EVIL
    own = api.GreenModelSpec.model_validate(spec_body(prometheusUrl=OperatorConfig().prometheus_url + "/"))
    trust.check(own, NS, OperatorConfig())  # the operator's own URL needs no allowlist


def test_no_error_body_reaches_status_or_events(monkeypatch: pytest.MonkeyPatch) -> None:
    config = OperatorConfig(allowed_prometheus_urls=(EVIL,))
    urls, events, kube, _ = run_tick(spec_body(prometheusUrl=EVIL), config, monkeypatch)
    assert urls == [EVIL]
    written = json.dumps(kube.patches)
    assert kube.patches and SECRET not in written
    assert all(SECRET not in e for e in events)
    (condition,) = [
        c for c in kube.gm["status"]["conditions"] if c["type"] == api.ConditionType.METRICS_AVAILABLE.value
    ]
    assert condition["status"] == "False"
    assert condition["message"] == "query power_w failed: RuntimeError (HTTP 500)"


def test_the_failure_text_names_query_class_and_status_only() -> None:
    from greenllm.controller import trust

    class Response:
        status_code = 403

    class HTTPError(Exception):
        response = Response()

    try:
        try:
            raise HTTPError(f"forbidden: {SECRET}")
        except HTTPError as e:
            raise promql.MetricsError(f"carbon_intensity: {e}") from e
    except promql.MetricsError as e:
        text = trust.metrics_failure(e)
    assert text == "query carbon_intensity failed: HTTPError (HTTP 403)"
    assert trust.metrics_failure(promql.MetricsError(f"malformed sample {SECRET}")) == (
        "query unknown failed: MetricsError"
    )


# --- 8: PromQL from a GreenModel -----------------------------------------------------------------------


def test_spec_queries_are_refused_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from greenllm.controller import trust

    body = spec_body(queries={"requests_waiting": "sum(secret_metric)"})
    spec = api.GreenModelSpec.model_validate(body)
    with pytest.raises(ValueError, match=r"spec\.metrics\.queries\.requests_waiting"):
        trust.check(spec, NS, OperatorConfig())
    carbon = api.GreenModelSpec.model_validate(spec_body(carbonIntensity={"query": "max(other_ns_metric)"}))
    with pytest.raises(ValueError, match=r"spec\.metrics\.carbonIntensity\.query"):
        trust.check(carbon, NS, OperatorConfig())
    _, _, _, asked = run_tick(body, OperatorConfig(), monkeypatch)
    assert not any("secret_metric" in q for q in asked)


def test_enabled_spec_queries_run_scoped_to_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    body = spec_body(
        queries={"requests_waiting": 'sum(secret_metric{namespace="kube-system"})'},
        carbonIntensity={"query": "max(grid_carbon)"},
    )
    config = OperatorConfig(allow_spec_queries=True)
    _, _, _, asked = run_tick(body, config, monkeypatch)
    assert asked  # the loop ran
    spec = api.GreenModelSpec.model_validate(body)
    queries = promql.build_queries(spec, NS, "gm-serve")
    assert queries.queries["requests_waiting"] == (
        f'sum(secret_metric{{namespace="kube-system", namespace="{NS}"}})'
    )
    assert queries.carbon_query == f'max(grid_carbon{{namespace="{NS}"}})'
    # the operator's own templates are left as they are
    default = promql.build_queries(api.GreenModelSpec.model_validate(spec_body()), NS, "gm-serve")
    assert queries.queries["power_w"] == default.queries["power_w"]


SCOPED = [
    ("up", 'up{namespace="ns"}'),
    ("vllm:num_requests_waiting", 'vllm:num_requests_waiting{namespace="ns"}'),
    ('m{a="b",}', 'm{a="b", namespace="ns"}'),
    ('{__name__="secret"}', '{__name__="secret", namespace="ns"}'),
    ('{__name__=~".+"}', '{__name__=~".+", namespace="ns"}'),
    ("sum by (le) (rate(x_bucket[5m]))", 'sum by (le) (rate(x_bucket{namespace="ns"}[5m]))'),
    ("sum(rate(x[5m])) without (pod)", 'sum(rate(x{namespace="ns"}[5m])) without (pod)'),
    ("a / on(pod) group_left(node) b", 'a{namespace="ns"} / on(pod) group_left(node) b{namespace="ns"}'),
    ("a and bool b or c unless d", 'a{namespace="ns"} and bool b{namespace="ns"} or c{namespace="ns"} '
     'unless d{namespace="ns"}'),
    ('label_replace(m, "dst", "$1 } {", "src", "(.*)")',
     'label_replace(m{namespace="ns"}, "dst", "$1 } {", "src", "(.*)")'),
    ('m{a="x\\"}", b!~`}`}', 'm{a="x\\"}", b!~`}`, namespace="ns"}'),
    ("max_over_time(m[1h:5m] offset 1h30m) > Inf",
     'max_over_time(m{namespace="ns"}[1h:5m] offset 1h30m) > Inf'),
    ("m[1h:]", 'm{namespace="ns"}[1h:]'),
    ("m @ start() + 1e3 * -0x1f", 'm{namespace="ns"} @ start() + 1e3 * -0x1f'),
    ("m # hide {\n + n", 'm{namespace="ns"} \n + n{namespace="ns"}'),
    ("time() - max(timestamp(m))", 'time() - max(timestamp(m{namespace="ns"}))'),
    ("topk(3, count_values(\"v\", m))", 'topk(3, count_values("v", m{namespace="ns"}))'),
]  # fmt: skip


@pytest.mark.parametrize(("promql", "scoped"), SCOPED, ids=[p for p, _ in SCOPED])
def test_every_selector_is_scoped(promql: str, scoped: str) -> None:
    from greenllm.controller.trust import scope_promql

    assert scope_promql(promql, "ns") == scoped


UNPARSEABLE = [
    "",
    "m{a}",  # no operator
    'm{a="b" c="d"}',  # no comma
    'm{"quoted.name"}',  # UTF-8 names: not understood, so not run
    "m{a=b}",
    "sum(m",
    "m)",
    "m[5m}",
    "m; drop",
    'm{a="unterminated}',
    "m{pods}",  # a placeholder left unfilled
    "m[foo]",
]


@pytest.mark.parametrize("promql", UNPARSEABLE)
def test_what_cannot_be_parsed_is_refused(promql: str) -> None:
    from greenllm.controller import trust

    with pytest.raises(trust.UnscopableQueryError):
        trust.scope_promql(promql, "ns")
    spec = api.GreenModelSpec.model_validate(spec_body(queries={"requests_waiting": promql or " "}))
    with pytest.raises(trust.UntrustedSpecError, match="cannot be scoped"):
        trust.check(spec, NS, OperatorConfig(allow_spec_queries=True))


# --- 9: the serving pod and its image ------------------------------------------------------------------


def test_the_serving_pod_mounts_no_service_account_token() -> None:
    spec = api.GreenModelSpec.model_validate(spec_body())
    owner = {"metadata": {"name": "gm", "namespace": NS, "uid": "u-1"}}
    deployment = render.deployment(owner, spec, initial_decision(spec, default_energy_model()))
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_images_outside_the_allowed_prefixes_make_the_spec_invalid() -> None:
    from greenllm.controller import trust

    spec = api.GreenModelSpec.model_validate(spec_body())
    trust.check(spec, NS, OperatorConfig())  # default: any image
    trust.check(spec, NS, OperatorConfig(allowed_image_prefixes=("vllm/vllm-openai:",)))
    with pytest.raises(trust.UntrustedSpecError, match=r"variants\[bf16\]\.image"):
        trust.check(spec, NS, OperatorConfig(allowed_image_prefixes=("ghcr.io/acme/",)))


def test_reconcile_sets_spec_valid_false_for_an_untrusted_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    body = spec_body(prometheusUrl=EVIL)
    gm = {"metadata": {"name": "gm", "namespace": NS, "uid": "u-1", "generation": 1}, "spec": body}
    kube = FakeKube(gm)
    monkeypatch.setattr(kopf, "warn", lambda *_a, **_k: None)
    monkeypatch.setattr(kopf, "info", lambda *_a, **_k: None)
    memo = kopf.Memo(config=OperatorConfig(), kube=kube, energy=default_energy_model())
    memo.loop = FleetLoop(lambda _: asyncio.sleep(0, 60.0), concurrency=1)

    async def reconcile() -> None:
        tracked = memo.loop.track(gm)
        tracked.memory.compile(gm, memo.config)  # what the watch handler does with each event
        assert tracked.memory.needs_reconcile
        await handlers.reconcile(memo, tracked, _Logger())  # type: ignore[arg-type]
        assert not tracked.memory.needs_reconcile  # reported, not retried

    asyncio.run(reconcile())
    (condition,) = kube.gm["status"]["conditions"]
    assert condition["type"] == api.ConditionType.SPEC_VALID.value
    assert condition["status"] == "False"
    assert "spec.metrics.prometheusUrl" in condition["message"]
