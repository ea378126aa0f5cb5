"""The Deployment watcher's index of GreenModels (controller.handlers.green_models) keeps what the watcher
reads and writes with, and nothing else: at thousands of GreenModels a whole copy of each is memory."""

from __future__ import annotations

from typing import Any, cast

import kopf

from greenllm.api import v1alpha1 as api
from greenllm.controller import handlers
from greenllm.core import status as st
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting

T = "2026-01-01T00:00:00Z"


def _green_model() -> dict[str, Any]:
    decision = Decision("bf16", 3, PowerSetting(limit_w=400.0), 1200.0, "planned")
    conditions = st.set_condition([], api.ConditionType.READY, False, "Progressing", "1/3", T, 4)
    status = st.decided(
        decision,
        ready_replicas=1,
        replicas_text="1/3",
        conditions=conditions,
        last_decision=st.decision_record(decision, T),
        controller_state=api.ControllerState(period_start=0.0, history=((0.0, 3),)),
    )
    return {
        "metadata": {
            "name": "llama",
            "namespace": "team",
            "uid": "u-1",
            "generation": 4,
            "resourceVersion": "77",
            "annotations": {"greenllm.io/last-handled-configuration": "{...}"},
        },
        "spec": {"model": {"name": "m"}},
        "status": st.patch(status),
    }


def test_the_index_keeps_what_the_watcher_reads_and_writes_with() -> None:
    gm = _green_model()
    [(key, entry)] = handlers.green_models("team", "llama", kopf.Body(cast(kopf.RawBody, gm))).items()
    assert key == ("team", "llama")
    assert entry["metadata"] == {
        k: gm["metadata"][k] for k in ("name", "namespace", "uid", "generation", "resourceVersion")
    }
    assert set(entry["status"]) == {"conditions", "replicas", "readyReplicas", "replicasText"}
    assert "spec" not in entry
    # What the watcher makes of it is what it would make of the whole object.
    deployment = {
        "metadata": {"name": "llama", "namespace": "team"},
        "spec": {"replicas": 3},
        "status": {"readyReplicas": 3},
    }
    whole = st.deployment_seen(st.read(gm["status"]), deployment, T, 4)
    cut = st.deployment_seen(st.read(entry["status"]), deployment, T, 4)
    assert whole is not None and cut == whole
    assert whole.replicas_text == "3/3"


def test_the_index_holds_copies_not_the_watch_bodys_objects() -> None:
    gm = _green_model()
    [entry] = handlers.green_models("team", "llama", kopf.Body(cast(kopf.RawBody, gm))).values()
    gm["status"]["conditions"][0]["status"] = "True"  # kopf reuses and changes bodies
    assert entry["status"]["conditions"][0]["status"] == "False"
