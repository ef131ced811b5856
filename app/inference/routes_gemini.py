"""Gemini-compatible generateContent, streamGenerateContent, countTokens and models.get."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.inference.api_route import error_responses, route_class
from app.inference.generation import (
    EventStream,
    complete,
    count_prompt_tokens,
    open_stream,
    prepare,
    sse,
)
from app.inference.protocol_gemini import (
    CountTokensRequest,
    CountTokensResponse,
    ErrorResponse,
    GenerateContentRequest,
    GenerateContentResponse,
    Model,
    ModelList,
    error_status,
    response,
    served_model,
)
from app.inference.state import Api, ServerState, StateDep

router = APIRouter(tags=["gemini"], route_class=route_class(Api.GEMINI))

_ERRORS = error_responses(400, 401, 404, 413, 429, 503, model=ErrorResponse)


def gemini_model(state: ServerState) -> Model:
    return served_model(state.model_name, state.context())


@router.get(
    "/v1beta/models",
    summary="Gemini models.list: the one served model",
    response_model=ModelList,
    response_model_exclude_none=True,
    responses=error_responses(401, model=ErrorResponse),
)
async def list_models(state: StateDep) -> ModelList:
    return ModelList(models=[gemini_model(state)])


@router.get(
    "/v1beta/models/{model}",
    summary="Gemini models.get: the served model; 404 for any other",
    response_model=Model,
    response_model_exclude_none=True,
    responses=error_responses(401, 404, model=ErrorResponse),
)
async def get_model(model: str, state: StateDep) -> Model:
    state.check_model(model)
    return gemini_model(state)


for _version in ("v1beta", "v1"):

    @router.post(
        f"/{_version}/models/{{model}}:generateContent",
        summary="Gemini generateContent",
        name=f"generate_content_{_version}",
        response_model=GenerateContentResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def generate_content(
        model: str, body: GenerateContentRequest, state: StateDep
    ) -> GenerateContentResponse:
        state.check_model(model)
        prepared = await prepare(state, body)
        completion = await complete(state, prepared)
        return response(state.model_name, completion.text, completion, completion.logprobs)

    @router.post(
        f"/{_version}/models/{{model}}:streamGenerateContent",
        summary="Gemini streamGenerateContent (alt=sse for server-sent events)",
        name=f"stream_generate_content_{_version}",
        response_model=GenerateContentResponse,
        responses={
            200: {
                "description": "A JSON array of GenerateContentResponse chunks; with alt=sse, "
                "server-sent events of them",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_ERRORS,
        },
    )
    async def stream_generate_content(
        model: str,
        body: GenerateContentRequest,
        state: StateDep,
        alt: Annotated[str | None, Query(description="sse for server-sent events")] = None,
    ) -> StreamingResponse:
        state.check_model(model)
        prepared = await prepare(state, body)
        events = open_stream(state, prepared)
        as_sse = alt == "sse"
        wants_logprobs = prepared.params.logprobs is not None

        async def stream() -> AsyncIterator[bytes]:
            first = True
            if not as_sse:
                yield b"["
            async for event in events:
                if event.error is not None:
                    item: dict[str, Any] = error_status(500, event.error).model_dump()
                elif event.completion is None and not event.text and not event.logprobs:
                    continue
                else:
                    logprobs = event.logprobs if wants_logprobs else None
                    chunk = response(state.model_name, event.text, event.completion, logprobs)
                    item = chunk.model_dump(by_alias=True, exclude_none=True)
                if as_sse:
                    yield sse(item)
                else:
                    yield (b"" if first else b",\n") + json.dumps(item).encode()
                first = False
            if not as_sse:
                yield b"]"

        media = "text/event-stream" if as_sse else "application/json"
        return EventStream(stream(), prepared.slot, media)

    @router.post(
        f"/{_version}/models/{{model}}:countTokens",
        summary="Gemini countTokens: the prompt's tokens, as generateContent counts them",
        name=f"count_tokens_{_version}",
        response_model=CountTokensResponse,
        responses=_ERRORS,
    )
    async def count_tokens(
        model: str, body: CountTokensRequest, state: StateDep
    ) -> CountTokensResponse:
        state.check_model(model)
        inner = body.generate_content_request
        requested = inner.model if inner is not None else None
        total = await count_prompt_tokens(state, requested, body.prompt())
        return CountTokensResponse(total_tokens=total)
