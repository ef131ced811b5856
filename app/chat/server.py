"""The web server: Gradio mounted on FastAPI, behind the access gate and security headers."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from app.chat.access import (
    Access,
    AccessGate,
    LoginAccess,
    LoginThrottle,
    SecurityHeaders,
    SessionSigner,
    gate_user,
)
from app.chat.backends import ChatBackend, make_backend
from app.chat.history import ChatHistory
from app.chat.identity import IapAccess, OwnerResolver
from app.chat.logs import RequestLog
from app.chat.metrics import serve_metrics
from app.chat.settings import ChatSettings
from app.chat.ui import CSS, ChatUI

log = logging.getLogger(__name__)
# System fonts only: a theme's web fonts would come from another host, which the CSP forbids.
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
MONO_FONTS = ("ui-monospace", "Consolas", "monospace")


def _skip_missing_matplotlib() -> None:
    # Gradio tries `import matplotlib` around every event; when it is not installed each
    # failed import searches sys.path again, a measurable share of per-token CPU time.
    if importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def _cheap_queue_analytics() -> None:
    # After every queued event Gradio's queue builds a pandas DataFrame of its last 10,000
    # events for its monitoring page, which this app does not serve: 4 ms per message at a
    # few hundred events, 11.5 ms once the server has seen 10,000, on the CPU the streams
    # need. Summarize rarely, over fewer events (read when the queue is made).
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")


# Gradio's queue polls for new events every millisecond and for progress bars every 10 ms, even
# when idle: 26 ms of CPU a second on a 2-core machine, paid by every streaming reply as if
# it were the reply's cost. Polling every 5 ms adds at most 5 ms before an event starts; the
# app shows no progress bars.
QUEUE_POLL_S = 0.005
PROGRESS_POLL_S = 0.1


def _calm_queue(blocks: gr.Blocks) -> None:
    queue = blocks._queue
    polls = {"sleep_when_free": QUEUE_POLL_S, "progress_update_sleep_when_free": PROGRESS_POLL_S}
    for name, seconds in polls.items():
        if not hasattr(queue, name):  # a Gradio release that renamed it: say so, run as is
            log.warning("Gradio's queue has no %s; it polls at its own rate", name)
            continue
        setattr(queue, name, seconds)


def make_access(settings: ChatSettings) -> Access | None:
    """The gate for AUTH_MODE: None lets everyone in (each browser keeps its own history)."""
    if settings.auth_mode == "login":
        secret = settings.session_secret.get_secret_value() if settings.session_secret else ""
        return LoginAccess(
            settings.login_users(),
            SessionSigner(secret, settings.login_session_hours * 3600),
            LoginThrottle(
                settings.login_max_failures,
                settings.login_client_max_failures,
                settings.login_lockout_s,
            ),
        )
    if settings.auth_mode == "iap":
        return IapAccess.from_settings(settings)
    return None


def create_app(
    settings: ChatSettings, history: ChatHistory | None = None, access: Access | None = None
) -> FastAPI:
    """Wire settings, backends, history, access and the UI into one ASGI app."""
    _skip_missing_matplotlib()
    _cheap_queue_analytics()
    history = history or ChatHistory(
        settings.google_cloud_project,
        settings.firestore_database,
        stuck_after_s=settings.history_stuck_after_s,
        ttl_days=settings.history_ttl_days,
    )
    access = access or make_access(settings)
    backends: dict[str, ChatBackend] = {
        b.id: make_backend(b, settings.google_cloud_project) for b in settings.chat_backends
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop_metrics = serve_metrics(history, settings.host, settings.metrics_port)
        yield
        stop_metrics()
        await history.close(settings.shutdown_flush_s)
        for backend in backends.values():
            await backend.aclose()

    api = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/livez")
    async def livez() -> dict[str, str]:
        # Liveness: the server answers. A Firestore outage must not restart the pod (its
        # queue would be lost), so this never looks at the history.
        return {"status": "ok"}

    @api.get("/healthz")
    async def healthz() -> JSONResponse:
        # Readiness: 503 while history writes are stuck, so a replica that cannot save stops
        # taking new chats; it keeps retrying and comes back once Firestore does.
        health = history.health()
        body = {
            "status": "degraded" if health.stuck else "ok",
            "pending_writes": health.pending,
            "failed_writes": health.failed,
            "stuck_for_s": health.stuck_for_s,
        }
        return JSONResponse(body, status_code=503 if health.stuck else 200)

    if isinstance(access, LoginAccess):
        access.add_routes(api)

    ui = ChatUI(settings, history, backends, OwnerResolver(settings))
    blocks = ui.build()
    _calm_queue(blocks)
    # mount_gradio_app returns the app it mounted on, but carries no return type.
    app: FastAPI = gr.mount_gradio_app(
        api,
        blocks,
        path="",
        auth_dependency=gate_user if access is not None else None,
        footer_links=[],
        theme=gr.themes.Soft(
            primary_hue="indigo", secondary_hue="slate", font=SYSTEM_FONTS, font_mono=MONO_FONTS
        ),
        css=CSS,
        ssr_mode=False,
    )
    if access is not None:
        app.add_middleware(AccessGate, access=access)
    app.add_middleware(SecurityHeaders)
    # Outermost, so refused requests are logged too.
    app.add_middleware(RequestLog, project=settings.google_cloud_project)
    return app
