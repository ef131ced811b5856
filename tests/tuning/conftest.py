"""Fixtures for the tuning-dataset tests: valid text and chat datasets in Vertex AI's shapes."""

import pytest

from tests.tuning.tuning_samples import chat_example, text_example


@pytest.fixture
def text_rows() -> list[object]:
    return [text_example(i) for i in range(100)]


@pytest.fixture
def chat_rows() -> list[object]:
    return [chat_example(i) for i in range(200)]
