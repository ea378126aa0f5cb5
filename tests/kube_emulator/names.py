"""The API server's validation of object names (DNS-1123 / DNS-1035) and labels
(apimachinery/pkg/util/validation)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def name_problems(name: str, rule: str) -> list[str]:
    """The API server's object-name validation (apimachinery/pkg/util/validation)."""
    if rule == "dns1035":
        ok, limit, what = _DNS1035_LABEL.match(name) is not None, 63, "a DNS-1035 label"
    elif rule == "label":
        ok, limit, what = _DNS1123_LABEL.match(name) is not None, 63, "a lowercase RFC 1123 label"
    else:
        ok, limit, what = _DNS1123_SUBDOMAIN.match(name) is not None, 253, "a lowercase RFC 1123 subdomain"
    problems = []
    if not ok:
        problems.append(f"metadata.name: Invalid value: {name!r}: must be {what}")
    if len(name) > limit:
        problems.append(f"metadata.name: Invalid value: {name!r}: must be no more than {limit} characters")
    return problems


def label_problems(labels: Any, where: str) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [f"{where}: Invalid value: must be a map of strings"]
    problems = []
    for key, value in labels.items():
        prefix, _, short = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix))) or not (
            len(short) <= 63 and _LABEL_NAME.match(short)
        ):
            problems.append(f"{where}: Invalid value: {key!r}: name part must be a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"{where}: Invalid value: {value!r}: a valid label must be 63 characters or less")
    return problems
