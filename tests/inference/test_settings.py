"""Settings come from environment variables and from the same names as CLI flags."""

from __future__ import annotations

import pytest

from app.inference.settings import Settings


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_URI", "gs://bucket/models/gemma-sql/")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("MAX_CONCURRENCY", "3")
    monkeypatch.setenv("API_KEY", "")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.port == 9000
    assert settings.max_concurrency == 3
    assert settings.api_key is None  # an empty secret means no key, not an empty key
    assert settings.model_name() == "gemma-sql"


def test_cli_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_URI", "gs://bucket/a")
    settings = Settings(
        _cli_parse_args=[  # type: ignore[call-arg]
            "--model-uri",
            "/models/b",
            "--served-model-name",
            "sql",
            "--max-model-len",
            "4096",
            "--api-key",
            "sekrit-value",
        ]
    )
    assert settings.model_uri == "/models/b"
    assert settings.model_name() == "sql"
    assert settings.max_model_len == 4096
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "sekrit-value"
    assert "sekrit-value" not in repr(settings)
