"""Glue between routes and the engine: admission, length checks, server-sent events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from app.inference.engine import Completion, Engine, SamplingParams, StreamEvent, stream_generate
from app.inference.metrics import RequestMetrics
from app.inference.state import ApiError, ServerState

logger = logging.getLogger(__name__)


# Tokenizing a prompt of a few megabytes takes seconds: it runs in a thread (the tokenizer
# releases the GIL) so that streams and the health probe go on meanwhile.


async def chat_prompt(engine: Engine, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of a chat rendered with the model's template."""
    return await asyncio.to_thread(lambda: engine.encode(engine.render_chat(messages), chat=True))


async def text_prompt(engine: Engine, prompt: str) -> list[int]:
    """Token ids of a raw prompt."""
    return await asyncio.to_thread(engine.encode, prompt, chat=False)


def resolve_max_tokens(
    state: ServerState, engine: Engine, requested: int | None, prompt: int
) -> int:
    """The request's max_tokens, or the default capped to what is left of the context."""
    if requested is not None:
        return requested
    return max(1, min(state.settings.max_tokens_default, engine.max_model_len - prompt))


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


async def complete(
    state: ServerState, engine: Engine, prompt_ids: list[int], params: SamplingParams
) -> Completion:
    """Generate the whole reply inside an admission slot."""
    engine.check_length(len(prompt_ids), params.max_tokens)
    observed = RequestMetrics(state.model_name)
    async with state.admission.slot():
        generated = stream_generate(engine, prompt_ids, params, state.executor)
        async for event in observed.watch(generated):
            if event.completion is not None:
                return event.completion
    raise RuntimeError("generation ended without a result")  # pragma: no cover


async def open_stream(
    state: ServerState, engine: Engine, prompt_ids: list[int], params: SamplingParams
) -> AsyncIterator[StreamEvent]:
    """Admit the request now (so 429 is a real status), then stream its events."""
    engine.check_length(len(prompt_ids), params.max_tokens)
    observed = RequestMetrics(state.model_name)
    slot = await state.admission.acquire()

    async def events() -> AsyncIterator[StreamEvent]:
        try:
            generated = stream_generate(engine, prompt_ids, params, state.executor)
            async for event in observed.watch(generated):
                yield event
        except Exception as error:
            # The 200 and some text are already sent: report the failure in-band.
            logger.exception("generation failed mid-stream")
            yield StreamEvent(error=f"Generation failed: {type(error).__name__}: {error}")
        finally:
            slot.release()

    return events()


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
