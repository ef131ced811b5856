"""What every generating route shares: ``prepare()`` a request, then complete or stream it.

``prepare`` is the one path from a validated request body to the engine: model check, prompt
size cap, admission (tokenizing a long prompt takes a worker's time, so it waits for a slot
like generation does, and a full queue is a 429 before any of it), tokenizing, the length
check, and the request's ``SamplingParams``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.inference.engine import Completion, Engine, SamplingParams, StreamEvent, stream_generate
from app.inference.metrics import RequestMetrics
from app.inference.state import ApiError, ServerState, Slot

logger = logging.getLogger(__name__)

# No tokenizer we serve averages more than about 6 characters per token on real text; 16
# leaves room for long runs of spaces or punctuation. A prompt with more characters than this
# many per token of the context cannot fit, so it is refused before it is tokenized (a 10 MB
# prompt took over a minute of tokenizing to reach the same answer).
MAX_PROMPT_CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class Prompt:
    """What to tokenize: a chat (rendered with the model's template), a raw text, or ids."""

    messages: list[dict[str, Any]] | None = None
    text: str | None = None
    token_ids: list[int] | None = None

    def characters(self) -> int:
        if self.messages is not None:
            return sum(len(str(m.get("content") or "")) for m in self.messages)
        return len(self.text or "")


class GenerationBody(Protocol):
    """What ``prepare`` needs from any API's request body."""

    def requested_model(self) -> str | None:
        """The model the client named (None where the API names it in the path)."""

    def prompt(self) -> Prompt: ...

    def requested_max_tokens(self) -> int | None: ...

    def sampling(self, max_tokens: int) -> SamplingParams: ...


@dataclass
class Prepared:
    """A request ready to generate, holding its admission slot until it is done."""

    engine: Engine
    prompt_ids: list[int]
    params: SamplingParams
    slot: Slot
    metrics: RequestMetrics

    def generate(self, state: ServerState) -> AsyncIterator[StreamEvent]:
        """The engine's events, timed and counted for ``/metrics``."""
        events = stream_generate(self.engine, self.prompt_ids, self.params, state.executor)
        return self.metrics.watch(events)


def check_prompt_size(prompt: Prompt, max_model_len: int) -> None:
    """Refuse a prompt too long to fit before spending time on tokenizing it."""
    if prompt.token_ids is not None:
        if len(prompt.token_ids) >= max_model_len:
            raise ApiError(
                400,
                f"The prompt is {len(prompt.token_ids)} tokens, longer than this model's "
                f"context of {max_model_len} tokens (MAX_MODEL_LEN). Shorten the prompt.",
            )
        return
    limit = max_model_len * MAX_PROMPT_CHARS_PER_TOKEN
    characters = prompt.characters()
    if characters > limit:
        raise ApiError(
            400,
            f"The prompt is {characters} characters, more than can fit this model's context "
            f"of {max_model_len} tokens (MAX_MODEL_LEN): prompts over {limit} characters "
            f"({MAX_PROMPT_CHARS_PER_TOKEN} per token) are refused without tokenizing. "
            "Shorten the prompt or the conversation history.",
        )


def _check_token_ids(engine: Engine, ids: list[int]) -> None:
    if not ids:
        raise ApiError(400, "prompt is empty")
    if any(p < 0 for p in ids):
        raise ApiError(400, "prompt token ids must be non-negative")
    vocab = getattr(engine, "vocab_size", None)
    if vocab is not None and any(p >= vocab for p in ids):
        raise ApiError(400, f"prompt token ids must be below the vocabulary size {vocab}")


async def _tokenize(engine: Engine, prompt: Prompt) -> list[int]:
    # In a thread (the tokenizer releases the GIL): streams and /health go on meanwhile.
    if prompt.token_ids is not None:
        ids = list(prompt.token_ids)
    elif prompt.messages is not None:
        messages = prompt.messages
        ids = await asyncio.to_thread(
            lambda: engine.encode(engine.render_chat(messages), chat=True)
        )
    else:
        ids = await asyncio.to_thread(engine.encode, prompt.text or "", chat=False)
    _check_token_ids(engine, ids)
    return ids


def resolve_max_tokens(
    state: ServerState, engine: Engine, requested: int | None, prompt: int
) -> int:
    """The request's max_tokens, or the default capped to what is left of the context."""
    if requested is not None:
        return requested
    return max(1, min(state.settings.max_tokens_default, engine.max_model_len - prompt))


async def prepare(state: ServerState, body: GenerationBody) -> Prepared:
    """Check, admit and tokenize a request; the caller must finish or stream the result."""
    state.check_model(body.requested_model())
    metrics = RequestMetrics(state.model_name)  # from arrival, as vLLM's TTFT
    engine = state.ready_engine()
    prompt = body.prompt()
    check_prompt_size(prompt, engine.max_model_len)
    slot = await state.admission.acquire()
    try:
        prompt_ids = await _tokenize(engine, prompt)
        max_tokens = resolve_max_tokens(state, engine, body.requested_max_tokens(), len(prompt_ids))
        engine.check_length(len(prompt_ids), max_tokens)
        params = body.sampling(max_tokens)
    except BaseException:
        slot.release()
        raise
    return Prepared(engine, prompt_ids, params, slot, metrics)


async def count_prompt_tokens(state: ServerState, model: str | None, prompt: Prompt) -> int:
    """How many tokens ``prompt`` is, tokenized inside an admission slot like generation."""
    state.check_model(model)
    engine = state.ready_engine()
    check_prompt_size(prompt, engine.max_model_len)
    async with state.admission.slot():
        return len(await _tokenize(engine, prompt))


def sampling_params(max_tokens: int, **fields: Any) -> SamplingParams:
    """``SamplingParams`` from a request's fields, where None (absent) means the default."""
    return SamplingParams(
        max_tokens=max_tokens,
        **{name: value for name, value in fields.items() if value is not None},
    )


# Every new token is checked against every stop string (and each one's prefixes, to hold back
# text that may become one), so unbounded stop lists would let one request stall a worker.
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256


def stop_tuple(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if len(items) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_LENGTH for s in items):
        raise ApiError(
            400,
            f"Send at most {MAX_STOP_STRINGS} stop strings of at most {MAX_STOP_LENGTH} "
            f"characters each (got {len(items)}, the longest {max(map(len, items))}).",
        )
    return tuple(s for s in items if s)


async def complete(state: ServerState, prepared: Prepared) -> Completion:
    """Generate the whole reply, then free the request's slot."""
    try:
        async for event in prepared.generate(state):
            if event.completion is not None:
                return event.completion
    finally:
        prepared.slot.release()
    raise RuntimeError("generation ended without a result")  # pragma: no cover


def open_stream(state: ServerState, prepared: Prepared) -> AsyncIterator[StreamEvent]:
    """The request's events; a failure after the 200 is reported in-band as an error event."""

    async def events() -> AsyncIterator[StreamEvent]:
        try:
            async for event in prepared.generate(state):
                yield event
        except Exception as error:
            # The 200 and some text are already sent: report the failure in-band.
            logger.exception("generation failed mid-stream")
            yield StreamEvent(error=f"Generation failed: {type(error).__name__}: {error}")
        finally:
            prepared.slot.release()

    return events()


class EventStream(StreamingResponse):
    """A streamed reply that frees its slot however it ends, even if the client left before
    the first byte (then the body's generator never starts, so its own ``finally`` cannot)."""

    def __init__(self, content: AsyncIterator[bytes], slot: Slot, media_type: str) -> None:
        super().__init__(content, media_type=media_type, headers=SSE_HEADERS)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()  # ends the generation if the client left mid-stream


def sse(data: BaseModel | dict[str, Any] | str, *, exclude_none: bool = False) -> bytes:
    """One server-sent event."""
    if isinstance(data, BaseModel):
        payload = data.model_dump_json(by_alias=True, exclude_none=exclude_none)
    elif isinstance(data, str):
        payload = data
    else:
        payload = json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
