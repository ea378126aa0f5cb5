"""End to end (issue 11): the operator copes with any spec shape the API server lets through, and a shorter
scaling interval applies at once, not after the old sleep.

The emulator here does not enforce the CRD's schema for GreenModels (its schema is dropped, as where the
schema is not enforced), so `spec: null`, a list or a string reach the operator as they are.
"""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from tests.e2e.conftest import KubeClient, Operator, wait_for
from tests.e2e.test_operator import (
    GM,
    KUBERNETES_CLIENT,
    NS,
    condition,
    green_model,
    operator,
    operator_env,
    settled,
)
from tests.kube_emulator import KubeEmulator

pytestmark = pytest.mark.e2e

__all__ = ["operator", "operator_env"]  # fixtures used below


def _no_schema(kube: KubeEmulator) -> None:
    kube._schemas.pop(kmock.resource("greenllm.io", "v1alpha1", "greenmodels"), None)


def _bad_scaling() -> dict[str, Any]:
    spec: dict[str, Any] = green_model()["spec"]
    spec["scaling"] = {"interval": "1ms"}
    return spec


def _bad_period() -> dict[str, Any]:
    spec: dict[str, Any] = green_model()["spec"]
    spec["budget"] = {"period": "0s", "energyKwh": 10}
    return spec


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        (None, "spec: Input should be"),
        ([1, 2], "spec: Input should be"),
        ("text", "spec: Input should be"),
        ({"model": None, "variants": {"a": 1}}, "spec.model"),
        (_bad_scaling(), "spec.scaling.interval"),
        (_bad_period(), "spec.budget.period"),
    ],
    ids=["null", "list", "string", "wrong-types", "interval-1ms", "period-0s"],
)
async def test_any_spec_shape_is_reported_invalid_not_raised(
    kube: KubeEmulator, client: KubeClient, operator: Operator, spec: Any, complaint: str
) -> None:
    _no_schema(kube)
    doc = green_model()
    doc["spec"] = spec
    await client.create(GM, doc)
    gm = await settled(client)
    valid = condition(gm, "SpecValid")
    assert valid is not None and valid["status"] == "False" and valid["reason"] == "InvalidSpec"
    assert complaint in valid["message"]
    # The next valid spec is handled at once, not after kopf's retries of a crashed handler.
    fixed = green_model()["spec"] | {
        "scaling": {"interval": "15s"},
        "budget": {"period": "24h", "energyKwh": None},
    }
    await client.patch(GM, "qwen3-8b", {"spec": fixed}, NS)
    gm = await settled(client, generation=2)
    valid = condition(gm, "SpecValid")
    assert valid is not None and valid["status"] == "True"
    operator.check_alive()


async def test_a_shorter_interval_applies_at_once_not_after_the_old_sleep(
    kube: KubeEmulator, client: KubeClient, operator: Operator
) -> None:
    doc = green_model()
    doc["spec"]["scaling"] = {"interval": "1h"}
    await client.create(GM, doc)
    await settled(client)

    def ticks(since: int) -> int:
        # Each tick writes the status (the tests' accounting write period is 0) by the operator's client.
        return sum(
            1
            for c in kube.api_calls[since:]
            if c.verb == "patch"
            and c.resource == "greenmodels"
            and c.subresource == "status"
            and c.user_agent.startswith(KUBERNETES_CLIENT)
        )

    await wait_for(lambda: ticks(0) >= 1, message="the first tick")
    mark = len(kube.api_calls)
    await client.patch(GM, "qwen3-8b", {"spec": {"scaling": {"interval": "1s"}}}, NS)
    # Without waking, the daemon would sleep out the rest of its hour; the bound only stops a hang.
    await wait_for(lambda: ticks(mark) >= 3, timeout=30, message="ticks at the new 1s interval")
    operator.check_alive()
