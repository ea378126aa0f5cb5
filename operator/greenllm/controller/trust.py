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

if TYPE_CHECKING:
    from greenllm.controller.config import OperatorConfig


class UntrustedSpecError(ValueError):
    """The spec asks for something the operator's configuration does not allow; the message says what."""


class UnscopableQueryError(ValueError):
    """PromQL the namespace scoping cannot parse: refused rather than run."""


# --- PromQL namespace scoping -------------------------------------------------------------------------

_AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
        "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
_KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset"})
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_NUMBER_WORDS = frozenset({"inf", "nan"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:[a-zA-Z0-9_]*))
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<matchop>=~|!~|!=)
  | (?P<op>==|<=|>=|[-+*/%^<>=@,:])
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
    """,
    re.VERBOSE,
)
_PAIRS = {"(": ")", "{": "}", "[": "]"}


def _tokens(promql: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(promql):
        m = _TOKEN.match(promql, pos)
        if m is None:
            raise UnscopableQueryError(f"unexpected {promql[pos]!r} at offset {pos}")
        kind = m.lastgroup or ""
        out.append((kind, m.group()))
        pos = m.end()
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def scope_promql(promql: str, namespace: str) -> str:
    """`promql` with a `namespace="<namespace>"` matcher added to every vector selector: `metric`,
    `metric{...}` and `{...}` (with or without `__name__`). A selector that already names another
    namespace then matches nothing. UnscopableQueryError for anything it cannot parse."""
    if not promql.strip():
        raise UnscopableQueryError("empty query")
    matcher = f'namespace="{_escape(namespace)}"'
    toks = _tokens(promql)
    out: list[str] = []
    stack: list[str] = []
    significant = [i for i, (k, _) in enumerate(toks) if k not in ("space", "comment")]
    following = {a: b for a, b in zip(significant, [*significant[1:], None], strict=True)}
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = following.get(i)
        nxt_text = toks[nxt][1] if nxt is not None else ""
        if kind == "comment":
            i += 1  # dropped: nothing after a '#' on its line may hide from the scoping
            continue
        if kind == "open" and text == "{":
            end = _selector(toks, i)
            out.append(_with_matcher(toks, i, end, matcher))
            i = end + 1
            continue
        if kind == "open":
            stack.append(_PAIRS[text])
        elif kind == "close":
            if not stack or stack.pop() != text:
                raise UnscopableQueryError(f"unbalanced {text!r}")
        elif kind == "ident":
            lowered = text.lower()
            if text in _GROUPING and nxt_text == "(":
                end = _label_list(toks, nxt)  # type: ignore[arg-type]
                out.append("".join(t for k, t in toks[i : end + 1] if k != "comment"))
                i = end + 1
                continue
            if text in _GROUPING or text in _KEYWORDS or lowered in _NUMBER_WORDS:
                pass
            elif nxt_text == "(" and ":" not in text:
                pass  # a function call or an aggregation: sum(...), rate(...)
            elif text in _AGGREGATIONS and nxt_text in _GROUPING:
                pass  # sum by (le) (...)
            elif stack and stack[-1] == "]" and re.fullmatch(r":(?:[0-9]+[a-z]+)*", text):
                pass  # a subquery's step: [1h:5m], [1h:]
            elif stack and stack[-1] == "]":
                raise UnscopableQueryError(f"unexpected {text!r} in a range")
            elif nxt_text == "{":
                pass  # metric{...}: the selector that follows gets the matcher
            else:
                out.append(f"{text}{{{matcher}}}")
                i += 1
                continue
        out.append(text)
        i += 1
    if stack:
        raise UnscopableQueryError("unbalanced brackets")
    return "".join(out)


def _label_list(toks: list[tuple[str, str]], start: int) -> int:
    """The index of the ')' closing a `by (a, b)` list that opens at `start`."""
    for j in range(start + 1, len(toks)):
        kind, text = toks[j]
        if kind == "close" and text == ")":
            return j
        if kind not in ("ident", "space", "comment") and text != ",":
            raise UnscopableQueryError(f"unexpected {text!r} in a label list")
    raise UnscopableQueryError("unclosed label list")


def _selector(toks: list[tuple[str, str]], start: int) -> int:
    """The index of the '}' closing the selector at `start`: only `name op "value"` matchers, commas."""
    expect = "name"
    for j in range(start + 1, len(toks)):
        kind, text = toks[j]
        if kind in ("space", "comment"):
            continue
        if kind == "close" and text == "}" and expect in ("name", "comma"):
            return j
        if expect == "name" and kind == "ident" and ":" not in text:
            expect = "op"
        elif expect == "op" and (kind == "matchop" or text == "="):
            expect = "value"
        elif expect == "value" and kind == "string":
            expect = "comma"
        elif expect == "comma" and text == ",":
            expect = "name"
        else:
            raise UnscopableQueryError(f"unexpected {text!r} in a label selector")
    raise UnscopableQueryError("unclosed label selector")


def _with_matcher(toks: list[tuple[str, str]], start: int, end: int, matcher: str) -> str:
    inner = "".join(t for k, t in toks[start + 1 : end] if k != "comment").strip().rstrip(",").strip()
    return "{" + (f"{inner}, {matcher}" if inner else matcher) + "}"


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
    from greenllm.controller.metrics import fill

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
