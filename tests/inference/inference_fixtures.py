"""Helpers for the inference tests: constants and a real ``python -m app.inference`` process."""

from __future__ import annotations

import sys
from pathlib import Path

from devtools.gcs_emulator import CLIENT_ENV
from devtools.ports import free_port
from devtools.processes import ServerProcess, start_server

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"
# The scripted model always answers this, then (if not stopped) opens a new user turn.
SCRIPTED_REPLY = "SELECT name FROM users;"


def start_inference(env: dict[str, str], tmp_path: Path) -> ServerProcess:
    """``python -m app.inference`` on a free 127.0.0.1 port, logging to tmp_path."""
    port = free_port()
    return start_server(
        "inference app",
        [sys.executable, "-m", "app.inference"],
        port=port,
        health_path="/health",
        env={
            **CLIENT_ENV,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_LEVEL": "warning",
            "MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "TOKENIZERS_PARALLELISM": "false",
            **env,
        },
        log_path=tmp_path / "inference.log",
    )
