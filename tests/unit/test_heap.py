"""The operator's garbage-collector settings (controller/heap.py): what `settle` promises, checked on the
collector's own statistics, never on time."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from greenllm.controller import heap
from greenllm.controller.exporter import OperatorMetrics


@pytest.fixture
def settled() -> Iterator[None]:
    threshold = gc.get_threshold()
    heap.settle()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        gc.callbacks.remove(heap._TIMES)


def _fleet_answer(n: int) -> bytes:
    """A Prometheus answer of a fleet query at `n` GreenModels, as the operator decodes it."""
    result = [
        {"metric": {"namespace": f"ns-{i % 50}", "deployment": f"gm-{i:05d}"}, "value": [1.7e9, str(i)]}
        for i in range(n)
    ]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def test_a_fleet_answer_at_five_thousand_is_freed_before_any_collection_promotes_it(settled: None) -> None:
    body = _fleet_answer(5000)
    gc.collect()  # the young generation starts empty, as after any collection
    before = [s["collections"] for s in gc.get_stats()]
    rows = len(json.loads(body)["data"]["result"])
    assert rows == 5000
    assert [s["collections"] for s in gc.get_stats()] == before  # not one collection during the decode


def test_default_thresholds_would_have_promoted_it() -> None:
    """The test above is not vacuous: with CPython's defaults the same decode runs collections."""
    body = _fleet_answer(5000)
    threshold = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        gc.collect()
        before = gc.get_stats()[0]["collections"]
        json.loads(body)
        assert gc.get_stats()[0]["collections"] > before
    finally:
        gc.set_threshold(*threshold)


def test_settle_freezes_start_up_and_the_operator_exports_collection_time(settled: None) -> None:
    assert gc.get_freeze_count() > 0  # the imports are out of every later collection
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    before = heap._TIMES.seconds[2]
    gc.collect()
    assert heap._TIMES.seconds[2] > before
    exposed = generate_latest(OperatorMetrics().registry).decode()
    assert 'greenllm_operator_gc_seconds_total{generation="2"}' in exposed
