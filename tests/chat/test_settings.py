"""Settings, identity modes and the image recipe: bad input fails early with a clear message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.chat.identity import IdentityError, OwnerResolver
from app.chat.settings import ChatSettings
from tests.chat.stack import ROOT

GEMMA = {
    "id": "gemma",
    "label": "Gemma 3 12B (GKE)",
    "kind": "openai",
    "model": "google/gemma-3-12b-it",
    "base_url": "http://gemma-service:8000/v1",
}
GEMINI = {
    "id": "gemini",
    "label": "Gemini 2.5 Flash",
    "kind": "gemini",
    "model": "gemini-2.5-flash",
    "vertex": True,
    "location": "global",
}
AUDIENCE = "/projects/123/global/backendServices/456"
SECRET = "s" * 40
MANAGED_ENV = {
    "AUTH_MODE",
    "LOGIN_CREDENTIALS",
    "IAP_AUDIENCE",
    "IAP_PROJECT_NUMBER",
    "IAP_BACKEND_SERVICE",
    "SESSION_SECRET",
    "PORT",
    "SYSTEM_PROMPT",
}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ChatSettings:
    for key in list(os.environ):
        if key in MANAGED_ENV:
            monkeypatch.delenv(key)
    monkeypatch.setenv("CHAT_BACKENDS", json.dumps([GEMMA, GEMINI]))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return ChatSettings()  # type: ignore[call-arg]


def test_defaults_follow_the_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings(monkeypatch)
    assert [b.label for b in loaded.chat_backends] == ["Gemma 3 12B (GKE)", "Gemini 2.5 Flash"]
    assert loaded.firestore_database == "chat-app-db"
    assert loaded.port == 7860
    assert loaded.auth_mode == "none"
    assert loaded.chat_backends[0].folds_system_prompt
    assert not loaded.chat_backends[1].folds_system_prompt
    assert loaded.system_prompt


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        ("[{not json", "CHAT_BACKENDS must be a JSON list"),
        (json.dumps([{**GEMMA, "base_url": None}]), "kind 'openai' needs a base_url"),
        (json.dumps([{**GEMMA, "base_url": "gemma-service:8000"}]), "http:// or https:// URL"),
        (json.dumps([GEMMA, {**GEMMA, "label": "x"}]), "ids must be unique"),
        (json.dumps([{**GEMMA, "auth": "api-key"}]), "needs api_key_env"),
        (json.dumps([{**GEMINI, "vertex": False}]), "needs vertex: true, a base_url"),
        (json.dumps([{**GEMMA, "kind": "claude"}]), "'openai' or 'gemini'"),
        ("[]", "at least 1"),
    ],
)
def test_bad_backends_are_explained(
    monkeypatch: pytest.MonkeyPatch, backends: str, message: str
) -> None:
    monkeypatch.setenv("CHAT_BACKENDS", backends)
    with pytest.raises(ValidationError, match=re.escape(message)):
        ChatSettings()  # type: ignore[call-arg]


def test_login_mode_needs_well_formed_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="needs LOGIN_CREDENTIALS"):
        settings(monkeypatch, AUTH_MODE="login")
    with pytest.raises(ValidationError, match="entry 2 has no 'user:password' form"):
        settings(monkeypatch, AUTH_MODE="login", LOGIN_CREDENTIALS="ann:pw1,bob")
    loaded = settings(
        monkeypatch, AUTH_MODE="login", LOGIN_CREDENTIALS="ann:p:w, bob:pw2", SESSION_SECRET=SECRET
    )
    assert loaded.login_users() == {"ann": "p:w", "bob": "pw2"}
    assert "p:w" not in repr(loaded)  # the secret stays out of logs


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CHAT_BACKENDS": "[{not json"}, "CHAT_BACKENDS: CHAT_BACKENDS must be a JSON list"),
        ({"CHAT_BACKENDS": json.dumps([{"id": "a"}])}, "CHAT_BACKENDS[0].label: Field required"),
        (
            {
                "CHAT_BACKENDS": json.dumps([GEMMA]),
                "AUTH_MODE": "login",
                "LOGIN_CREDENTIALS": "ann:hunter2-secret,bob",
            },
            "entry 2 has no 'user:password' form",
        ),
    ],
)
def test_the_app_refuses_to_start_on_bad_settings_and_says_why(
    env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.chat"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert message in done.stderr
    if "CHAT_BACKENDS[0]" in message or "JSON list" in message:
        assert "A working example: CHAT_BACKENDS='[" in done.stderr
    # Logs are kept: no password from the environment, and no pydantic boilerplate.
    assert "hunter2" not in done.stderr
    assert "errors.pydantic.dev" not in done.stderr


def test_owners_per_identity_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    anonymous = OwnerResolver(settings(monkeypatch))
    assert anonymous.owner(None, "b-123") == "browser:b-123"
    with pytest.raises(IdentityError, match="reload"):
        anonymous.owner(None, None)

    login = OwnerResolver(
        settings(monkeypatch, AUTH_MODE="login", LOGIN_CREDENTIALS="a:b", SESSION_SECRET=SECRET)
    )
    assert login.owner("ann", "b-123") == "user:ann"
    with pytest.raises(IdentityError, match="sign in"):
        login.owner(None, "b-123")

    # In IAP mode the user is what the gate verified; a browser id never stands in for it.
    iap = OwnerResolver(settings(monkeypatch, AUTH_MODE="iap", IAP_AUDIENCE=AUDIENCE))
    assert iap.owner("ann@example.com", "b-123") == "iap:ann@example.com"
    with pytest.raises(IdentityError, match="sign in"):
        iap.owner(None, "b-123")


def test_iap_mode_without_a_way_to_know_its_audience_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="IAP_AUDIENCE"):
        settings(monkeypatch, AUTH_MODE="iap")
    found = settings(
        monkeypatch, AUTH_MODE="iap", IAP_PROJECT_NUMBER="123", IAP_BACKEND_SERVICE="ns-chat-7860"
    )
    assert found.iap_audience is None


def test_login_mode_needs_a_session_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        settings(monkeypatch, AUTH_MODE="login", LOGIN_CREDENTIALS="a:b")
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        settings(monkeypatch, AUTH_MODE="login", LOGIN_CREDENTIALS="a:b", SESSION_SECRET="short")


def test_the_image_is_slim_non_root_and_port_aware() -> None:
    dockerfile = (ROOT / "app" / "chat" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
    assert users, "the image must switch to a non-root user"
    assert users[-1].isdigit()
    assert int(users[-1]) != 0
    assert "COPY . /srv/app/chat" in dockerfile
    assert "touch /srv/app/__init__.py" in dockerfile
    assert "WORKDIR /srv" in dockerfile
    assert 'CMD ["python", "-m", "app.chat"]' in dockerfile
    healthcheck = re.search(r"^HEALTHCHECK .*\n.*$", dockerfile, flags=re.MULTILINE)
    assert healthcheck, "a local docker run should report health"
    assert "/healthz" in healthcheck.group(0)
    assert "os.environ.get('PORT'" in healthcheck.group(0)
    assert not re.search(r"^(ARG|ENV) .*(TOKEN|PASSWORD|SECRET|KEY)", dockerfile, re.MULTILINE)
