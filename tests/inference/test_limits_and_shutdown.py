"""Bounded concurrency (429 when the queue is full) and graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from devtools.processes import ServerProcess
from tests.inference.inference_fixtures import start_inference

CHAT = "/v1/chat/completions"


def _long_chat(max_tokens: int, stream: bool = False) -> dict[str, object]:
    # Greedy decoding of the random model never ends its turn: it runs to max_tokens.
    return {
        "model": "tiny-gemma",
        "messages": [{"role": "user", "content": "Tell me a long story"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }


@pytest.fixture(scope="module")
def small_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with start_inference(
        {"MODEL_URI": str(tiny_model_dir), "MAX_CONCURRENCY": "1", "MAX_QUEUE": "1"},
        tmp_path_factory.mktemp("small"),
    ) as server:
        yield server.wait_ready()


def test_overload_gets_429_and_admitted_requests_finish(small_server: ServerProcess) -> None:
    def call(_: int) -> httpx.Response:
        return httpx.post(small_server.url + CHAT, json=_long_chat(200), timeout=60)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(call, range(6)))
    statuses = sorted(r.status_code for r in responses)
    # One generating plus one waiting; the other four are turned away at once.
    assert statuses == [200, 200, 429, 429, 429, 429]
    rejected = next(r for r in responses if r.status_code == 429)
    assert "MAX_CONCURRENCY=1, MAX_QUEUE=1" in rejected.json()["error"]["message"]
    assert rejected.headers["retry-after"] == "1"
    finished = [r.json() for r in responses if r.status_code == 200]
    assert all(r["usage"]["completion_tokens"] == 200 for r in finished)
    # Slots were released: the server admits again.
    assert httpx.post(small_server.url + CHAT, json=_long_chat(3), timeout=30).status_code == 200


def test_client_leaving_a_stream_frees_its_slot(small_server: ServerProcess) -> None:
    with httpx.stream("POST", small_server.url + CHAT, json=_long_chat(6000, True)) as response:
        assert response.status_code == 200
        next(response.iter_lines())
    started = time.monotonic()
    reply = httpx.post(small_server.url + CHAT, json=_long_chat(3), timeout=30)
    assert reply.status_code == 200
    assert time.monotonic() - started < 5


def test_a_huge_prompt_is_refused_without_stalling_the_server(
    small_server: ServerProcess,
) -> None:
    # 3 MB of prompt cannot fit 8192 tokens: refused before tokenizing (a 10 MB one once
    # took over a minute of tokenizing to reach that answer), and the server goes on.
    huge = {"model": "tiny-gemma", "prompt": "hello world " * 250_000, "max_tokens": 1}
    rejected = httpx.post(small_server.url + "/v1/completions", json=huge, timeout=120)
    assert rejected.status_code == 400
    assert "refused without tokenizing" in rejected.json()["error"]["message"]
    assert small_server.health()[0] == 200


def test_sigterm_lets_the_stream_in_flight_finish(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = start_inference({"MODEL_URI": str(tiny_model_dir)}, tmp_path)
    try:
        server.wait_ready()
        events: list[str] = []
        with httpx.stream(
            "POST", server.url + CHAT, json=_long_chat(100, True), timeout=30
        ) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    events.append(line[6:])
                if len(events) == 3:
                    break
            terminated = time.monotonic()
            server.popen.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(httpx.ConnectError):
                httpx.get(server.url + "/health", timeout=2)  # no new requests
            events.extend(line[6:] for line in lines if line.startswith("data: "))
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 100  # all of it
        assert json.loads(events[-3])["choices"][0]["finish_reason"] == "length"
        assert server.popen.wait(timeout=10) == 0
        assert time.monotonic() - terminated < 10
    finally:
        server.stop()
