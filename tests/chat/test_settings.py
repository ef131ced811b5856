"""Settings, identity modes and the image recipe: bad input fails early with a clear message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from app.chat.identity import IdentityError, OwnerResolver
from app.chat.settings import ChatSettings
from tests.chat.google_endpoints import GoogleEndpoints
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


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ChatSettings:
    for key in list(os.environ):
        if key in {"AUTH_MODE", "LOGIN_CREDENTIALS", "IAP_AUDIENCE", "PORT", "SYSTEM_PROMPT"}:
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
    loaded = settings(monkeypatch, AUTH_MODE="login", LOGIN_CREDENTIALS="ann:p:w, bob:pw2")
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


@pytest.fixture(scope="module")
def google_endpoints() -> Iterator[GoogleEndpoints]:
    endpoints = GoogleEndpoints().start()
    yield endpoints
    endpoints.stop()


async def test_owners_per_identity_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    anonymous = OwnerResolver(settings(monkeypatch))
    assert await anonymous.owner({}, None, "b-123") == "browser:b-123"
    with pytest.raises(IdentityError, match="reload"):
        await anonymous.owner({}, None, None)

    login = OwnerResolver(settings(monkeypatch, AUTH_MODE="login", LOGIN_CREDENTIALS="a:b"))
    assert await login.owner({}, "ann", "b-123") == "user:ann"
    with pytest.raises(IdentityError):
        await login.owner({}, None, "b-123")

    iap = OwnerResolver(settings(monkeypatch, AUTH_MODE="iap"))
    header = {"X-Goog-Authenticated-User-Email": "accounts.google.com:ann@example.com"}
    assert await iap.owner(header, None, "b-123") == "iap:ann@example.com"
    with pytest.raises(IdentityError, match="IAP"):
        await iap.owner({}, None, "b-123")


async def test_iap_assertions_are_verified_when_an_audience_is_set(
    monkeypatch: pytest.MonkeyPatch, google_endpoints: GoogleEndpoints
) -> None:
    resolver = OwnerResolver(
        settings(monkeypatch, AUTH_MODE="iap", IAP_AUDIENCE=AUDIENCE),
        iap_certs_url=f"{google_endpoints.url}/iap/keys",
    )
    good = google_endpoints.iap_assertion("ann@example.com", AUDIENCE)
    spoofed = {"x-goog-authenticated-user-email": "accounts.google.com:mallory@example.com"}
    assert await resolver.owner({"x-goog-iap-jwt-assertion": good}, None, None) == (
        "iap:ann@example.com"
    )
    # The signed assertion wins over a header anyone could set.
    owner = await resolver.owner({**spoofed, "x-goog-iap-jwt-assertion": good}, None, None)
    assert owner == "iap:ann@example.com"
    with pytest.raises(IdentityError, match="missing"):
        await resolver.owner(spoofed, None, None)
    other_audience = google_endpoints.iap_assertion("ann@example.com", "/projects/1/other")
    with pytest.raises(IdentityError, match="not valid"):
        await resolver.owner({"x-goog-iap-jwt-assertion": other_audience}, None, None)
    with pytest.raises(IdentityError, match="not valid"):
        await resolver.owner({"x-goog-iap-jwt-assertion": good[:-4] + "AAAA"}, None, None)


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
