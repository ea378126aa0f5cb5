"""Reading a pod's queue from its vLLM /metrics: real HTTP to a stand-in on 127.0.0.1, and the parser."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from greenllm.agent.podmetrics import ReadFailure, endpoint_url, parse_queue, read_queue
from greenllm.core.fasttier import QueueReading
from tests.agent.vllm_stub import VllmStub, vllm_metrics


@pytest.fixture
def stub() -> Iterator[VllmStub]:
    server = VllmStub().start()
    yield server
    server.stop()


def test_reads_waiting_and_running_summed_over_engines(stub: VllmStub) -> None:
    stub.serve(3, engines=2)
    result = read_queue("127.0.0.1", stub.port)
    assert result.failure is None
    assert result.reading == QueueReading(waiting=6.0, running=4.0)


def test_failures_have_a_reason(stub: VllmStub) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert read_queue("127.0.0.1", closed).failure is ReadFailure.REFUSED
    assert read_queue(None, stub.port).failure is ReadFailure.NO_ADDRESS
    assert read_queue("localhost", stub.port).failure is ReadFailure.NO_ADDRESS  # never a name
    assert read_queue("127.0.0.1", 0).failure is ReadFailure.NO_ADDRESS
    stub.status = 404
    assert read_queue("127.0.0.1", stub.port).failure is ReadFailure.HTTP_STATUS
    stub.serve(0)
    stub.stream = (b"x" * 1024, 2048)  # 2 MiB
    assert read_queue("127.0.0.1", stub.port, max_bytes=1024 * 1024).failure is ReadFailure.TOO_LARGE
    stub.stream = None
    stub.dribble_s = 0.02
    assert read_queue("127.0.0.1", stub.port, timeout_s=0.2).failure is ReadFailure.TIMEOUT
    assert stub.count() == 3  # the 404, the large and the slow answer: no request without an IP


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", ReadFailure.MISSING),
        (b"vllm:num_requests_waiting \xff\n", ReadFailure.BAD_RESPONSE),
        (b"vllm:num_requests_waiting 1" + b" " * 5000 + b"\n", ReadFailure.TOO_LARGE),
        (b"vllm:num_requests_waiting 1\n" * 1001, ReadFailure.TOO_LARGE),
        (b"vllm:num_requests_waiting " + b"9" * 400_000, ReadFailure.TOO_LARGE),
        (b"vllm:num_requests_waiting{ 1\n", ReadFailure.PARSE_ERROR),
        (b"vllm:num_requests_waiting 1\n", ReadFailure.MISSING),
        (b"", ReadFailure.MISSING),
        (vllm_metrics("NaN"), ReadFailure.INVALID_VALUE),
        (vllm_metrics(-1), ReadFailure.INVALID_VALUE),
        (vllm_metrics(2e6), ReadFailure.INVALID_VALUE),
        (vllm_metrics(1, running="-Inf"), ReadFailure.INVALID_VALUE),
    ],
)
def test_bad_bodies_are_failures(body: bytes, reason: ReadFailure) -> None:
    result = parse_queue(body)
    assert result.reading is None and result.failure is reason


def test_other_metrics_and_look_alikes_are_ignored() -> None:
    body = vllm_metrics(2) + b'other{name="vllm:num_requests_waiting"} 99\nvllm:num_requests_waiting_x 50\n'
    assert parse_queue(body).reading == QueueReading(waiting=2.0, running=2.0)


def test_endpoint_url_brackets_ipv6() -> None:
    assert endpoint_url("fd00::1", 8000) == "http://[fd00::1]:8000/metrics"
    assert endpoint_url("10.0.0.7", 8000) == "http://10.0.0.7:8000/metrics"


# ---------------------------------------------------------------------------------------------- finished


def test_finished_requests_summed_over_reasons_and_engines(stub: VllmStub) -> None:
    stub.serve(1, engines=2, running=3, succeeded={"stop": 90, "length": 7, "abort": 3})
    result = read_queue("127.0.0.1", stub.port)
    assert result.failure is None
    assert result.reading == QueueReading(waiting=2.0, running=6.0)
    assert result.succeeded == 200.0  # (90 + 7 + 3) on each of two engines; the _created series not counted


def test_a_pod_without_the_counter_still_gives_a_reading() -> None:
    result = parse_queue(vllm_metrics(4))
    assert result.failure is None and result.reading == QueueReading(waiting=4.0, running=2.0)
    assert result.succeeded is None
    # A TYPE line without samples, and look-alikes, are no counter either.
    body = vllm_metrics(4) + (
        b"# TYPE vllm:request_success_total counter\n"
        b'other{name="vllm:request_success_total"} 99\n'
        b"vllm:request_success_total_x 5\n"
        b'vllm:request_success_created{finished_reason="stop"} 1.7e9\n'
    )
    assert parse_queue(body).succeeded is None
    assert parse_queue(body).reading == QueueReading(waiting=4.0, running=2.0)


def test_a_counter_of_zero_is_a_counter() -> None:
    assert parse_queue(vllm_metrics(0, succeeded={"stop": 0})).succeeded == 0.0


@pytest.mark.parametrize(
    ("succeeded", "reason"),
    [
        ({"stop": "NaN"}, ReadFailure.INVALID_VALUE),
        ({"stop": "+Inf"}, ReadFailure.INVALID_VALUE),
        ({"stop": -1}, ReadFailure.INVALID_VALUE),
        ({"stop": 100, "abort": -1}, ReadFailure.INVALID_VALUE),  # a negative series the sum would hide
        ({"stop": 2.0**53, "length": 2.0**53}, ReadFailure.INVALID_VALUE),  # past exact float counting
        ({"stop": "many"}, ReadFailure.PARSE_ERROR),
    ],
)
def test_a_counter_no_counter_can_be_is_a_failed_read(
    succeeded: dict[str, float | str], reason: ReadFailure
) -> None:
    result = parse_queue(vllm_metrics(0, succeeded=succeeded))
    assert result.reading is None and result.succeeded is None and result.failure is reason


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"vllm:request_success_total{ 1\n", ReadFailure.PARSE_ERROR),
        (b"vllm:request_success_total \xff\n", ReadFailure.BAD_RESPONSE),
        (b"vllm:request_success_total 1" + b" " * 5000 + b"\n", ReadFailure.TOO_LARGE),
        (b'vllm:request_success_total{finished_reason="stop"} 1\n' * 1000, ReadFailure.TOO_LARGE),
    ],
)
def test_garbage_naming_the_counter_is_a_failed_read(tail: bytes, reason: ReadFailure) -> None:
    result = parse_queue(vllm_metrics(0) + tail)
    assert result.reading is None and result.failure is reason
