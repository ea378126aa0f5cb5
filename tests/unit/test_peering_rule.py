"""controller/peering.py's rule against kopf's own (`process_peering_event`), case by case: the fleet loop
must pause exactly when kopf pauses the operator's handlers."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles  # kopf's pause switch: what its peering turns on
from kopf._cogs.structs import references
from kopf._core.engines import peering as kopf_peering

from greenllm.controller.peering import conflicting

OURS = 50


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def record(priority: int, seconds_ago: float = 0.0, lifetime: int = 60) -> dict[str, Any]:
    """A peer's record as kopf writes it, seen `seconds_ago` (kopf compares with its clock, so: now)."""
    lastseen = now() - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


async def kopf_pauses(status: dict[str, Any], identity: str) -> bool:
    settings = kopf.OperatorSettings()
    settings.peering.name, settings.peering.priority = "greenllm", OURS
    toggle = aiotoggles.Toggle(False)
    woken = asyncio.Event()
    woken.set()  # kopf would sleep until a blocking peer expires: not here
    resource = references.Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
    await kopf_peering.process_peering_event(
        raw_event={"type": "MODIFIED", "object": {"metadata": {"name": "greenllm"}, "status": status}},
        namespace=None,
        resource=resource,
        identity=kopf_peering.Identity(identity),
        settings=settings,
        autoclean=False,
        stream_pressure=woken,
        conflicts_found=toggle,
    )
    return toggle.is_on()


CASES: dict[str, Callable[[], dict[str, Any]]] = {  # built when the test runs: records expire
    "alone": lambda: {"us": record(OURS)},
    "a higher peer": lambda: {"us": record(OURS), "them": record(100)},
    "a higher peer, expired": lambda: {"us": record(OURS), "them": record(100, seconds_ago=61)},
    "a lower peer": lambda: {"us": record(OURS), "them": record(10)},
    "an equal peer": lambda: {"us": record(OURS), "them": record(OURS)},
    "an equal peer, expired": lambda: {"us": record(OURS), "them": record(OURS, seconds_ago=5, lifetime=3)},
    "a lower and a higher peer": lambda: {"us": record(OURS), "low": record(10), "high": record(60)},
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_rule_is_kopfs(case: str) -> None:
    status = CASES[case]()
    assert conflicting(status, OURS, now()) == await kopf_pauses(status, "us")


def test_without_our_own_record_the_loop_waits() -> None:
    """kopf knows its identity; this rule does not, so no live record of our priority means ours is not
    written yet (or expired): wait, where kopf alone with a lower peer would act."""
    assert conflicting({}, OURS, now())
    assert conflicting({"low": record(10)}, OURS, now())
    assert conflicting({"us": record(OURS, seconds_ago=120)}, OURS, now())


def test_an_unreadable_record_counts_as_no_record() -> None:
    assert not conflicting(
        {"us": record(OURS), "odd": {"priority": 100, "lastseen": "yesterday"}}, OURS, now()
    )
    assert not conflicting({"us": record(OURS), "odd": "not a record"}, OURS, now())
    assert not conflicting({"us": record(OURS), "odd": {**record(100), "priority": "high"}}, OURS, now())
