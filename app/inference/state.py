"""Shared server state: the loaded engine, the admission queue and API errors."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from app.inference.engine import Engine
    from app.inference.settings import Settings


class Api(enum.Enum):
    """The API families the server speaks; each answers errors in its own format."""

    OPENAI = "openai"
    GEMINI = "gemini"
    GENERATE = "generate"


class ApiError(Exception):
    """An error answered as JSON in its API family's own error format.

    Code shared by every family (admission, model checks) raises it without ``api``; the
    family's routes stamp theirs on it (``for_api``) before it is answered.
    """

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        api: Api | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.api = api

    def for_api(self, api: Api) -> ApiError:
        """This error, answered in ``api``'s format unless it already names a family."""
        if self.api is None:
            self.api = api
        return self


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


class Admission:
    """At most ``max_concurrency`` generations run; ``max_queue`` more wait; the rest get 429."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.waiting = 0
        self.running = 0

    async def acquire(self) -> Slot:
        if self._semaphore.locked() and self.waiting >= self.max_queue:
            raise ApiError(
                429,
                f"Server busy: {self.running} requests generating and {self.waiting} waiting "
                f"(MAX_CONCURRENCY={self.max_concurrency}, MAX_QUEUE={self.max_queue}). "
                "Retry after a short wait.",
                "rate_limit_exceeded",
            )
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return Slot(self)

    def _release(self) -> None:
        self.running -= 1
        self._semaphore.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        held = await self.acquire()
        try:
            yield held
        finally:
            held.release()


class Slot:
    """One admitted request; ``release`` is idempotent so streams can release from anywhere."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release()
            self._admission = None


@dataclass
class ServerState:
    settings: Settings
    model_name: str
    admission: Admission
    executor: ThreadPoolExecutor
    phase: Phase = Phase.LOADING
    engine: Engine | None = None
    error: str | None = None
    created: int = 0

    def ready_engine(self) -> Engine:
        if self.phase is Phase.DRAINING:
            raise ApiError(
                503, "Server is shutting down; retry on another instance.", "unavailable"
            )
        if self.phase is Phase.FAILED:
            raise ApiError(503, f"Model failed to load: {self.error}", "unavailable")
        if self.engine is None or self.phase is not Phase.READY:
            raise ApiError(
                503,
                "The model is still loading; retry when GET /health returns 200.",
                "unavailable",
            )
        return self.engine

    def context(self) -> int | None:
        """The served context in tokens, once the model is loaded."""
        return self.engine.max_model_len if self.engine is not None else None

    def check_model(self, requested: str | None) -> None:
        name = (requested or "").removeprefix("models/")
        if requested is not None and name != self.model_name:
            raise ApiError(
                404,
                f"The model '{requested}' does not exist; this server serves "
                f"'{self.model_name}' (see GET /v1/models).",
                "model_not_found",
            )


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


StateDep = Annotated[ServerState, Depends(get_state)]
