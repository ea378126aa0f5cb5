"""Every handler kopf calls per watch event is a coroutine function: kopf runs a sync handler in a thread
of its executor, a thread hop on each event, and every status write the operator makes comes back as an
event on the GreenModel (thousands a minute at scale)."""

from __future__ import annotations

import kopf
from kopf._core.actions.invocation import is_async_fn

from greenllm.controller import budgets, handlers  # noqa: F401  (registers their handlers)


def test_per_event_handlers_are_coroutine_functions() -> None:
    registry = kopf.get_default_registry()
    per_event = [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]
    assert per_event, "no handlers registered: the test would pass for nothing"
    sync = sorted(h.id for h in per_event if not is_async_fn(h.fn))
    assert sync == []
