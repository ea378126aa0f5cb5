"""kopf's diff base built without copying the status (controller/diffbase.py): the same essence."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from greenllm.controller.diffbase import StatusFreeDiffBaseStorage

KEY = {"prefix": "greenllm.io", "key": "last-handled-configuration"}


class NotCopyable:
    def __deepcopy__(self, memo: Any) -> Any:
        raise AssertionError("the status was deep-copied")


def _green_model(status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "GreenModel",
        "metadata": {
            "name": "gm",
            "namespace": "team-a",
            "uid": "u-1",
            "resourceVersion": "7",
            "labels": {"team": "a"},
            "annotations": {
                "note": "kept",
                "greenllm.io/last-handled-configuration": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
        },
        "spec": {"model": {"name": "qwen3-8b"}, "variants": [{"name": "int8", "quality": 0.98}]},
        "status": status,
    }


def test_the_essence_is_kopfs_own_without_copying_the_status() -> None:
    ours = StatusFreeDiffBaseStorage(**KEY)
    kopfs = kopf.AnnotationsDiffBaseStorage(**KEY)
    raw = _green_model({"replicas": 2, "conditions": [{"type": "Ready", "status": "True"}]})
    assert ours.build(body=kopf.Body(copy.deepcopy(raw))) == kopfs.build(body=kopf.Body(raw))
    essence = ours.build(body=kopf.Body(_green_model({"observed": NotCopyable()})))
    assert "status" not in essence and essence["spec"]["variants"][0]["name"] == "int8"
    assert essence["metadata"] == {"labels": {"team": "a"}, "annotations": {"note": "kept"}}


def test_a_status_field_a_handler_asks_for_is_kept() -> None:
    raw = _green_model({"replicas": 2})
    essence = StatusFreeDiffBaseStorage(**KEY).build(
        body=kopf.Body(raw), extra_fields=[("status", "replicas")]
    )
    assert essence["status"] == {"replicas": 2}
