"""Oversized input is refused early: bodies over MAX_BODY_BYTES (413), prompts too long to fit
the context before tokenizing (400), and tokenizing waits for admission like generating (429)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.processes import ServerProcess
from tests.inference.inference_fixtures import start_inference

MODEL = "tiny-gemma"
LIMIT = 65536
CHAT = "/v1/chat/completions"
GEMINI = f"/v1beta/models/{MODEL}:generateContent"
COUNT = f"/v1beta/models/{MODEL}:countTokens"


@pytest.fixture(scope="module")
def tight(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with start_inference(
        {
            "MODEL_URI": str(tiny_model_dir),
            "MAX_CONCURRENCY": "1",
            "MAX_QUEUE": "0",
            "MAX_BODY_BYTES": str(LIMIT),
            "MAX_MODEL_LEN": "2048",
        },
        tmp_path_factory.mktemp("tight"),
    ) as server:
        yield server.wait_ready()


def _chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def _raw_request(
    server: ServerProcess, path: str, declared_length: int
) -> tuple[int, dict[str, object]]:
    """Send only the headers of a POST that declares a huge body, and read the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared_length}\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.mark.parametrize(
    ("path", "shape"), [(CHAT, "openai"), (GEMINI, "gemini"), ("/generate", "generate")]
)
def test_a_declared_body_over_the_limit_is_a_413_before_it_is_sent(
    tight: ServerProcess, path: str, shape: str
) -> None:
    # Nothing but the headers was sent: the answer cannot have waited for the 100 MB.
    status, body = _raw_request(tight, path, 100_000_000)
    assert status == 413
    message = json.dumps(body)
    assert "100000000 bytes" in message
    assert f"limit of {LIMIT} bytes (MAX_BODY_BYTES)" in message
    if shape == "openai":
        assert body["error"]["type"] == "request_too_large"  # type: ignore[index]
    elif shape == "gemini":
        assert body["error"]["code"] == 413  # type: ignore[index]
    else:
        assert "detail" in body


def test_a_chunked_body_over_the_limit_is_a_413(tight: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny-gemma", "messages": [{"role": "user", "content": "'
        for _ in range(LIMIT // 1024 + 2):
            yield b"x" * 1024
        yield b'"}]}'

    response = httpx.post(
        tight.url + CHAT,
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert f"more than {LIMIT} bytes" in response.json()["error"]["message"]


def test_a_body_within_the_limit_is_served(tight: ServerProcess) -> None:
    response = httpx.post(tight.url + CHAT, json=_chat("hi", max_tokens=2), timeout=60)
    assert response.status_code == 200, response.text


def test_a_prompt_too_long_for_the_context_is_refused_before_tokenizing(
    tight: ServerProcess,
) -> None:
    # 2048 tokens of context: more than 16 characters a token cannot fit.
    response = httpx.post(tight.url + CHAT, json=_chat("a" * 40000), timeout=60)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "40000 characters" in message
    assert "over 32768 characters" in message
    assert "without tokenizing" in message
    gemini = httpx.post(
        tight.url + COUNT, json={"contents": [{"parts": [{"text": "b" * 40000}]}]}, timeout=60
    )
    assert gemini.status_code == 400
    assert gemini.json()["error"]["status"] == "INVALID_ARGUMENT"
    # Under the cap, the prompt is tokenized and then measured against the context.
    response = httpx.post(tight.url + CHAT, json=_chat("hello world " * 2500), timeout=60)
    assert response.status_code == 400
    assert "longer than this model's context" in response.json()["error"]["message"]


def test_tokenizing_waits_for_admission_like_generating(tight: ServerProcess) -> None:
    count = {"contents": [{"parts": [{"text": "hello"}]}]}
    long_stream = _chat("Tell me a story", max_tokens=2000, temperature=0, stream=True)
    with httpx.stream("POST", tight.url + CHAT, json=long_stream, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)  # admitted: the only slot is taken
        busy = httpx.post(tight.url + COUNT, json=count, timeout=60)
        assert busy.status_code == 429
        assert busy.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert busy.headers["retry-after"] == "1"
        assert httpx.post(tight.url + CHAT, json=_chat("hi"), timeout=60).status_code == 429
    # The stream was left: its slot comes back.
    deadline = time.monotonic() + 60
    while (answer := httpx.post(tight.url + COUNT, json=count, timeout=60)).status_code == 429:
        assert time.monotonic() < deadline, "the left stream's slot never came back"
        time.sleep(0.1)
    assert answer.status_code == 200
    assert answer.json()["totalTokens"] > 3
