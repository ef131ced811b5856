"""OpenAI-compatible chat and text completions, streamed as server-sent events with usage."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field

from app.inference.api_model import RequestModel
from app.inference.engine import GREEDY_NOTE, Completion, Engine, SamplingParams
from app.inference.generation import (
    SSE_HEADERS,
    chat_prompt,
    complete,
    open_stream,
    resolve_max_tokens,
    sse,
    stop_tuple,
    text_prompt,
)
from app.inference.state import ApiError, ServerState, StateDep

router = APIRouter(tags=["openai"])


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class ChatMessage(RequestModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class StreamOptions(RequestModel):
    include_usage: bool = False


class _Sampling(RequestModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(description="the served model name (GET /v1/models)")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2, description=GREEDY_NOTE)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="vLLM extension; 0 disables")
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] = Field(description="one prompt (string or token ids)")
    echo: bool = Field(False, description="only false: replies never repeat the prompt")


def _params(body: _Sampling, max_tokens: int) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=stop_tuple(body.stop),
        seed=body.seed,
    )


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def _stream_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": 500}}


def _message_text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text for part in message.content)


@router.post("/v1/chat/completions", summary="OpenAI chat completions (stream: true for SSE)")
async def chat_completions(body: ChatCompletionRequest, state: StateDep) -> Any:
    state.check_model(body.model)
    engine = state.ready_engine()
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": _message_text(m)}
        for m in body.messages
    ]
    prompt_ids = await chat_prompt(engine, messages)
    requested = body.max_completion_tokens or body.max_tokens
    params = _params(body, resolve_max_tokens(state, engine, requested, len(prompt_ids)))
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream_chat(
            state=state,
            engine=engine,
            prompt_ids=prompt_ids,
            params=params,
            request_id=request_id,
            created=created,
            include_usage=include_usage,
        )
    completion = await complete(state, engine, prompt_ids, params)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": state.model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": _usage(completion),
    }


async def _stream_chat(
    *,
    state: ServerState,
    engine: Engine,
    prompt_ids: list[int],
    params: SamplingParams,
    request_id: str,
    created: int,
    include_usage: bool,
) -> StreamingResponse:
    events = await open_stream(state, engine, prompt_ids, params)
    base = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": state.model_name,
    }

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**base, "choices": [choice]})

    async def body() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        async for event in events:
            if event.error is not None:
                yield sse(_stream_error(event.error))
                break
            if event.completion is None:
                yield chunk({"content": event.text})
                continue
            yield chunk({}, event.completion.finish_reason)
            if include_usage:
                yield sse({**base, "choices": [], "usage": _usage(event.completion)})
        yield sse("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/v1/completions", summary="OpenAI text completions on a raw prompt")
async def completions(body: CompletionRequest, state: StateDep) -> Any:
    state.check_model(body.model)
    if body.echo:
        raise ApiError(400, "echo=true is not supported: replies hold only the new text.")
    engine = state.ready_engine()
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        prompt_ids = [int(p) for p in prompt]
        if any(p < 0 for p in prompt_ids):
            raise ApiError(400, "prompt token ids must be non-negative")
    else:
        texts = [prompt] if isinstance(prompt, str) else [str(p) for p in prompt]
        if len(texts) != 1:
            raise ApiError(400, f"send exactly one prompt per request (got {len(texts)})")
        prompt_ids = await text_prompt(engine, texts[0])
    vocab = getattr(engine, "vocab_size", None)
    if vocab is not None and any(p >= vocab for p in prompt_ids):
        raise ApiError(400, f"prompt token ids must be below the vocabulary size {vocab}")
    if not prompt_ids:
        raise ApiError(400, "prompt is empty")
    params = _params(body, resolve_max_tokens(state, engine, body.max_tokens, len(prompt_ids)))
    request_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    base = {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": state.model_name,
    }
    if not body.stream:
        completion = await complete(state, engine, prompt_ids, params)
        choice = {
            "index": 0,
            "text": completion.text,
            "logprobs": None,
            "finish_reason": completion.finish_reason,
        }
        return {**base, "choices": [choice], "usage": _usage(completion)}

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = await open_stream(state, engine, prompt_ids, params)

    async def stream() -> AsyncIterator[bytes]:
        async for event in events:
            if event.error is not None:
                yield sse(_stream_error(event.error))
                break
            finish = event.completion.finish_reason if event.completion else None
            choice = {"index": 0, "text": event.text, "logprobs": None, "finish_reason": finish}
            yield sse({**base, "choices": [choice]})
            if event.completion is not None and include_usage:
                yield sse({**base, "choices": [], "usage": _usage(event.completion)})
        yield sse("[DONE]")

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)
