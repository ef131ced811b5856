"""The team's original API: POST /generate {"type": "text"|"sql", "prompt", "max_tokens"}."""

from __future__ import annotations

from fastapi import APIRouter

from app.inference.api_route import error_responses, route_class
from app.inference.generation import complete, prepare
from app.inference.protocol_generate import ErrorResponse, GenerateRequest, GenerateResponse
from app.inference.state import Api, StateDep

router = APIRouter(tags=["generate"], route_class=route_class(Api.GENERATE))


@router.post(
    "/generate",
    summary="The team API: text or SQL generation",
    response_model=GenerateResponse,
    responses=error_responses(400, 401, 413, 429, 503, model=ErrorResponse),
)
async def generate(body: GenerateRequest, state: StateDep) -> GenerateResponse:
    prepared = await prepare(state, body)
    completion = await complete(state, prepared)
    return GenerateResponse(response=completion.text)
