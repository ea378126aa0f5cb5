"""The operator process's garbage collector: settled for a heap that is mostly long-lived, and timed.

What the operator holds lives as long as its GreenModels (tracked views, compiled specs, loop state);
what churns is freed by reference counting (Prometheus answers, API responses), which the cyclic collector
does not need to see. With CPython's default thresholds (700, 10, 10) it saw them anyway: decoding one
fleet answer at 5,000 GreenModels allocates some 15,000 containers, dozens of young collections ran during
each decode, promoted the half-built answer to the oldest generation, and every few answers that
generation was due in full. Measured with a gc callback in `hack/bench_operator.py --n 5000`: 98 full
collections in the first 380 s, up to 2.1 s each (the event loop stalled meanwhile), and 119 s of the
380 s spent in the collector.

`settle` freezes what start-up built (modules, kopf, the Kubernetes client's models: never garbage) so
that no collection scans it again, and raises the young generation's threshold above the containers of one
answer, so that a transient structure is freed before it is ever promoted. Reference cycles are still
collected, only less often; most of what the young collections find is kopf's (each event's `kopf.Body`
refers to itself through its meta/spec/status views, so the event's parsed object waits for a collection).
`greenllm_operator_gc_seconds_total` says what the collector costs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# Net container allocations between young collections. Above one fleet answer's (3 containers per
# GreenModel: 15,000 at N = 5,000) so that it is freed before a collection can promote it; a young
# collection then scans at most this many objects (a few milliseconds).
YOUNG_THRESHOLD = 50_000


class _CollectionTimes:
    """Wall time spent in each generation's collections, by a gc callback (process-wide, as the collector
    is). Collections do not nest and run with the GIL held, so one start time is enough."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started


_TIMES = _CollectionTimes()


def settle() -> None:
    """Call once, after start-up's imports and before the operator's work: freeze, raise, time."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    if _TIMES not in gc.callbacks:
        gc.callbacks.append(_TIMES)


class CollectionTimeCollector(Collector):
    """`greenllm_operator_gc_seconds_total{generation}`: time in the garbage collector (from `settle` on)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "greenllm_operator_gc_seconds",
            "Wall time the operator process spent in garbage collections, by generation",
            labels=["generation"],
        )
        for generation, seconds in enumerate(_TIMES.seconds):
            family.add_metric([str(generation)], seconds)
        yield family
