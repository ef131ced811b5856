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
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.inference import protocol_gemini, protocol_generate, protocol_openai
from app.inference.api_route import ApiRoute
from app.inference.engine import Engine, SamplingParams
from app.inference.logs import RequestLog
from app.inference.model_source import ModelSourceError, resolve_model_dir
from app.inference.settings import Settings
from app.inference.state import Admission, Api, ApiError, Phase, ServerState, get_state

logger = logging.getLogger("app.inference")

EngineFactory = Callable[[Settings], Engine]


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


ErrorBody = Callable[[int, str, str], dict[str, Any]]
ERROR_BODIES: dict[Api, ErrorBody] = {
    Api.OPENAI: protocol_openai.error_body,
    Api.GEMINI: protocol_gemini.error_body,
    Api.GENERATE: protocol_generate.error_body,
}


def _install_error_handlers(app: FastAPI) -> None:
    def respond(api: Api | None, status: int, message: str, kind: str) -> JSONResponse:
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        # No family: a path no route serves, answered in FastAPI's own {"detail"} shape.
        render = ERROR_BODIES[api] if api is not None else protocol_generate.error_body
        return JSONResponse(render(status, message, kind), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return respond(error.api, error.status, error.message, error.kind)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404:
            message = f"No route {request.method} {request.url.path}; see /docs for the API."
        return respond(None, error.status_code, message, "invalid_request_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        route = request.scope.get("route")
        api = route.api if isinstance(route, ApiRoute) else None
        return respond(api, 500, f"Internal error: {type(error).__name__}", "server_error")


def _check_api_key(request: Request, given: str, forms: str) -> None:
    expected = get_state(request).settings.api_key
    if expected is None:
        return
    if not given or not secrets.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise ApiError(401, f"Missing or wrong API key: send {forms}.", "authentication_error")


def _header_key(request: Request) -> str:
    given = request.headers.get("x-goog-api-key") or ""
    authorization = request.headers.get("authorization") or ""
    if not given and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    return given


async def require_api_key(request: Request) -> None:
    """With API_KEY set, accept ``Authorization: Bearer KEY`` or ``x-goog-api-key: KEY``."""
    _check_api_key(
        request,
        _header_key(request),
        "'Authorization: Bearer <API_KEY>' or 'x-goog-api-key: <API_KEY>'",
    )


async def require_gemini_api_key(
    request: Request,
    key: Annotated[str | None, Query(description="the API key, as Gemini clients send it")] = None,
) -> None:
    """As ``require_api_key``, and Gemini's ``?key=KEY`` form too."""
    _check_api_key(
        request,
        _header_key(request) or key or "",
        "'x-goog-api-key: <API_KEY>', '?key=<API_KEY>' or 'Authorization: Bearer <API_KEY>'",
    )


def _openapi_without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The spec lists the codes the server answers: bad input is a 400 here, never a 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


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
    app.openapi = _openapi_without_422(app)  # type: ignore[method-assign]
    app.include_router(routes_health.router)
    app.include_router(metrics.router)
    protected = [Depends(require_api_key)]
    app.include_router(routes_generate.router, dependencies=protected)
    app.include_router(routes_openai.router, dependencies=protected)
    app.include_router(routes_gemini.router, dependencies=[Depends(require_gemini_api_key)])
    return app
