"""Run the inference server: ``python -m app.inference`` (settings from env vars or flags)."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from app.inference.logs import configure_logging
from app.inference.server import create_app
from app.inference.settings import Settings
from app.inference.state import Phase


class _Server(uvicorn.Server):
    """Uvicorn server that also flips the app to draining when SIGTERM arrives."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app_state = getattr(self, "app_state", None)
        server = getattr(app_state, "server", None)
        if server is not None and server.phase is not Phase.FAILED:
            server.phase = Phase.DRAINING
        super().handle_exit(sig, frame)
        # A drained SIGTERM is a clean stop: exit 0 instead of re-raising the signal.
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and captured and captured[-1] == sig:
            captured.pop()


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in error.errors()
        )
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    fatal: list[str] = []
    server: _Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # configure_logging's JSON lines, and RequestLog's access lines
        access_log=False,
        # A float works (uvicorn passes it to asyncio.wait_for); None would wait forever.
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
        lifespan="on",
    )
    server = _Server(config)
    server.app_state = app.state  # type: ignore[attr-defined]
    server.run()
    if fatal:
        print(f"error: {fatal[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
