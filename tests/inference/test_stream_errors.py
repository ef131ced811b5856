"""A generation that fails after streaming has begun ends the stream with an in-band error."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from app.inference.engine import Completion, SamplingParams, TokenLogprob
from app.inference.server import create_app
from app.inference.settings import Settings
from app.inference.transformers_engine import TransformersEngine


class FailsAfterFirstToken(TransformersEngine):
    """The real engine, with a device error after the first streamed token (like a CUDA fault)."""

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        on_logprobs: Callable[[tuple[TokenLogprob, ...]], None] | None = None,
    ) -> Completion:
        if on_text is None:  # warm-up and non-streaming paths stay healthy
            return super().generate(prompt_ids, params, on_text, cancel, on_logprobs)

        def fail(piece: str) -> None:
            on_text(piece)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        return super().generate(prompt_ids, params, fail, cancel, on_logprobs)


def _events(body: str) -> list[str]:
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


def test_stream_failure_is_reported_and_the_slot_is_freed(tiny_model_dir: Path) -> None:
    settings = Settings(model_uri=str(tiny_model_dir), max_concurrency=1, max_queue=0)
    app = create_app(
        settings, engine_factory=lambda s: FailsAfterFirstToken(Path(s.model_uri), "tiny-gemma")
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        chat = {
            "model": "tiny-gemma",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 50,
            "temperature": 0,
            "stream": True,
        }
        for _ in range(2):  # the second call proves the only slot was released
            response = client.post("/v1/chat/completions", json=chat)
            assert response.status_code == 200
            events = _events(response.text)
            assert events[-1] == "[DONE]"
            error = json.loads(events[-2])["error"]
            assert error["type"] == "server_error"
            assert "illegal memory access" in error["message"]
            assert json.loads(events[1])["choices"][0]["delta"]["content"]  # text came first

        response = client.post(
            "/v1beta/models/tiny-gemma:streamGenerateContent?alt=sse",
            json={
                "contents": [{"parts": [{"text": "hi"}]}],
                "generationConfig": {"temperature": 0},
            },
        )
        last = json.loads(_events(response.text)[-1])
        assert last["error"]["status"] == "INTERNAL"
