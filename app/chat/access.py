"""Who may reach the app, and the security headers every response carries.

Two ASGI middlewares wrap the whole app (Gradio included): `SecurityHeaders` on every
response in every mode, and `AccessGate`, which refuses a request before Gradio sees it
unless its `Access` names a user. Login mode signs its own session cookies and throttles
failed sign-ins; IAP mode verifies IAP's signed header (see identity.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where AccessGate leaves the verified user for Gradio's auth_dependency.
USER_KEY = "gemma_stack.user"
SESSION_COOKIE = "gemma_chat_session"
# Images only from the app itself and data: URLs, so a reply cannot leak data through an
# image URL. Gradio needs inline scripts and styles, and evaluates `js=` event handlers.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' data: blob:",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
# Remembered failing user names and client addresses, oldest forgotten first.
THROTTLE_KEYS = 50_000


class AccessDeniedError(Exception):
    """A request the gate refuses: status and a message for the user (no internals)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Access(Protocol):
    """Names the user of a request, or raises AccessDeniedError."""

    public_paths: frozenset[str]

    async def user(self, request: Request) -> str: ...


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (replacing any the app set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        self._names = {k.encode() for k in SECURITY_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() not in self._names]
                message["headers"] = [*kept, *self._headers]
            await send(message)

        await self.app(scope, receive, with_headers)


class AccessGate:
    """Lets a request through only once `access` has named its user."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"} or scope["path"] in self.access.public_paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            scope[USER_KEY] = await self.access.user(request)
        except AccessDeniedError as denied:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await denial(request, denied)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def gate_user(request: Request) -> str | None:
    """Gradio's auth_dependency: the user AccessGate verified for this request."""
    user = request.scope.get(USER_KEY)
    return str(user) if user else None


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def denial(request: Request, denied: AccessDeniedError) -> Response:
    redirect = denied.status == 401 and "location" in denied.headers
    if redirect and wants_html(request) and request.method == "GET":
        return RedirectResponse(denied.headers["location"], status_code=303)
    headers = {k: v for k, v in denied.headers.items() if k != "location"}
    if wants_html(request):
        page = f"<!doctype html><title>Gemma Stack Chat</title><p>{html.escape(denied.message)}"
        return HTMLResponse(page, status_code=denied.status, headers=headers)
    return JSONResponse({"error": denied.message}, status_code=denied.status, headers=headers)


# -- login mode --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Session cookies signed with HMAC-SHA256: they expire, and any replica can check them."""

    def __init__(self, secret: str, lifetime_s: float, clock: Callable[[], float] = time.time):
        self._key = hashlib.sha256(b"gemma-stack chat session\0" + secret.encode()).digest()
        self.lifetime_s = lifetime_s
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: str) -> str:
        payload = _b64(
            json.dumps({"u": user, "exp": int(self._clock() + self.lifetime_s)}).encode()
        )
        return f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str) -> str | None:
        """The user a cookie names, if its signature holds and it has not expired."""
        payload, _, signature = cookie.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            user, expires = str(data["u"]), float(data["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        return user if expires > self._clock() else None


class LoginThrottle:
    """Counts failed sign-ins per user name and per client; too many locks both out.

    A lockout lasts `lockout_s` after the last failure that counted. State is per replica:
    with N replicas an attacker gets at most N times the allowance.
    """

    def __init__(
        self,
        max_per_user: int,
        max_per_client: int,
        lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"user": max_per_user, "client": max_per_client}
        self.lockout_s = lockout_s
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        failures = self._failures.get(key, deque())
        cutoff = self._clock() - self.lockout_s
        while failures and failures[0] < cutoff:
            failures.popleft()
        return failures

    def retry_after(self, user: str, client: str) -> float | None:
        """Seconds until a locked-out user or client may try again; None if not locked."""
        waits = []
        for key in (("user", user), ("client", client)):
            failures = self._recent(key)
            if len(failures) >= self.limits[key[0]]:
                waits.append(failures[-1] + self.lockout_s - self._clock())
        return max(waits) if waits else None

    def failed(self, user: str, client: str) -> None:
        for key in (("user", user), ("client", client)):
            failures = self._recent(key)
            failures.append(self._clock())
            self._failures[key] = failures
            self._failures.move_to_end(key)
        while len(self._failures) > THROTTLE_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._failures.pop(("user", user), None)


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · Gemma Stack Chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; display: grid; place-items: center;
  min-height: 90vh; margin: 0; background: #f5f5fa; }}
form {{ background: #fff; padding: 2rem; border-radius: 12px; width: 18rem;
  box-shadow: 0 2px 12px rgba(0,0,0,.08); display: grid; gap: .8rem; }}
input, button {{ font: inherit; padding: .5rem; }}
button {{ background: #4f46e5; color: #fff; border: 0; border-radius: 6px; }}
.error {{ color: #b91c1c; margin: 0; }}
</style></head><body>
<form method="post" action="login">
<h1 style="font-size:1.3rem;margin:0">Gemma Stack Chat</h1>
<p style="margin:0">Sign in to your team's Gemma chat.</p>
{error}
<label>User name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
 required></label>
<button type="submit">Sign in</button>
</form></body></html>"""


class LoginAccess:
    """The app's own sign-in: user names and passwords from LOGIN_CREDENTIALS."""

    public_paths = frozenset({"/healthz", "/livez", "/login", "/login/", "/logout"})

    def __init__(
        self, users: Mapping[str, str], signer: SessionSigner, throttle: LoginThrottle
    ) -> None:
        self.users = dict(users)
        self.signer = signer
        self.throttle = throttle

    async def user(self, request: Request) -> str:
        user = self.signer.verify(request.cookies.get(SESSION_COOKIE, ""))
        # A user taken out of LOGIN_CREDENTIALS loses access at once, cookie or not.
        if user is None or user not in self.users:
            raise AccessDeniedError(
                401, "Please sign in: open /login.", headers={"location": "login"}
            )
        return user

    def check(self, username: str, password: str, client: str) -> str | None:
        """Raise AccessDeniedError(429) when locked out; the user if the password matches.

        Exact match on the name: no trimming, no case folding. The password is compared in
        constant time, also for unknown names.
        """
        wait = self.throttle.retry_after(username, client)
        if wait is not None:
            minutes = max(1, math.ceil(wait / 60))
            raise AccessDeniedError(
                429,
                f"Too many failed sign-ins for this user or from this address; try again in "
                f"{minutes} minute{'s' if minutes != 1 else ''}.",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        expected = self.users.get(username)
        matches = hmac.compare_digest(
            password.encode(), (expected if expected is not None else "\0" * 16).encode()
        )
        if expected is None or not matches:
            self.throttle.failed(username, client)
            return None
        self.throttle.succeeded(username)
        return username

    def add_routes(self, api: FastAPI) -> None:
        def page(error: str | None, status: int = 200) -> HTMLResponse:
            shown = f'<p class="error">{html.escape(error)}</p>' if error else ""
            return HTMLResponse(LOGIN_PAGE.format(error=shown), status_code=status)

        async def login_form() -> HTMLResponse:
            return page(None)

        async def login(request: Request) -> Response:
            form = await request.form()
            username, password = str(form.get("username", "")), str(form.get("password", ""))
            client = request.client.host if request.client else "unknown"
            try:
                user = self.check(username, password, client)
            except AccessDeniedError as denied:
                if wants_html(request):
                    response: Response = page(denied.message, denied.status)
                    response.headers.update(denied.headers)
                    return response
                return denial(request, denied)
            if user is None:
                message = "Wrong user name or password."
                if wants_html(request):
                    return page(message, 401)
                return JSONResponse({"error": message}, status_code=401)
            response = (
                RedirectResponse("./", status_code=303)
                if wants_html(request)
                else JSONResponse({"success": True})
            )
            response.set_cookie(
                SESSION_COOKIE,
                self.signer.issue(user),
                max_age=int(self.signer.lifetime_s),
                httponly=True,
                samesite="lax",
                secure=_is_https(request),
            )
            return response

        async def logout() -> Response:
            response = RedirectResponse("login", status_code=303)
            response.delete_cookie(SESSION_COOKIE)
            return response

        for path in ("/login", "/login/"):
            api.add_api_route(path, login_form, methods=["GET"], include_in_schema=False)
            api.add_api_route(path, login, methods=["POST"], include_in_schema=False)
        api.add_api_route("/logout", logout, methods=["GET"], include_in_schema=False)


def _is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"
