"""Who gets in: IAP fails closed, login throttles and signs its sessions, and every response
in every mode carries the security headers. Apps run on real HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.chat.access import (
    CONTENT_SECURITY_POLICY,
    SESSION_COOKIE,
    AccessDeniedError,
    LoginThrottle,
    SessionSigner,
)
from app.chat.history import ChatHistory
from app.chat.identity import IapAccess, find_iap_audience
from app.chat.server import create_app
from app.chat.settings import ChatSettings
from devtools.ports import free_port
from devtools.processes import ServerProcess
from tests.chat.google_endpoints import GoogleEndpoints
from tests.chat.stack import DATABASE, SESSION_SECRET, USERS

AUDIENCE = "/projects/123/global/backendServices/456"
FORGED = {"X-Goog-Authenticated-User-Email": "accounts.google.com:ann@example.com"}
BACKEND = {
    "id": "echo",
    "label": "Echo",
    "kind": "openai",
    "model": "echo",
    "base_url": "http://127.0.0.1:9/v1",
}


@pytest.fixture(scope="module")
def google_endpoints() -> Iterator[GoogleEndpoints]:
    endpoints = GoogleEndpoints().start()
    yield endpoints
    endpoints.stop()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a thread, for as long as the block."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive(), "the app did not start"
        assert time.monotonic() < deadline, "the app did not start within 120 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def assert_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "img-src 'self' data:;" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["strict-transport-security"].startswith("max-age=")


def iap_settings(**values: Any) -> ChatSettings:
    return ChatSettings(chat_backends=[BACKEND], auth_mode="iap", **values)  # type: ignore[list-item]


def test_a_forged_iap_header_is_refused_with_and_without_an_audience(
    google_endpoints: GoogleEndpoints,
) -> None:
    certs = f"{google_endpoints.url}/iap/keys"
    history = ChatHistory("demo-gemma-stack", DATABASE)
    cases = [
        # A first deploy: the audience is not known yet and cannot be found yet.
        (
            iap_settings(iap_project_number="123", iap_backend_service="ns-chat-app-7860"),
            IapAccess(None, lambda: None, certs),
        ),
        (iap_settings(iap_audience=AUDIENCE), IapAccess(AUDIENCE, None, certs)),
    ]
    for settings, access in cases:
        with serve(create_app(settings, history, access)) as url:
            for path in ("/", "/config", "/gradio_api/info", "/login"):
                refused = httpx.get(url + path, headers=FORGED, timeout=30)
                assert refused.status_code == 401, (path, refused.text)
                assert "Identity-Aware Proxy" in refused.text
                assert "ann@example.com" not in refused.text
                assert_security_headers(refused)
            joined = httpx.post(url + "/gradio_api/queue/join", headers=FORGED, json={})
            assert joined.status_code == 401
            health = httpx.get(url + "/healthz", timeout=30)
            assert health.status_code == 200
            assert_security_headers(health)
            if access.audience is None:
                good = google_endpoints.iap_assertion("ann@example.com", AUDIENCE)
                waiting = httpx.get(url + "/config", headers={"x-goog-iap-jwt-assertion": good})
                assert waiting.status_code == 503
                assert AUDIENCE not in waiting.text
            else:
                good = google_endpoints.iap_assertion("Ann@Example.COM", AUDIENCE)
                served = httpx.get(url + "/config", headers={"x-goog-iap-jwt-assertion": good})
                assert served.status_code == 200
                assert served.json()["username"] == "ann@example.com"
                assert_security_headers(served)


async def test_iap_finds_its_audience_and_never_echoes_it(
    google_endpoints: GoogleEndpoints,
) -> None:
    now = [1000.0]
    answers: list[str | None] = [None, AUDIENCE]
    lookups: list[str | None] = []

    def find() -> str | None:
        lookups.append(answer := answers[min(len(lookups), len(answers) - 1)])
        return answer

    access = IapAccess(None, find, f"{google_endpoints.url}/iap/keys", clock=lambda: now[0])
    good = google_endpoints.iap_assertion("Ann@Example.COM", AUDIENCE)
    with pytest.raises(AccessDeniedError) as waiting:
        await access.email(good)
    assert waiting.value.status == 503
    with pytest.raises(AccessDeniedError):
        await access.email(good)
    assert len(lookups) == 1, "lookups are spaced out, not one per request"
    now[0] += 31
    assert await access.email(good) == "ann@example.com"  # found, and lower-cased

    other = google_endpoints.iap_assertion(
        "ann@example.com", "/projects/123/global/backendServices/9"
    )
    for assertion in (other, good[:-4] + "AAAA", "not-a-jwt"):
        with pytest.raises(AccessDeniedError) as refused:
            await access.email(assertion)
        assert refused.value.status == 403
        assert "456" not in refused.value.message
        assert AUDIENCE not in refused.value.message


def test_the_audience_is_looked_up_from_the_ingress_backend_service(
    google_endpoints: GoogleEndpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS", str(google_endpoints.service_account_file(tmp_path))
    )
    google_endpoints.backend_services = [
        {"name": "k8s1-0a1b2c3d-other-web-80-9f8e7d6c", "id": "111"},
        {"name": "k8s1-0a1b2c3d-gemma-stack-chat-app-7860-1a2b3c4d", "id": "456"},
    ]
    found = find_iap_audience(
        "demo-gemma-stack", "123", "gemma-stack-chat-app-7860", api_url=google_endpoints.url
    )
    assert found == AUDIENCE
    assert google_endpoints.compute_authorization == "Bearer test-access-token"
    google_endpoints.backend_services = []
    assert (
        find_iap_audience(
            "demo-gemma-stack", "123", "gemma-stack-chat-app-7860", api_url=google_endpoints.url
        )
        is None
    )


def login(app: ServerProcess, user: str, password: str) -> httpx.Response:
    return httpx.post(app.url + "/login", data={"username": user, "password": password}, timeout=30)


def test_brute_force_gets_429_after_the_allowed_failures(login_chat_app: ServerProcess) -> None:
    allowed = 5  # LOGIN_MAX_FAILURES' default
    for _ in range(allowed):
        assert login(login_chat_app, "carol", "guess").status_code == 401
    locked = login(login_chat_app, "carol", USERS["carol"])
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 60
    assert "try again in" in locked.json()["error"]
    assert_security_headers(locked)
    assert SESSION_COOKIE not in locked.cookies
    # The lockout is per user: another user from the same address still signs in.
    assert login(login_chat_app, "alice", USERS["alice"]).status_code == 200


def test_the_client_lockout_covers_every_user_name() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_per_user=5, max_per_client=20, lockout_s=900, clock=lambda: now[0])
    for i in range(20):
        assert throttle.retry_after(f"user-{i}", "203.0.113.9") is None
        throttle.failed(f"user-{i}", "203.0.113.9")
    assert throttle.retry_after("someone-new", "203.0.113.9") == 900
    assert throttle.retry_after("someone-new", "198.51.100.1") is None
    now[0] += 901
    assert throttle.retry_after("someone-new", "203.0.113.9") is None


def test_sessions_are_signed_expire_and_match_names_exactly(
    login_chat_app: ServerProcess,
) -> None:
    for user, password in (("Alice", "wonderland"), ("alice ", "wonderland"), ("alice", "")):
        assert login(login_chat_app, user, password).status_code == 401
    signed_in = login(login_chat_app, "alice", USERS["alice"])
    cookie = signed_in.cookies[SESSION_COOKIE]
    config = httpx.get(login_chat_app.url + "/config", cookies={SESSION_COOKIE: cookie})
    assert config.status_code == 200
    assert config.json()["username"] == "alice"

    # Any replica, or the app after a restart, holds the same key and accepts the cookie.
    replica = SessionSigner(SESSION_SECRET, 3600)
    assert replica.verify(cookie) == "alice"
    minted = replica.issue("bob")
    assert (
        httpx.get(login_chat_app.url + "/config", cookies={SESSION_COOKIE: minted}).json()[
            "username"
        ]
        == "bob"
    )
    for bad in (cookie[:-2] + "xx", SessionSigner("x" * 40, 3600).issue("alice"), "garbage"):
        refused = httpx.get(login_chat_app.url + "/config", cookies={SESSION_COOKIE: bad})
        assert refused.status_code == 401
    expired = SessionSigner(SESSION_SECRET, 3600, clock=lambda: time.time() - 7200).issue("alice")
    assert (
        httpx.get(login_chat_app.url + "/config", cookies={SESSION_COOKIE: expired}).status_code
        == 401
    )
    # A browser without a session is sent to the sign-in page.
    page = httpx.get(login_chat_app.url + "/", headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "login"
    assert_security_headers(page)
    form = httpx.get(login_chat_app.url + "/login", headers={"accept": "text/html"})
    assert form.status_code == 200
    assert 'name="password"' in form.text
    assert_security_headers(form)


def test_every_response_carries_the_security_headers(chat_app: ServerProcess) -> None:
    for path in ("/", "/config", "/healthz", "/livez", "/no-such-page"):
        assert_security_headers(httpx.get(chat_app.url + path, timeout=30))
