"""Real parts for the chat app's tests: the Firestore emulator, the inference app and chat apps."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.firestore_emulator import FirestoreEmulator
from devtools.ports import free_port
from devtools.processes import ChildProcess, ServerProcess, start_server
from tests.chat.misbehaving_backend import MisbehavingBackend

ROOT = Path(__file__).resolve().parents[2]

DATABASE = "chat-app-db"
# The tiny model is scripted to say this (its tokens must not repeat; see devtools/tiny_model.py).
REPLY = (
    "Hello! Gemma is a family of lightweight open models from Google: GKE Autopilot runs "
    "pods on NVIDIA L4 GPUs."
)
USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer"}
# Signs login sessions in the login-mode app (at least 32 characters).
SESSION_SECRET = "test-session-secret-0123456789abcdef"
# The tiny model's context is 8192 tokens; this many characters of history always fit.
TINY_CONTEXT_CHARS = 6000
GEMMA = "Gemma 3 (inference app, OpenAI API)"
GEMINI_API = "Gemma 3 (inference app, Gemini API)"
FLAKY = "Flaky Gemma (drops mid-reply)"
PENDING = "Gemma on GKE (GPU pending)"
VERTEX = "Gemini 2.5 Flash (Vertex AI)"
DOWN = "Gemma on Cloud Run (down)"
ECHO = "Echo (OpenAI API)"
GEMINI_ECHO = "Echo (Gemini API)"
LONG = "Long talker (1,000 tokens)"
PACED = "Paced (OpenAI API)"
GEMINI_PACED = "Paced (Gemini API)"


def start_app(
    name: str,
    args: list[str],
    env: dict[str, str],
    *,
    log_dir: Path,
    port: int,
    health: str,
    root: Path = ROOT,
) -> ServerProcess:
    """One of the apps, run from `root` (the repo, or a copy laid out as its image)."""
    return start_server(
        name,
        args,
        port=port,
        health_path=health,
        env={"PYTHONPATH": str(root), **env},
        log_path=log_dir / f"{name}.log",
        cwd=root,
    )


@dataclass
class Stack:
    """Everything the app-level tests talk to."""

    firestore: FirestoreEmulator
    misbehaving: MisbehavingBackend
    log_dir: Path
    model_build: ChildProcess
    model_dir: Path
    inference_port: int
    chat_ports: dict[str, int]
    processes: dict[str, ServerProcess] = field(default_factory=dict)

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}"

    def backends(self) -> list[dict[str, Any]]:
        bad = self.misbehaving.base_url
        return [
            {
                **_backend("gemma", GEMMA, "openai", "tiny", f"{self.inference_url}/v1"),
                "context_chars": TINY_CONTEXT_CHARS,
            },
            _backend("gemma-gemini-api", GEMINI_API, "gemini", "tiny", self.inference_url),
            _backend("flaky", FLAKY, "openai", "drop", f"{bad}/v1"),
            _backend("gke-pending", PENDING, "openai", "pending", f"{bad}/v1"),
            {
                "id": "vertex",
                "label": VERTEX,
                "kind": "gemini",
                "model": "gemini-2.5-flash",
                "vertex": True,
                "location": "global",
            },
            _backend("down", DOWN, "openai", "tiny", f"http://127.0.0.1:{free_port()}/v1"),
            _backend("echo", ECHO, "openai", "echo", f"{bad}/v1"),
            _backend("gemini-echo", GEMINI_ECHO, "gemini", "echo", bad),
            _backend("long", LONG, "openai", "long", f"{bad}/v1"),
            _backend("paced", PACED, "openai", "paced", f"{bad}/v1"),
            _backend("gemini-paced", GEMINI_PACED, "gemini", "paced", bad),
        ]

    def inference(self) -> ServerProcess:
        if "inference" not in self.processes:
            if self.model_build.finish() != 0:
                raise RuntimeError(self.model_build.crash_report())
            self.processes["inference"] = start_app(
                "inference",
                [sys.executable, "-m", "app.inference"],
                {
                    "MODEL_URI": str(self.model_dir),
                    "HOST": "127.0.0.1",
                    "PORT": str(self.inference_port),
                    "MAX_CONCURRENCY": "8",
                    "MAX_QUEUE": "256",
                },
                log_dir=self.log_dir,
                port=self.inference_port,
                health="/health",
            )
        return self.processes["inference"].wait_ready()

    def chat(self, mode: str) -> ServerProcess:
        process = self.processes[f"chat-{mode}"]
        process.wait_ready()
        self.inference()
        return process


def _backend(backend_id: str, label: str, kind: str, model: str, base_url: str) -> dict[str, Any]:
    return {"id": backend_id, "label": label, "kind": kind, "model": model, "base_url": base_url}


def image_layout(target: Path) -> Path:
    """Lay out app/chat as its Dockerfile does (/srv/app/chat, /srv/app/__init__.py).

    Running from here proves the app needs nothing outside its own build context.
    """
    srv = target / "srv"
    shutil.copytree(
        ROOT / "app" / "chat",
        srv / "app" / "chat",
        ignore=shutil.ignore_patterns("__pycache__", "Dockerfile", ".dockerignore"),
    )
    (srv / "app" / "__init__.py").touch()
    return srv


def firestore_client() -> Any:
    """A synchronous client on the emulator, for checking what the app wrote."""
    from google.cloud import firestore  # noqa: PLC0415

    return firestore.Client(database=DATABASE)
