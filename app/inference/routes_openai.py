"""OpenAI-compatible models, chat and text completions, streamed as server-sent events."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.inference.api_route import error_responses, route_class
from app.inference.generation import EventStream, Prepared, complete, open_stream, prepare, sse
from app.inference.protocol_gemini import served_model
from app.inference.protocol_openai import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
    chat_logprobs,
    completion_logprobs,
    stream_error,
)
from app.inference.state import Api, ServerState, StateDep

router = APIRouter(tags=["openai"], route_class=route_class(Api.OPENAI))

_GENERATION_ERRORS = error_responses(400, 401, 404, 413, 429, 503, model=ErrorResponse)


def _streamed(chunk: type[Any]) -> dict[int | str, dict[str, Any]]:
    """The 200 of a route that answers JSON, or server-sent ``chunk`` events with stream."""
    return {
        200: {
            "description": "JSON; with stream: true, server-sent events of "
            f"{chunk.__name__} objects, then data: [DONE]",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **_GENERATION_ERRORS,
    }


def _card(state: ServerState) -> ModelCard:
    return ModelCard(
        id=state.model_name,
        created=state.created,
        max_model_len=state.context(),
    )


@router.get(
    "/v1/models",
    summary="The one model this server serves",
    response_model=ModelList,
    responses=error_responses(401, model=ErrorResponse),
)
async def list_models(state: StateDep) -> ModelList:
    return ModelList(data=[_card(state)])


@router.get(
    "/v1/models/{model_id}",
    summary="The served model's card (with Gemini's Model fields too); 404 for any other",
    response_model=ModelCard,
    responses=error_responses(401, 404, model=ErrorResponse),
)
async def get_model(model_id: str, state: StateDep) -> ModelCard:
    state.check_model(model_id)
    gemini = served_model(state.model_name, state.context()).model_dump(
        by_alias=True, exclude_none=True
    )
    return ModelCard.model_validate({**gemini, **_card(state).model_dump()})


@router.post(
    "/v1/chat/completions",
    summary="OpenAI chat completions (stream: true for SSE)",
    response_model=ChatCompletionResponse,
    responses=_streamed(ChatCompletionChunk),
)
async def chat_completions(
    body: ChatCompletionRequest, state: StateDep
) -> ChatCompletionResponse | StreamingResponse:
    prepared = await prepare(state, body)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        return _stream_chat(state, prepared, request_id, created, body.include_usage())
    completion = await complete(state, prepared)
    return ChatCompletionResponse(
        id=request_id,
        created=created,
        model=state.model_name,
        choices=[
            ChatChoice(
                message=AssistantMessage(content=completion.text),
                logprobs=chat_logprobs(completion.logprobs),
                finish_reason=completion.finish_reason,  # type: ignore[arg-type]
            )
        ],
        usage=Usage.of(completion),
    )


def _stream_chat(
    state: ServerState, prepared: Prepared, request_id: str, created: int, include_usage: bool
) -> StreamingResponse:
    events = open_stream(state, prepared)
    wants_logprobs = prepared.params.logprobs is not None

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> bytes:
        return sse(
            ChatCompletionChunk(
                id=request_id,
                created=created,
                model=state.model_name,
                choices=choices,
                usage=usage,
            )
        )

    async def body() -> AsyncIterator[bytes]:
        yield chunk([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])
        async for event in events:
            if event.error is not None:
                yield sse(stream_error(event.error))
                break
            if event.completion is None:
                logprobs = chat_logprobs(event.logprobs) if wants_logprobs else None
                yield chunk(
                    [ChatChunkChoice(delta=ChatDelta(content=event.text), logprobs=logprobs)]
                )
                continue
            finish = event.completion.finish_reason
            yield chunk([ChatChunkChoice(delta=ChatDelta(), finish_reason=finish)])  # type: ignore[arg-type]
            if include_usage:
                yield chunk([], Usage.of(event.completion))
        yield sse("[DONE]")

    return EventStream(body(), prepared.slot, "text/event-stream")


@router.post(
    "/v1/completions",
    summary="OpenAI text completions on a raw prompt",
    response_model=CompletionResponse,
    responses=_streamed(CompletionResponse),
)
async def completions(
    body: CompletionRequest, state: StateDep
) -> CompletionResponse | StreamingResponse:
    prepared = await prepare(state, body)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def response(choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionResponse:
        return CompletionResponse(
            id=request_id, created=created, model=state.model_name, choices=choices, usage=usage
        )

    if not body.stream:
        completion = await complete(state, prepared)
        choice = CompletionChoice(
            text=completion.text,
            logprobs=completion_logprobs(completion.logprobs),
            finish_reason=completion.finish_reason,  # type: ignore[arg-type]
        )
        return response([choice], Usage.of(completion))

    events = open_stream(state, prepared)
    include_usage = body.include_usage()
    wants_logprobs = prepared.params.logprobs is not None

    async def stream() -> AsyncIterator[bytes]:
        offset = 0
        async for event in events:
            if event.error is not None:
                yield sse(stream_error(event.error))
                break
            finish = event.completion.finish_reason if event.completion else None
            logprobs = completion_logprobs(event.logprobs, offset) if wants_logprobs else None
            offset += len(event.text)
            choice = CompletionChoice(text=event.text, logprobs=logprobs, finish_reason=finish)  # type: ignore[arg-type]
            yield sse(response([choice]))
            if event.completion is not None and include_usage:
                yield sse(response([], Usage.of(event.completion)))
        yield sse("[DONE]")

    return EventStream(stream(), prepared.slot, "text/event-stream")
