"""What the operator keeps in kopf's memo, typed: built by the start-up handler, shared by every handler.

kopf hands each GreenModel a shallow copy of the operator's memo, so what all of them share must be made
before the first resource is seen (the dicts and the Book below), and a key set on one resource's copy is
its alone.
"""

from __future__ import annotations

from collections.abc import Callable

import kopf

from greenllm.controller.config import OperatorConfig
from greenllm.controller.exporter import OperatorMetrics
from greenllm.controller.fleet_loop import FleetLoop
from greenllm.controller.fleet_observer import FleetObserver
from greenllm.controller.kube import Kube
from greenllm.controller.leader import LeaderLease
from greenllm.controller.peering import PeeringWatch
from greenllm.core.budget_book import Book
from greenllm.core.energy import EnergyModel
from greenllm.loop.promql import Query


class OperatorMemo(kopf.Memo):
    """kopf's memo (a dict whose keys read as attributes) with the operator's keys typed."""

    config: OperatorConfig
    on_lease_lost: Callable[[], None]  # set by `greenllm run`: stop the process when the Lease is lost
    telemetry: OperatorMetrics
    kube: Kube
    energy: EnergyModel
    prometheus: dict[str, Query]  # URL -> a client, built on first use
    fleet: dict[str, FleetObserver]  # URL -> the fleet queries' answers, shared by every GreenModel
    loop: FleetLoop  # ticks every GreenModel; the watch feeds it what each tick reads
    leader: LeaderLease  # only when leader election is on
    peering: PeeringWatch  # only with kopf peering: whether kopf pauses this operator
    budgets: Book  # EnergyBudgets' allocations and their members' reports (controller/budgets.py)
