"""The OpenAI API as vLLM's server speaks it: request, response, chunk and error models.

Every request field either works as in vLLM or is refused with a 400 naming it (see
``RequestModel``); the vLLM extensions ``top_k``, ``min_p`` and ``repetition_penalty`` work.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.inference.api_model import RequestModel, Unsupported
from app.inference.engine import (
    GREEDY_NOTE,
    MAX_TOP_LOGPROBS,
    Completion,
    SamplingParams,
    TokenLogprob,
)
from app.inference.generation import Prompt, sampling_params, stop_tuple
from app.inference.state import ApiError

# ------------------------------------------------------------------------------------ requests

_TOOLS = Unsupported(
    "tool calling is not supported by this server (Gemma 3 has no tool-call format here); "
    "describe the tools in the prompt instead",
    ([],),
)
_JSON = Unsupported(
    "JSON mode and JSON schemas need constrained decoding, which this server does not do; "
    "ask for JSON in the prompt and validate the reply",
    ({"type": "text"},),
)
_LOGIT_BIAS = Unsupported("logit_bias is not supported; use stop strings or the penalties", ({},))
_ONE_CHOICE = Unsupported("one choice per request is supported; send n requests instead", (1,))
_NOT_STORED = Unsupported("this server stores no completions", (False,))


class TextPart(RequestModel):
    unsupported: ClassVar[dict[str, Unsupported]] = {
        name: Unsupported("this model server takes text parts only")
        for name in ("image_url", "input_audio", "file", "refusal")
    }
    type: Literal["text"] = Field(description="only text parts are supported")
    text: str


class ChatMessage(RequestModel):
    unsupported: ClassVar[dict[str, Unsupported]] = {
        "tool_calls": _TOOLS,
        "tool_call_id": _TOOLS,
        "function_call": _TOOLS,
        "audio": Unsupported("audio is not supported; send text"),
        "refusal": Unsupported("refusal messages are not supported"),
        "annotations": Unsupported("annotations are not supported", ([],)),
    }
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="tool and function messages are not supported (no tool calling)"
    )
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, description="passed to the chat template, as in vLLM")

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(RequestModel):
    unsupported: ClassVar[dict[str, Unsupported]] = {
        "continuous_usage_stats": Unsupported("usage is sent once, in the last chunk", (False,)),
        "include_obfuscation": Unsupported("stream chunks are never obfuscated", (False,)),
    }
    include_usage: bool | None = Field(False, description="a last chunk with the usage")


class _Sampling(RequestModel):
    unsupported: ClassVar[dict[str, Unsupported]] = {
        "n": _ONE_CHOICE,
        "logit_bias": _LOGIT_BIAS,
        "store": _NOT_STORED,
        "metadata": Unsupported("metadata belongs to stored completions; none are stored", ({},)),
        "service_tier": Unsupported("there is one service tier", ("auto", "default")),
    }
    model: str = Field(description="the served model name (GET /v1/models)")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description=f"default 1; {GREEDY_NOTE}")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="vLLM extension; 0 disables the cut-off")
    min_p: float | None = Field(None, ge=0, le=1, description="vLLM extension")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(
        None, gt=0, le=2, description="vLLM extension; 1 is off"
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, description="any integer; reproduces under concurrency")
    user: str | None = Field(None, description="accepted and not used, as in vLLM")

    def requested_model(self) -> str | None:
        return self.model

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _logprobs(self) -> int | None:
        return None

    def sampling(self, max_tokens: int) -> SamplingParams:
        return sampling_params(
            max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            stop=stop_tuple(self.stop),
            seed=self.seed,
            logprobs=self._logprobs(),
        )


class ChatCompletionRequest(_Sampling):
    unsupported: ClassVar[dict[str, Unsupported]] = {
        **_Sampling.unsupported,
        "tools": _TOOLS,
        "tool_choice": Unsupported(_TOOLS.reason, ("none", "auto")),
        "functions": _TOOLS,
        "function_call": Unsupported(_TOOLS.reason, ("none", "auto")),
        "parallel_tool_calls": Unsupported(_TOOLS.reason, (True, False)),
        "response_format": _JSON,
        "modalities": Unsupported("only text output is supported", (["text"],)),
        "audio": Unsupported("only text output is supported"),
        "prediction": Unsupported("predicted outputs are not supported"),
        "reasoning_effort": Unsupported("Gemma 3 does not reason before answering"),
        "web_search_options": Unsupported("this server cannot search the web"),
    }
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="wins over max_tokens")
    logprobs: bool | None = Field(False, description="the chosen tokens' log-probabilities")
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="alternatives per token; needs logprobs"
    )

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError(
                "top_logprobs_without_logprobs",
                "top_logprobs needs logprobs: true (got top_logprobs={n}).",
                {"n": self.top_logprobs},
            )
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def _logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def prompt(self) -> Prompt:
        messages = []
        for message in self.messages:
            item: dict[str, Any] = {
                "role": "system" if message.role == "developer" else message.role,
                "content": message.text(),
            }
            if message.name is not None:
                item["name"] = message.name
            messages.append(item)
        return Prompt(messages=messages)


class CompletionRequest(_Sampling):
    unsupported: ClassVar[dict[str, Unsupported]] = {
        **_Sampling.unsupported,
        "echo": Unsupported("replies hold only the new text, never the prompt", (False,)),
        "suffix": Unsupported("fill-in-the-middle (suffix) is not supported", ("",)),
        "best_of": Unsupported("one candidate per request is generated", (1,)),
    }
    prompt_: str | list[str] | list[int] | list[list[int]] = Field(
        alias="prompt", description="one prompt: a string or a list of token ids"
    )
    logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="the chosen token plus this many others"
    )

    def _logprobs(self) -> int | None:
        return self.logprobs

    def prompt(self) -> Prompt:
        value = self.prompt_
        if isinstance(value, str):
            return Prompt(text=value)
        if value and all(isinstance(p, int) for p in value):
            return Prompt(token_ids=[int(p) for p in value])  # type: ignore[arg-type]
        if len(value) != 1:
            raise ApiError(400, f"send exactly one prompt per request (got {len(value)})")
        only = value[0]
        if isinstance(only, str):
            return Prompt(text=only)
        return Prompt(token_ids=[int(p) for p in only])  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, completion: Completion) -> Usage:
        return cls(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.prompt_tokens + completion.completion_tokens,
        )


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None


def _utf8(text: str) -> list[int]:
    return list(text.encode("utf-8", errors="replace"))


def chat_logprobs(entries: tuple[TokenLogprob, ...] | None) -> ChoiceLogprobs | None:
    """``choices[].logprobs`` of a chat reply or chunk."""
    if entries is None:
        return None
    return ChoiceLogprobs(
        content=[
            ChatTokenLogprob(
                token=e.token,
                logprob=e.logprob,
                bytes=_utf8(e.token),
                top_logprobs=[
                    TopLogprob(token=t.token, logprob=t.logprob, bytes=_utf8(t.token))
                    for t in e.top
                ],
            )
            for e in entries
        ]
    )


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


def completion_logprobs(
    entries: tuple[TokenLogprob, ...] | None, offset: int = 0
) -> CompletionLogprobs | None:
    """``choices[].logprobs`` of a text completion; offsets count from ``offset``."""
    if entries is None:
        return None
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{t.token: t.logprob for t in e.top} for e in entries],
        text_offset=offsets,
    )


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class CompletionResponse(BaseModel):
    """A text completion, and (with ``finish_reason`` null until the last) each chunk."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """OpenAI's model card. google-genai clients on API version v1 ask the same path for
    Gemini's models.get, so ``GET /v1/models/{id}`` adds Gemini's Model fields as extras."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gemma-stack"
    max_model_len: int | None = Field(None, description="the context, once the model is loaded")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -------------------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return ErrorResponse(error=ErrorDetail(message=message, type=kind, code=status)).model_dump()


def stream_error(message: str) -> ErrorResponse:
    """The in-band event that ends a stream whose generation failed."""
    return ErrorResponse(error=ErrorDetail(message=message, type="server_error", code=500))
