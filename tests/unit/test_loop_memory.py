"""A GreenModel loop's memory between ticks (controller.handlers.LoopMemory): the status is read once per
object kopf delivers, and read again as soon as it delivers another."""

from __future__ import annotations

from greenllm.controller.handlers import LoopMemory


def test_the_same_status_object_is_read_once_and_a_new_one_at_once() -> None:
    memory = LoopMemory()
    first = {"variant": "bf16", "replicas": 2}
    read = memory.read_status(first)
    assert read.variant == "bf16"
    assert memory.read_status(first) is read  # the same object kopf still holds: not validated again
    second = {"variant": "int4", "replicas": 3}  # the next event's body
    assert memory.read_status(second).variant == "int4"
    assert memory.read_status(None).variant is None  # no status (yet)
    assert memory.read_status(first).variant == "bf16"
