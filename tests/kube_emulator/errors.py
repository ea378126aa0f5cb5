"""The API server's error answers (a `Status` object with a reason and details), as kmock errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kmock

from tests.kube_emulator.resources import ResourceSpec


def api_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    # Non-empty details: kmock would put a Python traceback there (it still does for unexpected errors: 500).
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def not_found(spec: ResourceSpec, name: str) -> kmock.KubernetesError:
    return api_error(
        404,
        "NotFound",
        f'{spec.plural}.{spec.group or "core"} "{name}" not found',
        name=name,
        group=spec.group,
        kind=spec.plural,
    )


def invalid(spec: ResourceSpec, name: str, causes: Sequence[str]) -> kmock.KubernetesError:
    what = f"{spec.kind}.{spec.group}" if spec.group else spec.kind
    return api_error(
        422,
        "Invalid",
        f'{what} "{name}" is invalid: {"; ".join(causes)}',
        name=name,
        group=spec.group,
        kind=spec.kind,
        causes=[{"message": c} for c in causes],
    )


def conflict(spec: ResourceSpec, name: str, message: str) -> kmock.KubernetesError:
    what = f"{spec.plural}.{spec.group}" if spec.group else spec.plural
    return api_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {what} "{name}": {message}',
        name=name,
        group=spec.group,
        kind=spec.plural,
    )
