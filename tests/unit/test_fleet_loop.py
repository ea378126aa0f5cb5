"""The fleet loop (controller.fleet_loop): what it keeps of each GreenModel, when each one's tick is due
(the pure Schedule, with the times passed in), and the task that runs the ticks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from greenllm.api import v1alpha1 as api
from greenllm.controller.fleet_loop import FleetLoop, Schedule, Tracked, phase_of, tracked_view
from greenllm.core import status as st
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting

T = "2026-01-01T00:00:00Z"


def _green_model(name: str = "llama", uid: str = "u-1", generation: int = 4) -> dict[str, Any]:
    decision = Decision("bf16", 3, PowerSetting(limit_w=400.0), 1200.0, "planned")
    conditions = st.set_condition([], api.ConditionType.READY, False, "Progressing", "1/3", T, 4)
    status = st.decided(
        decision,
        ready_replicas=1,
        replicas_text="1/3",
        conditions=conditions,
        last_decision=st.decision_record(decision, T),
        controller_state=api.ControllerState(period_start=0.0, history=((0.0, 3),)),
    )
    return {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "GreenModel",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": uid,
            "generation": generation,
            "resourceVersion": "77",
            "finalizers": ["greenllm.io/finalizer"],
            "annotations": {"greenllm.io/last-handled-configuration": "{...}"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"model": {"name": "m"}},
        "status": st.patch(status),
    }


# ------------------------------------------------------------------------------------------ tracked_view


def test_the_view_keeps_what_ticks_and_the_watcher_read_and_not_the_spec_or_kopfs_annotations() -> None:
    gm = _green_model()
    view = tracked_view(gm)
    assert view["metadata"] == {
        k: gm["metadata"][k] for k in ("name", "namespace", "uid", "generation", "resourceVersion")
    }
    assert "spec" not in view
    assert view["status"] is gm["status"]  # the event's own object: kopf replaces bodies, never edits one
    assert (view["apiVersion"], view["kind"]) == ("greenllm.io/v1alpha1", "GreenModel")  # Events need them
    # What the Deployment watcher makes of it is what it would make of the whole object.
    deployment = {"metadata": {"name": "llama"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}}
    whole = st.deployment_seen(st.read(gm["status"]), deployment, T, 4)
    assert whole is not None and whole == st.deployment_seen(st.read(view["status"]), deployment, T, 4)


def test_the_view_of_a_deleting_green_model_says_so() -> None:
    gm = _green_model()
    gm["metadata"]["deletionTimestamp"] = T
    assert tracked_view(gm)["metadata"]["deletionTimestamp"] == T


# ------------------------------------------------------------------------------------------------ Schedule

A, B = ("team", "a"), ("team", "b")


def test_a_new_green_model_is_due_at_once_and_then_at_its_interval_with_its_phase_after_the_first() -> None:
    schedule = Schedule()
    schedule.add(A, now=100.0, phase=0.25)
    assert schedule.pop_due(100.0) == A
    assert schedule.pop_due(100.0) is None  # running: not due again until it finishes
    # The first tick asked for 10 s: the second is 10 * 1.25 after the first started.
    assert schedule.finished(A, started=100.0, interval=10.0, now=100.5) == 112.5
    assert schedule.pop_due(112.4) is None
    assert schedule.pop_due(112.5) == A
    # Fixed rate after that: an interval after the tick was due, however long the tick took.
    assert schedule.finished(A, started=112.5, interval=10.0, now=114.0) == 122.5


def test_a_late_tick_keeps_its_phase_and_one_over_an_interval_late_skips_what_it_missed() -> None:
    """Ticks that start late together must not stay together: the next is due on the GreenModel's own
    grid (due + interval), whenever the late one started; one that missed a whole tick skips it."""
    schedule = Schedule()
    schedule.add(A, now=0.0, phase=0.25)
    schedule.pop_due(0.0)
    assert schedule.finished(A, started=0.0, interval=10.0, now=0.1) == 12.5
    assert schedule.pop_due(16.0) == A  # started 3.5 s late
    assert schedule.finished(A, started=16.0, interval=10.0, now=16.2) == 22.5  # not 26.0
    assert schedule.pop_due(34.0) == A  # 11.5 s late: the tick due at 32.5 was missed
    assert schedule.finished(A, started=34.0, interval=10.0, now=34.1) == 42.5  # not 32.5, nor 44.0
    assert schedule.pop_due(42.5) == A
    assert schedule.finished(A, started=42.5, interval=0.0, now=42.6) == 42.6  # "at once" stays at once


def test_a_tick_longer_than_its_interval_is_followed_at_once_not_in_the_past() -> None:
    schedule = Schedule()
    schedule.add(A, now=0.0, phase=0.0)
    schedule.pop_due(0.0)
    assert schedule.finished(A, started=0.0, interval=1.0, now=3.0) == 3.0


def test_the_earliest_due_comes_first_and_each_only_once() -> None:
    schedule = Schedule()
    schedule.add(A, now=0.0, phase=0.0)
    schedule.add(B, now=0.0, phase=0.0)
    schedule.add(A, now=5.0, phase=0.9)  # already tracked: unchanged
    assert {schedule.pop_due(0.0), schedule.pop_due(0.0)} == {A, B}
    schedule.finished(A, started=0.0, interval=5.0, now=0.1)
    schedule.finished(B, started=0.0, interval=3.0, now=0.1)
    assert schedule.next_due() == 3.0
    assert schedule.pop_due(4.0) == B
    assert schedule.pop_due(4.0) is None


def test_a_wake_makes_a_waiting_green_model_due_now_and_a_running_one_due_when_it_ends() -> None:
    schedule = Schedule()
    schedule.add(A, now=0.0, phase=0.0)
    schedule.pop_due(0.0)
    schedule.finished(A, started=0.0, interval=60.0, now=1.0)
    schedule.wake(A, now=2.0)
    assert schedule.pop_due(2.0) == A
    schedule.wake(A, now=2.5)  # while it runs
    assert schedule.finished(A, started=2.0, interval=60.0, now=3.0) == 3.0
    assert schedule.pop_due(3.0) == A
    assert schedule.finished(A, started=3.0, interval=60.0, now=3.5) == 63.0  # the wake was used once


def test_new_and_woken_green_models_go_before_overdue_ticks() -> None:
    """A process that is behind has many overdue ticks; a new GreenModel (its turn makes its Deployment)
    and a changed spec must not wait behind them all."""
    schedule = Schedule()
    late = [("team", f"late-{i}") for i in range(5)]
    for key in late:
        schedule.add(key, now=0.0, phase=0.0)
    for key in late:
        assert schedule.pop_due(0.0) == key
        schedule.finished(key, started=0.0, interval=10.0, now=0.1)  # all due at 10.0
    woken = late[3]
    schedule.wake(woken, now=50.0)  # overdue already: now first too
    schedule.add(A, now=50.0, phase=0.0)
    assert schedule.pop_due(50.0) == woken
    assert schedule.pop_due(50.0) == A
    assert [schedule.pop_due(50.0) for _ in range(4)] == [k for k in late if k != woken]
    # After its first turn, a new GreenModel ticks in turn with the others.
    schedule.finished(A, started=50.0, interval=10.0, now=50.1)
    assert schedule.next_due() == 60.0


def test_a_removed_green_model_is_never_due_and_its_running_tick_ends_quietly() -> None:
    schedule = Schedule()
    schedule.add(A, now=0.0, phase=0.0)
    schedule.add(B, now=0.0, phase=0.0)
    assert schedule.pop_due(0.0) in (A, B)
    schedule.remove(A)
    schedule.remove(B)
    assert schedule.pop_due(100.0) is None and schedule.next_due() is None
    assert schedule.finished(A, started=0.0, interval=1.0, now=1.0) is None
    assert len(schedule) == 0


def test_phases_spread_over_the_interval() -> None:
    phases = [phase_of(f"uid-{i}") for i in range(1000)]
    assert all(0.0 <= p < 1.0 for p in phases)
    assert min(phases) < 0.05 and max(phases) > 0.95  # not all in one corner
    assert phase_of("uid-1") == phase_of("uid-1")  # stable across restarts


# ---------------------------------------------------------------------------------------------- FleetLoop


def _run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 30.0))  # the bound only stops a hang


def test_the_loop_ticks_each_tracked_green_model_with_its_latest_view() -> None:
    async def scenario() -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        done = asyncio.Event()

        async def tick(tracked: Tracked) -> float:
            seen.append((tracked.key[1], tracked.gm["metadata"]["generation"]))
            if len(seen) == 3:
                done.set()
            return 0.01

        loop = FleetLoop(tick, concurrency=4)
        loop.start()
        loop.track(_green_model("a"))
        loop.track(_green_model("b"))
        await asyncio.sleep(0)
        loop.track(_green_model("a", generation=5))  # the next tick of "a" sees the new view
        await done.wait()
        await loop.stop()
        return seen

    seen = _run(scenario())
    assert {s[0] for s in seen[:2]} == {"a", "b"}
    assert ("a", 5) in seen


def test_a_green_model_created_again_under_its_name_starts_with_a_fresh_memory() -> None:
    async def scenario() -> tuple[Tracked, Tracked, Tracked]:
        loop = FleetLoop(lambda tracked: asyncio.sleep(0, 60.0), concurrency=1)
        first = loop.track(_green_model(uid="u-1"))
        same = loop.track(_green_model(uid="u-1"))
        again = loop.track(_green_model(uid="u-2"))
        return first, same, again

    first, same, again = _run(scenario())
    assert same is first
    assert again is not first and again.memory is not first.memory


def test_a_write_response_refreshes_the_view_but_not_across_a_new_uid() -> None:
    async def scenario() -> tuple[str, str]:
        loop = FleetLoop(lambda tracked: asyncio.sleep(0, 60.0), concurrency=1)
        loop.track(_green_model())
        written = _green_model()
        written["metadata"]["resourceVersion"] = "78"
        loop.saw(written)
        stranger = _green_model(uid="u-9")
        stranger["metadata"]["resourceVersion"] = "99"
        loop.saw(stranger)
        loop.saw(None)
        tracked = loop.latest(("team", "llama"))
        assert tracked is not None
        return tracked.gm["metadata"]["resourceVersion"], tracked.uid or ""

    assert _run(scenario()) == ("78", "u-1")


def test_a_lagging_watch_does_not_put_back_a_view_older_than_the_last_write() -> None:
    def at(version: str, generation: int = 4) -> dict[str, Any]:
        gm = _green_model(generation=generation)
        gm["metadata"]["resourceVersion"] = version
        return gm

    async def scenario() -> list[str]:
        loop = FleetLoop(lambda tracked: asyncio.sleep(0, 60.0), concurrency=1)
        seen: list[str] = []

        def view() -> str:
            tracked = loop.latest(("team", "llama"))
            assert tracked is not None
            return str(tracked.gm["metadata"]["resourceVersion"])

        loop.track(at("10"))
        loop.saw(at("20"))  # this process's write
        for event in (at("15"), at("20"), at("25")):  # an older event still in the stream, the echo, later
            loop.track(event)
            seen.append(view())
        loop.saw(at("30"))
        loop.track(at("28", generation=5))  # a spec change is never held back, whatever the order
        seen.append(view())
        return seen

    assert _run(scenario()) == ["20", "20", "25", "28"]


def test_no_more_than_the_concurrency_ticks_run_at_once_and_a_failing_tick_does_not_stop_the_loop() -> None:
    async def scenario() -> tuple[int, int]:
        running = peak = ticks = 0
        done = asyncio.Event()

        async def tick(tracked: Tracked) -> float:
            nonlocal running, peak, ticks
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1
            ticks += 1
            if ticks >= 40:
                done.set()
            if tracked.key[1] == "m-0":
                raise RuntimeError("a bad tick")
            return 0.001

        loop = FleetLoop(tick, concurrency=3, retry_s=0.001)
        loop.start()
        for i in range(10):
            loop.track(_green_model(f"m-{i}", uid=f"u-{i}"))
        await done.wait()
        await loop.stop()
        return peak, ticks

    peak, ticks = _run(scenario())
    assert peak == 3 and ticks >= 40


def test_a_forgotten_green_model_is_not_ticked_again() -> None:
    async def scenario() -> list[str]:
        names: list[str] = []
        b_ticked = asyncio.Event()

        async def tick(tracked: Tracked) -> float:
            names.append(tracked.key[1])
            if tracked.key[1] == "b" and names.count("b") >= 5:
                b_ticked.set()
            return 0.001

        loop = FleetLoop(tick, concurrency=2)
        loop.start()
        loop.track(_green_model("a", uid="u-a"))
        loop.forget(("team", "a"))
        loop.track(_green_model("b", uid="u-b"))
        await b_ticked.wait()
        await loop.stop()
        return names

    assert "a" not in _run(scenario())


def test_a_wake_ticks_a_green_model_long_before_its_interval() -> None:
    async def scenario() -> int:
        ticks = 0
        second = asyncio.Event()

        async def tick(tracked: Tracked) -> float:
            nonlocal ticks
            ticks += 1
            if ticks == 2:
                second.set()
            return 3600.0

        loop = FleetLoop(tick, concurrency=1)
        loop.start()
        loop.track(_green_model())
        while ticks < 1:
            await asyncio.sleep(0.001)
        loop.wake(("team", "llama"))
        await second.wait()  # without the wake: an hour
        await loop.stop()
        return ticks

    assert _run(scenario()) == 2


def test_a_loop_that_is_not_acting_ticks_nothing() -> None:
    async def scenario() -> int:
        ticks = 0

        async def tick(tracked: Tracked) -> float:
            nonlocal ticks
            ticks += 1
            return 0.001

        loop = FleetLoop(tick, concurrency=1, acting=lambda: False)
        loop.start()
        loop.track(_green_model())
        await asyncio.sleep(0.05)
        await loop.stop()
        return ticks

    assert _run(scenario()) == 0


@pytest.mark.parametrize("count", [1, 50])
def test_stop_cancels_ticks_in_flight(count: int) -> None:
    async def scenario() -> int:
        started = asyncio.Event()
        cancelled = 0

        async def tick(tracked: Tracked) -> float:
            nonlocal cancelled
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled += 1
                raise
            return 1.0

        loop = FleetLoop(tick, concurrency=count)
        loop.start()
        for i in range(count):
            loop.track(_green_model(f"m-{i}", uid=f"u-{i}"))
        await started.wait()
        await asyncio.sleep(0.01)
        await loop.stop()
        return cancelled

    assert _run(scenario()) == count


def test_writers_of_one_green_model_take_turns_and_others_do_not_wait() -> None:
    async def scenario() -> tuple[list[str], int]:
        loop = FleetLoop(lambda _: asyncio.sleep(0, 60.0), concurrency=1)
        order: list[str] = []
        first_in = asyncio.Event()
        release = asyncio.Event()

        async def reconcile() -> None:
            async with loop.writing(A):
                order.append("reconcile in")
                first_in.set()
                await release.wait()
                order.append("reconcile out")

        async def watcher() -> None:
            await first_in.wait()
            async with loop.writing(A):
                order.append("watcher")

        async def other() -> None:
            await first_in.wait()
            async with loop.writing(B):  # another GreenModel: no wait
                order.append("other")
            release.set()

        await asyncio.gather(reconcile(), watcher(), other())
        return order, len(loop._turns)

    order, turns_left = _run(scenario())
    assert order == ["reconcile in", "other", "reconcile out", "watcher"]
    assert turns_left == 0  # nothing kept per GreenModel once no one writes


def test_the_loop_reports_how_late_each_tick_started_and_how_many_run() -> None:
    """With one slot, a second GreenModel due at the same time waits for the first's tick: its lag is at
    least that tick's length. `in_flight` counts the tick holding the slot."""

    async def scenario() -> tuple[list[float], list[int]]:
        lags: list[float] = []
        in_flight: list[int] = []
        both = asyncio.Event()

        async def tick(tracked: Tracked) -> float:
            in_flight.append(loop.in_flight)
            await asyncio.sleep(0.05)
            if len(lags) >= 2:
                both.set()
            return 3600.0

        loop = FleetLoop(tick, concurrency=1, started=lags.append)
        loop.track(_green_model("a", uid="u-a"))
        loop.track(_green_model("b", uid="u-b"))
        loop.start()
        await both.wait()
        await loop.stop()
        return lags, in_flight

    lags, in_flight = _run(scenario())
    assert len(lags) == 2
    assert min(lags) < 0.05 <= max(lags)
    assert in_flight == [1, 1]


def test_stop_returns_when_a_tick_ends_just_as_it_is_called() -> None:
    """The last tick's end wakes the loop's task (waiting, with a timeout, for the next due one) in the same
    turn of the event loop as `stop` cancels it: on Python 3.11 `asyncio.wait_for` then returned instead
    of raising, the task kept running, and `stop` (an operator's shutdown) waited for ever."""

    async def scenario() -> list[str]:
        ended = asyncio.Event()
        ticked: list[str] = []

        async def tick(tracked: Tracked) -> float:
            ticked.append(tracked.key[1])
            await asyncio.sleep(0.01)
            if tracked.key[1] == "b":
                ended.set()
            return 3600.0  # "a" is due again in an hour: the loop waits with that timeout

        loop = FleetLoop(tick, concurrency=1)
        loop.track(_green_model("a", uid="u-a"))
        loop.track(_green_model("b", uid="u-b"))
        loop.start()
        await ended.wait()
        await asyncio.wait_for(loop.stop(), 5.0)
        return ticked

    assert _run(scenario()) == ["a", "b"]
