"""Scoping PromQL to one namespace, as prom-label-proxy does (pure): every vector selector of a query a
GreenModel author wrote gets a namespace matcher, so the query sees only the author's own namespace.
PromQL it cannot parse is refused (UnscopableQueryError), never run. controller/trust.py decides when."""

from __future__ import annotations

import re


class UnscopableQueryError(ValueError):
    """PromQL the namespace scoping cannot parse: refused rather than run."""


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
