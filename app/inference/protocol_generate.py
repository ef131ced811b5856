"""The team's original API, POST /generate: request, response and error models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.inference.api_model import RequestModel
from app.inference.engine import GREEDY_NOTE, SamplingParams
from app.inference.generation import Prompt
from app.inference.state import ApiError

# The user turn the SQL model was fine-tuned on; production prompts must match it.
SQL_INSTRUCTION = (
    "Given the <USER_QUERY> and the <SCHEMA>, generate the corresponding SQL command to "
    "retrieve the desired data, considering the query's syntax, semantics, and schema "
    "constraints."
)


def sql_user_turn(question: str, schema: str) -> str:
    """The fine-tuning user turn: instruction, blank line, <SCHEMA> block, blank line, query."""
    return (
        f"{SQL_INSTRUCTION}\n\n<SCHEMA>\n{schema}\n</SCHEMA>\n\n"
        f"<USER_QUERY>\n{question}\n</USER_QUERY>"
    )


class GenerateRequest(RequestModel):
    model_config = ConfigDict(populate_by_name=True)
    type: Literal["text", "sql"] = "text"
    prompt_: str = Field(min_length=1, alias="prompt")
    db_schema: str | None = Field(
        None, alias="schema", description="the tables' DDL; required for type sql"
    )
    max_tokens: int = Field(256, ge=1)
    temperature: float | None = Field(
        None, ge=0, le=2, description=f"default: 0 (greedy) for sql, 0.7 for text; {GREEDY_NOTE}"
    )
    top_p: float = Field(0.95, gt=0, le=1)

    def requested_model(self) -> str | None:
        return None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def prompt(self) -> Prompt:
        if self.type == "text":
            return Prompt(messages=[{"role": "user", "content": self.prompt_}])
        if not self.db_schema or not self.db_schema.strip():
            raise ApiError(
                400,
                "type 'sql' needs 'schema': the CREATE TABLE statements the query runs against.",
            )
        turn = sql_user_turn(self.prompt_, self.db_schema.strip())
        return Prompt(messages=[{"role": "user", "content": turn}])

    def sampling(self, max_tokens: int) -> SamplingParams:
        default_temperature = 0.0 if self.type == "sql" else 0.7
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=default_temperature if self.temperature is None else self.temperature,
            top_p=self.top_p,
        )


class GenerateResponse(BaseModel):
    response: str = Field(description="only the new text, never the prompt")


class ErrorResponse(BaseModel):
    detail: str


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return ErrorResponse(detail=message).model_dump()
