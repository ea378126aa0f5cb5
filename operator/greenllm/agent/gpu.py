"""GPU backends of the node agent: the interface, NVML (the only importer of pynvml) and a simulated GPU.

Units at this boundary are NVML's: milliwatts for power and limits, millijoules for energy, MHz for clocks.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from greenllm.core.power import GpuIdentity, LimitConstraints

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------------------------------- NVML


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


# ------------------------------------------------------------------------------------------- simulated

# Defaults of a simulated H100 SXM5, from shared/data/gpu_specs/gpu_power_specs.csv (row "H100 SXM5":
# default 700 W, min 200 W, max 700 W; nvidia-smi dumps in stackhpc/ansible-slurm-appliance PR #975 and
# NVIDIA/DCGM issue #120, which also shows the max graphics clock 1980 MHz).
H100_SXM5_MIN_MW = 200_000
H100_SXM5_MAX_MW = 700_000
H100_SXM5_DEFAULT_MW = 700_000
# Graphics clocks known to be lockable on H100: 1980 MHz (max, DCGM issue #120 above) and 1770 / 1035 MHz
# (`nvidia-smi -lgc` runs in shared/data/power_limit/published_power_knob_effects.csv, row
# "mertside/ai-inference-energy ... H100").
H100_SXM5_CLOCKS_MHZ = (1035, 1770, 1980)
# Draw of a busy H100 at the default limit: 486 W per GPU, Llama-3.1-8B on 1x H100 at max_num_seqs 8
# (ML.ENERGY v3 via shared/data/power_limit/PROVENANCE.md, "Shape visible in the sources").
H100_SXM5_BUSY_MW = 486_000


def simulated_h100(
    index: int, uuid: str | None = None, *, demand_mw: int = H100_SXM5_BUSY_MW
) -> dict[str, Any]:
    """The state of one simulated H100 SXM5 at its defaults (a SimulatedBackend file entry)."""
    return {
        "uuid": uuid or f"GPU-00000000-0000-4000-8000-{index:012d}",
        "index": index,
        "name": "NVIDIA H100 80GB HBM3 (simulated)",
        "min_mw": H100_SXM5_MIN_MW,
        "max_mw": H100_SXM5_MAX_MW,
        "default_mw": H100_SXM5_DEFAULT_MW,
        "limit_mw": H100_SXM5_DEFAULT_MW,
        "supported_clocks_mhz": list(H100_SXM5_CLOCKS_MHZ),
        "locked_clock_mhz": None,
        "demand_mw": demand_mw,
        "energy_mj": 0,
        "mig_uuids": [],
        "changes": 0,
        "fail": {},
    }


class SimulatedBackend(GpuBackend):
    """GPUs as JSON: `{"gpus": [entry, ...]}` (see `simulated_h100`). With a `path`, every change (and
    every read, which advances the energy counter) is written back atomically, so the GPU state outlives
    the agent process like real hardware does, and tests can inspect it.

    Behaves like NVML where it matters: limits outside [min, max] and clocks not in the supported list are
    INVALID_ARGUMENT; measured power is the GPU's demand capped by its limit; `fail` maps an operation name
    (set_power_limit, lock_clocks, reset_clocks, read, enforced_power_limit) to a GpuErrorKind to inject.
    `changes` counts set_power_limit / lock_clocks / reset_clocks calls that succeeded.
    """

    name = "simulated"

    def __init__(
        self,
        path: Path | None = None,
        gpus: list[dict[str, Any]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        if path is not None and path.exists():
            state = json.loads(path.read_text())
        elif gpus is not None:
            state = {"gpus": gpus}
        else:
            raise GpuUnavailableError(
                GpuErrorKind.NOT_FOUND, f"no simulated GPU state at {path} and no GPUs given"
            )
        self._state: dict[str, Any] = state
        self._state.setdefault("sampled_at", self._clock())
        self._save()

    @classmethod
    def load(cls, path: Path) -> dict[str, dict[str, Any]]:
        """The saved state of a simulated node, by UUID (for tests and the simulator)."""
        state = json.loads(path.read_text())
        return {g["uuid"]: g for g in state["gpus"]}

    def _find(self, uuid: str, op: str) -> dict[str, Any]:
        for gpu in self._state["gpus"]:
            if gpu["uuid"] == uuid:
                return gpu  # type: ignore[no-any-return]
        raise GpuError(GpuErrorKind.NOT_FOUND, f"no GPU {uuid}", op=op, uuid=uuid)

    def _gpu(self, uuid: str, op: str) -> dict[str, Any]:
        gpu = self._find(uuid, op)
        fail = gpu.get("fail", {}).get(op)
        if fail:
            raise GpuError(GpuErrorKind(fail), f"{op} failed on {uuid} (injected {fail})", op=op, uuid=uuid)
        return gpu

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".sim-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self._state, f, indent=1, sort_keys=True)
        os.replace(tmp, self._path)

    def _advance(self) -> None:
        now = self._clock()
        dt = max(0.0, now - float(self._state["sampled_at"]))
        for gpu in self._state["gpus"]:
            gpu["energy_mj"] = int(gpu["energy_mj"] + self._power(gpu) * dt)
        self._state["sampled_at"] = now

    @staticmethod
    def _power(gpu: dict[str, Any]) -> int:
        return int(min(gpu["demand_mw"], gpu["limit_mw"]))

    def inventory(self) -> list[GpuInfo]:
        with self._lock:
            return [
                GpuInfo(
                    uuid=g["uuid"],
                    index=int(g["index"]),
                    name=g["name"],
                    constraints=LimitConstraints(int(g["min_mw"]), int(g["max_mw"]), int(g["default_mw"])),
                    supported_clocks_mhz=tuple(int(c) for c in g["supported_clocks_mhz"]),
                    mig_uuids=tuple(g.get("mig_uuids", ())),
                )
                for g in self._state["gpus"]
            ]

    def read(self, uuid: str) -> GpuReading:
        with self._lock:
            gpu = self._gpu(uuid, "read")
            self._advance()
            self._save()
            override = gpu.get("power_override_mw")
            return GpuReading(
                power_mw=int(override) if override is not None else self._power(gpu),
                energy_mj=int(gpu["energy_mj"]),
                limit_mw=int(gpu["limit_mw"]),
                enforced_limit_mw=int(gpu["limit_mw"]),
            )

    def set_power_limit(self, uuid: str, limit_mw: int) -> None:
        with self._lock:
            gpu = self._gpu(uuid, "set_power_limit")
            if not gpu["min_mw"] <= limit_mw <= gpu["max_mw"]:
                raise GpuError(
                    GpuErrorKind.INVALID_ARGUMENT,
                    f"limit {limit_mw} mW outside [{gpu['min_mw']}, {gpu['max_mw']}] mW",
                    op="set_power_limit",
                    uuid=uuid,
                )
            self._advance()
            gpu["limit_mw"] = int(limit_mw)
            gpu["changes"] += 1
            self._save()

    def enforced_power_limit(self, uuid: str) -> int:
        with self._lock:
            return int(self._gpu(uuid, "enforced_power_limit")["limit_mw"])

    def lock_clocks(self, uuid: str, clock_mhz: int) -> None:
        with self._lock:
            gpu = self._gpu(uuid, "lock_clocks")
            if clock_mhz not in gpu["supported_clocks_mhz"]:
                raise GpuError(
                    GpuErrorKind.INVALID_ARGUMENT,
                    f"{clock_mhz} MHz not supported",
                    op="lock_clocks",
                    uuid=uuid,
                )
            gpu["locked_clock_mhz"] = int(clock_mhz)
            gpu["changes"] += 1
            self._save()

    def reset_clocks(self, uuid: str) -> None:
        with self._lock:
            gpu = self._gpu(uuid, "reset_clocks")
            gpu["locked_clock_mhz"] = None
            gpu["changes"] += 1
            self._save()

    def close(self) -> None:
        with self._lock:
            self._save()

    # For tests and the simulator: change the world under the agent.
    def set_fault(self, uuid: str, op: str, kind: GpuErrorKind | None) -> None:
        """Make `op` fail with `kind` on this GPU until cleared with None."""
        with self._lock:
            faults = self._find(uuid, op).setdefault("fail", {})
            if kind is None:
                faults.pop(op, None)
            else:
                faults[op] = kind.value
            self._save()

    def set_power_reading(self, uuid: str, power_mw: int | None) -> None:
        """Make the sensor report `power_mw` regardless of the limit (None: back to the model)."""
        with self._lock:
            self._find(uuid, "read")["power_override_mw"] = power_mw
            self._save()

    def set_demand(self, uuid: str, demand_mw: int) -> None:
        """What the GPU would draw without a cap."""
        with self._lock:
            self._advance()
            self._find(uuid, "read")["demand_mw"] = demand_mw
            self._save()

    def state(self, uuid: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._find(uuid, "state"))
