"""A new GreenModel's Deployment and Service are created together (controller.handlers.apply_workloads):
neither needs the other, and each round trip to the API server is time a new GreenModel waits for."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from tests.unit.test_trust import spec_body

from greenllm.api import v1alpha1 as api
from greenllm.controller import handlers
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting

OWNER = {"metadata": {"name": "gm", "namespace": "team", "uid": "u-1"}}


class CreatingKube:
    """Creates that answer only once `together` creates are in flight (or after a timeout): the most in
    flight at once is what the test reads. `refuse`: a kind the API server refuses (422)."""

    def __init__(self, together: int, refuse: str | None = None) -> None:
        self.together, self.refuse = together, refuse
        self.in_flight = self.most = 0
        self.created: list[str] = []
        self._all_in = asyncio.Event()

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.together:
            self._all_in.set()
        try:
            await asyncio.wait_for(self._all_in.wait(), 0.5)
        except TimeoutError:
            pass
        finally:
            self.in_flight -= 1
        if obj["kind"] == self.refuse:
            raise ApiException(status=422, reason="Unprocessable Entity")
        self.created.append(obj["kind"])
        return obj


def _apply(kube: CreatingKube) -> dict[str, Any]:
    spec = api.GreenModelSpec.model_validate(spec_body())
    decision = Decision("bf16", 1, PowerSetting(), 300.0, "planned")
    log = logging.getLogger("test")
    return asyncio.run(
        handlers.apply_workloads(kube, OWNER, spec, decision, log, running=handlers.UNSEEN)  # type: ignore[arg-type]
    )


def test_a_new_green_models_deployment_and_service_are_created_at_once() -> None:
    kube = CreatingKube(together=2)
    deployment = _apply(kube)
    assert kube.most == 2  # one after the other: 1
    assert sorted(kube.created) == ["Deployment", "Service"]
    assert deployment["kind"] == "Deployment"  # the Deployment's answer, whatever finished first


def test_a_refused_service_is_the_callers_error_and_the_deployment_is_still_made() -> None:
    kube = CreatingKube(together=2, refuse="Service")
    with pytest.raises(handlers.WorkloadRejectedError, match="Service"):
        _apply(kube)
    assert kube.created == ["Deployment"]
