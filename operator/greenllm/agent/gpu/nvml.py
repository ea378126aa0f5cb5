"""NvmlBackend: the node's GPUs through NVML (nvidia-ml-py). The only module of greenllm that imports pynvml.

Units are NVML's own: milliwatts for power and limits, millijoules for energy, MHz for clocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from greenllm.agent.gpu.base import (
    GpuBackend,
    GpuError,
    GpuErrorKind,
    GpuInfo,
    GpuReading,
    GpuUnavailableError,
)
from greenllm.core.power import LimitConstraints

log = logging.getLogger(__name__)


class NvmlBackend(GpuBackend):
    """NVML through nvidia-ml-py. Raises GpuUnavailableError from the constructor when NVML cannot start."""

    name = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:  # nvidia-ml-py is a dependency; a broken install is still reported
            raise GpuUnavailableError(GpuErrorKind.LIBRARY_NOT_FOUND, f"cannot import pynvml: {exc}") from exc
        self._nvml: Any = pynvml
        self._errors = _nvml_error_kinds(pynvml)
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            kind = self._kind(exc)
            raise GpuUnavailableError(
                kind, f"NVML cannot start ({kind}): {self._text(exc)}", op="nvmlInit"
            ) from exc
        self._handles: dict[str, Any] = {}
        self._inventory: list[GpuInfo] | None = None

    def _kind(self, exc: Exception) -> GpuErrorKind:
        value = getattr(exc, "value", None)
        return (
            self._errors.get(value, GpuErrorKind.UNKNOWN) if isinstance(value, int) else GpuErrorKind.UNKNOWN
        )

    def _text(self, exc: Exception) -> str:
        try:
            return str(exc)
        except Exception:  # NVMLError.__str__ calls into the library, which may be missing
            return f"NVML error {getattr(exc, 'value', '?')}"

    @contextmanager
    def _call(self, op: str, uuid: str = "") -> Iterator[None]:
        try:
            yield
        except self._nvml.NVMLError as exc:
            kind = self._kind(exc)
            raise GpuError(
                kind, f"{op} failed on {uuid or 'the node'}: {self._text(exc)}", op=op, uuid=uuid
            ) from exc

    def _handle(self, uuid: str) -> Any:
        if uuid not in self._handles:
            with self._call("nvmlDeviceGetHandleByUUID", uuid):
                self._handles[uuid] = self._nvml.nvmlDeviceGetHandleByUUID(uuid)
        return self._handles[uuid]

    def _optional(self, fn: Callable[[], Any], uuid: str, op: str) -> Any:
        """Call an NVML getter whose absence is normal on some devices: NOT_SUPPORTED -> None."""
        try:
            with self._call(op, uuid):
                return fn()
        except GpuError as exc:
            if exc.kind is GpuErrorKind.NOT_SUPPORTED:
                return None
            raise

    def inventory(self) -> list[GpuInfo]:
        if self._inventory is None:
            nv = self._nvml
            with self._call("nvmlDeviceGetCount"):
                count = int(nv.nvmlDeviceGetCount())
            gpus = []
            for index in range(count):
                with self._call("nvmlDeviceGetHandleByIndex"):
                    handle = nv.nvmlDeviceGetHandleByIndex(index)
                with self._call("nvmlDeviceGetUUID"):
                    uuid = str(nv.nvmlDeviceGetUUID(handle))
                self._handles[uuid] = handle
                gpus.append(self._describe(uuid, index, handle))
            self._inventory = gpus
        return list(self._inventory)

    def _describe(self, uuid: str, index: int, handle: Any) -> GpuInfo:
        nv = self._nvml
        with self._call("nvmlDeviceGetName", uuid):
            name = str(nv.nvmlDeviceGetName(handle))
        limits = self._optional(
            lambda: nv.nvmlDeviceGetPowerManagementLimitConstraints(handle),
            uuid,
            "nvmlDeviceGetPowerManagementLimitConstraints",
        )
        default = self._optional(
            lambda: nv.nvmlDeviceGetPowerManagementDefaultLimit(handle),
            uuid,
            "nvmlDeviceGetPowerManagementDefaultLimit",
        )
        constraints = None
        if limits is not None and default is not None:
            constraints = LimitConstraints(
                min_mw=int(limits[0]), max_mw=int(limits[1]), default_mw=int(default)
            )
        clocks: tuple[int, ...] = ()
        memory = self._optional(
            lambda: nv.nvmlDeviceGetSupportedMemoryClocks(handle), uuid, "nvmlDeviceGetSupportedMemoryClocks"
        )
        if memory:
            top = max(int(m) for m in memory)
            graphics = self._optional(
                lambda: nv.nvmlDeviceGetSupportedGraphicsClocks(handle, top),
                uuid,
                "nvmlDeviceGetSupportedGraphicsClocks",
            )
            clocks = tuple(sorted({int(c) for c in graphics or ()}))
        return GpuInfo(
            uuid=uuid,
            index=index,
            name=name,
            constraints=constraints,
            supported_clocks_mhz=clocks,
            mig_uuids=self._mig_uuids(uuid, handle),
        )

    def _mig_uuids(self, uuid: str, handle: Any) -> tuple[str, ...]:
        nv = self._nvml
        mode = self._optional(lambda: nv.nvmlDeviceGetMigMode(handle), uuid, "nvmlDeviceGetMigMode")
        if mode is None or int(mode[0]) != int(nv.NVML_DEVICE_MIG_ENABLE):
            return ()
        with self._call("nvmlDeviceGetMaxMigDeviceCount", uuid):
            slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))
        found = []
        for slot in range(slots):
            try:
                with self._call("nvmlDeviceGetMigDeviceHandleByIndex", uuid):
                    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except GpuError as exc:
                if exc.kind is GpuErrorKind.NOT_FOUND:  # empty slot
                    continue
                raise
            with self._call("nvmlDeviceGetUUID", uuid):
                found.append(str(nv.nvmlDeviceGetUUID(mig)))
        return tuple(found)

    def read(self, uuid: str) -> GpuReading:
        nv = self._nvml
        h = self._handle(uuid)
        return GpuReading(
            power_mw=self._optional(
                lambda: int(nv.nvmlDeviceGetPowerUsage(h)), uuid, "nvmlDeviceGetPowerUsage"
            ),
            energy_mj=self._optional(
                lambda: int(nv.nvmlDeviceGetTotalEnergyConsumption(h)),
                uuid,
                "nvmlDeviceGetTotalEnergyConsumption",
            ),
            limit_mw=self._optional(
                lambda: int(nv.nvmlDeviceGetPowerManagementLimit(h)),
                uuid,
                "nvmlDeviceGetPowerManagementLimit",
            ),
            enforced_limit_mw=self._optional(
                lambda: int(nv.nvmlDeviceGetEnforcedPowerLimit(h)), uuid, "nvmlDeviceGetEnforcedPowerLimit"
            ),
        )

    def set_power_limit(self, uuid: str, limit_mw: int) -> None:
        h = self._handle(uuid)
        with self._call("nvmlDeviceSetPowerManagementLimit", uuid):
            self._nvml.nvmlDeviceSetPowerManagementLimit(h, int(limit_mw))

    def enforced_power_limit(self, uuid: str) -> int:
        h = self._handle(uuid)
        with self._call("nvmlDeviceGetEnforcedPowerLimit", uuid):
            return int(self._nvml.nvmlDeviceGetEnforcedPowerLimit(h))

    def lock_clocks(self, uuid: str, clock_mhz: int) -> None:
        h = self._handle(uuid)
        with self._call("nvmlDeviceSetGpuLockedClocks", uuid):
            self._nvml.nvmlDeviceSetGpuLockedClocks(h, int(clock_mhz), int(clock_mhz))

    def reset_clocks(self, uuid: str) -> None:
        h = self._handle(uuid)
        with self._call("nvmlDeviceResetGpuLockedClocks", uuid):
            self._nvml.nvmlDeviceResetGpuLockedClocks(h)

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", self._text(exc))


def _nvml_error_kinds(nvml: Any) -> dict[int, GpuErrorKind]:
    names = {
        "NVML_ERROR_NO_PERMISSION": GpuErrorKind.NO_PERMISSION,
        "NVML_ERROR_NOT_SUPPORTED": GpuErrorKind.NOT_SUPPORTED,
        "NVML_ERROR_INVALID_ARGUMENT": GpuErrorKind.INVALID_ARGUMENT,
        "NVML_ERROR_NOT_FOUND": GpuErrorKind.NOT_FOUND,
        "NVML_ERROR_GPU_IS_LOST": GpuErrorKind.GPU_LOST,
        "NVML_ERROR_LIBRARY_NOT_FOUND": GpuErrorKind.LIBRARY_NOT_FOUND,
        "NVML_ERROR_FUNCTION_NOT_FOUND": GpuErrorKind.LIBRARY_NOT_FOUND,
        "NVML_ERROR_DRIVER_NOT_LOADED": GpuErrorKind.DRIVER_NOT_LOADED,
        "NVML_ERROR_UNINITIALIZED": GpuErrorKind.UNINITIALIZED,
    }
    return {int(getattr(nvml, name)): kind for name, kind in names.items() if hasattr(nvml, name)}
