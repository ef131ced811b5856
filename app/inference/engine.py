"""The small engine interface the routes use, so another backend (vLLM) can replace transformers."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

# Sentinel pushed through the queue when the worker thread ends.
_DONE = object()


class PromptError(ValueError):
    """The request cannot be turned into a prompt (bad roles, too long, ...): a 400."""


# Below this temperature decoding is greedy: dividing logits by a denormal (5e-324) once
# overflowed them to inf, and any temperature this small picks the likeliest token anyway.
GREEDY_BELOW = 1e-5
GREEDY_NOTE = f"below {GREEDY_BELOW:g} (0 included) decoding is greedy"


# The most alternatives a request may ask for per token, as in vLLM's and OpenAI's APIs.
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; a temperature below ``GREEDY_BELOW`` (0 included) means greedy.

    The penalties follow vLLM: ``presence_penalty`` and ``frequency_penalty`` (OpenAI's
    definitions, over the generated tokens) and ``repetition_penalty`` (transformers' and
    vLLM's multiplicative one, over prompt and generated tokens; 1 is off). ``min_p`` drops
    tokens less likely than ``min_p`` times the likeliest one. ``seed`` seeds a generator of
    the request's own, so seeded output does not depend on other requests in the batch.
    ``logprobs``: None for none, else the chosen token's log-probability plus that many
    alternatives (0 to ``MAX_TOP_LOGPROBS``).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class TopLogprob:
    """One candidate token and its log-probability."""

    token: str  # the token's text
    token_id: int
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and its ``top`` alternatives, likeliest first.

    Log-probabilities are the model's own (before temperature, penalties and truncation),
    as vLLM reports them by default.
    """

    token: str
    token_id: int
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass
class Completion:
    """What one generation produced: only the new text, never the prompt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn, eos or a stop string) or "length"
    # One entry per token of ``text`` when the request asked for logprobs, else None.
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class StreamEvent:
    """One streamed piece of text, the final summary (``completion``) or a failure (``error``).

    ``logprobs`` holds the entries of the tokens whose text this event releases.
    """

    text: str = ""
    completion: Completion | None = field(default=None)
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


class Engine(ABC):
    """A loaded model that renders prompts and generates text, one request per call.

    ``generate`` may be called from many threads at once; a batching engine runs the calls
    together.
    """

    model_name: str
    max_model_len: int

    @abstractmethod
    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """Apply the model's chat template with a generation prompt; ``PromptError`` if invalid."""

    @abstractmethod
    def encode(self, prompt: str, *, chat: bool) -> list[int]:
        """Token ids of a prompt (``chat`` prompts already carry their BOS)."""

    @abstractmethod
    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        on_logprobs: Callable[[tuple[TokenLogprob, ...]], None] | None = None,
    ) -> Completion:
        """Generate (blocking) until end of turn, eos, a stop string, max_tokens or ``cancel``.

        ``on_text`` receives each new piece of text as soon as it is decoded. When the params
        ask for logprobs, ``on_logprobs`` receives the entries of the tokens a piece releases
        just before ``on_text`` gets that piece (which is "" for a last piece of entries only).
        """

    def check_length(self, prompt_tokens: int, max_tokens: int) -> None:
        """Reject prompts that do not leave room for ``max_tokens`` in the context."""
        if prompt_tokens >= self.max_model_len:
            raise PromptError(
                f"The prompt is {prompt_tokens} tokens, longer than this model's context of "
                f"{self.max_model_len} tokens (MAX_MODEL_LEN). Shorten the prompt or the "
                "conversation history."
            )
        if prompt_tokens + max_tokens > self.max_model_len:
            raise PromptError(
                f"max_tokens={max_tokens} plus the prompt's {prompt_tokens} tokens exceeds the "
                f"context of {self.max_model_len} tokens (MAX_MODEL_LEN). Set max_tokens to at "
                f"most {self.max_model_len - prompt_tokens}."
            )


async def stream_generate(
    engine: Engine,
    prompt_ids: list[int],
    params: SamplingParams,
    executor: Executor,
) -> AsyncIterator[StreamEvent]:
    """Run ``engine.generate`` in ``executor`` and yield its text as it arrives.

    The event loop never blocks on the model. If the consumer stops early (client went away),
    the generation is cancelled so the worker frees up.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = threading.Event()
    pending: list[tuple[TokenLogprob, ...]] = []  # entries for the next piece of text

    def on_logprobs(entries: tuple[TokenLogprob, ...]) -> None:
        pending.append(entries)

    def on_text(text: str) -> None:
        event = StreamEvent(text=text, logprobs=tuple(e for group in pending for e in group))
        pending.clear()
        loop.call_soon_threadsafe(queue.put_nowait, event)

    def work() -> None:
        try:
            completion = engine.generate(
                prompt_ids, params, on_text=on_text, cancel=cancel, on_logprobs=on_logprobs
            )
            loop.call_soon_threadsafe(queue.put_nowait, completion)
        except BaseException as error:
            loop.call_soon_threadsafe(queue.put_nowait, error)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(executor, work)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Completion):
                yield StreamEvent(completion=item)
            elif isinstance(item, StreamEvent):
                yield item
    finally:
        cancel.set()
        # Keep the worker's exception (if any) from being logged as "never retrieved".
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
