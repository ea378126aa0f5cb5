"""One simulated vLLM replica, request by request: chunked prefill shares each iteration with decode.

The model, in full (vLLM V1's scheduler with chunked prefill, as a piecewise-exact fluid between events):
- Every engine iteration runs one decode step for each of the `c` running requests (they come first) and
  fills the rest of the token budget (`max_batched_tokens - c`) with prompt chunks of waiting requests,
  first come first served. Its time is the decode step of the batch (the energy model's median
  inter-token latency at batch `c` and this power setting) plus the prefill time of the chunk (chunk /
  the replica's prefill tokens/s at this setting):  T = d(c) + chunk / P.
- A request's first token comes with the iteration that finishes its prompt: TTFT = that time - its
  arrival (queueing included). It then decodes one token per iteration: its TPOT is the mean iteration
  time over its remaining output tokens, so prompt chunks of *other* requests that share those iterations
  stretch it (the prefill-heavy failure mode of TPOT). A one-token request has no TPOT.
- No more than `max_running` requests decode at once (vLLM's max_num_seqs); prompts wait meanwhile.
- Power: the iteration's prefill share draws the replica's prefill power and its decode share the decode
  power at batch `c`; with nothing to do the replica draws its idle power. Energy is kept in three parts
  (idle, prefill, decode) so the report can split it.
- The power setting (hence `perf`) may change between calls (the fast tier); it applies from then on.

Between two events (a prompt finishing, a request finishing, the end of the advance) the batch and the
chunk are constant, so time, tokens and energy are integrated exactly for that model.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from greenllm.core.performance import ReplicaPerformance


class Requests:
    """The trace's requests as plain lists, with each request's measured latencies (NaN until known)."""

    def __init__(self, arrival: list[float], prompt: list[float], output: list[float]) -> None:
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        n = len(arrival)
        self.first_token = [math.nan] * n  # absolute time of the first token
        self.finish = [math.nan] * n  # absolute time of the last token
        self.first_token_log: list[int] = []  # requests in the order their first token came
        self.finish_log: list[int] = []  # requests in the order they finished

    def __len__(self) -> int:
        return len(self.arrival)


class Server:
    """A ready replica serving the requests routed to it."""

    __slots__ = (
        "_batch_memo",
        "_chunk",
        "_decode",
        "_heap",
        "_max_running",
        "_queue",
        "_queued_tokens",
        "_reqs",
        "_slo_s",
        "arrived",
        "busy_s",
        "clock",
        "completed",
        "energy_decode_j",
        "energy_idle_j",
        "energy_prefill_j",
        "generated_tokens",
        "perf",
        "prompt_tokens_done",
        "routed_free_at",
    )

    def __init__(
        self,
        reqs: Requests,
        perf: ReplicaPerformance,
        now: float,
        *,
        max_batched_tokens: int,
        max_running: int,
        tpot_slo_s: float,
    ) -> None:
        if max_batched_tokens < 1 or max_running < 1:
            raise ValueError("max_batched_tokens and max_running must be >= 1")
        self._reqs = reqs
        self.perf = perf
        self.clock = now
        self._chunk = float(max_batched_tokens)
        self._max_running = max_running
        self._slo_s = tpot_slo_s
        self._queue: deque[list[float]] = deque()  # [request index, prompt tokens left]
        self._queued_tokens = 0.0
        self._heap: list[tuple[float, int]] = []  # (decode counter at which it finishes, request index)
        self._decode = 0.0  # tokens each running request has decoded since the server started
        self._batch_memo: dict[tuple[int, int], tuple[float, float]] = {}
        self.energy_idle_j = 0.0
        self.energy_prefill_j = 0.0
        self.energy_decode_j = 0.0
        self.prompt_tokens_done = 0.0
        self.generated_tokens = 0.0
        self.completed = 0
        self.busy_s = 0.0  # time with a prompt or a decode in hand (HPA-style utilization)
        self.routed_free_at = now  # the router's own estimate of when this server's prompts are done
        self.arrived = 0  # requests routed here since the engine last reset it (the agent's arrivals)

    # -- views ------------------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Requests whose prompt has not started (vLLM num_requests_waiting; the head may be in chunks)."""
        n = len(self._queue)
        if n and self._queue[0][1] < self._reqs.prompt[int(self._queue[0][0])]:
            n -= 1
        return n

    @property
    def running(self) -> int:
        """Requests decoding, plus the one whose prompt is being chunked (vLLM num_requests_running)."""
        started = 1 if self._queue and self._queue[0][1] < self._reqs.prompt[int(self._queue[0][0])] else 0
        return len(self._heap) + started

    @property
    def queued_prompt_tokens(self) -> float:
        return self._queued_tokens

    @property
    def idle(self) -> bool:
        return not self._queue and not self._heap

    @property
    def energy_j(self) -> float:
        return self.energy_idle_j + self.energy_prefill_j + self.energy_decode_j

    # -- service ----------------------------------------------------------------------------------------
    def add(self, index: int, at: float) -> None:
        """A request arrives at `at` (>= the server's clock)."""
        self.advance(at)
        self.arrived += 1
        prompt = self._reqs.prompt[index]
        self._queue.append([float(index), prompt])
        self._queued_tokens += prompt

    def _step(self, batch: int) -> tuple[float, float]:
        """(decode iteration s, decode W) at `batch` for the current perf, memoised per perf."""
        key = (id(self.perf), batch)
        hit = self._batch_memo.get(key)
        if hit is None:
            if len(self._batch_memo) > 4096:
                self._batch_memo.clear()
            hit = (self.perf.decode_step_s(batch, self._slo_s), self.perf.decode_batch_power_w(batch))
            self._batch_memo[key] = hit
        return hit

    def advance(self, until: float, *, stop_when_idle: bool = False) -> None:
        """Serve from the server's clock up to `until` (or, with `stop_when_idle`, until it has nothing
        left to do: idle time after the last request is then not billed)."""
        reqs = self._reqs
        perf = self.perf
        prefill_rate = perf.prompt_tokens_per_s
        prefill_w = perf.prefill_power_w
        heap = self._heap
        queue = self._queue
        while self.clock < until:
            c = len(heap)
            span = until - self.clock
            if queue and c < self._max_running:
                d, decode_w = self._step(c) if c else (0.0, 0.0)
                chunk = min(max(self._chunk - c, 1.0), self._queued_tokens)
                prefill_s = chunk / prefill_rate
                iteration = d + prefill_s
                rate = chunk / iteration  # prompt tokens per second while this lasts
                head = queue[0]
                dt = min(span, head[1] / rate)
                if c:
                    dt = min(dt, (heap[0][0] - self._decode) * iteration)
                dt = max(dt, 0.0)
                self.energy_prefill_j += prefill_w * dt * prefill_s / iteration
                self.energy_decode_j += decode_w * dt * d / iteration
                if c:
                    self._decode += dt / iteration
                    self.generated_tokens += c * dt / iteration
                self.busy_s += dt
                done = rate * dt
                head[1] -= done
                self._queued_tokens -= done
                self.prompt_tokens_done += done
                self.clock += dt
                if head[1] <= 1e-9:
                    self._queued_tokens = max(self._queued_tokens - head[1], 0.0)
                    queue.popleft()
                    self._first_token(int(head[0]))
            elif c:
                d, decode_w = self._step(c)
                dt = max(min(span, (heap[0][0] - self._decode) * d), 0.0)
                self.energy_decode_j += decode_w * dt
                self.busy_s += dt
                self._decode += dt / d
                self.generated_tokens += c * dt / d
                self.clock += dt
            else:
                if stop_when_idle:
                    return
                self.energy_idle_j += perf.idle_power_w * span
                self.clock = until
                return
            while heap and heap[0][0] <= self._decode + 1e-9:
                _, index = heapq.heappop(heap)
                reqs.finish[index] = self.clock
                reqs.finish_log.append(index)
                self.completed += 1

    def _first_token(self, index: int) -> None:
        reqs = self._reqs
        reqs.first_token[index] = self.clock
        reqs.first_token_log.append(index)
        self.generated_tokens += 1.0
        left = reqs.output[index] - 1.0
        if left <= 0.0:
            reqs.finish[index] = self.clock
            reqs.finish_log.append(index)
            self.completed += 1
        else:
            heapq.heappush(self._heap, (self._decode + left, index))
