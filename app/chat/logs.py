"""JSON log lines in the shape Cloud Logging parses: severity, message, trace and httpRequest.

python-json-logger writes the JSON; this module only names the fields as Cloud Logging's
structured-logging agent expects them (severity, httpRequest, logging.googleapis.com/trace).
Request logs carry the path without its query string and never a request or response body,
so messages and replies stay out of the logs. The inference image has a copy of this module
(app/inference/logs.py): each image's build context holds only its own app folder.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
# Probes and scrapes arrive every few seconds (503 while a model loads); their lines are DEBUG.
QUIET_PATHS = frozenset({"/health", "/healthz", "/metrics"})
# `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1` (Cloud Run, Google load balancers) or W3C
# `traceparent: 00-TRACE_ID-SPAN_ID-FLAGS`.
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

_trace: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "log_trace", default=None
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class _CloudLoggingFields(logging.Filter):
    """Adds the current request's trace to every record logged while it is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_trace.get() or {}).items():
            setattr(record, key, value)
        return True


def configure_logging(level: str = "info") -> None:
    """Send every logger (uvicorn's too) to stdout as one JSON object per line."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{message}{name}",
            style="{",
            rename_fields={"levelname": "severity", "name": "logger"},
            timestamp="time",
        )
    )
    handler.addFilter(_CloudLoggingFields())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log is replaced by RequestLog's httpRequest lines.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def trace_fields(headers: dict[str, str], project: str | None) -> dict[str, str]:
    """The Cloud Logging trace fields for a request's trace headers; empty without a project."""
    if not project:
        return {}
    trace_id = span_id = None
    if match := _CLOUD_TRACE.match(headers.get("x-cloud-trace-context", "")):
        trace_id, span_id = match.group(1).lower(), match.group(2)
    elif match := _TRACEPARENT.match(headers.get("traceparent", "")):
        trace_id, span_id = match.group(1), match.group(2)
    if trace_id is None:
        return {}
    fields = {TRACE_FIELD: f"projects/{project}/traces/{trace_id}"}
    if span_id:
        fields[SPAN_FIELD] = span_id
    return fields


class RequestLog:
    """ASGI middleware: one httpRequest log line per HTTP request, and its trace on every line."""

    def __init__(self, app: Asgi, project: str | None = None, logger: str = "app.request") -> None:
        self.app = app
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.log = logging.getLogger(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        token = _trace.set(trace_fields(headers, self.project))
        started = time.monotonic()
        status = 500
        size = 0

        async def sending(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            client = scope.get("client")
            http_request = {
                "requestMethod": scope.get("method", ""),
                "requestUrl": path,
                "status": status,
                "responseSize": str(size),
                "latency": f"{time.monotonic() - started:.6f}s",
                "userAgent": headers.get("user-agent", ""),
                "remoteIp": client[0] if client else "",
                "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
            }
            level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
            self.log.log(
                level,
                "%s %s %d",
                http_request["requestMethod"],
                path,
                status,
                extra={"httpRequest": http_request},
            )
            _trace.reset(token)
