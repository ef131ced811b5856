"""Regression tests for the input classes the fuzzer found giving 500s, each on every route.

- Sampling parameters that underflow or overflow: a denormal temperature once divided the
  logits into inf and NaN (``POST /generate`` with ``temperature: 5e-324`` gave a 500).
- Text that cannot be encoded: a lone UTF-16 surrogate (``"\\ud800"``) in any string made the
  tokenizer raise TypeError, or the error reply itself fail to encode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from app.inference.engine import GREEDY_BELOW, SamplingParams
from app.inference.transformers_engine import TransformersEngine
from devtools.processes import ServerProcess
from tests.inference.inference_fixtures import API_KEY, SCRIPTED_REPLY, start_inference

MODEL = "gemma-sql"
SURROGATE = "\ud800"
DENORMAL = 5e-324

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
GEMINI = f"/v1beta/models/{MODEL}:generateContent"
GEMINI_STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"


@pytest.fixture(scope="module")
def server(
    scripted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with start_inference(
        {"MODEL_URI": str(scripted_model_dir), "API_KEY": API_KEY},
        tmp_path_factory.mktemp("input-classes"),
    ) as process:
        yield process.wait_ready()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        yield client


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps escapes the surrogate as \ud800, exactly what a JSON client sends.
    return http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "names"}], **extra}


def _completion(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "SELECT", "max_tokens": 4, **extra}


def _gemini(**config: Any) -> dict[str, Any]:
    return {
        "contents": [{"role": "user", "parts": [{"text": "names"}]}],
        "generationConfig": config,
    }


# ----------------------------------------------------------------- sampling that under/overflows


def test_the_fuzzers_denormal_temperature_is_greedy_on_generate(http: httpx.Client) -> None:
    # The exact case from the fuzzer: 500 {"detail":"Internal error: RuntimeError"}.
    body = {
        "type": "text",
        "prompt": "...",
        "temperature": DENORMAL,
        "top_p": 0.69,
        "max_tokens": 1,
    }
    response = post(http, "/generate", body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("temperature", [DENORMAL, 1e-300, 1e-10, GREEDY_BELOW / 2])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", lambda t: {"prompt": "names", "temperature": t, "max_tokens": 40}),
        (CHAT, lambda t: _chat(temperature=t, max_tokens=40)),
        (GEMINI, lambda t: _gemini(temperature=t, maxOutputTokens=40)),
    ],
    ids=["generate", "chat", "gemini"],
)
def test_a_temperature_below_the_greedy_threshold_decodes_greedily(
    http: httpx.Client, path: str, body: Any, temperature: float
) -> None:
    response = post(http, path, body(temperature))
    assert response.status_code == 200, response.text
    # Greedy decoding of the scripted model is exactly its scripted reply.
    assert SCRIPTED_REPLY in response.text


@pytest.mark.parametrize("top_p", [DENORMAL, 1e-300, 1e-9])
def test_a_top_p_a_hair_above_zero_keeps_the_likeliest_token(
    http: httpx.Client, top_p: float
) -> None:
    response = post(http, CHAT, _chat(temperature=1.0, top_p=top_p, max_tokens=40))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == SCRIPTED_REPLY


def test_a_tiny_temperature_above_the_threshold_neither_overflows_nor_nans(
    scripted_model_dir: Path,
) -> None:
    engine = TransformersEngine(scripted_model_dir, MODEL)
    ids = engine.encode(engine.render_chat([{"role": "user", "content": "names"}]), chat=True)
    result = engine.generate(ids, SamplingParams(max_tokens=40, temperature=GREEDY_BELOW * 1.01))
    assert result.text == SCRIPTED_REPLY


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_logits_that_go_to_inf_or_nan_do_not_break_sampling(
    tiny_model_dir: Path, bad: float
) -> None:
    engine = TransformersEngine(tiny_model_dir, "tiny-gemma")

    class BrokenHead(torch.nn.Module):
        """The model's output head, except that some tokens' logits are +inf (or NaN)."""

        def __init__(self, head: torch.nn.Module) -> None:
            super().__init__()
            self.head = head

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.head(hidden).clone()
            logits[..., 10:20] = bad
            return logits

    module: torch.nn.Module = engine.model
    module.set_submodule("lm_head", BrokenHead(module.get_submodule("lm_head")))
    ids = engine.encode("Hello", chat=False)
    for temperature in (0.0, 0.5, 1.0, 2.0):
        result = engine.generate(ids, SamplingParams(max_tokens=3, temperature=temperature))
        assert result.completion_tokens >= 1


def test_sampling_params_say_when_they_are_greedy() -> None:
    assert SamplingParams(max_tokens=1, temperature=0).greedy
    assert SamplingParams(max_tokens=1, temperature=DENORMAL).greedy
    assert not SamplingParams(max_tokens=1, temperature=GREEDY_BELOW).greedy


# ----------------------------------------------------------------------- text that cannot encode


SURROGATE_CASES = [
    ("/generate", {"prompt": f"a{SURROGATE}b"}, "prompt"),
    ("/generate", {"type": "sql", "prompt": "q", "schema": SURROGATE}, "schema"),
    (CHAT, _chat(messages=[{"role": "user", "content": SURROGATE}]), "messages[0].content"),
    (
        CHAT,
        _chat(messages=[{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]),
        "messages[0].content[0].text",
    ),
    (CHAT, _chat(stop=["ok", SURROGATE]), "stop[1]"),
    (CHAT, {**_chat(), "model": SURROGATE}, "model"),
    (COMPLETIONS, _completion(prompt=SURROGATE), "prompt"),
    (COMPLETIONS, _completion(prompt=[SURROGATE]), "prompt[0]"),
    (
        GEMINI,
        {"contents": [{"parts": [{"text": "x"}, {"text": SURROGATE}]}]},
        "contents[0].parts[1].text",
    ),
    (
        GEMINI,
        {**_gemini(), "systemInstruction": {"parts": [{"text": SURROGATE}]}},
        "systemInstruction.parts[0].text",
    ),
    (GEMINI, _gemini(stopSequences=[SURROGATE]), "generationConfig.stopSequences[0]"),
    (GEMINI_STREAM, {"contents": [{"parts": [{"text": SURROGATE}]}]}, "contents[0].parts[0].text"),
    (
        f"/v1beta/models/{MODEL}:countTokens",
        {"contents": [{"parts": [{"text": SURROGATE}]}]},
        "contents[0].parts[0].text",
    ),
    # Keys are text too, even of fields the route ignores.
    (CHAT, {**_chat(), SURROGATE: 1}, "a key"),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), SURROGATE_CASES, ids=[f"{c[0]}:{c[2]}" for c in SURROGATE_CASES]
)
def test_a_lone_surrogate_is_a_400_that_names_the_field(
    http: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    response = post(http, path, body)
    assert response.status_code == 400, response.text
    message = json.dumps(response.json())
    assert field in message
    assert "surrogate" in message
    assert "U+D800" in message


def test_a_lone_surrogate_sent_as_raw_bytes_is_a_400_too(http: httpx.Client) -> None:
    # Python's JSON decoder turns the raw (invalid UTF-8) bytes ED A0 80 into U+D800 as well.
    raw = b'{"prompt": "a\xed\xa0\x80b"}'
    response = http.post("/generate", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text


def test_the_server_still_serves_after_every_bad_input(http: httpx.Client) -> None:
    for path, body, _ in SURROGATE_CASES:
        post(http, path, body)
    response = post(http, CHAT, _chat(temperature=0, max_tokens=40))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == SCRIPTED_REPLY
