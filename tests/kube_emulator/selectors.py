"""Label selectors and field selectors, parsed and matched as the API server does on lists and watches."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_SET_REQ = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector syntax: `a=b,c!=d,e in (f,g),h notin (i),j,!k`. ValueError if malformed."""
    for requirement in _split_requirements(selector):
        if match := _SET_REQ.match(requirement):
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            present = match["key"] in labels and labels[match["key"]] in values
            if present != (match["op"] == "in"):
                return False
        elif match := _EQ_REQ.match(requirement):
            equal = labels.get(match["key"]) == match["value"]
            if equal != (match["op"] != "!="):
                return False
        elif match := _EXISTS_REQ.match(requirement):
            if (match["key"] in labels) == bool(match["neg"]):
                return False
        else:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
    return True


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, Mapping):  # e.g. Event `source`: the API server matches its component
        return str(node.get("component", ""))
    return str(node)


def parse_field_selector(selector: str, allowed: Iterable[str]) -> list[tuple[str, bool, str]]:
    """(path, equal?, value) requirements; ValueError on bad syntax or a field the server does not index."""
    allowed = set(allowed)
    out = []
    for requirement in _split_requirements(selector):
        match = _EQ_REQ.match(requirement)
        if match is None:
            raise ValueError(f"invalid field selector: {requirement!r}")
        if match["key"] not in allowed:
            raise ValueError(f"field label not supported: {match['key']}")
        out.append((match["key"], match["op"] != "!=", match["value"]))
    return out


def field_selector_matches(requirements: Sequence[tuple[str, bool, str]], obj: Mapping[str, Any]) -> bool:
    return all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)
