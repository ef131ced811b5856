"""FastAPI app: loads the model in the background, answers errors in each API's own format."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.inference.api_model import INVALID_UNICODE
from app.inference.engine import Engine, PromptError, SamplingParams
from app.inference.logs import RequestLog
from app.inference.model_source import ModelSourceError, resolve_model_dir
from app.inference.settings import Settings
from app.inference.state import Admission, ApiError, Phase, ServerState, get_state

logger = logging.getLogger("app.inference")

EngineFactory = Callable[[Settings], Engine]

_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def load_transformers_engine(settings: Settings) -> Engine:
    """Resolve MODEL_URI to a checked local folder and load it with transformers."""
    from app.inference.transformers_engine import TransformersEngine  # noqa: PLC0415 - torch

    model_dir = resolve_model_dir(
        settings.model_uri, settings.model_cache_dir, max_workers=settings.download_workers
    )
    try:
        return TransformersEngine(
            model_dir,
            settings.model_name(),
            settings.max_model_len,
            settings.dtype,
            settings.attention,
        )
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelSourceError(
            f"{settings.model_uri}: transformers could not load the folder "
            f"({type(error).__name__}: {first}). Re-save the merged model with save_pretrained() "
            "and upload the whole folder again."
        ) from error


def error_body(path: str, status: int, message: str, kind: str) -> dict[str, Any]:
    """Error JSON in the format of the API family the path belongs to."""
    if path.startswith("/v1beta") or (path.startswith("/v1/models/") and ":" in path):
        return {
            "error": {
                "code": status,
                "message": message,
                "status": _GEMINI_STATUS.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
            }
        }
    if path.startswith("/v1/"):
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"detail": message}


def _validation_message(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        if item.get("type") == INVALID_UNICODE:
            problems.append(str(item.get("msg", "")))  # the message names the field itself
            continue
        if item.get("type") == "json_invalid":
            return "The request body is not valid JSON: " + str(item.get("msg", ""))
        if tuple(item.get("loc", ())) == ("body",) and item.get("type") != "missing":
            return (
                "The request body must be a JSON object, sent with "
                "'Content-Type: application/json'."
            )
        problems.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(problems)


def _install_error_handlers(app: FastAPI) -> None:
    def respond(request: Request, status: int, message: str, kind: str) -> JSONResponse:
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        return JSONResponse(
            error_body(request.url.path, status, message, kind), status_code=status, headers=headers
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return respond(request, error.status, error.message, error.kind)

    @app.exception_handler(PromptError)
    async def prompt_error(request: Request, error: PromptError) -> JSONResponse:
        return respond(request, 400, str(error), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return respond(request, 400, _validation_message(error), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404:
            message = f"No route {request.method} {request.url.path}; see /docs for the API."
        return respond(request, error.status_code, message, "invalid_request_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return respond(request, 500, f"Internal error: {type(error).__name__}", "server_error")


async def require_api_key(request: Request) -> None:
    """With API_KEY set, accept ``Authorization: Bearer KEY`` or ``x-goog-api-key: KEY``."""
    state = get_state(request)
    expected = state.settings.api_key
    if expected is None:
        return
    given = request.headers.get("x-goog-api-key") or ""
    authorization = request.headers.get("authorization") or ""
    if not given and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not given or not secrets.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise ApiError(
            401,
            "Missing or wrong API key: send 'Authorization: Bearer <API_KEY>' or "
            "'x-goog-api-key: <API_KEY>'.",
            "authentication_error",
        )


def _load_in_background(
    state: ServerState, factory: EngineFactory, on_fatal: Callable[[str], None] | None
) -> None:
    try:
        engine = factory(state.settings)
        started = time.monotonic()
        prompt = engine.encode(engine.render_chat([{"role": "user", "content": "Hi"}]), chat=True)
        engine.generate(prompt, SamplingParams(max_tokens=2, temperature=0))
        logger.info("model: warm-up generation took %.2f s", time.monotonic() - started)
    except ModelSourceError as error:
        state.error = str(error)
    except Exception as error:
        logger.debug("model load failed", exc_info=True)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        state.error = f"{state.settings.model_uri}: {type(error).__name__}: {first}"
    else:
        state.engine = engine
        if state.phase is Phase.LOADING:
            state.phase = Phase.READY
        logger.info("ready: serving %s", state.model_name)
        return
    state.phase = Phase.FAILED
    logger.error("error: %s", state.error)
    if on_fatal is not None:
        on_fatal(state.error)


def create_app(
    settings: Settings,
    engine_factory: EngineFactory = load_transformers_engine,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the app; the model loads in a thread once the lifespan starts."""
    from app.inference import (  # noqa: PLC0415 - routes import this module's helpers
        metrics,
        routes_gemini,
        routes_generate,
        routes_health,
        routes_openai,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServerState(
            settings=settings,
            model_name=settings.model_name(),
            admission=Admission(settings.max_concurrency, settings.max_queue),
            executor=ThreadPoolExecutor(
                max_workers=settings.max_concurrency, thread_name_prefix="generate"
            ),
            created=int(time.time()),
        )
        app.state.server = state
        loader = threading.Thread(
            target=_load_in_background,
            args=(state, engine_factory, on_fatal),
            name="model-loader",
            daemon=True,
        )
        loader.start()
        try:
            yield
        finally:
            state.phase = Phase.DRAINING
            state.executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.sleep(0)

    app = FastAPI(
        title="gemma-stack inference",
        version="1.0",
        summary="Serves a merged Gemma model over the team API, OpenAI and Gemini APIs.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(RequestLog)
    app.include_router(routes_health.router)
    app.include_router(metrics.router)
    protected = [Depends(require_api_key)]
    app.include_router(routes_health.models_router, dependencies=protected)
    app.include_router(routes_generate.router, dependencies=protected)
    app.include_router(routes_openai.router, dependencies=protected)
    app.include_router(routes_gemini.router, dependencies=protected)
    return app
