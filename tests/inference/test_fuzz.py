"""Schema-driven fuzzing of the live server's OpenAPI spec (valid and invalid input): no 5xx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.inference.inference_fixtures import API_KEY, ServerProcess, start_server

TIME_BUDGET_S = 40
EXAMPLES_PER_OPERATION_AND_MODE = 25


@pytest.fixture(scope="module")
def fuzz_server(
    scripted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    # A short context keeps every generated request fast, whatever max_tokens it asks for.
    server = start_server(
        {"MODEL_URI": str(scripted_model_dir), "API_KEY": API_KEY, "MAX_MODEL_LEN": "96"},
        tmp_path_factory.mktemp("fuzz"),
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_no_input_makes_a_server_error(fuzz_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/health",
        "/generate",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1beta/models/{model}:generateContent",
        "/v1beta/models/{model}:streamGenerateContent",
    }
    deadline = time.monotonic() + TIME_BUDGET_S
    server_errors: list[str] = []
    calls = 0

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case) -> None:
                nonlocal calls
                if time.monotonic() > deadline:
                    return
                calls += 1
                response = case.call(
                    base_url=fuzz_server.url, headers={"x-goog-api-key": API_KEY}, timeout=30
                )
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.method} {case.formatted_path} {case.body!r:.200} -> "
                        f"{response.status_code} {response.text[:200]}"
                    )

            try:
                call()
            except Unsatisfiable:
                continue  # nothing to make invalid (e.g. GET /health has no input)

    assert calls > 50, "the fuzzer barely ran"
    assert server_errors == []
    assert fuzz_server.health()[0] == 200  # still serving after all of it
