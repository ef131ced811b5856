"""The demo orchestrator's parts: settings, ports, backends, crash reports and a clean stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools import demo, demo_model
from devtools.demo import Demo, DemoError, DemoSettings
from devtools.processes import ChildProcess


def _settings(tmp_path: Path, model_uri: str | None = None) -> DemoSettings:
    return DemoSettings(
        home=tmp_path,
        chat_port=7860,
        inference_port=8080,
        firestore_port=8081,
        model_uri=model_uri,
    )


def test_settings_come_from_flags_then_environment_then_defaults(tmp_path: Path) -> None:
    env = {"DEMO_CHAT_PORT": "9000", "DEMO_HOME": str(tmp_path), "MODEL_URI": "gs://b/m"}

    from_env = demo.parse_args([], env=env)
    from_flags = demo.parse_args(["--port", "9100", "--model-uri", "org/model"], env=env)
    defaults = demo.parse_args([], env={})

    assert (from_env.chat_port, from_env.home, from_env.model_uri) == (9000, tmp_path, "gs://b/m")
    assert (from_flags.chat_port, from_flags.model_uri) == (9100, "org/model")
    assert (defaults.chat_port, defaults.inference_port, defaults.firestore_port) == (
        7860,
        8080,
        8081,
    )
    assert defaults.model_uri is None
    assert defaults.home == demo.REPO_ROOT / ".demo"


def test_a_bad_port_setting_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DemoError, match="DEMO_INFERENCE_PORT='http' is not a port"):
        demo.parse_args([], env={"DEMO_INFERENCE_PORT": "http"})
    with pytest.raises(SystemExit):
        demo.parse_args(["--port", "99999"], env={})
    assert "argument --port: '99999' is not a port number" in capsys.readouterr().err


def test_a_busy_port_moves_to_the_next_free_one(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind((demo.HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]

        chosen = demo.pick_port(port, "chat app", set())

    assert chosen > port
    assert f"port {port} (chat app) is busy; using {chosen} instead" in capsys.readouterr().out


def test_ports_already_given_to_another_server_are_skipped() -> None:
    taken: set[int] = set()
    with socket.socket() as probe:
        probe.bind((demo.HOST, 0))
        port = probe.getsockname()[1]

    first = demo.pick_port(port, "chat app", taken)
    second = demo.pick_port(port, "inference app", taken)

    assert first == port
    assert second != first
    assert taken == {first, second}


def test_offline_model_is_labelled_as_fine_tuned_here(tmp_path: Path) -> None:
    runner = Demo(_settings(tmp_path))

    backend = runner._gemma_backend(8090)
    env = runner._inference_env(demo.OFFLINE_MODEL_URI, 8090)
    notice = runner._notice(None)["CHAT_NOTICE"]

    assert "fine-tuned here" in backend["label"]
    # The notice names the training program, the dataset, where the model is read from, and a
    # question it was trained on.
    assert "`app.finetune`" in notice
    assert "devtools/gemma_stack_qa.jsonl" in notice
    assert demo.OFFLINE_MODEL_URI in notice
    assert demo_model.questions_and_answers()[2][0] in notice
    assert env["MODEL_URI"].startswith("gs://")
    assert backend["kind"] == "openai"
    assert backend["base_url"] == "http://127.0.0.1:8090/v1"
    # The chat app asks for the model by the name the inference app serves it under.
    assert backend["model"] == env["SERVED_MODEL_NAME"]
    assert env["HOST"] == "127.0.0.1"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_a_real_model_is_served_under_its_own_name(tmp_path: Path) -> None:
    runner = Demo(_settings(tmp_path, model_uri="google/gemma-3-1b-it"))

    backend = runner._gemma_backend(8090)
    env = runner._inference_env("google/gemma-3-1b-it", 8090)

    assert backend["model"] == env["SERVED_MODEL_NAME"] == "gemma-3-1b-it"
    assert "fine-tuned here" not in backend["label"]
    assert runner._notice(None) == {}
    assert env["MODEL_URI"] == "google/gemma-3-1b-it"
    assert "HF_HUB_OFFLINE" not in env
    assert env["MODEL_CACHE_DIR"] == str(tmp_path / "model-cache")


def test_gemini_is_not_offered_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)

    backend, project, why = demo.gemini_backend()

    assert backend is None
    assert project == demo.OFFLINE_PROJECT
    assert "gcloud auth application-default login" in why


def test_gemini_on_vertex_is_offered_with_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key_file = tmp_path / "sa.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "team-project",
                "private_key_id": "1",
                "private_key": pem,
                "client_email": "demo@team-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)

    backend, project, why = demo.gemini_backend()

    assert project == "team-project"
    assert why == ""
    assert backend == {
        "id": "gemini",
        "label": "Gemini 2.5 Flash (Vertex AI)",
        "kind": "gemini",
        "model": "gemini-2.5-flash",
        "vertex": True,
        "location": "global",
    }


def test_a_crashed_child_stops_the_wait_with_its_last_log_lines(tmp_path: Path) -> None:
    runner = Demo(_settings(tmp_path))
    script = (
        "import sys\n"
        "for i in range(40): print(f'line {i}')\n"
        "for _ in range(30): print('INFO: 127.0.0.1:5 - \"GET /healthz HTTP/1.1\" 503')\n"
        "sys.exit(3)"
    )
    chat = runner._start("chat app", [sys.executable, "-c", script], {}, "chat.log")

    try:
        with pytest.raises(DemoError) as caught:
            runner._wait_for(chat, lambda: False, 30, watch=runner.children)
    finally:
        demo.stop_children(runner.children)

    message = str(caught.value)
    assert "chat app exited with code 3" in message
    assert "line 39" in message
    assert "line 0\n" not in message
    # The demo's own health checks are noise in a crash report.
    assert "GET /healthz" not in message
    assert str(tmp_path / "logs" / "chat.log") in message


def test_a_slow_child_times_out_naming_its_log(tmp_path: Path) -> None:
    runner = Demo(_settings(tmp_path))
    script = "import time\nprint('downloading weights 3/7', flush=True)\ntime.sleep(60)"
    inference = runner._start("inference app", [sys.executable, "-c", script], {}, "inf.log")

    try:
        deadline = time.monotonic() + 20
        while "downloading" not in inference.log_tail():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(DemoError) as caught:
            runner._wait_for(inference, lambda: False, 0.5, watch=runner.children)
    finally:
        demo.stop_children(runner.children)

    assert "inference app was not ready after 0 s" in str(caught.value)
    assert "downloading weights 3/7" in str(caught.value)


def test_stop_leaves_no_process_even_when_one_escapes_or_ignores_signals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "HURRY_AFTER_S", 0.5)
    monkeypatch.setattr(demo, "STOP_GRACE_S", 0.5)
    pids_file = tmp_path / "pids"
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "time.sleep(600)"
    )
    script = f"""
import subprocess, sys, time
stubborn = subprocess.Popen([sys.executable, "-c", {stubborn!r}])
escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                           start_new_session=True)
with open({str(pids_file)!r}, "w") as out:
    out.write(f"{{stubborn.pid}} {{escaped.pid}}")
time.sleep(600)
"""
    child = ChildProcess.start(
        "server", [sys.executable, "-c", script], log_path=tmp_path / "server.log"
    )
    deadline = time.monotonic() + 20
    while not pids_file.exists() or not pids_file.read_text():
        assert time.monotonic() < deadline, child.log_tail()
        time.sleep(0.05)
    started = [child.popen.pid, *map(int, pids_file.read_text().split())]
    assert all(psutil.pid_exists(pid) for pid in started)

    demo.stop_children([child])

    still_running = [
        pid
        for pid in started
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert still_running == []


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_each_stop_signal_stops_the_servers_and_exits_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    # The real run() loop and signal handlers, with one cheap server in place of the three.
    script = f"""
import sys, pathlib
from devtools import demo, demo_model
class OneServer(demo.Demo):
    def _start_everything(self):
        self._start("server", [sys.executable, "-c", "import time; time.sleep(600)"], {{}}, "s.log")
        demo.say("ready")
settings = demo.DemoSettings(pathlib.Path({str(tmp_path)!r}), 1, 2, 3, None)
sys.exit(OneServer(settings).run())
"""
    runner = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=demo.REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert runner.stdout is not None
    assert "ready" in runner.stdout.readline() + runner.stdout.readline()
    server = psutil.Process(runner.pid).children()[0]

    runner.send_signal(stop_signal)
    output = runner.communicate(timeout=30)[0]

    assert runner.returncode == 0, output
    assert "stopped; no process left running" in output
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE


def test_a_trained_demo_model_is_reused_and_a_changed_dataset_trains_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from devtools.gcs_emulator import GcsEmulator  # noqa: PLC0415

    with GcsEmulator.start() as gcs:
        runner = Demo(_settings(tmp_path))
        monkeypatch.setattr(runner, "_start_gcs", lambda port: gcs)
        started: list[list[str]] = []
        monkeypatch.setattr(runner, "_start", lambda name, argv, env, log: started.append(argv))
        gcs.create_bucket("demo-models")
        marker = f"demo-models/{demo.OFFLINE_MODEL_NAME}/finetune-complete.json"
        about = {
            "dataset_sha256": demo_model.dataset_digest(),
            "base": f"/somewhere/{demo_model.BASE_NAME}",
            "finished_at": "2026-12-01T10:00:00+00:00",
        }
        gcs.filesystem().pipe_file(marker, json.dumps(about).encode())

        assert runner._start_demo_model_training(0) is None
        assert "reusing the offline demo model" in capsys.readouterr().out
        assert started == []

        gcs.filesystem().pipe_file(marker, json.dumps({**about, "dataset_sha256": "old"}).encode())
        runner._start_demo_model_training(0)
        (argv,) = started
        assert argv[1:3] == ["-m", "devtools.demo_model"]
        assert f"--output={demo.OFFLINE_MODEL_URI}" in argv
