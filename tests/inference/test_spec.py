"""The OpenAPI spec lists the status codes the server answers, with each API's error model."""

from __future__ import annotations

from typing import Any

import pytest

from app.inference.server import create_app
from app.inference.settings import Settings

GENERATING = [
    ("/v1/chat/completions", "openai"),
    ("/v1/completions", "openai"),
    ("/v1beta/models/{model}:generateContent", "gemini"),
    ("/v1beta/models/{model}:streamGenerateContent", "gemini"),
    ("/v1beta/models/{model}:countTokens", "gemini"),
    ("/v1/models/{model}:generateContent", "gemini"),
]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(Settings(model_uri="unused")).openapi()
    return schema


def _error_schema(operation: dict[str, Any], status: str) -> str:
    ref: str = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return ref


@pytest.mark.parametrize(("path", "family"), GENERATING)
def test_generating_routes_document_every_error_they_answer(
    spec: dict[str, Any], path: str, family: str
) -> None:
    operation = spec["paths"][path]["post"]
    assert set(operation["responses"]) == {"200", "400", "401", "404", "413", "429", "503"}
    # Each family's own error shape, from its protocol module.
    assert f"protocol_{family}__ErrorResponse" in _error_schema(operation, "400")
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]


def test_no_route_documents_a_422(spec: dict[str, Any]) -> None:
    statuses = {
        status
        for path in spec["paths"].values()
        for operation in path.values()
        for status in operation["responses"]
    }
    assert "422" not in statuses
    assert statuses == {"200", "400", "401", "404", "413", "429", "503"}


def test_request_models_refuse_unknown_fields_in_the_spec(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name in ("ChatCompletionRequest", "CompletionRequest", "GenerateContentRequest"):
        assert schemas[name]["additionalProperties"] is False, name
