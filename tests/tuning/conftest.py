"""Fixtures for the tuning-dataset tests: valid text and chat datasets in BRIEF's shapes."""

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tuning_samples import chat_example, text_example  # noqa: E402


@pytest.fixture
def text_rows() -> list[object]:
    return [text_example(i) for i in range(100)]


@pytest.fixture
def chat_rows() -> list[object]:
    return [chat_example(i) for i in range(200)]
