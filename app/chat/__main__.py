"""Entry point: `python -m app.chat` serves the chat UI on $PORT."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from app.chat.logs import configure_logging
from app.chat.settings import ChatSettings, describe_errors


def main() -> None:
    configure_logging("info")
    try:
        settings = ChatSettings()  # filled from the environment
    except ValidationError as err:
        sys.exit(f"chat app settings are invalid:\n{describe_errors(err)}")
    from app.chat.server import create_app  # noqa: PLC0415 - bad settings fail before Gradio loads

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_level="info",
        log_config=None,  # configure_logging's JSON lines, and RequestLog's access lines
        access_log=False,
    )


if __name__ == "__main__":
    main()
