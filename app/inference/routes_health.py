"""Health: the Cloud Run startup probe."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.inference.state import Phase, StateDep

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="200 once the model is loaded and warm, 503 before",
    responses={503: {"description": "loading, failed to load, or shutting down"}},
)
async def health(state: StateDep) -> JSONResponse:
    body: dict[str, Any] = {"status": state.phase.value, "model": state.model_name}
    if state.error:
        body["error"] = state.error
    return JSONResponse(body, status_code=200 if state.phase is Phase.READY else 503)
