"""Prometheus metrics of the chat app: replies per backend and history writes.

They are served on a port of their own (METRICS_PORT, GET /metrics; the stack sets 9090),
which no Service or load balancer exposes: with chatExposure=login the app port is public,
its metrics are not.

Reply metrics use vLLM's core names under a `chat:` prefix (requests running, time to first
token, inter-token latency), measured as a user sees them: from asking the backend to each
streamed piece. `chat:messages` counts replies by backend and outcome. History metrics
read the writer's own counters at scrape time, so a stuck writer shows even when no one chats.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.chat.history import ChatHistory

BACKEND = ("backend",)
# vLLM's bounds, so the chat app's view and the backends' own histograms line up.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
               2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
OUTCOMES = ("ok", "error", "abort")

REGISTRY = CollectorRegistry()
RUNNING = Gauge("chat:num_requests_running", "Replies streaming now.", BACKEND, registry=REGISTRY)
TTFT = Histogram(
    "chat:time_to_first_token_seconds", "From asking the backend to its first text.", BACKEND,
    buckets=TTFT_BUCKETS, registry=REGISTRY,
)  # fmt: skip
ITL = Histogram(
    "chat:inter_token_latency_seconds", "Between two streamed pieces of a reply.", BACKEND,
    buckets=ITL_BUCKETS, registry=REGISTRY,
)  # fmt: skip
MESSAGES = Counter(
    "chat:messages", "Replies by backend and outcome (ok, error, abort).",
    (*BACKEND, "outcome"), registry=REGISTRY,
)  # fmt: skip


class HistoryMetrics(Collector):
    """The history writer's failures and backlog, read when Prometheus scrapes."""

    def __init__(self, history: ChatHistory) -> None:
        self.history = history

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "chat:history_write_failures", "Firestore batch commits that failed (then retried)."
        )
        failures.add_metric([], self.history.failed_commits)
        yield failures
        yield GaugeMetricFamily(
            "chat:history_pending_writes",
            "Messages accepted but not yet confirmed by Firestore.",
            value=self.history.pending,
        )
        yield GaugeMetricFamily(
            "chat:history_oldest_pending_seconds",
            "Age of the oldest message still waiting for Firestore (0 when none waits).",
            value=self.history.oldest_pending_s,
        )


def serve_metrics(history: ChatHistory, host: str, port: int) -> Callable[[], None]:
    """Serve GET /metrics on `host:port` with `history`'s writer; returns what stops it.

    Port 0 serves nothing (local runs, where several apps share one machine).
    """
    if port == 0:
        return lambda: None
    collector = HistoryMetrics(history)
    REGISTRY.register(collector)
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()
        REGISTRY.unregister(collector)

    return stop


async def watch_reply(backend: str, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield a backend's streamed pieces unchanged, recording its latency and outcome."""
    last = time.monotonic()
    outcome = "abort"
    # Looked up once: this runs for every token of every reply.
    gap = TTFT.labels(backend)
    between_tokens = ITL.labels(backend)
    RUNNING.labels(backend).inc()
    try:
        async for piece in pieces:
            now = time.monotonic()
            gap.observe(now - last)
            gap, last = between_tokens, now
            yield piece
        outcome = "ok"
    except Exception:
        outcome = "error"
        raise
    finally:
        RUNNING.labels(backend).dec()
        MESSAGES.labels(backend, outcome).inc()
