"""The Reconciler on simulated GPUs with hand-made cluster views: restraint, retries, record and restore."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.agent.gpu.base import GpuErrorKind
from greenllm.agent.gpu.simulated import SimulatedBackend, simulated_h100
from greenllm.agent.kube import ClusterView, NodePod
from greenllm.agent.ownership import GreenModelRef, GreenModelSetting
from greenllm.agent.podresources import DeviceAllocation, PodDevices
from greenllm.agent.reconcile import Action, FastGpu, FastPod, Reconciler, Restraint
from greenllm.agent.state import SettingRecord, StateStore
from greenllm.core.fasttier import FastTier, QueueReading
from greenllm.core.performance import PowerSetting
from greenllm.core.power import Backoff, HoldPolicy, Requested
from tests.agent.conftest import gpu_uuid

DEFAULT_MW = 700_000
GM = GreenModelRef(namespace="serving", name="llama", uid="gm-uid")
POD = PodDevices("serving", "llama-0", (DeviceAllocation("server", "nvidia.com/gpu", gpu_uuid(0)),))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def view(limit_w: float | None = 350.0, clock_mhz: int | None = None, owned: bool = True) -> ClusterView:
    return ClusterView(
        pods={"serving/llama-0": NodePod("serving", "llama-0", "pod-uid", GM if owned else None)},
        greenmodels={GM.key: GreenModelSetting(ref=GM, requested=Requested(limit_w, clock_mhz))},
    )


def make(
    tmp_path: Path, clock: Clock, *, hold_s: float = 60.0, gpus: int = 2
) -> tuple[Reconciler, SimulatedBackend, StateStore]:
    sim_file = tmp_path / "sim.json"
    backend = (
        SimulatedBackend(sim_file, clock=clock)
        if sim_file.exists()
        else SimulatedBackend(sim_file, [simulated_h100(i, gpu_uuid(i)) for i in range(gpus)], clock=clock)
    )
    store = StateStore(tmp_path / "state")
    policy = Restraint(
        hold=HoldPolicy(deadband_mw=5_000, min_hold_s=hold_s), backoff=Backoff(base_s=10.0, max_s=80.0)
    )
    return Reconciler(backend, store, policy, clock=clock, sleep=lambda _s: None), backend, store


def limit(backend: SimulatedBackend, index: int = 0) -> int:
    return int(backend.state(gpu_uuid(index))["limit_mw"])


# ---------------------------------------------------------------------------------------------- restraint


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.5, max_value=45.0),  # seconds to the next cycle
            st.sampled_from([None, 250.0, 300.0, 302.0, 450.0, 700.0]),  # what the GreenModel asks
        ),
        min_size=2,
        max_size=40,
    )
)
def test_oscillating_requests_change_a_gpu_at_most_once_per_hold_window(
    steps: list[tuple[float, float | None]],
) -> None:
    hold = 60.0
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        reconciler, backend, _ = make(Path(tmp), clock, hold_s=hold, gpus=1)
        change_times = []
        for dt, request in steps:
            clock.now += dt
            before = backend.state(gpu_uuid(0))["changes"]
            reconciler.reconcile(view(request), [POD])
            if backend.state(gpu_uuid(0))["changes"] != before:
                change_times.append(clock.now)
        for earlier, later in itertools.pairwise(change_times):
            assert later - earlier >= hold, change_times
        # And nothing is stuck: after a quiet hold window the GPU ends where the last request says.
        clock.now += hold
        reconciler.reconcile(view(steps[-1][1]), [POD])
        wanted = DEFAULT_MW if steps[-1][1] is None else int(steps[-1][1] * 1000)
        assert abs(limit(backend) - wanted) < 5_000


def test_small_moves_stay_in_the_deadband(tmp_path: Path) -> None:
    clock = Clock()
    reconciler, backend, _ = make(tmp_path, clock, hold_s=0.0)
    reconciler.reconcile(view(300.0), [POD])
    for watts in (301.0, 303.0, 304.9):
        clock.now += 100
        reconciler.reconcile(view(watts), [POD])
    assert limit(backend) == 300_000
    clock.now += 100
    reconciler.reconcile(view(305.0), [POD])
    assert limit(backend) == 305_000


# ---------------------------------------------------------------------------------------------- failures


def test_driver_failure_is_retried_with_backoff(tmp_path: Path) -> None:
    clock = Clock()
    reconciler, backend, store = make(tmp_path, clock)
    backend.set_fault(gpu_uuid(0), "set_power_limit", GpuErrorKind.NO_PERMISSION)

    first = reconciler.reconcile(view(), [POD]).gpus[0]
    assert (first.action, first.error) == (Action.FAILED, "no_permission")
    assert store.load()[gpu_uuid(0)].pending  # written ahead: a crash now would still restore it

    clock.now += 5  # backoff base is 10 s
    assert reconciler.reconcile(view(), [POD]).gpus[0].action is Action.BACKOFF
    clock.now += 6
    assert reconciler.reconcile(view(), [POD]).gpus[0].action is Action.FAILED  # 2nd failure: 20 s
    clock.now += 15
    assert reconciler.reconcile(view(), [POD]).gpus[0].action is Action.BACKOFF

    backend.set_fault(gpu_uuid(0), "set_power_limit", None)
    clock.now += 6
    assert reconciler.reconcile(view(), [POD]).gpus[0].action is Action.APPLIED
    assert limit(backend) == 350_000
    assert not store.load()[gpu_uuid(0)].pending


def test_reading_failure_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    clock = Clock()
    reconciler, backend, _ = make(tmp_path, clock)
    backend.set_fault(gpu_uuid(1), "read", GpuErrorKind.GPU_LOST)
    report = reconciler.reconcile(view(), [POD])
    assert report.gpus[1].error == "gpu_lost"
    assert report.gpus[0].action is Action.APPLIED


def test_unknown_device_ids_are_ignored(tmp_path: Path) -> None:
    clock = Clock()
    reconciler, backend, _ = make(tmp_path, clock)
    pod = PodDevices("serving", "llama-0", (DeviceAllocation("server", "nvidia.com/gpu", "GPU-not-here"),))
    report = reconciler.reconcile(view(), [pod])
    assert {g.action for g in report.gpus} == {Action.UNCHANGED}
    assert limit(backend, 0) == limit(backend, 1) == DEFAULT_MW


def test_mig_instances_held_by_one_greenmodel_are_owned(tmp_path: Path) -> None:
    clock = Clock()
    sim_file = tmp_path / "sim.json"
    gpu = simulated_h100(0, gpu_uuid(0))
    gpu["mig_uuids"] = ["MIG-aaaa", "MIG-bbbb"]
    backend = SimulatedBackend(sim_file, [gpu], clock=clock)
    reconciler = Reconciler(backend, StateStore(tmp_path / "state"), clock=clock)
    mine = PodDevices(
        "serving", "llama-0", (DeviceAllocation("server", "nvidia.com/mig-3g.40gb", "MIG-aaaa"),)
    )
    report = reconciler.reconcile(view(), [mine])
    assert report.gpus[0].action is Action.APPLIED
    theirs = PodDevices("other", "job", (DeviceAllocation("c", "nvidia.com/mig-3g.40gb", "MIG-bbbb"),))
    clock.now += 1
    report = reconciler.reconcile(view(), [mine, theirs])
    assert report.gpus[0].action is Action.RESTORED
    assert report.gpus[0].role is not None and report.gpus[0].role.value == "shared"


# ------------------------------------------------------------------------------------- record and restore


def test_restart_after_a_crash_restores_from_the_record(tmp_path: Path) -> None:
    clock = Clock()
    first, backend, store = make(tmp_path, clock)
    first.reconcile(view(300.0, 1770), [POD])
    assert limit(backend) == 300_000 and backend.state(gpu_uuid(0))["locked_clock_mhz"] == 1770
    del first  # killed: no restore ran

    second, backend, _ = make(tmp_path, clock)  # same GPU file, same hostPath
    reports = second.startup()
    assert [r.action for r in reports] == [Action.RESTORED]
    assert limit(backend) == DEFAULT_MW
    assert backend.state(gpu_uuid(0))["locked_clock_mhz"] is None
    assert store.load() == {}
    # Still owned: the next cycle caps again, without waiting for a hold time.
    assert second.reconcile(view(300.0), [POD]).gpus[0].action is Action.APPLIED


def test_unreadable_record_restores_every_gpu(tmp_path: Path) -> None:
    clock = Clock()
    _, backend, store = make(tmp_path, clock)
    backend.set_power_limit(gpu_uuid(1), 250_000)  # someone's cap; the record that knew it is lost
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{not json")

    reconciler, backend, store = make(tmp_path, clock)
    reconciler.startup()
    assert limit(backend, 0) == limit(backend, 1) == DEFAULT_MW
    assert store.load() == {}
    assert store.path.with_suffix(".corrupt.json").read_text() == "{not json"


def test_record_of_a_gpu_that_left_the_node_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    _, _, store = make(tmp_path, clock)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"default_limit_mw": 700_000, "limit_mw": 300_000, "clock_mhz": None, "changed_at": 1.0}
    store.path.write_text(json.dumps({"format": 1, "gpus": {"GPU-gone": entry}}))
    reconciler, _, store = make(tmp_path, clock)
    assert reconciler.startup() == []
    assert store.load() == {}


def test_restore_all_on_shutdown(tmp_path: Path) -> None:
    clock = Clock()
    reconciler, backend, store = make(tmp_path, clock)
    both = PodDevices(
        "serving",
        "llama-0",
        (
            DeviceAllocation("server", "nvidia.com/gpu", gpu_uuid(0)),
            DeviceAllocation("server", "nvidia.com/gpu", gpu_uuid(1)),
        ),
    )
    reconciler.reconcile(view(), [both])
    assert limit(backend, 0) == limit(backend, 1) == 350_000
    reports = reconciler.restore_all()
    assert {r.action for r in reports} == {Action.RESTORED}
    assert limit(backend, 0) == limit(backend, 1) == DEFAULT_MW
    assert store.load() == {}


def test_restore_is_retried_when_the_driver_fails_once(tmp_path: Path) -> None:
    clock = Clock()
    reconciler, backend, store = make(tmp_path, clock)
    reconciler.reconcile(view(), [POD])
    backend.set_fault(gpu_uuid(0), "set_power_limit", GpuErrorKind.UNKNOWN)
    reports = reconciler.restore_all()
    assert reports[0].action is Action.FAILED  # three attempts, all failed: the record keeps it
    assert gpu_uuid(0) in store.load()
    backend.set_fault(gpu_uuid(0), "set_power_limit", None)
    assert reconciler.restore_all()[0].action is Action.RESTORED
    assert limit(backend) == DEFAULT_MW


def test_dry_run_keeps_a_shadow_and_writes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    sim_file = tmp_path / "sim.json"
    backend = SimulatedBackend(sim_file, [simulated_h100(0, gpu_uuid(0))], clock=clock)
    store = StateStore(tmp_path / "state")
    reconciler = Reconciler(backend, store, dry_run=True, clock=clock)
    assert reconciler.reconcile(view(), [POD]).gpus[0].action is Action.APPLIED
    clock.now += 1
    assert reconciler.reconcile(view(), [POD]).gpus[0].action is Action.UNCHANGED  # logged once
    assert limit(backend) == DEFAULT_MW
    assert not store.path.exists()


def test_failed_clock_lock_is_redone_even_when_the_limit_went_through(tmp_path: Path) -> None:
    clock = Clock()
    reconciler, backend, _ = make(tmp_path, clock)
    backend.set_fault(gpu_uuid(0), "lock_clocks", GpuErrorKind.NO_PERMISSION)
    assert reconciler.reconcile(view(300.0, 1770), [POD]).gpus[0].action is Action.FAILED
    assert limit(backend) == 300_000 and backend.state(gpu_uuid(0))["locked_clock_mhz"] is None
    backend.set_fault(gpu_uuid(0), "lock_clocks", None)
    clock.now += 11
    assert reconciler.reconcile(view(300.0, 1770), [POD]).gpus[0].action is Action.APPLIED
    assert backend.state(gpu_uuid(0))["locked_clock_mhz"] == 1770


def test_fast_gpu_arrivals_per_pod() -> None:
    tier = FastTier(efficient=PowerSetting(limit_w=300.0), burst=PowerSetting(limit_w=600.0))
    a, b = FastPod("serving/llama-0", "10.0.0.1", 8000), FastPod("serving/llama-1", "10.0.0.2", 8000)
    fast = FastGpu(gpu=simulated_h100(0, gpu_uuid(0)), owner=GM, pods=(a, b), tier=tier, since=0.0)

    def q(in_system: float) -> QueueReading:
        return QueueReading(waiting=in_system - 1, running=1)

    assert fast.arrivals(a.key, q(1), 10.0) is None  # nothing to compare with
    assert fast.arrivals(b.key, q(5), 0.0) is None  # each pod (time-sliced GPU) its own
    assert fast.arrivals(a.key, q(4), 12.0) == 5.0  # 3 more in the system, 2 finished
    assert fast.arrivals(b.key, q(5), 0.0) == 0.0
    assert fast.arrivals(a.key, q(1), 13.0) == 0.0  # 3 fewer, 1 finished: clamped, never negative
    assert fast.arrivals(a.key, q(2), 1.0) is None  # the counter went down: vLLM restarted
    assert fast.arrivals(a.key, q(3), 1.0) == 1.0
    assert fast.arrivals(a.key, None, None) is None  # a failed read
    assert fast.arrivals(a.key, q(9), 2.0) is None  # starts afresh
    assert fast.arrivals(a.key, q(9), None) is None  # no counter
    assert fast.arrivals(a.key, q(9), 3.0) is None
    assert fast.arrivals(b.key, q(7), 1.0) == 3.0  # b unaffected by a's gaps


# ---------------------------------------------------------------------------------------------- isolation


class _Broken(SimulatedBackend):
    """A backend whose set_power_limit on one GPU raises something that is not a GpuError (a bug, a value
    nothing refused): what must not stop the other GPUs."""

    broken: str = ""

    def set_power_limit(self, uuid: str, limit_mw: int) -> None:
        if uuid == self.broken:
            raise OverflowError("cannot convert float infinity to integer")
        super().set_power_limit(uuid, limit_mw)


def _broken(tmp_path: Path, clock: Clock, broken: str) -> tuple[Reconciler, _Broken, StateStore]:
    backend = _Broken(tmp_path / "sim.json", [simulated_h100(i, gpu_uuid(i)) for i in range(2)], clock=clock)
    backend.broken = broken
    store = StateStore(tmp_path / "state")
    return Reconciler(backend, store, clock=clock, sleep=lambda _s: None), backend, store


def test_one_gpus_error_is_reported_as_failed_and_the_other_gpus_are_reconciled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    reconciler, backend, store = _broken(tmp_path, clock, gpu_uuid(0))
    both = PodDevices(
        "serving",
        "llama-0",
        tuple(DeviceAllocation("server", "nvidia.com/gpu", gpu_uuid(i)) for i in range(2)),
    )

    report = reconciler.reconcile(view(), [both])

    assert report.cluster_known
    gpu0, gpu1 = report.gpus
    assert (gpu0.action, gpu0.error) == (Action.FAILED, "internal")
    assert "OverflowError" in gpu0.message
    assert gpu1.action is Action.APPLIED and limit(backend, 1) == 350_000
    assert store.load()[gpu_uuid(0)].pending  # written ahead: the next agent restores it
    assert any(gpu_uuid(0) in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_one_gpus_error_does_not_stop_the_start_up_restore_of_the_others(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state")
    store.save(
        {
            gpu_uuid(i): SettingRecord(
                default_limit_mw=DEFAULT_MW, limit_mw=300_000, clock_mhz=None, changed_at=9.0
            )
            for i in range(2)
        }
    )
    reconciler, backend, _ = _broken(tmp_path, clock, gpu_uuid(0))
    backend.broken = ""
    backend.set_power_limit(gpu_uuid(1), 300_000)
    backend.broken = gpu_uuid(0)

    reports = {r.uuid: r for r in reconciler.startup()}

    assert reports[gpu_uuid(0)].action is Action.FAILED
    assert reports[gpu_uuid(1)].action is Action.RESTORED
    assert limit(backend, 1) == DEFAULT_MW
    assert set(store.load()) == {gpu_uuid(0)}  # still to restore
