"""Backends against real servers: the inference app (both APIs) and one that fails on purpose."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from app.chat.backends import (
    BackendError,
    Sampling,
    Turn,
    error_detail,
    event_lines,
    make_backend,
    prepare_turns,
)
from app.chat.id_tokens import IdTokenSource, audience_for, token_expiry
from app.chat.settings import BackendConfig
from devtools.ports import free_port
from tests.chat.google_endpoints import GoogleEndpoints
from tests.chat.stack import REPLY, Stack

SAMPLING = Sampling(temperature=0.9, top_p=0.95, max_tokens=64)


def config(kind: str, model: str, base_url: str | None, **extra: object) -> BackendConfig:
    return BackendConfig.model_validate(
        {"id": f"{kind}-{model}", "label": "Gemma", "kind": kind, "model": model}
        | ({"base_url": base_url} if base_url else {})
        | extra
    )


async def collect(cfg: BackendConfig, turns: list[Turn], system: str = "") -> list[str]:
    backend = make_backend(cfg, "demo-gemma-stack")
    try:
        return [piece async for piece in backend.stream(turns, system, SAMPLING)]
    finally:
        await backend.aclose()


async def stream_until_failure(cfg: BackendConfig) -> tuple[BackendError, str]:
    """The error a backend's reply ends with, and the text it streamed before it."""
    backend = make_backend(cfg)
    received: list[str] = []

    async def drain() -> None:
        async for piece in backend.stream([Turn("user", "hi")], "", SAMPLING):
            received.append(piece)

    with pytest.raises(BackendError) as failure:
        await drain()
    await backend.aclose()
    return failure.value, "".join(received)


@pytest.fixture(scope="module")
def google_endpoints() -> Iterator[GoogleEndpoints]:
    endpoints = GoogleEndpoints().start()
    yield endpoints
    endpoints.stop()


@pytest.mark.parametrize(("kind", "suffix"), [("openai", "/v1"), ("gemini", "")])
async def test_streams_the_reply_piece_by_piece(inference_url: str, kind: str, suffix: str) -> None:
    pieces = await collect(
        config(kind, "tiny", inference_url + suffix), [Turn("user", "What is Gemma?")], "Be brief."
    )
    assert "".join(pieces) == REPLY
    assert len(pieces) > 10  # token by token, not one blob


@pytest.mark.parametrize(("kind", "suffix"), [("openai", "/v1"), ("gemini", "")])
async def test_history_after_a_failed_reply_is_accepted_by_gemmas_template(
    inference_url: str, kind: str, suffix: str
) -> None:
    # A failed reply leaves two user turns in a row; Gemma's template raises on that.
    turns = [
        Turn("user", "first question"),
        Turn("user", "asked again after an error"),
        Turn("assistant", "an answer"),
        Turn("user", "follow-up"),
    ]
    pieces = await collect(config(kind, "tiny", inference_url + suffix), turns, "Persona.")
    assert "".join(pieces) == REPLY


def test_prepare_turns_merges_same_role_and_starts_with_user() -> None:
    turns = [
        Turn("assistant", "orphan"),
        Turn("user", "a"),
        Turn("user", "b"),
        Turn("assistant", ""),
        Turn("assistant", "c"),
    ]
    assert prepare_turns(turns) == [Turn("user", "a\n\nb"), Turn("assistant", "c")]


async def test_openai_backends_fold_the_system_prompt_into_the_first_user_turn(
    stack: Stack,
) -> None:
    turns = [Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "again")]
    pieces = await collect(config("openai", "echo", f"{stack.misbehaving.base_url}/v1"), turns, "P")
    seen = json.loads("".join(pieces))
    assert seen["roles"] == ["user", "assistant", "user"]
    assert seen["texts"][0] == "P\n\nhi"

    unfolded = config(
        "openai", "echo", f"{stack.misbehaving.base_url}/v1", fold_system_prompt=False
    )
    seen = json.loads("".join(await collect(unfolded, turns, "P")))
    assert seen["roles"] == ["system", "user", "assistant", "user"]


async def test_gemini_backends_get_system_instruction_and_model_role(stack: Stack) -> None:
    turns = [Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "again")]
    pieces = await collect(config("gemini", "echo", stack.misbehaving.base_url), turns, "P")
    seen = json.loads("".join(pieces))
    assert seen["roles"] == ["user", "model", "user"]
    assert seen["texts"] == ["hi", "hello", "again"]
    assert seen["system"] == "P"


@pytest.mark.parametrize("kind", ["openai", "gemini"])
@pytest.mark.parametrize(
    ("model", "expected", "partial"),
    [
        ("drop", "stopped mid-reply", True),
        ("busy", "HTTP 429", False),
        ("pending", "not ready yet (GPU still provisioning", False),
        ("hang", "did not answer within 1 s", False),
    ],
)
async def test_failures_become_one_clear_message(
    *, stack: Stack, kind: str, model: str, expected: str, partial: bool
) -> None:
    base = stack.misbehaving.base_url + ("/v1" if kind == "openai" else "")
    failure, received = await stream_until_failure(config(kind, model, base, timeout_s=1))
    assert expected in failure.message
    assert failure.partial is partial
    assert failure.transient
    assert received == ("Partial reply before the cut" if partial else "")


async def test_an_error_event_after_the_200_ends_the_reply_with_its_message(stack: Stack) -> None:
    base = stack.misbehaving.base_url + "/v1"
    failure, received = await stream_until_failure(config("openai", "fails", base))
    assert "failed mid-reply: Generation failed: RuntimeError: device lost" in failure.message
    assert failure.partial
    assert received == "Partial reply before the cut"


@pytest.mark.parametrize(("kind", "suffix"), [("openai", "/v1"), ("gemini", "")])
async def test_a_backend_that_is_down_is_explained(kind: str, suffix: str) -> None:
    url = f"http://127.0.0.1:{free_port()}{suffix}"
    with pytest.raises(BackendError, match="cannot be reached"):
        await collect(config(kind, "tiny", url), [Turn("user", "hi")])


async def test_vertex_without_google_credentials_is_explained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    cfg = config("gemini", "gemini-2.5-flash", None, vertex=True, location="global")
    with pytest.raises(BackendError, match="needs Google credentials"):
        await collect(cfg, [Turn("user", "hi")])


@pytest.mark.parametrize(("kind", "suffix"), [("openai", "/v1"), ("gemini", "")])
async def test_cloud_run_calls_carry_a_google_id_token(
    *,
    stack: Stack,
    google_endpoints: GoogleEndpoints,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kind: str,
    suffix: str,
) -> None:
    key_file = google_endpoints.service_account_file(tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.delenv("ID_TOKEN_SERVICE_ACCOUNT", raising=False)
    cfg = config(kind, "echo", stack.misbehaving.base_url + suffix, auth="google-id-token")
    backend = make_backend(cfg)
    before = google_endpoints.token_requests
    try:
        for _ in range(2):
            text = "".join([p async for p in backend.stream([Turn("user", "x")], "", SAMPLING)])
            authorization = json.loads(text)["authorization"]
            assert authorization.startswith("Bearer ey")
            assert token_expiry(authorization.removeprefix("Bearer ")) > 0
    finally:
        await backend.aclose()
    assert google_endpoints.token_requests == before + 1  # cached for the second call


@pytest.mark.parametrize(("kind", "suffix"), [("openai", "/v1"), ("gemini", "")])
async def test_an_empty_api_key_is_named_and_a_set_one_is_sent(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, kind: str, suffix: str
) -> None:
    cfg = config(
        kind, "echo", stack.misbehaving.base_url + suffix, auth="api-key", api_key_env="GEMMA_KEY"
    )
    monkeypatch.delenv("GEMMA_KEY", raising=False)
    with pytest.raises(BackendError, match=r"needs an API key in \$GEMMA_KEY, which is empty"):
        await collect(cfg, [Turn("user", "x")])
    monkeypatch.setenv("GEMMA_KEY", "k-123")
    text = "".join(await collect(cfg, [Turn("user", "x")]))
    sent = json.loads(text)
    assert (sent["authorization"] if kind == "openai" else sent["api_key"]) == (
        "Bearer k-123" if kind == "openai" else "k-123"
    )


async def test_id_tokens_are_refreshed_before_they_expire(
    google_endpoints: GoogleEndpoints, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS", str(google_endpoints.service_account_file(tmp_path))
    )
    now = [0.0]
    source = IdTokenSource("https://gemma-abc-uc.a.run.app", clock=lambda: now[0])
    first = await source.token()
    expiry = token_expiry(first)
    now[0] = expiry - 301  # still outside the refresh margin
    assert await source.token() == first
    requests = google_endpoints.token_requests
    now[0] = expiry - 299  # inside it: a new token before the old one lapses
    await source.token()
    assert google_endpoints.token_requests == requests + 1


def test_audience_is_the_service_origin() -> None:
    assert audience_for("https://gemma-abc-uc.a.run.app/v1") == "https://gemma-abc-uc.a.run.app"
    with pytest.raises(ValueError, match="absolute URL"):
        audience_for("/v1")


async def test_stream_lines_of_any_length_survive_chunk_boundaries() -> None:
    long_event = b"data: " + b"x" * 200_000

    class Body:
        async def iter_any(self) -> AsyncIterator[bytes]:
            for chunk in (b"data: a\n", b"\ndata: b", b"c\n" + long_event[:70_000]):
                yield chunk
            yield long_event[70_000:] + b"\ndata: [DONE]"

    lines = [line async for line in event_lines(cast(Any, Body()))]
    assert lines == [b"data: a", b"", b"data: bc", long_event, b"data: [DONE]"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"error": {"message": "max_tokens is too large"}}', "max_tokens is too large"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"error": "bad model"}', "bad model"),
        (b"upstream connect error", "upstream connect error"),
    ],
)
def test_an_error_body_says_what_went_wrong(body: bytes, detail: str) -> None:
    assert error_detail(body) == detail
