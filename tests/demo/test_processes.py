"""The launcher (devtools/processes.py) that tests, benchmarks and the demo start servers with."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from devtools.ports import free_port
from devtools.processes import ProcessExitedError, start_server


def test_a_server_that_exits_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    script = "import sys\nprint('cannot load the model')\nsys.exit(4)"
    server = start_server(
        "broken app", [sys.executable, "-c", script], port=free_port(), log_path=tmp_path / "b.log"
    )
    with pytest.raises(ProcessExitedError) as caught:
        server.wait_ready(deadline_s=600)
    assert "broken app exited with code 4" in str(caught.value)
    assert "cannot load the model" in str(caught.value)
    # The exit ended the wait, not the deadline.
    assert server.elapsed() < 300


def test_wait_ready_returns_once_health_answers_and_stop_ends_the_server(tmp_path: Path) -> None:
    (tmp_path / "health").write_text('{"status": "ok"}')
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = start_server("static", [*argv, "--directory", str(tmp_path)], port=port)
    try:
        assert server.wait_ready() is server
        assert server.health() == (200, {"status": "ok"})
        assert server.health_seen[-1] == (200, {"status": "ok"})
        assert server.ready_after_s is not None
    finally:
        server.stop()
    assert server.exit_code == -signal.SIGTERM
    assert not server.log_path.exists()  # the launcher's own temporary log
