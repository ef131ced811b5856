"""Runs the whole product on this machine, offline: Firestore emulator, inference app and chat app.

`make demo` calls `python -m devtools.demo`. Unless `--model-uri` / `MODEL_URI` names a model, it
serves the offline demo model: a tiny Gemma 3 that app.finetune trains once on questions about
gemma-stack (devtools/demo_model.py), kept in a local Cloud Storage emulator and loaded through
gs:// as in production. It starts the servers on 127.0.0.1, waits until each is healthy, prints
one URL, and on Ctrl-C or SIGTERM stops every process it started.

Settings (flag, else environment variable, else default):
  --model-uri        MODEL_URI              the offline demo model, trained under DEMO_HOME
  --port             DEMO_CHAT_PORT         7860
  --inference-port   DEMO_INFERENCE_PORT    8080
  --firestore-port   DEMO_FIRESTORE_PORT    8081
  --gcs-port         DEMO_GCS_PORT          8082 (the Cloud Storage emulator of the offline model)
  --home             DEMO_HOME              .demo (the trained model, downloads, logs)
A busy port is replaced by the next free one, and the demo says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psutil

from app.finetune.storage import read_marker
from devtools import demo_model
from devtools.firestore_emulator import FirestoreEmulator
from devtools.gcs_emulator import CLIENT_ENV, GcsEmulator
from devtools.processes import (
    ChildProcess,
    NotReadyError,
    ProcessExitedError,
    ServerProcess,
    display_path,
    start_server,
    stop_all,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

OFFLINE_MODEL_NAME = "gemma-stack-qa"
OFFLINE_MODEL_URI = f"gs://demo-models/{OFFLINE_MODEL_NAME}"
# Short enough to show whole in the model picker.
OFFLINE_MODEL_LABEL = "Offline demo model (tiny, fine-tuned here)"
OFFLINE_NOTICE = (
    "**Offline demo.** The Gemma model here is a tiny Gemma 3 (a few hundred thousand "
    "parameters) that `app.finetune` trained on this machine on {count} questions and "
    "answers about gemma-stack "
    "(`devtools/gemma_stack_qa.jsonl`); the inference app loads it from a local Cloud Storage "
    "emulator through `{uri}`. It knows those answers and nothing else: ask it, for example, "
    '"{example}". Everything else is real: streaming, history in Firestore (the local '
    "emulator), restoring conversations. "
    "Run `make demo MODEL_URI=google/gemma-3-1b-it` (with `HF_TOKEN`) for a real model."
)
# The firestore client needs a project id; a `demo-` project never reaches a real Google project.
OFFLINE_PROJECT = "demo-gemma-stack"

EMULATOR_READY_TIMEOUT_S = 90.0
# Training takes 10-30 s on one core; a heavily loaded machine may need minutes.
MODEL_TRAINING_TIMEOUT_S = 300.0
# A real model may have to download gigabytes first; the offline one loads in seconds.
OFFLINE_MODEL_READY_TIMEOUT_S = 300.0
REAL_MODEL_READY_TIMEOUT_S = 3600.0
CHAT_READY_TIMEOUT_S = 180.0
HURRY_AFTER_S = 2.0
STOP_GRACE_S = 5.0
PROGRESS_EVERY_S = 15.0
PORT_SEARCH_SPAN = 50
_Child = TypeVar("_Child", bound=ChildProcess)


class DemoError(Exception):
    """A problem that stops the demo, with a message the user can act on."""


class StopRequested(Exception):  # noqa: N818 - it is a request, not an error
    """Raised by the signal handler when the user (or a supervisor) asks the demo to stop."""


def say(message: str = "", prefix: str = "demo: ") -> None:
    # After the terminal closes, stdout is gone; stopping the servers must still go on.
    with contextlib.suppress(OSError):
        print(f"{prefix}{message}" if message else "", flush=True)


@dataclass(frozen=True)
class DemoSettings:
    """What to run and where, after flags and environment variables are merged."""

    home: Path
    chat_port: int
    inference_port: int
    firestore_port: int
    model_uri: str | None
    gcs_port: int = 8082

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def gcs_data_dir(self) -> Path:
        """The Cloud Storage emulator's buckets, kept between runs."""
        return self.home / "gcs"

    @property
    def training_dir(self) -> Path:
        return self.home / "models"


def _port_number(raw: str) -> int:
    if not raw.strip().isdigit() or not 0 < int(raw) < 65536:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number (1-65535)")
    return int(raw)


def parse_args(
    argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ
) -> DemoSettings:
    def port_default(name: str, default: int) -> int:
        raw = env.get(name, "").strip()
        try:
            return _port_number(raw) if raw else default
        except argparse.ArgumentTypeError as err:
            raise DemoError(f"{name}={err}") from err

    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="Run the chat app, the inference app and a local Firestore on this machine.",
    )
    parser.add_argument(
        "--model-uri",
        default=env.get("MODEL_URI") or None,
        help="gs://bucket/path, a local model folder, or a Hugging Face id "
        "(default: the offline demo model, fine-tuned here on questions about gemma-stack)",
    )
    parser.add_argument("--port", type=_port_number, default=port_default("DEMO_CHAT_PORT", 7860))
    parser.add_argument(
        "--inference-port", type=_port_number, default=port_default("DEMO_INFERENCE_PORT", 8080)
    )
    parser.add_argument(
        "--firestore-port", type=_port_number, default=port_default("DEMO_FIRESTORE_PORT", 8081)
    )
    parser.add_argument(
        "--gcs-port", type=_port_number, default=port_default("DEMO_GCS_PORT", 8082)
    )
    parser.add_argument("--home", type=Path, default=Path(env.get("DEMO_HOME") or ".demo"))
    args = parser.parse_args(argv)
    home = args.home if args.home.is_absolute() else REPO_ROOT / args.home
    return DemoSettings(
        home=home,
        chat_port=args.port,
        inference_port=args.inference_port,
        firestore_port=args.firestore_port,
        model_uri=args.model_uri,
        gcs_port=args.gcs_port,
    )


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Servers set SO_REUSEADDR, so connections of an earlier run in TIME_WAIT don't count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(wanted: int, what: str, taken: set[int]) -> int:
    """Return `wanted` if it is free, else the next free port above it (and say so)."""
    for port in range(wanted, min(wanted + PORT_SEARCH_SPAN, 65536)):
        if port not in taken and port_is_free(port):
            if port != wanted:
                say(f"port {wanted} ({what}) is busy; using {port} instead")
            taken.add(port)
            return port
    raise DemoError(
        f"ports {wanted}-{wanted + PORT_SEARCH_SPAN - 1} are all busy; "
        f"choose another start port for the {what}"
    )


def stop_children(
    children: Sequence[ChildProcess], meanwhile: Callable[[], None] = lambda: None
) -> None:
    """Stop every child's process tree: SIGTERM, then SIGINT, then SIGKILL what is left.

    A server waiting for open connections (a browser tab keeps one) stops waiting on a second
    interrupt, as uvicorn does. `meanwhile` runs after the first signal.
    """
    stop_all(
        children,
        steps=((signal.SIGTERM, HURRY_AFTER_S), (signal.SIGINT, STOP_GRACE_S)),
        meanwhile=meanwhile,
        on_kill=_say_killing,
    )


def _say_killing(proc: psutil.Process) -> None:
    say(f"process {proc.pid} ({proc.name()}) did not stop; killing it")


class Demo:
    """Starts the three servers, watches them, and stops them all when done."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.children: list[ChildProcess] = []
        self.emulator: FirestoreEmulator | None = None
        self.gcs: GcsEmulator | None = None

    # -- running -----------------------------------------------------------------------------

    def run(self) -> int:
        # SIGHUP too: closing the terminal must not leave the servers running.
        stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.getsignal(sig) for sig in stop_signals}
        for sig in previous:
            signal.signal(sig, _raise_stop)
        try:
            self._start_everything()
            self._supervise()
        except StopRequested:
            say()  # the terminal's ^C has no newline
            # A stop the user asked for is a success, so make ends quietly instead of "Error 130".
            return 0
        except DemoError as err:
            say(f"error: {err}")
            return 1
        finally:
            # A second Ctrl-C must not interrupt the cleanup and leave orphans behind.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _start_everything(self) -> None:
        settings = self.settings
        taken: set[int] = set()
        chat_port = pick_port(settings.chat_port, "chat app", taken)
        inference_port = pick_port(settings.inference_port, "inference app", taken)
        firestore_port = pick_port(settings.firestore_port, "Firestore emulator", taken)
        gcs_port = (
            None if settings.model_uri else pick_port(settings.gcs_port, "GCS emulator", taken)
        )
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        say(f"logs go to {display_path(settings.logs_dir)}/")

        gemini, project, why_no_gemini = gemini_backend()
        backends = [self._gemma_backend(inference_port)]
        if gemini is not None:
            backends.append(gemini)
            say(f"Gemini on Vertex AI is offered (project {project}, from your Google credentials)")
        else:
            say(f"Gemini is not offered: {why_no_gemini}")
        ensure_firestore_emulator()

        # Slow starts overlap: the chat app imports Gradio and the model builds while the
        # emulator's JVM boots; the inference app needs the model, so it starts last.
        chat = self._start_server(
            "chat app",
            [sys.executable, "-m", "app.chat"],
            {
                "CHAT_BACKENDS": json.dumps(backends),
                "GOOGLE_CLOUD_PROJECT": project,
                "FIRESTORE_EMULATOR_HOST": f"{HOST}:{firestore_port}",
                "HOST": HOST,
                "PORT": str(chat_port),
                "AUTH_MODE": "none",
                "GRADIO_ANALYTICS_ENABLED": "False",
                **self._notice(why_no_gemini),
            },
            "chat.log",
            port=chat_port,
            health_path="/healthz",
        )
        training = None if gcs_port is None else self._start_demo_model_training(gcs_port)
        self._start_firestore(firestore_port, project)
        if training is not None:
            self._finish_demo_model_training(training)
        model_uri = settings.model_uri or OFFLINE_MODEL_URI
        inference = self._start_server(
            "inference app",
            [sys.executable, "-m", "app.inference"],
            self._inference_env(model_uri, inference_port),
            "inference.log",
            port=inference_port,
            health_path="/health",
        )
        say(f"inference app is loading {model_uri}")
        model_timeout = (
            REAL_MODEL_READY_TIMEOUT_S if settings.model_uri else OFFLINE_MODEL_READY_TIMEOUT_S
        )
        self._wait_healthy(inference, model_timeout)
        self._wait_healthy(chat, CHAT_READY_TIMEOUT_S)

        url = f"http://{HOST}:{chat_port}"
        say(f"\n  Open {url} in your browser. Ctrl-C stops the demo.\n", prefix="")

    def _supervise(self) -> None:
        while True:
            self._raise_if_crashed()
            time.sleep(0.5)

    def _stop(self) -> None:
        names = [child.name for child in self.children]
        if self.emulator is not None:
            names.append("Firestore emulator")
        if not names:
            return
        say(f"stopping {', '.join(names)}")
        emulator = self.emulator
        # The emulator's stop() waits for gcloud and its JVM; the apps shut down meanwhile.
        stop_children(self.children, meanwhile=emulator.stop if emulator else lambda: None)
        say("stopped; no process left running")

    # -- the pieces ----------------------------------------------------------------------------

    def _start(
        self, name: str, argv: Sequence[str], extra_env: Mapping[str, str], log_name: str
    ) -> ChildProcess:
        child = ChildProcess.start(
            name, argv, env=extra_env, log_path=self.settings.logs_dir / log_name
        )
        return self._started(child)

    def _start_server(
        self,
        name: str,
        argv: Sequence[str],
        extra_env: Mapping[str, str],
        log_name: str,
        *,
        port: int,
        health_path: str,
    ) -> ServerProcess:
        server = start_server(
            name,
            argv,
            port=port,
            health_path=health_path,
            env=extra_env,
            log_path=self.settings.logs_dir / log_name,
        )
        return self._started(server)

    def _started(self, child: _Child) -> _Child:
        self.children.append(child)
        say(f"started {child.name} (pid {child.pid}, log {display_path(child.log_path)})")
        return child

    def _start_firestore(self, port: int, project: str) -> None:
        say(f"starting the Firestore emulator on port {port}")
        self.emulator = FirestoreEmulator(
            port=port, host=HOST, project=project, start_timeout_s=EMULATOR_READY_TIMEOUT_S
        )
        started = time.monotonic()
        try:
            self.emulator.start()
        except (RuntimeError, TimeoutError) as err:
            raise DemoError(str(err)) from err
        say(f"Firestore emulator is ready ({time.monotonic() - started:.1f} s)")

    def _start_gcs(self, port: int) -> GcsEmulator:
        buckets = display_path(self.settings.gcs_data_dir)
        say(f"starting the GCS emulator on port {port} (buckets kept in {buckets})")
        self.settings.gcs_data_dir.mkdir(parents=True, exist_ok=True)
        try:
            gcs = GcsEmulator.start(
                HOST,
                data_dir=self.settings.gcs_data_dir,
                port=port,
                log_path=self.settings.logs_dir / "gcs.log",
            )
        except (ProcessExitedError, NotReadyError) as err:
            raise DemoError(f"the GCS emulator did not start: {err}") from err
        self.gcs = gcs
        self._started(gcs.server)
        gcs.create_bucket(OFFLINE_MODEL_URI.removeprefix("gs://").split("/", 1)[0])
        return gcs

    def _start_demo_model_training(self, gcs_port: int) -> ChildProcess | None:
        """Start training the demo model, unless the emulator holds one from this dataset."""
        gcs = self._start_gcs(gcs_port)
        marker = read_marker(OFFLINE_MODEL_URI, endpoint_url=gcs.endpoint)
        if (
            marker is not None
            and marker.get("dataset_sha256") == demo_model.dataset_digest()
            and demo_model.BASE_NAME in str(marker.get("base"))
        ):
            say(
                f"reusing the offline demo model in {OFFLINE_MODEL_URI} "
                f"(trained {marker.get('finished_at')})"
            )
            return None
        say(
            f"training the offline demo model with app.finetune into {OFFLINE_MODEL_URI}; "
            "under a minute, only this once"
        )
        return self._start(
            "model training",
            [
                sys.executable,
                "-m",
                "devtools.demo_model",
                f"--output={OFFLINE_MODEL_URI}",
                f"--work-dir={self.settings.training_dir}",
            ],
            gcs.env(),
            "model-training.log",
        )

    def _finish_demo_model_training(self, training: ChildProcess) -> None:
        self._wait_for(
            training,
            lambda: training.exit_code is not None,
            MODEL_TRAINING_TIMEOUT_S,
            watch=[c for c in self.children if c is not training],
        )
        self.children.remove(training)
        if training.exit_code != 0:
            raise DemoError(f"could not train the offline demo model. {training.crash_report()}")
        say(
            f"offline demo model trained and stored in {OFFLINE_MODEL_URI} "
            f"({training.elapsed():.1f} s)"
        )

    def _inference_env(self, model_uri: str, port: int) -> dict[str, str]:
        env = {
            "MODEL_URI": model_uri,
            "HOST": HOST,
            "PORT": str(port),
            "SERVED_MODEL_NAME": served_model_name(self.settings.model_uri),
            "MODEL_CACHE_DIR": str(self.settings.home / "model-cache"),
        }
        if self.settings.model_uri is None:
            # The offline model is in the local emulator; never let a library reach further.
            env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **CLIENT_ENV}
            if self.gcs is not None:
                env |= self.gcs.env()
        return env

    def _notice(self, why_no_gemini: str | None) -> dict[str, str]:
        """CHAT_NOTICE: what this demo is not, said plainly on the page."""
        parts = [] if self.settings.model_uri else [offline_notice()]
        if why_no_gemini:
            parts.append(f"Gemini is not offered: {why_no_gemini}")
        return {"CHAT_NOTICE": "\n\n".join(parts)} if parts else {}

    def _gemma_backend(self, inference_port: int) -> dict[str, Any]:
        uri = self.settings.model_uri
        label = OFFLINE_MODEL_LABEL if uri is None else f"Gemma: {served_model_name(uri)} (local)"
        return {
            "id": "local-gemma",
            "label": label,
            "kind": "openai",
            "model": served_model_name(uri),
            "base_url": f"http://{HOST}:{inference_port}/v1",
            "auth": "none",
        }

    # -- waiting -------------------------------------------------------------------------------

    def _wait_healthy(self, server: ServerProcess, timeout: float) -> None:
        self._wait_for(server, server.healthy, timeout, watch=self.children)
        say(f"{server.name} is ready ({server.elapsed():.1f} s)")

    def _wait_for(
        self,
        child: ChildProcess,
        done: Callable[[], bool],
        timeout: float,
        watch: Sequence[ChildProcess],
    ) -> None:
        """Wait until `done()`, failing fast when a watched process exits or time runs out."""

        def note(seconds: float) -> None:
            # The log's last line says what it is doing: downloading, loading, warming up.
            last = child.log_tail(1).strip()[:120]
            say(f"still waiting for {child.name} ({seconds:.0f} s): {last}")

        try:
            child.wait_until(
                done,
                deadline_s=timeout,
                watch=watch,
                progress=note,
                progress_every_s=PROGRESS_EVERY_S,
            )
        except (ProcessExitedError, NotReadyError) as err:
            raise DemoError(str(err)) from err

    def _raise_if_crashed(self) -> None:
        for child in self.children:
            if child.exit_code is not None:
                raise DemoError(child.crash_report())
        if self.emulator is not None and not self.emulator.running:
            raise DemoError("the Firestore emulator stopped unexpectedly; start the demo again")


def ensure_firestore_emulator() -> None:
    """Install Java and the emulator with the project's script when either is missing."""
    gcloud = shutil.which("gcloud")
    sdk_root = Path(gcloud).resolve().parent.parent if gcloud else None
    if (
        sdk_root is not None
        and (sdk_root / "platform" / "cloud-firestore-emulator").is_dir()
        and shutil.which("java")
    ):
        return
    say("the Firestore emulator or Java is missing; installing them")
    script = REPO_ROOT / "scripts" / "install-system-deps.sh"
    if subprocess.run([str(script), "demo"], check=False).returncode != 0:
        raise DemoError(
            f"could not install the Firestore emulator; see the messages of {script.name}"
        )


def offline_notice() -> str:
    pairs = demo_model.questions_and_answers()
    return OFFLINE_NOTICE.format(count=len(pairs), uri=OFFLINE_MODEL_URI, example=pairs[2][0])


def served_model_name(model_uri: str | None) -> str:
    if model_uri is None:
        return OFFLINE_MODEL_NAME
    return model_uri.rstrip("/").rsplit("/", 1)[-1] or OFFLINE_MODEL_NAME


def gemini_backend() -> tuple[dict[str, Any] | None, str, str]:
    """Return (Gemini backend or None, Google Cloud project, why Gemini is not offered)."""
    import google.auth  # noqa: PLC0415 - only needed once, at start-up
    import google.auth.exceptions  # noqa: PLC0415

    fallback_project = os.environ.get("GOOGLE_CLOUD_PROJECT") or OFFLINE_PROJECT
    try:
        _credentials, project = google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
        return (
            None,
            fallback_project,
            "no Google credentials found. To add it, run "
            "`gcloud auth application-default login` and start the demo again.",
        )
    if not project:
        return (
            None,
            fallback_project,
            "your Google credentials name no project; set GOOGLE_CLOUD_PROJECT to add Gemini.",
        )
    backend = {
        "id": "gemini",
        "label": "Gemini 2.5 Flash (Vertex AI)",
        "kind": "gemini",
        "model": "gemini-2.5-flash",
        "vertex": True,
        "location": "global",
    }
    return backend, project, ""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    # google-api-core warns about the Python version on import (gcsfs, for the GCS emulator).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\.")
    try:
        settings = parse_args(argv)
    except DemoError as err:
        say(f"error: {err}")
        return 2
    return Demo(settings).run()


if __name__ == "__main__":
    sys.exit(main())
