"""SimulatedBackend: GPUs kept as JSON (an H100 SXM5 by default), for `--backend simulated`, tests and the
simulator; behaves like NVML where the agent can tell (units, range checks, error kinds).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
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
