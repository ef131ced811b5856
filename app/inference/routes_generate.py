"""The team's original API: POST /generate {"type": "text"|"sql", "prompt", "max_tokens"}."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.inference.api_model import RequestModel
from app.inference.engine import GREEDY_NOTE, SamplingParams
from app.inference.generation import chat_prompt, complete
from app.inference.state import ApiError, StateDep

router = APIRouter(tags=["generate"])

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
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: Literal["text", "sql"] = "text"
    prompt: str = Field(min_length=1)
    db_schema: str | None = Field(
        None, alias="schema", description="the tables' DDL; required for type sql"
    )
    max_tokens: int = Field(256, ge=1)
    temperature: float | None = Field(
        None, ge=0, le=2, description=f"default: 0 (greedy) for sql, 0.7 for text; {GREEDY_NOTE}"
    )
    top_p: float = Field(0.95, gt=0, le=1)


class GenerateResponse(BaseModel):
    response: str = Field(description="only the new text, never the prompt")


@router.post("/generate", summary="The team API: text or SQL generation")
async def generate(body: GenerateRequest, state: StateDep) -> GenerateResponse:
    engine = state.ready_engine()
    if body.type == "sql":
        if not body.db_schema or not body.db_schema.strip():
            raise ApiError(
                400,
                "type 'sql' needs 'schema': the CREATE TABLE statements the query runs against.",
            )
        user_turn = sql_user_turn(body.prompt, body.db_schema.strip())
        default_temperature = 0.0
    else:
        user_turn = body.prompt
        default_temperature = 0.7
    prompt_ids = await chat_prompt(engine, [{"role": "user", "content": user_turn}])
    params = SamplingParams(
        max_tokens=body.max_tokens,
        temperature=default_temperature if body.temperature is None else body.temperature,
        top_p=body.top_p,
    )
    completion = await complete(state, engine, prompt_ids, params)
    return GenerateResponse(response=completion.text)
