"""The real Firestore emulator as a managed local process, for tests and `make demo`."""

from __future__ import annotations

import urllib.request
from types import TracebackType

from devtools.ports import free_port
from devtools.processes import NotReadyError, ProcessExitedError, ServerProcess, start_server

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
        start_timeout_s: float = 300.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.project = project
        self.start_timeout_s = start_timeout_s
        self._server: ServerProcess | None = None

    @property
    def host_port(self) -> str:
        """The value for FIRESTORE_EMULATOR_HOST."""
        return f"{self.host}:{self.port}"

    @property
    def process_group(self) -> int | None:
        """The id of the process group holding gcloud and its Java server, while running."""
        return self._server.pid if self._server is not None else None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.exit_code is None

    def env(self) -> dict[str, str]:
        """Environment variables that point Google client libraries at this emulator."""
        return {"FIRESTORE_EMULATOR_HOST": self.host_port, "GOOGLE_CLOUD_PROJECT": self.project}

    def start(self) -> FirestoreEmulator:
        if self.running:
            return self
        # The launcher's own process group holds gcloud and the Java server it spawns, so
        # stop() ends both and leaves no orphaned JVM.
        self._server = start_server(
            "the Firestore emulator",
            ["gcloud", "emulators", "firestore", "start", f"--host-port={self.host_port}"],
            port=self.port,
            host=self.host,
            health_path="/",
        )
        try:
            self._server.wait_ready(self.start_timeout_s)
        except (ProcessExitedError, NotReadyError):
            self.stop()
            raise
        return self

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
        server, self._server = self._server, None
        if server is None:
            return
        server.stop(grace_s=10.0)

    def __enter__(self) -> FirestoreEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
