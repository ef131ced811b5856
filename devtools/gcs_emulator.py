"""Run a local Cloud Storage emulator (gcp-storage-emulator), upload folders, give clients its env.

with GcsEmulator.start() as gcs:
    uri = gcs.upload_folder(model_dir, "gs://models/gemma-sql")
    subprocess.run([...], env={**os.environ, **gcs.env()})
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devtools.ports import free_port
from devtools.processes import (
    READY_DEADLINE_S,
    NotReadyError,
    ProcessExitedError,
    ServerProcess,
    start_server,
)

# gcsfs's extended filesystem probes each bucket's layout over gRPC first, which an emulator
# cannot answer; this switch makes ``import gcsfs`` use the plain JSON-API filesystem.
CLIENT_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class GcsEmulator:
    """A gcp-storage-emulator process on a free 127.0.0.1 port, in memory or in a folder."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.host = server.host
        self.port = server.port

    @property
    def endpoint(self) -> str:
        return self.server.url

    @classmethod
    def start(
        cls,
        host: str = "127.0.0.1",
        timeout_s: float = READY_DEADLINE_S,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> GcsEmulator:
        """Start an emulator; with ``data_dir`` its buckets are files there and outlive it."""
        port = port or free_port(host)
        storage = ["--in-memory"] if data_dir is None else []
        server = start_server(
            "gcp-storage-emulator",
            [
                sys.executable,
                "-m",
                "gcp_storage_emulator",
                "start",
                f"--host={host}",
                f"--port={port}",
                *storage,
                "--quiet",
            ],
            port=port,
            host=host,
            health_path="/storage/v1/b",
            env={"STORAGE_BASE": str(data_dir)} if data_dir is not None else None,
            log_path=log_path,
        )
        try:
            server.wait_ready(timeout_s)
        except (ProcessExitedError, NotReadyError):
            server.stop()
            raise
        return cls(server)

    def env(self) -> dict[str, str]:
        """Environment for processes that should talk to this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, **CLIENT_ENV}

    def filesystem(self) -> Any:
        os.environ.update(CLIENT_ENV)
        from gcsfs.core import GCSFileSystem  # noqa: PLC0415 - only when uploading

        return GCSFileSystem(endpoint_url=self.endpoint, token="anon", skip_instance_cache=True)  # noqa: S106

    def create_bucket(self, bucket: str) -> None:
        fs = self.filesystem()
        if not fs.exists(bucket):
            fs.mkdir(bucket)

    def upload_folder(self, folder: Path, uri: str) -> str:
        """Copy every file under ``folder`` to ``uri`` (gs://bucket/prefix) and return the uri."""
        bucket_and_prefix = uri.removeprefix("gs://").strip("/")
        self.create_bucket(bucket_and_prefix.split("/", 1)[0])
        fs = self.filesystem()
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                fs.put_file(str(path), f"{bucket_and_prefix}/{relative}")
        return f"gs://{bucket_and_prefix}"

    def stop(self) -> None:
        self.server.stop(grace_s=10.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """Run an emulator in the foreground: ``python -m devtools.gcs_emulator [FOLDER gs://URI]``."""
    with GcsEmulator.start() as gcs:
        if len(sys.argv) == 3:
            gcs.upload_folder(Path(sys.argv[1]), sys.argv[2])
        for key, value in gcs.env().items():
            print(f"export {key}={value}")
        with contextlib.suppress(KeyboardInterrupt):
            gcs.server.popen.wait()


if __name__ == "__main__":
    os.environ.update(CLIENT_ENV)
    main()
