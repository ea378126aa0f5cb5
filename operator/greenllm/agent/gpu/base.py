"""The GPU backend interface of the node agent (GpuBackend) and the types every backend shares.

Units at this boundary are NVML's: milliwatts for power and limits, millijoules for energy, MHz for clocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

from greenllm.core.power import GpuIdentity, LimitConstraints


class GpuErrorKind(StrEnum):
    NO_PERMISSION = "no_permission"
    NOT_SUPPORTED = "not_supported"
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    GPU_LOST = "gpu_lost"
    LIBRARY_NOT_FOUND = "library_not_found"
    DRIVER_NOT_LOADED = "driver_not_loaded"
    UNINITIALIZED = "uninitialized"
    UNKNOWN = "unknown"


class GpuError(Exception):
    """A GPU call failed. `kind` is stable (metrics label, tests); the message is for people."""

    def __init__(self, kind: GpuErrorKind, message: str, *, op: str = "", uuid: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.op = op
        self.uuid = uuid


class GpuUnavailableError(GpuError):
    """The backend cannot start at all (no NVML library, no driver): the agent reports it and retries."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    uuid: str
    index: int
    name: str
    constraints: LimitConstraints | None  # None: the device has no settable power limit
    supported_clocks_mhz: tuple[int, ...] = ()
    mig_uuids: tuple[str, ...] = ()

    @property
    def identity(self) -> GpuIdentity:
        return GpuIdentity(uuid=self.uuid, index=self.index, mig_uuids=self.mig_uuids)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One sample; a field the device does not support is None."""

    power_mw: int | None = None
    energy_mj: int | None = None
    limit_mw: int | None = None
    enforced_limit_mw: int | None = None


class GpuBackend(ABC):
    """What the agent needs from a GPU driver."""

    name: str = "abstract"

    @abstractmethod
    def inventory(self) -> list[GpuInfo]:
        """The node's GPUs (stable while the driver is loaded)."""

    @abstractmethod
    def read(self, uuid: str) -> GpuReading: ...

    @abstractmethod
    def set_power_limit(self, uuid: str, limit_mw: int) -> None: ...

    @abstractmethod
    def enforced_power_limit(self, uuid: str) -> int: ...

    @abstractmethod
    def lock_clocks(self, uuid: str, clock_mhz: int) -> None:
        """Lock the graphics clock to `clock_mhz` (min = max)."""

    @abstractmethod
    def reset_clocks(self, uuid: str) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Release the driver."""
