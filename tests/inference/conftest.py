"""Fixtures for the inference app: tiny Gemma 3 folders, a GCS emulator, real server processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gcs_emulator import GcsEmulator
from devtools.processes import ServerProcess
from devtools.tiny_model import build_tiny_gemma3
from tests.inference.inference_fixtures import API_KEY, SCRIPTED_REPLY, start_inference


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma3(tmp_path_factory.mktemp("models") / "tiny-gemma")


@pytest.fixture(scope="session")
def scripted_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma3(tmp_path_factory.mktemp("models") / "gemma-sql", reply=SCRIPTED_REPLY)


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator.start() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def gs_server(
    scripted_model_dir: Path, gcs: GcsEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The scripted model served from gs:// through the emulator, behind an API key."""
    uri = gcs.upload_folder(scripted_model_dir, "gs://models/gemma-sql")
    with start_inference(
        {
            "MODEL_URI": uri,
            "API_KEY": API_KEY,
            "MAX_CONCURRENCY": "2",
            "MAX_QUEUE": "8",
            **gcs.env(),
        },
        tmp_path_factory.mktemp("gs-server"),
    ) as server:
        yield server.wait_ready()
