"""Start local servers as child processes, wait until they answer, and stop them whole.

Tests, benchmarks and `make demo` all start the apps and emulators this way:

    port = free_port()
    server = start_server("inference", [sys.executable, "-m", "app.inference"], port=port,
                          health_path="/health", env={"PORT": str(port)}, log_path=tmp / "inf.log")
    server.wait_ready()         # until /health answers 200; fails at once if it exits
    ...
    server.stop()               # SIGTERM to its whole process tree, then SIGKILL

Each child runs in a session (process group) of its own, so a Ctrl-C reaches only the parent,
and stopping it also stops what it started (gcloud's JVM, uvicorn's workers). Its output
goes straight into a log file; `output()` and `log_tail()` read it back. Waits watch for the
child's exit as they poll, and their deadlines are generous: a loaded 2-core machine is
slow, and a failure is reported as soon as the child exits, not when the deadline passes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Generous: the first start of an app imports torch or Gradio, which takes a minute on a
# loaded machine. A child that exits ends the wait at once, so this only bounds a hang.
READY_DEADLINE_S = 600.0
POLL_S = 0.1
# SIGTERM, and how long a server may drain before SIGKILL.
STOP_GRACE_S = 20.0
# Our own health probes are noise in a crash report.
HEALTH_PROBE_LINE = re.compile(r'"GET /healthz? HTTP')


class ProcessExitedError(RuntimeError):
    """The child exited while something waited for it; the message ends with its log."""


class NotReadyError(TimeoutError):
    """The deadline passed and the child still runs; the message ends with its log."""


@dataclass
class ChildProcess:
    """One child process in a process group of its own, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)
    # A log the launcher made up (no log_path given) is deleted when the child is stopped.
    temporary_log: bool = False

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path = REPO_ROOT,
    ) -> Self:
        """Start `argv` with `env` over `base_env` (default: this process's environment)."""
        temporary_log = log_path is None
        if log_path is None:
            prefix = re.sub(r"\W+", "-", name)
            fd, log_name = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".log")
            os.close(fd)
            log_path = Path(log_name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={**(os.environ if base_env is None else base_env), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name=name, popen=popen, log_path=log_path, temporary_log=temporary_log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll()

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def output(self) -> str:
        """Everything the child has written so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        """The log's last lines, without the access lines of our own health probes."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as log:
                kept = (line for line in log if not HEALTH_PROBE_LINE.search(line))
                return "".join(deque(kept, maxlen=lines)).rstrip()
        except OSError:
            return "(no log)"

    def report(self, headline: str) -> str:
        tail = "\n".join(f"    {line}" for line in self.log_tail().splitlines())
        return f"{headline}. Last lines of {display_path(self.log_path)}:\n{tail}"

    def crash_report(self) -> str:
        return self.report(f"{self.name} exited with code {self.exit_code}")

    def wait_until(
        self,
        done: Callable[[], object],
        *,
        deadline_s: float = READY_DEADLINE_S,
        watch: Sequence[ChildProcess] = (),
        progress: Callable[[float], None] | None = None,
        progress_every_s: float = 15.0,
    ) -> None:
        """Wait until `done()` is true; raise ProcessExitedError as soon as this child (or one in
        `watch`) exits, and NotReadyError after `deadline_s`. `progress(seconds)` is called every
        `progress_every_s` meanwhile."""
        started = time.monotonic()
        next_note = started + progress_every_s
        while not done():
            for child in (self, *watch):
                if child.exit_code is not None:
                    raise ProcessExitedError(child.crash_report())
            now = time.monotonic()
            if now - started > deadline_s:
                headline = f"{self.name} was not ready after {deadline_s:.0f} s"
                raise NotReadyError(self.report(headline))
            if progress is not None and now >= next_note:
                progress(now - started)
                next_note = now + progress_every_s
            # Sleeping in wait() wakes at once when the child exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=POLL_S)

    def finish(
        self, deadline_s: float = READY_DEADLINE_S, *, watch: Sequence[ChildProcess] = ()
    ) -> int:
        """Wait until the child exits by itself (a build, say); return its exit code."""
        self.wait_until(lambda: self.exit_code is not None, deadline_s=deadline_s, watch=watch)
        return self.popen.returncode

    def signal_group(self, sig: signal.Signals) -> None:
        """Send `sig` to the child's whole process group, as a terminal's Ctrl-C does."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the child's process tree, give it `grace_s` to exit, then SIGKILL."""
        stop_all([self], steps=((signal.SIGTERM, grace_s),))
        if self.temporary_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass
class ServerProcess(ChildProcess):
    """A child that serves HTTP on 127.0.0.1:`port` and answers 200 on `health_path` when ready."""

    port: int = 0
    health_path: str = "/health"
    host: str = HOST
    # Every answer the health route gave while wait_ready() waited (status, body).
    health_seen: list[tuple[int, Any]] = field(default_factory=list)
    ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def health(self, timeout_s: float = 10.0) -> tuple[int, Any]:
        """One request to the health route: (status, body as JSON, else as text).

        Raises OSError (URLError, ConnectionRefusedError...) when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=timeout_s) as reply:  # noqa: S310 - our own http URL
                return int(reply.status), _body(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, _body(error.read())

    def healthy(self) -> bool:
        try:
            status, body = self.health()
        except (OSError, ValueError, http.client.HTTPException):
            return False
        self.health_seen.append((status, body))
        return status == 200

    def wait_ready(
        self,
        deadline_s: float = READY_DEADLINE_S,
        *,
        watch: Sequence[ChildProcess] = (),
        progress: Callable[[float], None] | None = None,
    ) -> Self:
        """Wait until the health route answers 200 (see ChildProcess.wait_until)."""
        if self.ready_after_s is None:
            self.wait_until(self.healthy, deadline_s=deadline_s, watch=watch, progress=progress)
            self.ready_after_s = self.elapsed()
        return self


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    health_path: str = "/health",
    host: str = HOST,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path = REPO_ROOT,
) -> ServerProcess:
    """Start a server that listens on `host`:`port` (pass them in `env` or `argv`; free_port
    picks a port)."""
    server = ServerProcess.start(name, argv, env=env, base_env=base_env, log_path=log_path, cwd=cwd)
    server.port, server.health_path, server.host = port, health_path, host
    return server


def _body(raw: bytes) -> Any:
    text = raw.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def display_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_all(
    children: Sequence[ChildProcess],
    *,
    steps: Sequence[tuple[signal.Signals, float]] = ((signal.SIGTERM, STOP_GRACE_S),),
    meanwhile: Callable[[], None] = lambda: None,
    on_kill: Callable[[psutil.Process], None] = lambda _proc: None,
) -> None:
    """Stop the children's process trees together: each (signal, seconds) step in turn to
    what still runs, then SIGKILL the rest (`on_kill` hears of each).

    Processes are listed before any signal, so a grandchild that moved to a group of its own
    (or whose parent exits first) is still found and stopped. `meanwhile` runs after the
    first signal, so another shutdown overlaps with these.
    """
    leaders = {child.pid for child in children}
    # Our own children are reaped by Popen.wait (keeping their exit codes), not by psutil.
    descendants = [
        proc for child in children for proc in process_tree(child.pid) if proc.pid not in leaders
    ]
    alive_children, alive = list(children), descendants
    for index, (sig, wait_s) in enumerate(steps):
        deadline = time.monotonic() + wait_s
        for child in alive_children:
            child.signal_group(sig)
        _signal(alive, sig)
        if index == 0:
            meanwhile()
        alive_children, alive = _wait(alive_children, alive, deadline)
        if not alive_children and not alive:
            break
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            on_kill(proc)
            proc.kill()
    for child in alive_children:
        with contextlib.suppress(psutil.NoSuchProcess):
            on_kill(psutil.Process(child.pid))
    psutil.wait_procs(alive, timeout=5)
    for child in children:
        child.signal_group(signal.SIGKILL)
        child.popen.wait()


def _signal(procs: Sequence[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def _wait(
    children: Sequence[ChildProcess], procs: Sequence[psutil.Process], deadline: float
) -> tuple[list[ChildProcess], list[psutil.Process]]:
    """What still runs at `deadline`, or sooner once everything has exited."""
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    _gone, alive = psutil.wait_procs(procs, timeout=max(0.0, deadline - time.monotonic()))
    return [c for c in children if c.popen.poll() is None], list(alive)
