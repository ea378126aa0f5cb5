"""A stand-in for a vLLM server's /metrics on 127.0.0.1: real HTTP (http.server in a thread), vLLM's metric
names and types, and the hostile answers a broken or malicious pod could give."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def vllm_metrics(
    waiting: float | str,
    running: float | str = 2.0,
    engines: int = 1,
    succeeded: Mapping[str, float | str] | None = None,
) -> bytes:
    """vLLM V1 exposition text: the two scheduler gauges per engine, and a counter and a histogram line.
    `succeeded` (finished_reason -> count, per engine) adds vllm:request_success_total as prometheus_client
    writes it for vLLM's counter family vllm:request_success, with its `_created` series."""
    success: list[str] = []
    if succeeded is not None:
        series = [(e, r, v) for e in range(engines) for r, v in succeeded.items()]
        success = [
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            *(
                f'vllm:request_success_total{{engine="{e}",finished_reason="{r}",model_name="llama"}} {v}'
                for e, r, v in series
            ),
            "# HELP vllm:request_success_created Count of successfully processed requests.",
            "# TYPE vllm:request_success_created gauge",
            *(
                f'vllm:request_success_created{{engine="{e}",finished_reason="{r}",model_name="llama"}} '
                "1.7e+09"
                for e, r, _ in series
            ),
        ]
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        *(f'vllm:num_requests_running{{engine="{e}",model_name="llama"}} {running}' for e in range(engines)),
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        *(f'vllm:num_requests_waiting{{engine="{e}",model_name="llama"}} {waiting}' for e in range(engines)),
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        'vllm:generation_tokens_total{engine="0",model_name="llama"} 12345.0',
        "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.25",model_name="llama"} 3.0',
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="llama"} 4.0',
        'vllm:time_to_first_token_seconds_count{engine="0",model_name="llama"} 4.0',
        'vllm:time_to_first_token_seconds_sum{engine="0",model_name="llama"} 1.5',
        *success,
    ]
    return ("\n".join(lines) + "\n").encode()


class VllmStub:
    """Serves `body` with `status` (and `headers`) at /metrics; `serve(n)` sets a well-formed body.
    `stream` (bytes, count) sends `bytes` `count` times (a gigantic answer without holding it in memory);
    `dribble_s` sleeps between bytes of the body (a slow-loris pod). `stop()` / `start()` take the port
    down and bring it back (connection refused in between). `reads` counts the requests served."""

    def __init__(self) -> None:
        self.status = 200
        self.body = vllm_metrics(0)
        self.headers: dict[str, str] = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        self.stream: tuple[bytes, int] | None = None
        self.dribble_s = 0.0
        self.reads = 0
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def serve(
        self,
        waiting: float,
        engines: int = 1,
        running: float = 2.0,
        succeeded: Mapping[str, float] | None = None,
    ) -> None:
        """A well-formed answer: `waiting` and `running` requests on each of `engines` engines, and with
        `succeeded` (finished_reason -> count per engine) vLLM's finished-requests counter."""
        body = vllm_metrics(waiting, running, engines, succeeded)
        self.body, self.status, self.stream = body, 200, None

    def count(self) -> int:
        with self._lock:
            return self.reads

    def start(self) -> VllmStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with stub._lock:
                    stub.reads += 1
                self.send_response(stub.status)
                for name, value in stub.headers.items():
                    self.send_header(name, value)
                if stub.stream is None:
                    self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                try:
                    if stub.stream is not None:
                        chunk, times = stub.stream
                        for _ in range(times):
                            self.wfile.write(chunk)
                    elif stub.dribble_s:
                        for byte in stub.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(stub.dribble_s)
                    else:
                        self.wfile.write(stub.body)
                except OSError:
                    pass  # the agent hung up (too large, too slow): as it should

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
