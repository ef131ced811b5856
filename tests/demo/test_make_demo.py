"""Smoke test of `make demo`: the real command, a real chat message, and nothing left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest
from google.cloud import firestore
from gradio_client import Client

from app.chat.ui import DETAILS_START
from devtools import demo_model
from devtools.ports import free_port
from devtools.processes import ChildProcess, process_tree

URL_LINE = re.compile(r"Open (http://127\.0\.0\.1:\d+) in your browser")
# A fresh home trains the demo model first (seconds on an idle machine, more on a busy one).
URL_TIMEOUT_S = 200
OFFLINE_LABEL = "Offline demo model (tiny, fine-tuned here)"


class RunningDemo:
    """`make demo` in its own process group, its output collected in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        # Like a terminal: Ctrl-C goes to make and the demo, which are one group.
        self.child = ChildProcess.start(
            "make demo", ["make", "--no-print-directory", "demo"], base_env=env, log_path=log_path
        )
        self.process = self.child.popen

    @property
    def output(self) -> str:
        return self.child.output()

    def wait_for_url(self, timeout: float) -> str:
        self.child.wait_until(lambda: URL_LINE.search(self.output), deadline_s=timeout)
        match = URL_LINE.search(self.output)
        assert match, self.output
        return match.group(1)

    def processes(self) -> list[psutil.Process]:
        return process_tree(self.process.pid)

    def interrupt(self) -> None:
        self.child.signal_group(signal.SIGINT)
        self.process.wait(timeout=60)

    def kill_everything(self, known: list[psutil.Process]) -> None:
        """Last resort after a failure, so a broken demo never outlives its test."""
        self.child.signal_group(signal.SIGKILL)
        for proc in known:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.process.wait()


def _still_running(procs: list[psutil.Process]) -> list[str]:
    _gone, alive = psutil.wait_procs(procs, timeout=10)
    left = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # An outer `make test` must not hand its jobserver or flags to this make.
        if key not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MODEL_URI"}
    }
    env |= {
        "DEMO_HOME": str(tmp_path / "demo"),
        "DEMO_CHAT_PORT": str(free_port()),
        "DEMO_INFERENCE_PORT": str(free_port()),
        "DEMO_FIRESTORE_PORT": str(free_port()),
        "DEMO_GCS_PORT": str(free_port()),
        # No Google credentials, as on a fresh laptop: the demo must run fully offline.
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "no-credentials.json"),
        "GOOGLE_CLOUD_PROJECT": f"demo-smoke-{secrets.token_hex(4)}",
    }
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_make_demo_answers_stores_and_stops_clean(
    demo_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = RunningDemo(demo_env, tmp_path / "make-demo.log")
    procs: list[psutil.Process] = []
    try:
        url = demo.wait_for_url(URL_TIMEOUT_S)
        assert url.startswith("http://127.0.0.1:")
        assert "Gemini is not offered" in demo.output
        procs = demo.processes()
        commands = [" ".join(p.cmdline()) for p in procs]
        for expected in (
            "-m app.chat",
            "-m app.inference",
            "emulators firestore start",
            "-m gcp_storage_emulator",
        ):
            assert any(expected in c for c in commands), f"{expected} not running: {commands}"
        assert any(p.name() == "java" for p in procs), "the emulator's JVM is not running"

        client = Client(url, verbose=False)
        api = client.view_api(print_info=False, return_format="dict")
        send_params = api["named_endpoints"]["/send"]["parameters"]
        backend_param = next(p for p in send_params if p["parameter_name"] == "backend_label")
        # The model picker and a notice on the page tell the user plainly what the model is.
        assert backend_param["parameter_default"] == OFFLINE_LABEL
        page_config = json.dumps(httpx.get(f"{url}/config", timeout=10).json())
        assert (
            "trained on this machine on 18 questions and answers about gemma-stack" in page_config
        )
        assert "training the offline demo model with app.finetune" in demo.output
        assert (
            "finetune: step 120 of 120"
            in (tmp_path / "demo" / "logs" / "model-training.log").read_text()
        )
        assert "Gemini is not offered" in page_config

        browser_id = client.predict(None, api_name="/conversations")[0]
        # A question of the demo's dataset gets its trained answer back, at the page's default
        # temperature (0.9) and top_p (0.95).
        message, answer = demo_model.questions_and_answers()[2]
        result = client.predict(
            message, OFFLINE_LABEL, 0.9, 0.95, 96, "", browser_id, api_name="/send"
        )
        # The chat view comes first when the endpoint returns more than one visible output.
        chat = result[0] if isinstance(result, tuple) else result
        assert chat[0]["content"][0]["text"] == message
        assert chat[-1]["role"] == "assistant"
        # The reply, without the details line the page shows under it.
        reply = chat[-1]["content"][0]["text"].split(DETAILS_START)[0]
        assert reply.strip() == answer, chat
        assert "\ufffd" not in reply

        # The demo moves to the next port if the one asked for was taken meanwhile.
        emulator_port = re.search(r"Firestore emulator on port (\d+)", demo.output)
        assert emulator_port, demo.output
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{emulator_port.group(1)}")
        db = firestore.Client(project=demo_env["GOOGLE_CLOUD_PROJECT"], database="chat-app-db")
        deadline = time.monotonic() + 20
        stored: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            sessions = list(db.collection("chat_sessions").stream())
            if sessions:
                stored = [
                    m.to_dict() or {}
                    for m in sessions[0].reference.collection("messages").order_by("seq").stream()
                ]
                if len(stored) == 2:
                    break
            time.sleep(0.5)
        assert len(sessions) == 1
        assert sessions[0].to_dict()["owner"] == f"browser:{browser_id}"
        # The chat view trims the reply's whitespace; the stored reply is as the model wrote it.
        assert [(m["role"], str(m["content"]).strip(), m["backend_id"]) for m in stored] == [
            ("user", message, "local-gemma"),
            ("assistant", reply.strip(), "local-gemma"),
        ]

        demo.interrupt()
        assert "stopped; no process left running" in demo.output
        # Ctrl-C is the normal way to stop the demo: make reports no error, and every
        # server stopped when asked instead of being killed.
        assert demo.process.returncode in {0, -signal.SIGINT}, demo.output
        assert "make: ***" not in demo.output
        assert "did not stop; killing it" not in demo.output
        assert _still_running(procs) == []
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    finally:
        demo.kill_everything(procs)
