"""Gemini-compatible generateContent and streamGenerateContent, as google-genai calls them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from app.inference.api_model import RequestModel
from app.inference.engine import GREEDY_NOTE, Completion, SamplingParams
from app.inference.generation import (
    SSE_HEADERS,
    chat_prompt,
    complete,
    open_stream,
    resolve_max_tokens,
    sse,
    stop_tuple,
)
from app.inference.state import ApiError, ServerState, StateDep

router = APIRouter(tags=["gemini"])

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}


class _Camel(RequestModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Part(_Camel):
    text: str | None = None
    inline_data: dict[str, Any] | None = None
    file_data: dict[str, Any] | None = None


class Content(_Camel):
    role: Literal["user", "model"] | None = None
    parts: list[Part] = Field(min_length=1)


class GenerationConfig(_Camel):
    temperature: float | None = Field(None, ge=0, le=2, description=GREEDY_NOTE)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    max_output_tokens: int | None = Field(None, ge=1)
    stop_sequences: list[str] | None = None
    candidate_count: int | None = Field(None, ge=1, le=1, description="only 1 is supported")
    seed: int | None = None


class GenerateContentRequest(_Camel):
    contents: list[Content] = Field(min_length=1)
    system_instruction: Content | None = None
    generation_config: GenerationConfig | None = None


def _text(content: Content) -> str:
    if any(part.inline_data or part.file_data for part in content.parts):
        raise ApiError(400, "Only text parts are supported by this model server.")
    return "".join(part.text or "" for part in content.parts)


def _messages(body: GenerateContentRequest) -> list[dict[str, str]]:
    messages = []
    if body.system_instruction is not None:
        messages.append({"role": "system", "content": _text(body.system_instruction)})
    for content in body.contents:
        role = "assistant" if content.role == "model" else "user"
        messages.append({"role": role, "content": _text(content)})
    return messages


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "promptTokenCount": completion.prompt_tokens,
        "candidatesTokenCount": completion.completion_tokens,
        "totalTokenCount": completion.prompt_tokens + completion.completion_tokens,
    }


def _response(state: ServerState, text: str, completion: Completion | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "index": 0,
    }
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": state.model_name}
    if completion is not None:
        candidate["finishReason"] = _FINISH.get(completion.finish_reason, "OTHER")
        body["usageMetadata"] = _usage(completion)
    return body


async def _prepare(
    model: str, body: GenerateContentRequest, state: ServerState
) -> tuple[Any, list[int], SamplingParams]:
    state.check_model(model)
    engine = state.ready_engine()
    prompt_ids = await chat_prompt(engine, _messages(body))
    config = body.generation_config or GenerationConfig()
    max_tokens = resolve_max_tokens(state, engine, config.max_output_tokens, len(prompt_ids))
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if config.temperature is None else config.temperature,
        top_p=1.0 if config.top_p is None else config.top_p,
        top_k=config.top_k,
        stop=stop_tuple(config.stop_sequences),
        seed=config.seed,
    )
    return engine, prompt_ids, params


for _version in ("v1beta", "v1"):

    @router.post(
        f"/{_version}/models/{{model}}:generateContent",
        summary="Gemini generateContent",
        name=f"generate_content_{_version}",
    )
    async def generate_content(
        model: str, body: GenerateContentRequest, state: StateDep
    ) -> dict[str, Any]:
        engine, prompt_ids, params = await _prepare(model, body, state)
        completion = await complete(state, engine, prompt_ids, params)
        return _response(state, completion.text, completion)

    @router.post(
        f"/{_version}/models/{{model}}:streamGenerateContent",
        summary="Gemini streamGenerateContent (alt=sse for server-sent events)",
        name=f"stream_generate_content_{_version}",
    )
    async def stream_generate_content(
        model: str,
        body: GenerateContentRequest,
        state: StateDep,
        alt: Annotated[str | None, Query(description="sse for server-sent events")] = None,
    ) -> StreamingResponse:
        engine, prompt_ids, params = await _prepare(model, body, state)
        events = await open_stream(state, engine, prompt_ids, params)
        as_sse = alt == "sse"

        async def stream() -> AsyncIterator[bytes]:
            first = True
            if not as_sse:
                yield b"["
            async for event in events:
                if event.error is not None:
                    item: dict[str, Any] = {
                        "error": {"code": 500, "message": event.error, "status": "INTERNAL"}
                    }
                elif event.completion is None and not event.text:
                    continue
                else:
                    item = _response(state, event.text, event.completion)
                if as_sse:
                    yield sse(item)
                else:
                    yield (b"" if first else b",\n") + json.dumps(item).encode()
                first = False
            if not as_sse:
                yield b"]"

        media = "text/event-stream" if as_sse else "application/json"
        return StreamingResponse(stream(), media_type=media, headers=SSE_HEADERS)
