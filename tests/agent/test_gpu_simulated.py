"""The simulated GPU backend behaves like NVML where the agent depends on it, and persists like hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.agent.gpu.base import GpuError, GpuErrorKind, GpuUnavailableError
from greenllm.agent.gpu.simulated import H100_SXM5_BUSY_MW, SimulatedBackend, simulated_h100
from greenllm.core.power import LimitConstraints


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_inventory_and_defaults(tmp_path: Path) -> None:
    backend = SimulatedBackend(tmp_path / "gpus.json", [simulated_h100(0), simulated_h100(1)])
    first, second = backend.inventory()
    assert first.constraints == LimitConstraints(min_mw=200_000, max_mw=700_000, default_mw=700_000)
    assert first.supported_clocks_mhz == (1035, 1770, 1980)
    assert (first.index, second.index) == (0, 1) and first.uuid != second.uuid


def test_limits_outside_constraints_are_invalid(tmp_path: Path) -> None:
    backend = SimulatedBackend(None, [simulated_h100(0)])
    uuid = backend.inventory()[0].uuid
    for bad in (199_999, 700_001):
        with pytest.raises(GpuError) as info:
            backend.set_power_limit(uuid, bad)
        assert info.value.kind is GpuErrorKind.INVALID_ARGUMENT
    with pytest.raises(GpuError):
        backend.lock_clocks(uuid, 1500)


def test_power_is_capped_by_the_limit_and_energy_integrates_it() -> None:
    clock = Clock()
    backend = SimulatedBackend(None, [simulated_h100(0)], clock=clock)
    uuid = backend.inventory()[0].uuid
    assert backend.read(uuid).power_mw == H100_SXM5_BUSY_MW
    backend.set_power_limit(uuid, 300_000)
    clock.now += 10.0
    reading = backend.read(uuid)
    assert reading.power_mw == 300_000
    assert reading.energy_mj == 300_000 * 10  # mW x s = mJ
    assert reading.enforced_limit_mw == 300_000


def test_state_outlives_the_backend_object(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    backend = SimulatedBackend(path, [simulated_h100(0)])
    uuid = backend.inventory()[0].uuid
    backend.set_power_limit(uuid, 250_000)
    backend.lock_clocks(uuid, 1035)
    again = SimulatedBackend(path)  # a new agent process on the same node
    assert again.read(uuid).limit_mw == 250_000
    assert SimulatedBackend.load(path)[uuid]["locked_clock_mhz"] == 1035
    assert SimulatedBackend.load(path)[uuid]["changes"] == 2


def test_injected_faults() -> None:
    backend = SimulatedBackend(None, [simulated_h100(0)])
    uuid = backend.inventory()[0].uuid
    backend.set_fault(uuid, "set_power_limit", GpuErrorKind.NO_PERMISSION)
    with pytest.raises(GpuError) as info:
        backend.set_power_limit(uuid, 300_000)
    assert info.value.kind is GpuErrorKind.NO_PERMISSION
    backend.set_fault(uuid, "set_power_limit", None)
    backend.set_power_limit(uuid, 300_000)


def test_no_state_and_no_gpus_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(GpuUnavailableError):
        SimulatedBackend(tmp_path / "absent.json")
