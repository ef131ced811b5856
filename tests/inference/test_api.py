"""Every endpoint over real HTTP, served from gs:// via the GCS emulator, via official clients."""

from __future__ import annotations

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from devtools.processes import ServerProcess
from tests.inference.inference_fixtures import API_KEY, SCRIPTED_REPLY

MODEL = "gemma-sql"  # SERVED_MODEL_NAME defaults to the folder name


@pytest.fixture(scope="module")
def oai(gs_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gs_server.url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def gemini(gs_server: ServerProcess) -> genai.Client:
    return genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=gs_server.url))


@pytest.fixture(scope="module")
def http(gs_server: ServerProcess) -> httpx.Client:
    return httpx.Client(
        base_url=gs_server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    )


def test_health_was_503_while_loading_then_200(gs_server: ServerProcess) -> None:
    statuses = [status for status, _ in gs_server.health_seen]
    assert statuses[0] == 503
    assert gs_server.health_seen[0][1]["status"] == "loading"
    assert statuses[-1] == 200
    assert gs_server.health() == (200, {"status": "ready", "model": MODEL})


def test_models_lists_the_served_model(oai: openai.OpenAI) -> None:
    models = oai.models.list().data
    assert [m.id for m in models] == [MODEL]


def test_openai_models_retrieve(oai: openai.OpenAI) -> None:
    card = oai.models.retrieve(MODEL)
    assert card.id == MODEL
    assert card.owned_by == "gemma-stack"
    with pytest.raises(openai.NotFoundError, match="serves 'gemma-sql'"):
        oai.models.retrieve("gpt-4")


def test_gemini_models_get(gemini: genai.Client) -> None:
    model = gemini.models.get(model=MODEL)
    assert model.name == f"models/{MODEL}"
    assert model.input_token_limit == 8192
    assert model.supported_actions is not None
    assert "generateContent" in model.supported_actions
    with pytest.raises(genai_errors.ClientError) as caught:
        gemini.models.get(model="gemini-2.5-flash")
    assert caught.value.code == 404


def test_gemini_count_tokens_matches_the_prompt_count_of_generate(gemini: genai.Client) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part(text="hello")]),
        types.Content(role="model", parts=[types.Part(text="SELECT 1;")]),
        types.Content(role="user", parts=[types.Part(text="names of all users")]),
    ]
    counted = gemini.models.count_tokens(model=MODEL, contents=contents)
    reply = gemini.models.generate_content(model=MODEL, contents=contents)
    assert reply.usage_metadata is not None
    assert counted.total_tokens == reply.usage_metadata.prompt_token_count
    assert counted.total_tokens is not None
    assert counted.total_tokens > 10


def test_sdk_logprobs(oai: openai.OpenAI, gemini: genai.Client) -> None:
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "names"}],
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    assert "".join(t.token for t in logprobs.content) == SCRIPTED_REPLY
    assert all(len(t.top_logprobs) == 2 for t in logprobs.content)

    answer = gemini.models.generate_content(
        model=MODEL,
        contents="names",
        config=types.GenerateContentConfig(temperature=0, response_logprobs=True, logprobs=2),
    )
    assert answer.candidates is not None
    result = answer.candidates[0].logprobs_result
    assert result is not None
    assert result.chosen_candidates is not None
    assert "".join(c.token or "" for c in result.chosen_candidates) == SCRIPTED_REPLY
    assert answer.candidates[0].avg_logprobs is not None
    assert answer.candidates[0].avg_logprobs <= 0


def test_sdk_calls_with_refused_fields_get_a_clear_400(
    oai: openai.OpenAI, gemini: genai.Client
) -> None:
    with pytest.raises(openai.BadRequestError, match="'tools' is not supported"):
        oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        )
    with pytest.raises(genai_errors.ClientError, match="responseMimeType") as caught:
        gemini.models.generate_content(
            model=MODEL,
            contents="hi",
            config=types.GenerateContentConfig(response_mime_type="application/json"),
        )
    assert caught.value.code == 400


def test_chat_completion_returns_only_the_reply_and_stops_at_end_of_turn(
    oai: openai.OpenAI,
) -> None:
    # Unstopped, this model goes on with "<end_of_turn><start_of_turn>user\n" and repeats.
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You write SQL."},
            {"role": "user", "content": "names of all users"},
        ],
        max_tokens=40,
    )
    choice = reply.choices[0]
    assert choice.message.content == SCRIPTED_REPLY
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6  # five reply tokens and <end_of_turn>
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_chat_completion_streams_token_by_token_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "names of all users"}],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.7,
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        if chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        finish = chunk.choices[0].finish_reason or finish
    assert pieces == ["SELECT", " name", " FROM", " users", ";"]
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == 6


def test_chat_completion_max_tokens_cuts_with_finish_length(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].message.content == "SELECT name"
    assert reply.choices[0].finish_reason == "length"


def test_chat_completion_stop_string(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stop=[" FROM"]
    )
    assert reply.choices[0].message.content == "SELECT name"
    assert reply.choices[0].finish_reason == "stop"


def test_completions_and_streaming_completions(oai: openai.OpenAI) -> None:
    prompt = "<start_of_turn>user\nlist users<end_of_turn>\n<start_of_turn>model\n"
    reply = oai.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0)
    assert reply.choices[0].text == SCRIPTED_REPLY
    assert not reply.choices[0].text.startswith(prompt)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6

    stream = oai.completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == SCRIPTED_REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


def test_gemini_generate_content(gemini: genai.Client) -> None:
    reply = gemini.models.generate_content(
        model=MODEL,
        contents=[
            types.Content(role="user", parts=[types.Part(text="hello")]),
            types.Content(role="model", parts=[types.Part(text="SELECT 1;")]),
            types.Content(role="user", parts=[types.Part(text="names of all users")]),
        ],
        config=types.GenerateContentConfig(
            system_instruction="You write SQL.", max_output_tokens=50, temperature=0.2
        ),
    )
    assert reply.text == SCRIPTED_REPLY
    assert reply.candidates is not None
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert reply.usage_metadata is not None
    assert reply.usage_metadata.candidates_token_count == 6


def test_gemini_stream_generate_content(gemini: genai.Client) -> None:
    chunks = list(
        gemini.models.generate_content_stream(
            model=MODEL,
            contents="names of all users",
            config=types.GenerateContentConfig(max_output_tokens=3),
        )
    )
    assert "".join(c.text or "" for c in chunks) == "SELECT name FROM"
    last = chunks[-1]
    assert last.candidates is not None
    assert last.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert len(chunks) >= 3  # one event per token, not one blob


async def test_gemini_async_stream(gs_server: ServerProcess) -> None:
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=gs_server.url))
    text = ""
    async for chunk in await client.aio.models.generate_content_stream(
        model=MODEL, contents="names"
    ):
        text += chunk.text or ""
    assert text == SCRIPTED_REPLY


def test_gemini_json_array_stream_without_alt_sse(http: httpx.Client) -> None:
    response = http.post(
        f"/v1beta/models/{MODEL}:streamGenerateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "names"}]}]},
    )
    assert response.status_code == 200
    items = response.json()
    assert "".join(i["candidates"][0]["content"]["parts"][0]["text"] for i in items) == (
        SCRIPTED_REPLY
    )
    assert items[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("kind", ["text", "sql"])
def test_generate_returns_only_new_text(http: httpx.Client, kind: str) -> None:
    body = {"type": kind, "prompt": "names of all users", "max_tokens": 64}
    if kind == "sql":
        body["schema"] = "CREATE TABLE users (id INT, name TEXT);"
    response = http.post("/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"response": SCRIPTED_REPLY}


# --- bad input: 4xx with a clear message, in each API's own format ------------------------------


def test_openai_errors_are_clear_4xx(oai: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError, match="serves 'gemma-sql'"):
        oai.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=0
        )
    with pytest.raises(openai.BadRequestError, match="at most"):
        oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
        )
    with pytest.raises(openai.BadRequestError, match="longer than this model's context"):
        oai.completions.create(model=MODEL, prompt="users " * 9000, max_tokens=5)
    with pytest.raises(openai.BadRequestError, match="alternate"):
        oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        )
    response = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "not valid JSON" in error["message"]
    assert error["type"] == "invalid_request_error"


def test_gemini_errors_use_gemini_format(gemini: genai.Client, http: httpx.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as caught:
        gemini.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert caught.value.code == 404
    assert "serves 'gemma-sql'" in str(caught.value)
    response = http.post(
        f"/v1beta/models/{MODEL}:generateContent",
        json={"contents": [], "generationConfig": {"maxOutputTokens": -1}},
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "maxOutputTokens" in response.json()["error"]["message"]


def test_any_integer_seed_is_accepted(http: httpx.Client) -> None:
    huge = 2**80
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": huge}
    assert http.post("/v1/chat/completions", json=chat).status_code == 200
    gemini = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"seed": huge}}
    assert http.post(f"/v1beta/models/{MODEL}:generateContent", json=gemini).status_code == 200


def test_stop_lists_are_bounded(http: httpx.Client) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    response = http.post("/v1/chat/completions", json={**chat, "stop": ["x"] * 17})
    assert response.status_code == 400
    assert "at most 16 stop strings" in response.json()["error"]["message"]
    gemini = {"contents": [{"parts": [{"text": "hi"}]}]}
    response = http.post(
        f"/v1beta/models/{MODEL}:generateContent",
        json={**gemini, "generationConfig": {"stopSequences": ["y" * 300]}},
    )
    assert response.status_code == 400
    assert "the longest 300" in response.json()["error"]["message"]


def test_generate_errors(http: httpx.Client) -> None:
    response = http.post("/generate", json={"type": "poem", "prompt": "x"})
    assert response.status_code == 400
    assert "type" in response.json()["detail"]
    response = http.post("/generate", json={"type": "sql", "prompt": "names"})
    assert response.status_code == 400
    assert "schema" in response.json()["detail"]
    response = http.post("/generate", json={"prompt": "x", "max_tokens": -5})
    assert response.status_code == 400
    assert "max_tokens" in response.json()["detail"]
    response = http.post("/generate", content=b"prompt=x")
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


# --- API key ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models", None),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
        ("/generate", {"prompt": "x"}),
        (f"/v1beta/models/{MODEL}:generateContent", {"contents": [{"parts": [{"text": "x"}]}]}),
    ],
)
def test_api_key_is_required_everywhere_but_health(
    gs_server: ServerProcess, path: str, body: dict[str, object] | None
) -> None:
    def call(headers: dict[str, str]) -> httpx.Response:
        if body is None:
            return httpx.get(gs_server.url + path, headers=headers)
        return httpx.post(gs_server.url + path, json=body, headers=headers, timeout=30)

    assert call({}).status_code == 401
    assert call({"Authorization": "Bearer wrong"}).status_code == 401
    assert call({"x-goog-api-key": "wrong"}).status_code == 401
    assert call({"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert call({"x-goog-api-key": API_KEY}).status_code == 200
    assert httpx.get(gs_server.url + "/health").status_code == 200


def test_gemini_routes_also_take_the_key_as_a_query_parameter(gs_server: ServerProcess) -> None:
    body = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 2}}
    path = f"{gs_server.url}/v1beta/models/{MODEL}:generateContent"
    assert httpx.post(path, params={"key": API_KEY}, json=body, timeout=30).status_code == 200
    wrong = httpx.post(path, params={"key": "wrong"}, json=body, timeout=30)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "?key=" in wrong.json()["error"]["message"]
    model = httpx.get(f"{gs_server.url}/v1beta/models/{MODEL}", params={"key": API_KEY})
    assert model.status_code == 200
    # Only Gemini clients send keys in the URL; the OpenAI routes keep them in headers.
    openai_route = httpx.get(f"{gs_server.url}/v1/models", params={"key": API_KEY})
    assert openai_route.status_code == 401


def test_wrong_key_error_names_both_headers(gs_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{gs_server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="x-goog-api-key"):
        client.models.list()
