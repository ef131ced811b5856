"""Schema-driven fuzzing of the live server's OpenAPI spec (valid and invalid input): no 5xx,
and no status code the spec does not document for the route.

`make test` runs a fixed number of examples from a fixed seed, then replays every failure a
wider search ever stored in ``fuzz-examples/``, so it gives the same answer on every run.
`make fuzz` searches with a fresh seed and FUZZ_EXAMPLES examples per route, and stores each
failing (shrunk) example there: commit the folder, and `make test` replays it from then on.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from devtools.processes import ServerProcess
from tests.inference.inference_fixtures import API_KEY, start_inference

EXAMPLES_DIR = Path(__file__).parent / "fuzz-examples"
EXPLORING = os.environ.get("HYPOTHESIS_PROFILE") == "explore"
# Per route, split between valid and invalid requests.
EXAMPLES_PER_ROUTE = int(os.environ.get("FUZZ_EXAMPLES", "2000" if EXPLORING else "50"))
FIXED_SEED = 20261201
ROUTES = {
    "/health",
    "/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1beta/models/{model}:generateContent",
    "/v1beta/models/{model}:streamGenerateContent",
    "/v1beta/models/{model}:countTokens",
    "/v1beta/models/{model}",
    "/v1/models/{model_id}",
}


@pytest.fixture(scope="module")
def fuzz_server(
    scripted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    # A short context keeps every generated request fast, whatever max_tokens it asks for.
    with start_inference(
        {"MODEL_URI": str(scripted_model_dir), "API_KEY": API_KEY, "MAX_MODEL_LEN": "96"},
        tmp_path_factory.mktemp("fuzz"),
    ) as server:
        yield server.wait_ready()


def test_no_input_makes_a_server_error(fuzz_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", timeout=10)
    spec = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=10).json()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= ROUTES
    database = DirectoryBasedExampleDatabase(EXAMPLES_DIR)
    run_seed = random.randrange(2**32) if EXPLORING else FIXED_SEED  # noqa: S311 - a search seed
    server_errors: list[str] = []
    undocumented: set[str] = set()
    calls: Counter[str] = Counter()

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @seed(run_seed)
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_ROUTE // 2,
                deadline=None,
                # make test only reads the stored failures; make fuzz adds to them.
                database=database if EXPLORING else ReadOnlyDatabase(database),
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )
            def call(case: schemathesis.Case) -> None:
                calls[case.operation.path] += 1
                response = case.call(
                    base_url=fuzz_server.url, headers={"x-goog-api-key": API_KEY}, timeout=30
                )
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} {case.body!r:.300} -> "
                    f"{response.status_code} {response.text[:200]}"
                )
                documented = spec["paths"][case.operation.path][case.method.lower()]["responses"]
                if str(response.status_code) not in documented:
                    undocumented.add(
                        f"{case.method} {case.operation.path} -> {response.status_code} "
                        f"{response.text[:120]}"
                    )

            # One database key per route and mode (the function's source is the same for all).
            call.hypothesis.inner_test._hypothesis_internal_add_digest = (  # type: ignore[attr-defined]
                f"{operation.label} {mode.value}".encode()
            )
            try:
                call()
            except Unsatisfiable:
                continue  # nothing to make invalid (e.g. GET /health has no input)
            except AssertionError as error:
                server_errors.append(str(error).splitlines()[0])

    print(f"fuzz: seed {run_seed}, calls per route: {dict(sorted(calls.items()))}")
    assert sum(calls.values()) > 50, "the fuzzer barely ran"
    assert server_errors == []
    assert sorted(undocumented) == []
    assert fuzz_server.health()[0] == 200  # still serving after all of it
