"""NvmlBackend against a patched pynvml (no GPU here): units, constraints, MIG, error mapping."""

from __future__ import annotations

import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest

from greenllm.agent.gpu.base import GpuError, GpuErrorKind, GpuUnavailableError
from greenllm.agent.gpu.nvml import NvmlBackend
from greenllm.core.power import LimitConstraints


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    # H100 SXM5 limits, mW (data/gpu_specs/gpu_power_specs.csv); clocks as NVML lists them (descending).
    min_mw: int = 200_000
    max_mw: int = 700_000
    default_mw: int = 700_000
    limit_mw: int = 700_000
    power_mw: int = 486_123
    energy_mj: int = 123_456_789
    memory_clocks: list[int] = field(default_factory=lambda: [2619, 1593])
    graphics_clocks: dict[int, list[int]] = field(default_factory=lambda: {2619: [1980, 1770, 1035]})
    mig: list[str] | None = None  # MIG device UUIDs when MIG mode is on
    locked: tuple[int, int] | None = None
    fail: dict[str, int] = field(default_factory=dict)  # NVML function name -> NVML error code


class FakeNvml:
    """The pynvml functions NvmlBackend calls, on fake devices; errors are pynvml's own NVMLError classes."""

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.shutdown = False

    def _gpu(self, handle: Any) -> FakeGpu:
        assert isinstance(handle, FakeGpu), f"not a device handle: {handle!r}"
        return handle

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                self.calls.append((name, args))
                if args and isinstance(args[0], FakeGpu) and name in args[0].fail:
                    raise pynvml.NVMLError(args[0].fail[name])
                return fn(*args)

            return call

        def init() -> None:
            if self.init_error is not None:
                raise pynvml.NVMLError(self.init_error)

        def shutdown() -> None:
            self.shutdown = True

        def by_uuid(uuid: str) -> FakeGpu:
            for g in self.gpus:
                if g.uuid == uuid:
                    return g
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

        def mig_mode(g: FakeGpu) -> list[int]:
            if g.mig is None:
                return [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
            return [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]

        def mig_handle(g: FakeGpu, i: int) -> str:
            if g.mig is None or i >= len(g.mig) or not g.mig[i]:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return g.mig[i]

        def uuid_of(h: Any) -> str:
            return h if isinstance(h, str) else self._gpu(h).uuid

        def set_limit(g: FakeGpu, mw: int) -> None:
            if not g.min_mw <= mw <= g.max_mw:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            g.limit_mw = mw

        def lock(g: FakeGpu, lo: int, hi: int) -> None:
            g.locked = (lo, hi)

        def reset(g: FakeGpu) -> None:
            g.locked = None

        functions: dict[str, Callable[..., Any]] = {
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": lambda i: self.gpus[i],
            "nvmlDeviceGetHandleByUUID": by_uuid,
            "nvmlDeviceGetUUID": uuid_of,
            "nvmlDeviceGetName": lambda g: g.name,
            "nvmlDeviceGetPowerManagementLimitConstraints": lambda g: [g.min_mw, g.max_mw],
            "nvmlDeviceGetPowerManagementDefaultLimit": lambda g: g.default_mw,
            "nvmlDeviceGetSupportedMemoryClocks": lambda g: list(g.memory_clocks),
            "nvmlDeviceGetSupportedGraphicsClocks": lambda g, mem: list(g.graphics_clocks.get(mem, [])),
            "nvmlDeviceGetMigMode": mig_mode,
            "nvmlDeviceGetMaxMigDeviceCount": lambda g: 7 if g.mig is not None else 0,
            "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
            "nvmlDeviceGetPowerUsage": lambda g: g.power_mw,
            "nvmlDeviceGetTotalEnergyConsumption": lambda g: g.energy_mj,
            "nvmlDeviceGetPowerManagementLimit": lambda g: g.limit_mw,
            "nvmlDeviceGetEnforcedPowerLimit": lambda g: g.limit_mw,
            "nvmlDeviceSetPowerManagementLimit": set_limit,
            "nvmlDeviceSetGpuLockedClocks": lock,
            "nvmlDeviceResetGpuLockedClocks": reset,
        }
        for name, fn in functions.items():
            monkeypatch.setattr(pynvml, name, wrap(name, fn))


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml(
        [
            FakeGpu("GPU-11111111-aaaa-bbbb-cccc-000000000000"),
            FakeGpu(
                "GPU-22222222-aaaa-bbbb-cccc-000000000000",
                name="NVIDIA A100-SXM4-80GB",
                # A100 SXM4 80GB: 100-400 W, default 400 W (data/gpu_specs/gpu_power_specs.csv).
                min_mw=100_000,
                max_mw=400_000,
                default_mw=400_000,
                limit_mw=400_000,
                mig=["MIG-aaaa", "", "MIG-bbbb"],
            ),
        ]
    )
    fake.patch(monkeypatch)
    return fake


def test_inventory_units_constraints_clocks_and_mig(two_gpus: FakeNvml) -> None:
    backend = NvmlBackend()
    h100, a100 = backend.inventory()
    assert (h100.index, h100.name) == (0, "NVIDIA H100 80GB HBM3")
    assert h100.constraints == LimitConstraints(min_mw=200_000, max_mw=700_000, default_mw=700_000)
    assert h100.supported_clocks_mhz == (1035, 1770, 1980)  # of the highest memory clock, ascending
    assert h100.mig_uuids == ()
    assert a100.constraints == LimitConstraints(min_mw=100_000, max_mw=400_000, default_mw=400_000)
    assert a100.mig_uuids == ("MIG-aaaa", "MIG-bbbb")  # the empty slot (NOT_FOUND) is skipped


def test_reading_is_in_milliwatts_and_millijoules(two_gpus: FakeNvml) -> None:
    reading = NvmlBackend().read("GPU-11111111-aaaa-bbbb-cccc-000000000000")
    assert reading.power_mw == 486_123
    assert reading.energy_mj == 123_456_789
    assert reading.limit_mw == 700_000
    assert reading.enforced_limit_mw == 700_000


def test_set_limit_passes_milliwatts_and_reads_back_enforced(two_gpus: FakeNvml) -> None:
    backend = NvmlBackend()
    uuid = "GPU-11111111-aaaa-bbbb-cccc-000000000000"
    backend.set_power_limit(uuid, 350_000)
    assert ("nvmlDeviceSetPowerManagementLimit", (two_gpus.gpus[0], 350_000)) in two_gpus.calls
    assert backend.enforced_power_limit(uuid) == 350_000


def test_clock_lock_sets_min_and_max_and_resets(two_gpus: FakeNvml) -> None:
    backend = NvmlBackend()
    uuid = "GPU-11111111-aaaa-bbbb-cccc-000000000000"
    backend.lock_clocks(uuid, 1770)
    assert two_gpus.gpus[0].locked == (1770, 1770)
    backend.reset_clocks(uuid)
    assert two_gpus.gpus[0].locked is None


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (pynvml.NVML_ERROR_NO_PERMISSION, GpuErrorKind.NO_PERMISSION),
        (pynvml.NVML_ERROR_INVALID_ARGUMENT, GpuErrorKind.INVALID_ARGUMENT),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, GpuErrorKind.NOT_SUPPORTED),
        (pynvml.NVML_ERROR_GPU_IS_LOST, GpuErrorKind.GPU_LOST),
        (pynvml.NVML_ERROR_UNKNOWN, GpuErrorKind.UNKNOWN),
    ],
)
def test_errors_are_mapped_to_kinds(two_gpus: FakeNvml, code: int, kind: GpuErrorKind) -> None:
    two_gpus.gpus[0].fail["nvmlDeviceSetPowerManagementLimit"] = code
    with pytest.raises(GpuError) as info:
        NvmlBackend().set_power_limit("GPU-11111111-aaaa-bbbb-cccc-000000000000", 300_000)
    assert info.value.kind is kind
    assert info.value.op == "nvmlDeviceSetPowerManagementLimit"
    assert info.value.uuid == "GPU-11111111-aaaa-bbbb-cccc-000000000000"


def test_out_of_range_limit_is_invalid_argument(two_gpus: FakeNvml) -> None:
    with pytest.raises(GpuError) as info:
        NvmlBackend().set_power_limit("GPU-22222222-aaaa-bbbb-cccc-000000000000", 450_000)
    assert info.value.kind is GpuErrorKind.INVALID_ARGUMENT


def test_unsupported_getters_become_none(two_gpus: FakeNvml) -> None:
    gpu = two_gpus.gpus[0]
    gpu.fail["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    gpu.fail["nvmlDeviceGetPowerManagementLimitConstraints"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    gpu.fail["nvmlDeviceGetSupportedMemoryClocks"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    backend = NvmlBackend()
    info = backend.inventory()[0]
    assert info.constraints is None
    assert info.supported_clocks_mhz == ()
    reading = backend.read(gpu.uuid)
    assert reading.energy_mj is None and reading.power_mw == 486_123


def test_a_reading_failure_other_than_unsupported_raises(two_gpus: FakeNvml) -> None:
    two_gpus.gpus[0].fail["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(GpuError) as info:
        NvmlBackend().read(two_gpus.gpus[0].uuid)
    assert info.value.kind is GpuErrorKind.GPU_LOST


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, GpuErrorKind.LIBRARY_NOT_FOUND),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, GpuErrorKind.DRIVER_NOT_LOADED),
        (pynvml.NVML_ERROR_NO_PERMISSION, GpuErrorKind.NO_PERMISSION),
    ],
)
def test_init_failure_is_unavailable(monkeypatch: pytest.MonkeyPatch, code: int, kind: GpuErrorKind) -> None:
    FakeNvml([], init_error=code).patch(monkeypatch)
    with pytest.raises(GpuUnavailableError) as info:
        NvmlBackend()
    assert info.value.kind is kind


def test_unknown_uuid_is_not_found(two_gpus: FakeNvml) -> None:
    with pytest.raises(GpuError) as info:
        NvmlBackend().read("GPU-does-not-exist")
    assert info.value.kind is GpuErrorKind.NOT_FOUND


def test_close_shuts_nvml_down(two_gpus: FakeNvml) -> None:
    NvmlBackend().close()
    assert two_gpus.shutdown


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="an NVML library is installed")
def test_without_an_nvml_library_the_backend_reports_it() -> None:
    # The real, unpatched pynvml on a machine without the NVIDIA driver.
    with pytest.raises(GpuUnavailableError) as info:
        NvmlBackend()
    assert info.value.kind is GpuErrorKind.LIBRARY_NOT_FOUND
    assert "NVML cannot start" in str(info.value)
