"""The real Firestore emulator as a managed local process, for tests and `make demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from devtools.ports import free_port

DEFAULT_PROJECT = "demo-gemma-stack"


class FirestoreEmulator:
    """Starts `gcloud emulators firestore start` in its own process group and cleans it up.

    Use as a context manager, or call `start()` and `stop()`. `stop()` then `start()` again
    keeps the same port, which is how tests simulate a Firestore outage and its recovery.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        project: str = DEFAULT_PROJECT,
        start_timeout_s: float = 90.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.project = project
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def host_port(self) -> str:
        """The value for FIRESTORE_EMULATOR_HOST."""
        return f"{self.host}:{self.port}"

    @property
    def process_group(self) -> int | None:
        """The id of the process group holding gcloud and its Java server, while running."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """Environment variables that point Google client libraries at this emulator."""
        return {"FIRESTORE_EMULATOR_HOST": self.host_port, "GOOGLE_CLOUD_PROJECT": self.project}

    def start(self) -> FirestoreEmulator:
        if self.running:
            return self
        fd, log_name = tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")
        self._log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log_file:
            # A new session makes gcloud and the Java server it spawns one process group,
            # so stop() can end both and leave no orphaned JVM.
            self._process = subprocess.Popen(
                ["gcloud", "emulators", "firestore", "start", f"--host-port={self.host_port}"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the Firestore emulator exited with code {self._process.returncode}: "
                    f"{self._log_tail()}"
                )
            if self._ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(
            f"the Firestore emulator did not answer on {self.host_port} within "
            f"{self.start_timeout_s:g} s: {self._log_tail()}"
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host_port}/", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        return self._log_path.read_text(errors="replace")[-2000:]

    def clear(self, database: str = "(default)") -> None:
        """Delete every document of one database (the emulator's own reset endpoint)."""
        url = (
            f"http://{self.host_port}/emulator/v1/projects/{self.project}"
            f"/databases/{database}/documents"
        )
        request = urllib.request.Request(url, method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            if response.status != 200:
                raise RuntimeError(f"clearing the Firestore emulator failed: {response.status}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait_s)
                # The JVM may outlive the gcloud wrapper; probe the group until it is empty.
                end = time.monotonic() + wait_s
                while time.monotonic() < end:
                    os.killpg(process.pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> FirestoreEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
