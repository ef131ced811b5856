"""Every request field works as the reference API's does, or is a 400 that names it.

Effects are measured over HTTP on the tiny random model, whose logits are nearly flat (so a
penalty or a cut-off changes greedy output at once), and on the scripted model, whose greedy
reply is known.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inference.inference_fixtures import API_KEY, SCRIPTED_REPLY, start_inference

SCRIPTED = "gemma-sql"
TINY = "tiny-gemma"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def _gemini_path(model: str, method: str = "generateContent") -> str:
    return f"/v1beta/models/{model}:{method}"


@pytest.fixture(scope="module")
def scripted(
    scripted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with start_inference(
        {"MODEL_URI": str(scripted_model_dir), "API_KEY": API_KEY},
        tmp_path_factory.mktemp("fields-scripted"),
    ) as server:
        server.wait_ready()
        with httpx.Client(
            base_url=server.url, headers={"x-goog-api-key": API_KEY}, timeout=60
        ) as client:
            yield client


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with start_inference(
        {"MODEL_URI": str(tiny_model_dir), "MAX_CONCURRENCY": "4"},
        tmp_path_factory.mktemp("fields-tiny"),
    ) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield client


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _tokens(http: httpx.Client, **fields: Any) -> list[str]:
    """The generated tokens of a 24-token text completion on the tiny model."""
    body = {"model": TINY, "prompt": "Hello there", "max_tokens": 24, "logprobs": 0}
    reply = _ok(http.post(COMPLETIONS, json={**body, **fields}))
    tokens: list[str] = reply["choices"][0]["logprobs"]["tokens"]
    # One entry per token of the text; a sampled end of turn ends it early, uncounted.
    assert len(tokens) in (
        reply["usage"]["completion_tokens"],
        reply["usage"]["completion_tokens"] - 1,
    )
    return tokens


def _gemini_ids(http: httpx.Client, **config: Any) -> list[int]:
    """The chosen token ids of a 24-token Gemini reply on the tiny model."""
    body = {
        "contents": [{"parts": [{"text": "Hello there"}]}],
        "generationConfig": {"maxOutputTokens": 24, "responseLogprobs": True, **config},
    }
    reply = _ok(http.post(_gemini_path(TINY), json=body))
    chosen = reply["candidates"][0]["logprobsResult"]["chosenCandidates"]
    return [c["tokenId"] for c in chosen]


# ------------------------------------------------------------------------------ sampling effects


@pytest.mark.parametrize("penalty", ["presencePenalty", "frequencyPenalty"])
def test_gemini_penalties_stop_greedy_decoding_from_repeating_tokens(
    tiny: httpx.Client, penalty: str
) -> None:
    plain = _gemini_ids(tiny, temperature=0)
    assert len(set(plain)) < len(plain)  # the random model repeats itself
    penalized = _gemini_ids(tiny, temperature=0, **{penalty: 2.0})
    assert len(set(penalized)) == len(penalized)
    # A negative penalty rewards repeats instead.
    rewarded = _gemini_ids(tiny, temperature=0, **{penalty: -2.0})
    assert len(set(rewarded)) < len(set(plain))


@pytest.mark.parametrize(
    "penalty",
    [{"presence_penalty": 2.0}, {"frequency_penalty": 2.0}, {"repetition_penalty": 2.0}],
    ids=lambda p: next(iter(p)),
)
def test_openai_penalties_change_greedy_output(
    tiny: httpx.Client, penalty: dict[str, float]
) -> None:
    plain = _tokens(tiny, temperature=0)
    penalized = _tokens(tiny, temperature=0, **penalty)
    assert penalized != plain
    assert _tokens(tiny, temperature=0, **penalty) == penalized  # still deterministic


def test_min_p_one_keeps_only_the_likeliest_token(tiny: httpx.Client) -> None:
    greedy = _tokens(tiny, temperature=0)
    hot = _tokens(tiny, temperature=2.0, seed=7)
    assert hot != greedy
    assert _tokens(tiny, temperature=2.0, seed=7, min_p=1.0) == greedy
    chat = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12}
    greedy_chat = _ok(tiny.post(CHAT, json={**chat, "temperature": 0}))
    min_p_chat = _ok(tiny.post(CHAT, json={**chat, "temperature": 2, "seed": 3, "min_p": 1}))
    assert (
        min_p_chat["choices"][0]["message"]["content"]
        == greedy_chat["choices"][0]["message"]["content"]
    )


def test_a_seed_reproduces_and_different_seeds_differ(tiny: httpx.Client) -> None:
    first = _tokens(tiny, temperature=1.5, seed=11)
    assert _tokens(tiny, temperature=1.5, seed=11) == first
    assert _tokens(tiny, temperature=1.5, seed=12) != first


def test_concurrent_seeded_requests_each_reproduce_their_solo_output(tiny: httpx.Client) -> None:
    seeds = [101, 202, 303, 404]
    solo = {seed: _tokens(tiny, temperature=1.2, seed=seed) for seed in seeds}
    with ThreadPoolExecutor(max_workers=len(seeds) * 2) as pool:
        # Twice each seed at once, so every request shares the batch with others.
        together = list(
            pool.map(lambda s: (s, _tokens(tiny, temperature=1.2, seed=s)), seeds + seeds)
        )
    for seed, tokens in together:
        assert tokens == solo[seed], seed


# ------------------------------------------------------------------------------------ logprobs


def test_chat_logprobs_give_each_token_and_its_alternatives(scripted: httpx.Client) -> None:
    body = {
        "model": SCRIPTED,
        "messages": [{"role": "user", "content": "names"}],
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
    }
    reply = _ok(scripted.post(CHAT, json=body))
    choice = reply["choices"][0]
    entries = choice["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == choice["message"]["content"] == SCRIPTED_REPLY
    for entry in entries:
        assert entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 3
        top = [t["logprob"] for t in entry["top_logprobs"]]
        assert top == sorted(top, reverse=True)
        assert sum(math.exp(t) for t in top) <= 1 + 1e-6
        # Greedy picks the likeliest token.
        assert entry["top_logprobs"][0]["token"] == entry["token"]
        assert entry["logprob"] == pytest.approx(top[0])

    without = _ok(scripted.post(CHAT, json={**body, "logprobs": False, "top_logprobs": None}))
    assert without["choices"][0]["logprobs"] is None


def test_streamed_chat_logprobs_cover_the_streamed_text(scripted: httpx.Client) -> None:
    body = {
        "model": SCRIPTED,
        "messages": [{"role": "user", "content": "names"}],
        "temperature": 0,
        "logprobs": True,
        "stream": True,
    }
    text, tokens = "", []
    with scripted.stream("POST", CHAT, json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                text += choices[0]["delta"]["content"]
            if choices and choices[0]["logprobs"]:
                tokens += [e["token"] for e in choices[0]["logprobs"]["content"]]
    assert text == SCRIPTED_REPLY
    assert "".join(tokens) == SCRIPTED_REPLY


def test_completion_logprobs_in_the_completions_shape(scripted: httpx.Client) -> None:
    prompt = "<start_of_turn>user\nlist users<end_of_turn>\n<start_of_turn>model\n"
    body = {"model": SCRIPTED, "prompt": prompt, "temperature": 0, "logprobs": 2}
    choice = _ok(scripted.post(COMPLETIONS, json=body))["choices"][0]
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"] == SCRIPTED_REPLY
    assert len(logprobs["token_logprobs"]) == len(logprobs["tokens"])
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])
    assert logprobs["top_logprobs"][0][logprobs["tokens"][0]] == pytest.approx(
        logprobs["token_logprobs"][0]
    )
    offsets = logprobs["text_offset"]
    assert offsets[0] == 0
    assert offsets == [sum(len(t) for t in logprobs["tokens"][:i]) for i in range(len(offsets))]


def test_gemini_response_logprobs(scripted: httpx.Client) -> None:
    body = {
        "contents": [{"parts": [{"text": "names"}]}],
        "generationConfig": {"temperature": 0, "responseLogprobs": True, "logprobs": 2},
    }
    candidate = _ok(scripted.post(_gemini_path(SCRIPTED), json=body))["candidates"][0]
    result = candidate["logprobsResult"]
    chosen = result["chosenCandidates"]
    assert "".join(c["token"] for c in chosen) == SCRIPTED_REPLY
    assert len(result["topCandidates"]) == len(chosen)
    assert all(len(step["candidates"]) == 2 for step in result["topCandidates"])
    assert result["topCandidates"][0]["candidates"][0]["tokenId"] == chosen[0]["tokenId"]
    total = sum(c["logProbability"] for c in chosen)
    assert result["logProbabilitySum"] == pytest.approx(total)
    assert candidate["avgLogprobs"] == pytest.approx(total / len(chosen))
    plain = _ok(scripted.post(_gemini_path(SCRIPTED), json={"contents": body["contents"]}))[
        "candidates"
    ][0]
    assert "logprobsResult" not in plain
    assert "avgLogprobs" not in plain


def test_gemini_streamed_logprobs_cover_the_text(scripted: httpx.Client) -> None:
    body = {
        "contents": [{"parts": [{"text": "names"}]}],
        "generationConfig": {"temperature": 0, "responseLogprobs": True},
    }
    items = _ok(scripted.post(_gemini_path(SCRIPTED, "streamGenerateContent"), json=body))
    text = "".join(i["candidates"][0]["content"]["parts"][0]["text"] for i in items)  # type: ignore[attr-defined]
    tokens = "".join(
        c["token"]
        for i in items  # type: ignore[attr-defined]
        for c in i["candidates"][0].get("logprobsResult", {}).get("chosenCandidates", [])
    )
    assert text == tokens == SCRIPTED_REPLY


# ------------------------------------------------------------------- names are passed, as in vLLM


def test_a_message_name_is_accepted(scripted: httpx.Client) -> None:
    body = {
        "model": SCRIPTED,
        "messages": [{"role": "user", "content": "names", "name": "ana"}],
        "temperature": 0,
        "user": "someone",
    }
    reply = _ok(scripted.post(CHAT, json=body))
    assert reply["choices"][0]["message"]["content"] == SCRIPTED_REPLY


# ------------------------------------------------------------------ refused fields and "off" values

_CHAT = {"model": SCRIPTED, "messages": [{"role": "user", "content": "names"}], "max_tokens": 8}
_COMPLETION = {"model": SCRIPTED, "prompt": "SELECT", "max_tokens": 4}
_GEMINI = {"contents": [{"role": "user", "parts": [{"text": "names"}]}]}
_GEN = {"prompt": "names", "max_tokens": 4}


def _config(**fields: Any) -> dict[str, Any]:
    return {**_GEMINI, "generationConfig": {"maxOutputTokens": 8, **fields}}


REFUSED = [
    (CHAT, {**_CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    (CHAT, {**_CHAT, "tool_choice": "required"}, "tool_choice"),
    (CHAT, {**_CHAT, "functions": [{"name": "f"}]}, "functions"),
    (CHAT, {**_CHAT, "response_format": {"type": "json_object"}}, "response_format"),
    (
        CHAT,
        {**_CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        "response_format",
    ),
    (CHAT, {**_CHAT, "logit_bias": {"5": 10}}, "logit_bias"),
    (CHAT, {**_CHAT, "n": 2}, "n"),
    (CHAT, {**_CHAT, "store": True}, "store"),
    (CHAT, {**_CHAT, "modalities": ["text", "audio"]}, "modalities"),
    (CHAT, {**_CHAT, "reasoning_effort": "high"}, "reasoning_effort"),
    (
        CHAT,
        {**_CHAT, "stream": True, "stream_options": {"continuous_usage_stats": True}},
        "continuous_usage_stats",
    ),
    (CHAT, {**_CHAT, "guided_json": {"type": "object"}}, "guided_json"),
    (CHAT, {**_CHAT, "top_logprobs": 2}, "top_logprobs needs logprobs"),
    (CHAT, {**_CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    (
        CHAT,
        {
            **_CHAT,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ],
        },
        "image_url",
    ),
    (
        CHAT,
        {**_CHAT, "messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]},
        "tool_calls",
    ),
    (CHAT, {**_CHAT, "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "role"),
    (COMPLETIONS, {**_COMPLETION, "suffix": "end"}, "suffix"),
    (COMPLETIONS, {**_COMPLETION, "best_of": 3}, "best_of"),
    (COMPLETIONS, {**_COMPLETION, "echo": True}, "echo"),
    (COMPLETIONS, {**_COMPLETION, "n": 3}, "n"),
    (COMPLETIONS, {**_COMPLETION, "logit_bias": {"1": -100}}, "logit_bias"),
    (COMPLETIONS, {**_COMPLETION, "prompt": ["a", "b"]}, "exactly one prompt"),
    (COMPLETIONS, {**_COMPLETION, "logprobs": 21}, "logprobs"),
    (_gemini_path(SCRIPTED), {**_GEMINI, "tools": [{"functionDeclarations": []}]}, "tools"),
    (_gemini_path(SCRIPTED), {**_GEMINI, "toolConfig": {}}, "toolConfig"),
    (_gemini_path(SCRIPTED), {**_GEMINI, "cachedContent": "cachedContents/x"}, "cachedContent"),
    (
        _gemini_path(SCRIPTED),
        {
            **_GEMINI,
            "safetySettings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_LOW_AND_ABOVE"}
            ],
        },
        "BLOCK_LOW_AND_ABOVE",
    ),
    (_gemini_path(SCRIPTED), _config(responseMimeType="application/json"), "responseMimeType"),
    (_gemini_path(SCRIPTED), _config(responseSchema={"type": "OBJECT"}), "responseSchema"),
    (_gemini_path(SCRIPTED), _config(responseJsonSchema={"type": "object"}), "responseJsonSchema"),
    (_gemini_path(SCRIPTED), _config(response_mime_type="application/json"), "response_mime_type"),
    (_gemini_path(SCRIPTED), _config(candidateCount=2), "candidateCount"),
    (_gemini_path(SCRIPTED), _config(responseModalities=["IMAGE"]), "responseModalities"),
    (_gemini_path(SCRIPTED), _config(thinkingConfig={"thinkingBudget": 1024}), "thinkingConfig"),
    (_gemini_path(SCRIPTED), _config(logprobs=3), "logprobs needs responseLogprobs"),
    (
        _gemini_path(SCRIPTED),
        {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}]},
        "inlineData",
    ),
    (
        _gemini_path(SCRIPTED),
        {"contents": [{"parts": [{"functionCall": {"name": "f"}}]}]},
        "functionCall",
    ),
    (_gemini_path(SCRIPTED, "streamGenerateContent"), {**_GEMINI, "tools": [{}]}, "tools"),
    (_gemini_path(SCRIPTED, "countTokens"), {"contents": _GEMINI["contents"], "x": 1}, "'x'"),
    ("/generate", {**_GEN, "temperature_typo": 0.1}, "temperature_typo"),
    ("/generate", {**_GEN, "stop": ["x"]}, "stop"),
]


@pytest.mark.parametrize(
    ("path", "body", "named"), REFUSED, ids=[f"{p.rsplit(':', 1)[-1]}:{n}" for p, _, n in REFUSED]
)
def test_a_field_the_server_cannot_honour_is_a_400_naming_it(
    scripted: httpx.Client, path: str, body: dict[str, Any], named: str
) -> None:
    response = scripted.post(path, json=body)
    assert response.status_code == 400, response.text
    message = json.dumps(response.json())
    assert named in message


def test_the_400_says_why_and_what_is_supported(scripted: httpx.Client) -> None:
    response = scripted.post(CHAT, json={**_CHAT, "response_format": {"type": "json_object"}})
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "constrained decoding" in error["message"]
    assert "Supported fields here: model, max_tokens" in error["message"]
    response = scripted.post(_gemini_path(SCRIPTED), json=_config(responseSchema={}))
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert "constrained decoding" in error["message"]
    assert "maxOutputTokens" in error["message"]  # the supported names, as sent on the wire


ACCEPTED_OFF = [
    (CHAT, {**_CHAT, "tools": [], "tool_choice": "none", "n": 1, "logit_bias": {}}),
    (CHAT, {**_CHAT, "response_format": {"type": "text"}, "parallel_tool_calls": True}),
    (CHAT, {**_CHAT, "tools": None, "functions": None, "store": False, "service_tier": "auto"}),
    (
        CHAT,
        {
            **_CHAT,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": False},
        },
    ),
    (COMPLETIONS, {**_COMPLETION, "suffix": None, "best_of": 1, "echo": False, "n": 1}),
    (
        _gemini_path(SCRIPTED),
        {
            **_config(responseMimeType="text/plain", candidateCount=1, responseModalities=["TEXT"]),
            "safetySettings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"},
                {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"},
            ],
            "tools": [],
        },
    ),
]


@pytest.mark.parametrize(("path", "body"), ACCEPTED_OFF)
def test_fields_at_their_off_value_are_accepted(
    scripted: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    response = scripted.post(path, json=body)
    assert response.status_code == 200, response.text
