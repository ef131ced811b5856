"""Fixtures for the fine-tuning program: a GCS emulator and a converted SQL tuning set."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gcs_emulator import GcsEmulator
from devtools.processes import REPO_ROOT
from devtools.tiny_model import build_tiny_gemma3
from tests.finetune.finetune_samples import corpus_of, write_sql_dataset


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator.start() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def converted_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQL set, converted to Gemma chat format by `python -m app.tuning convert --sql`."""
    folder = tmp_path_factory.mktemp("dataset")
    raw = write_sql_dataset(folder / "sql.jsonl")
    out = folder / "train.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.tuning",
            "convert",
            "--sql",
            str(raw),
            "--to",
            "gemma",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote 10 examples" in done.stdout
    return out


@pytest.fixture(scope="session")
def base_model(converted_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny Gemma 3 whose tokenizer knows the dataset's text."""
    return build_tiny_gemma3(
        tmp_path_factory.mktemp("base") / "tiny-gemma3-base", corpus=corpus_of(converted_dataset)
    )
