"""Health (Cloud Run startup probe) and the OpenAI model list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.inference.state import Phase, StateDep

router = APIRouter(tags=["health"])
models_router = APIRouter(tags=["openai"])


@router.get("/health", summary="200 once the model is loaded and warm, 503 before")
async def health(state: StateDep) -> JSONResponse:
    body: dict[str, Any] = {"status": state.phase.value, "model": state.model_name}
    if state.error:
        body["error"] = state.error
    return JSONResponse(body, status_code=200 if state.phase is Phase.READY else 503)


@models_router.get("/v1/models", summary="The one model this server serves")
async def list_models(state: StateDep) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": state.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "gemma-stack",
    }
    if state.engine is not None:
        card["max_model_len"] = state.engine.max_model_len
    return {"object": "list", "data": [card]}
