"""The Gemini API (generateContent, countTokens, models.get): request, response and error models.

Field names are camelCase on the wire (snake_case is accepted too, as Google's API does).
Every field either works as in Google's Gemini API or is refused with a 400 naming it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
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

_CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True)

_TOOLS = Unsupported(
    "function calling and code execution are not supported by this server; describe the "
    "tools in the prompt instead",
    ([],),
)
_TEXT_ONLY = Unsupported("this model server takes text parts only")
_JSON = Unsupported(
    "JSON output and response schemas need constrained decoding, which this server does not "
    "do; ask for JSON in the prompt and validate the reply"
)


def _camel_table(table: dict[str, Unsupported]) -> dict[str, Unsupported]:
    """The same refusals under their snake_case names, which Google's API accepts too."""
    snake = {
        "".join(f"_{c.lower()}" if c.isupper() else c for c in key): value
        for key, value in table.items()
    }
    return {**table, **snake}


class _Camel(RequestModel):
    model_config = _CAMEL


# ------------------------------------------------------------------------------------ requests


class Part(_Camel):
    unsupported: ClassVar[dict[str, Unsupported]] = _camel_table(
        dict.fromkeys(
            (
                "inlineData",
                "fileData",
                "videoMetadata",
                "mediaResolution",
                "executableCode",
                "codeExecutionResult",
            ),
            _TEXT_ONLY,
        )
        | dict.fromkeys(("functionCall", "functionResponse", "toolCall"), _TOOLS)
        | {
            "toolResponse": _TOOLS,
            "thought": Unsupported("Gemma 3 has no thoughts", (False,)),
            "thoughtSignature": Unsupported("Gemma 3 has no thoughts"),
        }
    )
    text: str | None = None


class Content(_Camel):
    role: Literal["user", "model"] | None = Field(
        None, description="function turns are not supported (no function calling)"
    )
    parts: list[Part] = Field(min_length=1)

    def text(self) -> str:
        return "".join(part.text or "" for part in self.parts)


# Thresholds that block nothing, which is what a server without a safety classifier does.
NO_BLOCKING = ("BLOCK_NONE", "OFF", "HARM_BLOCK_THRESHOLD_UNSPECIFIED")


class SafetySetting(_Camel):
    category: str
    threshold: str = Field(description=" or ".join(NO_BLOCKING) + ": nothing is filtered")

    @model_validator(mode="after")
    def _blocks_nothing(self) -> SafetySetting:
        if self.threshold not in NO_BLOCKING:
            raise PydanticCustomError(
                "safety_threshold",
                "threshold {threshold} is not supported: this server has no safety classifier, "
                "so it cannot block content. Send one of {allowed}, or leave safetySettings out.",
                {"threshold": self.threshold, "allowed": ", ".join(NO_BLOCKING)},
            )
        return self


class GenerationConfig(_Camel):
    unsupported: ClassVar[dict[str, Unsupported]] = _camel_table(
        {
            "candidateCount": Unsupported(
                "one candidate per request is supported; send more requests instead", (1,)
            ),
            "responseMimeType": Unsupported(_JSON.reason, ("text/plain",)),
            "responseSchema": _JSON,
            "responseJsonSchema": _JSON,
            "responseModalities": Unsupported("only text output is supported", (["TEXT"],)),
            "speechConfig": Unsupported("only text output is supported"),
            "imageConfig": Unsupported("only text output is supported"),
            "mediaResolution": _TEXT_ONLY,
            "audioTimestamp": _TEXT_ONLY,
            "thinkingConfig": Unsupported("Gemma 3 has no thinking mode"),
            "enableEnhancedCivicAnswers": Unsupported("not available on this model", (False,)),
            "routingConfig": Unsupported("there is one model; nothing to route"),
        }
    )
    temperature: float | None = Field(None, ge=0, le=2, description=f"default 1; {GREEDY_NOTE}")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="0 disables the cut-off")
    max_output_tokens: int | None = Field(None, ge=1)
    stop_sequences: list[str] | None = None
    seed: int | None = Field(None, description="any integer; reproduces under concurrency")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    response_logprobs: bool | None = Field(None, description="return logprobsResult")
    logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="top candidates per step"
    )

    @model_validator(mode="after")
    def _logprobs_need_response_logprobs(self) -> GenerationConfig:
        if self.logprobs is not None and not self.response_logprobs:
            raise PydanticCustomError(
                "logprobs_without_response_logprobs",
                "logprobs needs responseLogprobs: true (got logprobs={n}).",
                {"n": self.logprobs},
            )
        return self


class GenerateContentRequest(_Camel):
    unsupported: ClassVar[dict[str, Unsupported]] = _camel_table(
        {
            "tools": _TOOLS,
            "toolConfig": _TOOLS,
            "cachedContent": Unsupported("context caching is not supported; send the contents"),
            "store": Unsupported("this server stores nothing", (False,)),
            "serviceTier": Unsupported("there is one service tier", ("standard",)),
            "labels": Unsupported("labels are a Vertex AI billing feature"),
        }
    )
    model: str | None = Field(
        None, description="in a countTokens generateContentRequest: models/NAME"
    )
    contents: list[Content] = Field(min_length=1)
    system_instruction: Content | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[SafetySetting] | None = Field(
        None, description="accepted when they block nothing: " + ", ".join(NO_BLOCKING)
    )

    def requested_model(self) -> str | None:
        return self.model  # the path names it too; both must be the served model

    def config(self) -> GenerationConfig:
        return self.generation_config or GenerationConfig()

    def requested_max_tokens(self) -> int | None:
        return self.config().max_output_tokens

    def prompt(self) -> Prompt:
        messages = []
        if self.system_instruction is not None:
            messages.append({"role": "system", "content": self.system_instruction.text()})
        for content in self.contents:
            role = "assistant" if content.role == "model" else "user"
            messages.append({"role": role, "content": content.text()})
        return Prompt(messages=messages)

    def sampling(self, max_tokens: int) -> SamplingParams:
        config = self.config()
        return sampling_params(
            max_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            presence_penalty=config.presence_penalty,
            frequency_penalty=config.frequency_penalty,
            stop=stop_tuple(config.stop_sequences),
            seed=config.seed,
            logprobs=(config.logprobs or 0) if config.response_logprobs else None,
        )


class CountTokensRequest(_Camel):
    contents: list[Content] | None = Field(None, min_length=1)
    generate_content_request: GenerateContentRequest | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CountTokensRequest:
        if (self.contents is None) == (self.generate_content_request is None):
            raise PydanticCustomError(
                "count_tokens_input",
                "send either contents or generateContentRequest (exactly one of them).",
            )
        return self

    def prompt(self) -> Prompt:
        if self.generate_content_request is not None:
            return self.generate_content_request.prompt()
        return GenerateContentRequest(contents=self.contents or []).prompt()


# ----------------------------------------------------------------------------------- responses


class _CamelOut(BaseModel):
    model_config = _CAMEL


class TextPart(_CamelOut):
    text: str


class ModelContent(_CamelOut):
    role: Literal["model"] = "model"
    parts: list[TextPart]


class LogprobsCandidate(_CamelOut):
    token: str
    token_id: int
    log_probability: float


class TopCandidates(_CamelOut):
    candidates: list[LogprobsCandidate]


class LogprobsResult(_CamelOut):
    top_candidates: list[TopCandidates]
    chosen_candidates: list[LogprobsCandidate]
    log_probability_sum: float


FinishReason = Literal["STOP", "MAX_TOKENS"]
_FINISH: dict[str, FinishReason] = {"stop": "STOP", "length": "MAX_TOKENS"}


class Candidate(_CamelOut):
    content: ModelContent
    index: int = 0
    finish_reason: FinishReason | None = None
    avg_logprobs: float | None = None
    logprobs_result: LogprobsResult | None = None


class UsageMetadata(_CamelOut):
    prompt_token_count: int
    candidates_token_count: int
    total_token_count: int


class GenerateContentResponse(_CamelOut):
    """A reply, and each chunk of a streamed one (finishReason and usage in the last)."""

    candidates: list[Candidate]
    usage_metadata: UsageMetadata | None = None
    model_version: str


def response(
    model: str,
    text: str,
    completion: Completion | None,
    logprobs: tuple[TokenLogprob, ...] | None,
) -> GenerateContentResponse:
    """A reply (``completion`` set) or a streamed piece of one."""
    candidate = Candidate(content=ModelContent(parts=[TextPart(text=text)]))
    usage = None
    if completion is not None:
        candidate.finish_reason = _FINISH[completion.finish_reason]
        usage = UsageMetadata(
            prompt_token_count=completion.prompt_tokens,
            candidates_token_count=completion.completion_tokens,
            total_token_count=completion.prompt_tokens + completion.completion_tokens,
        )
    if logprobs is not None:
        chosen = [
            LogprobsCandidate(token=e.token, token_id=e.token_id, log_probability=e.logprob)
            for e in logprobs
        ]
        total = sum(e.logprob for e in logprobs)
        candidate.logprobs_result = LogprobsResult(
            top_candidates=[
                TopCandidates(
                    candidates=[
                        LogprobsCandidate(
                            token=t.token, token_id=t.token_id, log_probability=t.logprob
                        )
                        for t in e.top
                    ]
                )
                for e in logprobs
            ],
            chosen_candidates=chosen,
            log_probability_sum=total,
        )
        candidate.avg_logprobs = total / len(logprobs) if logprobs else None
    return GenerateContentResponse(
        candidates=[candidate], usage_metadata=usage, model_version=model
    )


class CountTokensResponse(_CamelOut):
    total_tokens: int


class Model(_CamelOut):
    """The served model, as models.get describes it."""

    name: str
    base_model_id: str
    version: str
    display_name: str
    description: str
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    supported_generation_methods: list[str]
    temperature: float = 1.0
    max_temperature: float = 2.0
    top_p: float = 1.0


def served_model(name: str, context: int | None) -> Model:
    """models.get's answer for the served model (``context``: its tokens, once loaded)."""
    return Model(
        name=f"models/{name}",
        base_model_id=name,
        version="1",
        display_name=name,
        description="A merged Gemma model served by gemma-stack's inference app.",
        input_token_limit=context,
        output_token_limit=context,
        supported_generation_methods=["generateContent", "streamGenerateContent", "countTokens"],
    )


class ModelList(_CamelOut):
    models: list[Model]


# -------------------------------------------------------------------------------------- errors

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


class ErrorStatus(BaseModel):
    code: int
    message: str
    status: str


class ErrorResponse(BaseModel):
    error: ErrorStatus


def error_status(status: int, message: str) -> ErrorResponse:
    name = _STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return ErrorResponse(error=ErrorStatus(code=status, message=message, status=name))


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return error_status(status, message).model_dump()
