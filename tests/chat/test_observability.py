"""The running chat app's /metrics (parsed as Prometheus does) and its JSON logs."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.chat import logs as chat_logs
from app.inference import logs as inference_logs
from devtools.firestore_emulator import FirestoreEmulator
from devtools.ports import free_port
from devtools.processes import ServerProcess
from tests.chat.stack import GEMMA, REPLY, Stack, image_layout, start_app
from tests.chat.test_app import connect, send, text_of, wait_for

METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def observed_app(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A chat app laid out as its image, serving its metrics on a port of their own."""
    work = tmp_path_factory.mktemp("observed-chat")
    port = free_port()
    app = start_app(
        "chat-observed",
        [sys.executable, "-m", "app.chat"],
        {
            **stack.firestore.env(),
            "CHAT_BACKENDS": json.dumps(stack.backends()),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "METRICS_PORT": str(METRICS_PORT),
            "GOOGLE_CLOUD_PROJECT": "demo-project",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "SHUTDOWN_GRACE_S": "2",
            "STREAM_UPDATE_INTERVAL_MS": "0",
        },
        log_dir=work,
        port=port,
        health="/healthz",
        root=image_layout(work),
    )
    with app:
        stack.inference()
        yield app.wait_ready()


def scrape(port: int) -> dict[str, float]:
    """Every sample of GET /metrics, keyed `name{label=value,...}` with sorted labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def test_replies_and_history_writes_are_measured_and_logged_without_content(
    stack: Stack, firestore: FirestoreEmulator, observed_app: ServerProcess
) -> None:
    chat_app = observed_app
    # Metrics are not on the app port, which a load balancer may expose.
    assert "chat:messages" not in httpx.get(f"{chat_app.url}/metrics", timeout=30).text
    before = scrape(METRICS_PORT)
    secret = f"my-secret-{secrets.token_hex(4)}"
    browser = f"browser-{secrets.token_hex(4)}"
    client = connect(chat_app)
    client.predict(browser, api_name="/conversations")
    _, final = send(client, f"remember {secret}", GEMMA, browser)
    assert text_of(final[-1]) == REPLY
    after = scrape(METRICS_PORT)

    ok = "chat:messages_total{backend=gemma,outcome=ok}"
    assert after[ok] == before.get(ok, 0) + 1
    ttft = "chat:time_to_first_token_seconds_count{backend=gemma}"
    assert after[ttft] == before.get(ttft, 0) + 1
    assert after["chat:inter_token_latency_seconds_count{backend=gemma}"] > before.get(
        "chat:inter_token_latency_seconds_count{backend=gemma}", 0
    )
    assert after["chat:num_requests_running{backend=gemma}"] == 0
    assert "chat:history_write_failures_total{}" in after

    # A Firestore outage shows as failed commits and an ageing backlog, then clears.
    stack.firestore.stop()
    try:
        send(client, f"kept through the outage {secret}", GEMMA, browser)
        assert wait_for(lambda: scrape(METRICS_PORT)["chat:history_write_failures_total{}"] > 0, 60)
        down = scrape(METRICS_PORT)
        assert down["chat:history_pending_writes{}"] == 2
        assert down["chat:history_oldest_pending_seconds{}"] > 0
    finally:
        stack.firestore.start()
    assert wait_for(lambda: scrape(METRICS_PORT)["chat:history_pending_writes{}"] == 0, 60)
    assert scrape(METRICS_PORT)["chat:history_oldest_pending_seconds{}"] == 0

    log = chat_app.output()
    assert secret not in log
    assert REPLY not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("Firestore write failed" in r["message"] for r in records)
    assert {r["severity"] for r in records} >= {"INFO", "WARNING"}
    posts = [r["httpRequest"] for r in records if "httpRequest" in r]
    assert any(p["requestMethod"] == "POST" and p["status"] == 200 for p in posts)


def _code(module: Any) -> str:
    """The module's source after its docstring."""
    source = Path(module.__file__).read_text()
    return source.split('"""', 2)[2]


def test_both_images_carry_the_same_logging_module() -> None:
    # Each image's build context holds only its own app folder, so the module is copied.
    assert _code(chat_logs) == _code(inference_logs)


def test_trace_fields_follow_cloud_logging() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert chat_logs.trace_fields({"x-cloud-trace-context": f"{trace}/42;o=1"}, "p") == {
        chat_logs.TRACE_FIELD: f"projects/p/traces/{trace}",
        chat_logs.SPAN_FIELD: "42",
    }
    parent = f"00-{trace}-00f067aa0ba902b7-01"
    assert chat_logs.trace_fields({"traceparent": parent}, "p") == {
        chat_logs.TRACE_FIELD: f"projects/p/traces/{trace}",
        chat_logs.SPAN_FIELD: "00f067aa0ba902b7",
    }
    # Without a project Cloud Logging cannot resolve a trace; malformed headers are ignored.
    assert chat_logs.trace_fields({"traceparent": parent}, None) == {}
    assert chat_logs.trace_fields({"traceparent": "garbage"}, "p") == {}
