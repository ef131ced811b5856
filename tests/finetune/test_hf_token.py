"""The Hugging Face token read from Secret Manager by name. Secret Manager has no local
emulator, so its HTTP answers are stubbed; the request's URL and the handling are real."""

from __future__ import annotations

import base64
import os
from typing import Any

import google.auth
import pytest
from google.auth.transport import requests as auth_requests

from app.finetune.errors import FineTuneError
from app.finetune.hf_token import load_hf_token

SECRET = "projects/my-gcp-project/secrets/HF_TOKEN-dev"  # pragma: allowlist secret


class _Answer:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self.body = body
        self.text = str(body)

    def json(self) -> dict[str, Any]:
        return self.body


def _secret_manager(
    monkeypatch: pytest.MonkeyPatch, status: int, body: dict[str, Any]
) -> list[str]:
    asked: list[str] = []

    class Session:
        def __init__(self, credentials: object) -> None:
            del credentials

        def get(self, url: str, timeout: float) -> _Answer:
            del timeout
            asked.append(url)
            return _Answer(status, body)

    monkeypatch.setattr(google.auth, "default", lambda scopes: (object(), "my-gcp-project"))
    monkeypatch.setattr(auth_requests, "AuthorizedSession", Session)
    monkeypatch.setenv("HF_TOKEN_SECRET", SECRET)
    # Set (empty) rather than deleted, so monkeypatch restores it after the test.
    monkeypatch.setenv("HF_TOKEN", "")
    return asked


def test_the_token_is_read_from_the_latest_version(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_FAKEtokenFORtestsONLY0123456789ab"  # pragma: allowlist secret
    data = base64.b64encode(token.encode()).decode()
    asked = _secret_manager(monkeypatch, 200, {"payload": {"data": data}})

    load_hf_token()

    assert asked == [f"https://secretmanager.googleapis.com/v1/{SECRET}/versions/latest:access"]
    assert os.environ["HF_TOKEN"] == token


def test_a_403_names_the_grant_to_add(monkeypatch: pytest.MonkeyPatch) -> None:
    _secret_manager(monkeypatch, 403, {"error": {"status": "PERMISSION_DENIED"}})

    with pytest.raises(FineTuneError, match=r"roles/secretmanager\.secretAccessor"):
        load_hf_token()


def test_without_a_secret_name_nothing_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _secret_manager(monkeypatch, 500, {})
    monkeypatch.delenv("HF_TOKEN_SECRET")

    load_hf_token()

    assert asked == []
