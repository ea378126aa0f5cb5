"""What the operator's log keeps of kopf's per-object lines (cli.SuccessOfPerEventHandlers)."""

from __future__ import annotations

import logging

import pytest

from greenllm import cli


def test_the_operator_log_drops_only_the_success_lines_of_per_event_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("kopf.objects.test")
    log.addFilter(cli.SuccessOfPerEventHandlers(["track"]))
    with caplog.at_level(logging.INFO, logger="kopf.objects.test"):
        log.info("Handler 'track' succeeded.")
        log.error("Handler 'track' failed with an exception. Will retry.")
        log.info("Handler 'keep_budget' succeeded.")
        log.info("energy budget period rolled over")
    assert [r.getMessage() for r in caplog.records] == [
        "Handler 'track' failed with an exception. Will retry.",
        "Handler 'keep_budget' succeeded.",
        "energy budget period rolled over",
    ]


def test_the_per_event_handlers_are_the_operators_event_handlers() -> None:
    from greenllm.controller import handlers

    assert all(callable(getattr(handlers, name)) for name in handlers.PER_EVENT_HANDLERS)
