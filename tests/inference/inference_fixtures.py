"""Helpers for the inference tests: constants and a real ``python -m app.inference`` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devtools.gcs_emulator import CLIENT_ENV
from devtools.ports import free_port

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"
# The scripted model always answers this, then (if not stopped) opens a new user turn.
SCRIPTED_REPLY = "SELECT name FROM users;"


@dataclass
class ServerProcess:
    """``python -m app.inference`` in a subprocess, on a free 127.0.0.1 port."""

    process: subprocess.Popen[str]
    port: int
    health_seen: list[tuple[int, dict[str, object]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else ""
                raise AssertionError(f"server exited with {self.process.returncode}:\n{output}")
            try:
                status, body = self.health()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
                continue
            self.health_seen.append((status, body))
            if status == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"server not healthy after {timeout_s} s: {self.health_seen[-3:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(env: dict[str, str], tmp_path: Path) -> ServerProcess:
    port = free_port()
    full_env = {
        **os.environ,
        **CLIENT_ENV,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "TOKENIZERS_PARALLELISM": "false",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.inference"],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return ServerProcess(process=process, port=port)
