"""Read one serving pod's queue from its own vLLM `/metrics`, bounded in time and size.

The pod is untrusted: its answer only chooses between two settings the operator picked (core.fasttier), so
anything odd about it is a failed read, and a failed read means `burst`. Bounds, so that a hostile or broken
pod can neither hang nor exhaust the agent:
- plain HTTP/1.0 to the pod IP from the API server (an IP literal, never a name) and the GreenModel's port;
- one deadline for the whole exchange (connect, headers, body), enforced between every socket read;
- at most `max_bytes` of response; no redirects followed (anything but 200 is a failure), no chunked or
  compressed bodies (an HTTP/1.0 request gets neither from a conforming server);
- the body is searched in place (no copy, no decode of the whole) for the lines of the two gauges and of
  the finished-requests counter, at most `MAX_LINES` of them, and only those go to prometheus_client's text
  parser.

The counter `vllm:request_success_total` (requests finished, by finished_reason and engine) is optional: it
only serves the agent's arrivals estimate, so a pod without it still gives a reading (`succeeded` None). A pod
that names it with a value no counter can have (NaN, negative, beyond exact float counting) is a failed read
like any other odd answer.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families

from greenllm.core.fasttier import QueueReading

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
# The sample name of vLLM's counter family `vllm:request_success` (one series per finished_reason: stop,
# length, abort, ... and per engine). Its `_created` series do not contain this name and are never parsed.
SUCCEEDED = "vllm:request_success_total"
DEFAULT_TIMEOUT_S = 0.5
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# More requests than any one vLLM server holds (its scheduler admits at most max_num_seqs, 256 to 1024 by
# default, and queues what its KV cache can take): a larger number is a broken or lying pod.
MAX_REQUESTS = 1_000_000.0
# A counter of requests grows for the life of the server, so it has no such bound; past 2**53 a float no
# longer counts by ones (and no server gets there: 285 years at a million requests a second).
MAX_COUNT = float(2**53)
# vLLM writes a HELP, a TYPE and one sample line (a few hundred bytes) per engine (data-parallel rank) for
# each gauge, and per engine and finished_reason for the counter; the pure-Python parser only ever sees this
# much.
MAX_LINES = 1_000
MAX_LINE_BYTES = 4_096


class ReadFailure(StrEnum):
    NO_ADDRESS = "no_address"  # the pod has no IP yet, or it is not an IP literal
    TIMEOUT = "timeout"
    REFUSED = "refused"  # connection refused, reset, unreachable
    HTTP_STATUS = "http_status"  # not 200 (redirects included: never followed)
    TOO_LARGE = "too_large"
    BAD_RESPONSE = "bad_response"  # not HTTP, chunked or compressed, not UTF-8
    PARSE_ERROR = "parse_error"
    MISSING = "missing"  # no vllm:num_requests_waiting / _running (the counter may be missing)
    INVALID_VALUE = "invalid_value"  # NaN, infinite, negative or absurdly large (gauges or counter)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A reading, or why there is none (`reading` None and `failure` set). `succeeded`: the pod's
    vllm:request_success_total summed over its series, None when it does not export it."""

    reading: QueueReading | None
    failure: ReadFailure | None = None
    detail: str = ""
    succeeded: float | None = None

    @classmethod
    def failed(cls, failure: ReadFailure, detail: str) -> ReadResult:
        return cls(reading=None, failure=failure, detail=detail[:200])


def endpoint_url(ip: str | None, port: int) -> str:
    if ip is None:
        return f"http://<no pod IP>:{port}/metrics"
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/metrics"


def read_queue(
    ip: str | None,
    port: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    clock: Callable[[], float] = time.monotonic,
) -> ReadResult:
    """GET http://<ip>:<port>/metrics and return the pod's requests waiting and running."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return ReadResult.failed(ReadFailure.NO_ADDRESS, f"pod IP {ip!r} is not an IP address")
    if not 0 < port < 65536:
        return ReadResult.failed(ReadFailure.NO_ADDRESS, f"port {port} out of range")
    fetched = _get(str(address), port, timeout_s, max_bytes, clock)
    if isinstance(fetched, ReadResult):
        return fetched
    return parse_queue(fetched)


def _get(
    ip: str, port: int, timeout_s: float, max_bytes: int, clock: Callable[[], float]
) -> bytearray | ReadResult:
    deadline = clock() + timeout_s
    host = f"[{ip}]" if ":" in ip else ip
    request = (
        f"GET /metrics HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/plain\r\n"
        "Accept-Encoding: identity\r\nUser-Agent: greenllm-agent\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    # Headers count against the same limit as the body.
    limit = max_bytes + 64 * 1024
    data = bytearray()
    try:
        with socket.create_connection((ip, port), timeout=timeout_s) as sock:
            sock.sendall(request)
            while True:
                remaining = deadline - clock()
                if remaining <= 0:
                    raise TimeoutError()
                sock.settimeout(remaining)
                chunk = sock.recv(min(65536, limit + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
                if len(data) > limit:
                    return ReadResult.failed(ReadFailure.TOO_LARGE, f"answer larger than {max_bytes} bytes")
    except TimeoutError:
        return ReadResult.failed(ReadFailure.TIMEOUT, f"no complete answer within {timeout_s:g} s")
    except OSError as exc:
        return ReadResult.failed(ReadFailure.REFUSED, f"{type(exc).__name__}: {exc}")
    return _body(data, max_bytes)


def _body(data: bytearray, max_bytes: int) -> bytearray | ReadResult:
    """The body of a 200 answer (`data` shortened in place), or why not."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return ReadResult.failed(ReadFailure.BAD_RESPONSE, "no end of HTTP headers")
    lines = bytes(data[:end]).split(b"\r\n")
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        return ReadResult.failed(ReadFailure.BAD_RESPONSE, f"not an HTTP status line: {lines[0][:80]!r}")
    if status[1] != b"200":
        return ReadResult.failed(ReadFailure.HTTP_STATUS, f"HTTP {status[1][:3].decode('ascii', 'replace')}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"transfer-encoding" and value != b"identity":
            return ReadResult.failed(ReadFailure.BAD_RESPONSE, "transfer-encoding in an HTTP/1.0 answer")
        if name == b"content-encoding" and value not in (b"", b"identity"):
            return ReadResult.failed(ReadFailure.BAD_RESPONSE, f"content-encoding {value[:20]!r}")
    del data[: end + 4]
    if len(data) > max_bytes:
        return ReadResult.failed(ReadFailure.TOO_LARGE, f"body larger than {max_bytes} bytes")
    return data


def _lines_naming(body: bytes | bytearray, names: tuple[str, ...]) -> list[bytes] | None:
    """The lines of `body` that contain one of `names`, in order; None if there are more than MAX_LINES or
    one is longer than MAX_LINE_BYTES. Linear in the body: a search resumes at the end of the last match."""
    found: dict[int, bytes] = {}
    for name in names:
        needle = name.encode("ascii")
        pos = body.find(needle)
        while pos >= 0:
            start = body.rfind(b"\n", 0, pos) + 1
            end = body.find(b"\n", pos)
            end = len(body) if end < 0 else end
            if end - start > MAX_LINE_BYTES:
                return None
            found[start] = bytes(body[start:end])
            if len(found) > MAX_LINES:
                return None
            pos = body.find(needle, end)
    return [found[start] for start in sorted(found)]


def parse_queue(body: bytes | bytearray) -> ReadResult:
    """Sum `vllm:num_requests_waiting` and `vllm:num_requests_running` over their label sets (engines), and
    `vllm:request_success_total` over its label sets if the pod exports it."""
    # A sample or TYPE/HELP line of the gauges or the counter starts with (or names) them; label values
    # cannot hold a raw newline, so keeping those lines keeps the families whole and the parser's work small.
    names = (WAITING, RUNNING, SUCCEEDED)
    lines = _lines_naming(body, names)
    if lines is None:
        return ReadResult.failed(
            ReadFailure.TOO_LARGE,
            f"more than {MAX_LINES} lines, or one over {MAX_LINE_BYTES} bytes, name the queue metrics",
        )
    try:
        wanted = "".join(line.decode("utf-8") + "\n" for line in lines)
    except UnicodeDecodeError:
        return ReadResult.failed(ReadFailure.BAD_RESPONSE, "not UTF-8")
    totals: dict[str, float] = {}
    odd_counts: list[float] = []  # series of the counter no counter can have (each one, not only the sum)
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if sample.name in names:
                    value = float(sample.value)
                    totals[sample.name] = totals.get(sample.name, 0.0) + value
                    if sample.name == SUCCEEDED and not (math.isfinite(value) and value >= 0):
                        odd_counts.append(value)
    except Exception as exc:  # the parser raises ValueError, IndexError, KeyError... on garbage
        return ReadResult.failed(ReadFailure.PARSE_ERROR, f"{type(exc).__name__}: {exc}")
    missing = [name for name in (WAITING, RUNNING) if name not in totals]
    if missing:
        return ReadResult.failed(ReadFailure.MISSING, f"no {', '.join(missing)}")
    reading = QueueReading(waiting=totals[WAITING], running=totals[RUNNING])
    bad = [v for v in (reading.waiting, reading.running) if not (math.isfinite(v) and 0 <= v <= MAX_REQUESTS)]
    if bad:
        return ReadResult.failed(
            ReadFailure.INVALID_VALUE, f"waiting {reading.waiting:g}, running {reading.running:g}"
        )
    succeeded = totals.get(SUCCEEDED)
    if succeeded is not None and (odd_counts or not succeeded <= MAX_COUNT):
        shown = odd_counts[0] if odd_counts else succeeded
        return ReadResult.failed(ReadFailure.INVALID_VALUE, f"{SUCCEEDED} {shown:g}")
    return ReadResult(reading=reading, succeeded=succeeded)
