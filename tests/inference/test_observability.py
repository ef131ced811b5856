"""GET /metrics and the JSON logs of a real inference server, read as Prometheus and Cloud
Logging would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from devtools.processes import ServerProcess
from tests.inference.inference_fixtures import start_inference

MODEL = "tiny-gemma"
PROJECT = "demo-project"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# Appears in every prompt; it must never reach the logs.
SECRET = "zebra-violet-4471"


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with start_inference(
        {
            "MODEL_URI": str(tiny_model_dir),
            "LOG_LEVEL": "info",
            "MAX_CONCURRENCY": "2",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
        },
        tmp_path_factory.mktemp("observed"),
    ) as process:
        yield process.wait_ready()


@pytest.fixture(scope="module")
def traffic(server: ServerProcess) -> dict[str, Any]:
    """One plain and one streamed chat completion, and what their usage said."""
    usage = {"prompt": 0, "completion": 0}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"say {SECRET}"}]}
        plain = http.post(
            "/v1/chat/completions",
            json={**body, "max_tokens": 5},
            headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/123;o=1"},
        ).json()
        usage["prompt"] += plain["usage"]["prompt_tokens"]
        usage["completion"] += plain["usage"]["completion_tokens"]
        chunks = 0
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                **body,
                "max_tokens": 6,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                if chunk.get("usage"):
                    usage["prompt"] += chunk["usage"]["prompt_tokens"]
                    usage["completion"] += chunk["usage"]["completion_tokens"]
                chunks += any(c["delta"].get("content") for c in chunk["choices"])
        scraped = http.get("/metrics")
    return {
        "usage": usage,
        "streamed_pieces": chunks,
        "finish": plain["choices"][0]["finish_reason"],
        "metrics": scraped,
    }


def _samples(text: str) -> dict[str, list[Sample]]:
    by_name: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append(sample)
    return by_name


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_parse_with_vllm_names_and_count_what_usage_reported(
    traffic: dict[str, Any],
) -> None:
    response = traffic["metrics"]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    model = {"model_name": MODEL}
    assert _value(samples, "vllm:prompt_tokens_total", **model) == traffic["usage"]["prompt"]
    assert (
        _value(samples, "vllm:generation_tokens_total", **model) == traffic["usage"]["completion"]
    )
    # Both requests finished; nothing runs or waits once they have.
    assert _value(samples, "vllm:request_success_total", **model) == 2
    assert _value(samples, "vllm:request_success_total", finished_reason="abort") == 0
    assert _value(samples, "vllm:num_requests_running", **model) == 0
    assert _value(samples, "vllm:num_requests_waiting", **model) == 0
    assert _value(samples, "vllm:time_to_first_token_seconds_count", **model) == 2
    assert _value(samples, "vllm:e2e_request_latency_seconds_count", **model) == 2
    # Every piece of text after a request's first is one inter-token gap.
    assert _value(samples, "vllm:inter_token_latency_seconds_count", **model) >= (
        traffic["streamed_pieces"] - 1
    )
    first_token = [
        s for s in samples["vllm:time_to_first_token_seconds_bucket"] if s.labels["le"] == "+Inf"
    ]
    assert [s.value for s in first_token] == [2]


def _json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = [line for line in server.output().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def _posts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("httpRequest", {}).get("requestMethod") == "POST"]


def test_logs_are_cloud_logging_json_with_trace_and_http_request(
    server: ServerProcess, traffic: dict[str, Any]
) -> None:
    assert traffic["finish"] in {"stop", "length"}
    # A streamed request's line is written once its last byte is sent, which can be a moment
    # after the client has read that byte.
    server.wait_until(lambda: len(_posts(_json_lines(server))) >= 2, deadline_s=30)
    records = _json_lines(server)
    assert records, server.output()
    assert all({"severity", "message", "time"} <= set(r) for r in records)
    assert {r["severity"] for r in records} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert any(r["message"] == f"ready: serving {MODEL}" for r in records)
    posts = _posts(records)
    assert len(posts) == 2
    traced = [r for r in posts if "logging.googleapis.com/trace" in r]
    assert len(traced) == 1
    assert traced[0]["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert traced[0]["logging.googleapis.com/spanId"] == "123"
    request = traced[0]["httpRequest"]
    assert request["requestUrl"] == "/v1/chat/completions"
    assert request["status"] == 200
    assert request["latency"].endswith("s")
    assert float(request["latency"][:-1]) > 0
    assert int(request["responseSize"]) > 0
    # uvicorn's own lines are JSON too (only progress bars on stderr are not).
    assert any(r["logger"].startswith("uvicorn") for r in records)


def test_prompts_and_replies_never_reach_the_logs(
    server: ServerProcess, traffic: dict[str, Any]
) -> None:
    assert traffic["usage"]["completion"] > 0
    assert SECRET not in server.output()
