"""The web server: Gradio mounted on FastAPI, with a health route for Kubernetes and Cloud Run."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI

from app.chat.backends import ChatBackend, make_backend
from app.chat.history import ChatHistory
from app.chat.identity import OwnerResolver
from app.chat.logs import RequestLog
from app.chat.metrics import serve_metrics
from app.chat.settings import ChatSettings
from app.chat.ui import CSS, ChatUI

log = logging.getLogger(__name__)


def _skip_missing_matplotlib() -> None:
    # Gradio tries `import matplotlib` around every event; when it is not installed each
    # failed import searches sys.path again, a measurable share of per-token CPU time.
    if importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def create_app(settings: ChatSettings, history: ChatHistory | None = None) -> FastAPI:
    """Wire settings, backends, history and the UI into one ASGI app."""
    _skip_missing_matplotlib()
    history = history or ChatHistory(settings.google_cloud_project, settings.firestore_database)
    backends: dict[str, ChatBackend] = {
        b.id: make_backend(b, settings.google_cloud_project) for b in settings.chat_backends
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop_metrics = serve_metrics(history, settings.host, settings.metrics_port)
        yield
        stop_metrics()
        await history.close()
        for backend in backends.values():
            await backend.aclose()

    api = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/healthz")
    async def healthz() -> dict[str, object]:
        # Always 200 while serving: a Firestore outage is absorbed by the writer, not a restart.
        return {"status": "ok", "pending_writes": history.pending}

    api.add_middleware(RequestLog, project=settings.google_cloud_project)
    ui = ChatUI(settings, history, backends, OwnerResolver(settings))
    auth = list(settings.login_users().items()) if settings.auth_mode == "login" else None
    # mount_gradio_app returns the app it mounted on, but carries no return type.
    app: FastAPI = gr.mount_gradio_app(
        api,
        ui.build(),
        path="",
        auth=auth,
        auth_message="Sign in to your team's Gemma chat." if auth else None,
        footer_links=[],
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="slate"),
        css=CSS,
        ssr_mode=False,
    )
    return app
