"""Fixtures for the chat app's tests, started once per session.

Slow starts overlap: the tiny model builds and both chat apps import Gradio while the
emulator boots; the inference app starts once its model folder exists.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.firestore_emulator import FirestoreEmulator
from devtools.ports import free_port
from devtools.processes import ChildProcess, ServerProcess
from tests.chat.misbehaving_backend import MisbehavingBackend
from tests.chat.stack import (
    DATABASE,
    REPLY,
    SESSION_SECRET,
    USERS,
    Stack,
    image_layout,
    start_app,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("chat-stack")
    model_dir = work / "tiny"
    model_build = ChildProcess.start(
        "model build",
        [sys.executable, "-m", "devtools.tiny_model", str(model_dir), "--reply", REPLY],
        env={"PYTHONPATH": str(ROOT)},
        log_path=work / "tiny_model.log",
    )
    firestore = FirestoreEmulator()
    misbehaving = MisbehavingBackend().start()
    result = Stack(
        firestore=firestore,
        misbehaving=misbehaving,
        log_dir=work,
        model_build=model_build,
        model_dir=model_dir,
        inference_port=free_port(),
        chat_ports={"none": free_port(), "login": free_port()},
    )
    no_credentials = work / "gcloud-config"
    no_credentials.mkdir()
    srv = image_layout(work)
    for mode, port in result.chat_ports.items():
        env = {
            **firestore.env(),
            "CHAT_BACKENDS": json.dumps(result.backends()),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "AUTH_MODE": mode,
            "LOGIN_CREDENTIALS": ",".join(f"{u}:{p}" for u, p in USERS.items()),
            "SESSION_SECRET": SESSION_SECRET,
            "GRADIO_ANALYTICS_ENABLED": "False",
            "SHUTDOWN_GRACE_S": "2",
            # Every token its own update, so streaming is visible however fast the model is.
            "STREAM_UPDATE_INTERVAL_MS": "0",
            # No Google credentials anywhere, so the Vertex AI backend must explain itself.
            "GOOGLE_APPLICATION_CREDENTIALS": str(work / "missing-key.json"),
            "CLOUDSDK_CONFIG": str(no_credentials),
            "GCE_METADATA_HOST": f"127.0.0.1:{free_port()}",
            "GCE_METADATA_IP": f"127.0.0.1:{free_port()}",
        }
        result.processes[f"chat-{mode}"] = start_app(
            f"chat-{mode}",
            [sys.executable, "-m", "app.chat"],
            env,
            log_dir=work,
            port=port,
            health="/healthz",
            root=srv,
        )
    previous = {k: os.environ.get(k) for k in firestore.env()}
    try:
        firestore.start()
        os.environ.update(firestore.env())
        yield result
    finally:
        for process in result.processes.values():
            process.stop()
        model_build.stop()
        misbehaving.stop()
        firestore.stop()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def firestore(stack: Stack) -> FirestoreEmulator:
    """The emulator, running and empty (an outage test may have stopped it)."""
    if not stack.firestore.running:
        stack.firestore.start()
    stack.firestore.clear(DATABASE)
    return stack.firestore


@pytest.fixture
def chat_app(stack: Stack, firestore: FirestoreEmulator) -> ServerProcess:
    return stack.chat("none")


@pytest.fixture
def login_chat_app(stack: Stack, firestore: FirestoreEmulator) -> ServerProcess:
    return stack.chat("login")


@pytest.fixture
def inference_url(stack: Stack) -> str:
    return stack.inference().url
