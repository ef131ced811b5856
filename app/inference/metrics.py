"""Prometheus metrics at GET /metrics, under vLLM's names so one dashboard and HPA read both.

The names and the `model_name` label are vLLM's (v1 engine): requests running and waiting,
time to first token, inter-token latency, end-to-end latency, prompt and generation tokens
and finished requests by reason. A request's clock starts when it arrives, before it waits
for a slot, as vLLM's does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from app.inference.engine import StreamEvent
from app.inference.state import get_state

# vLLM's bucket bounds, so histograms from both servers aggregate.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
               2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
MODEL = ("model_name",)

REGISTRY = CollectorRegistry()
RUNNING = Gauge("vllm:num_requests_running", "Requests generating now.", MODEL, registry=REGISTRY)
WAITING = Gauge(
    "vllm:num_requests_waiting", "Requests waiting for a generation slot.", MODEL,
    registry=REGISTRY,
)  # fmt: skip
PROMPT_TOKENS = Counter(
    "vllm:prompt_tokens", "Prompt tokens of finished requests.", MODEL, registry=REGISTRY
)
GENERATION_TOKENS = Counter(
    "vllm:generation_tokens", "Generated tokens of finished requests.", MODEL, registry=REGISTRY
)
TTFT = Histogram(
    "vllm:time_to_first_token_seconds", "From arrival to the first generated text.", MODEL,
    buckets=TTFT_BUCKETS, registry=REGISTRY,
)  # fmt: skip
ITL = Histogram(
    "vllm:inter_token_latency_seconds", "Between two pieces of generated text.", MODEL,
    buckets=ITL_BUCKETS, registry=REGISTRY,
)  # fmt: skip
E2E = Histogram(
    "vllm:e2e_request_latency_seconds", "From arrival to the last generated text.", MODEL,
    buckets=E2E_BUCKETS, registry=REGISTRY,
)  # fmt: skip
SUCCESS = Counter(
    "vllm:request_success", "Finished requests by finish reason (stop, length, abort).",
    (*MODEL, "finished_reason"), registry=REGISTRY,
)  # fmt: skip

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (vLLM's names)", include_in_schema=False)
async def metrics(request: Request) -> Response:
    state = get_state(request)
    RUNNING.labels(state.model_name).set(state.admission.running)
    WAITING.labels(state.model_name).set(state.admission.waiting)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """One request's timings and tokens; create it on arrival, then `watch` its events."""

    def __init__(self, model_name: str) -> None:
        self.model = model_name
        self.arrived = time.monotonic()

    async def watch(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        """Yield `events` unchanged, recording first text, gaps, tokens and how it ended."""
        last: float | None = None
        finished = False
        try:
            async for event in events:
                now = time.monotonic()
                if event.text:
                    if last is None:
                        TTFT.labels(self.model).observe(now - self.arrived)
                    else:
                        ITL.labels(self.model).observe(now - last)
                    last = now
                if (done := event.completion) is not None:
                    finished = True
                    PROMPT_TOKENS.labels(self.model).inc(done.prompt_tokens)
                    GENERATION_TOKENS.labels(self.model).inc(done.completion_tokens)
                    SUCCESS.labels(self.model, done.finish_reason).inc()
                    E2E.labels(self.model).observe(now - self.arrived)
                yield event
        finally:
            if not finished:
                # The client left or generation failed before a result.
                SUCCESS.labels(self.model, "abort").inc()
