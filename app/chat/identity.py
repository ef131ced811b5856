"""Who owns a conversation: a browser, an IAP-authenticated Google user, or a logged-in user.

In IAP mode nothing is served without IAP's signed header (`x-goog-iap-jwt-assertion`),
verified against IAP's public keys and this app's audience. The audience is configured, or
looked up once the GKE Ingress has created its backend service, so a first deploy works in
one go; until it is known every request is refused. The plain email header is never read.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Request

from app.chat.access import AccessDeniedError
from app.chat.settings import ChatSettings

log = logging.getLogger(__name__)

IAP_JWT_HEADER = "x-goog-iap-jwt-assertion"
IAP_CERTS_URL = "https://www.gstatic.com/iap/verify/public_key"
IAP_ISSUER = "https://cloud.google.com/iap"
COMPUTE_API_URL = "https://compute.googleapis.com"
# How often an unknown or changed audience may be looked up again.
AUDIENCE_LOOKUP_INTERVAL_S = 30.0


class IdentityError(Exception):
    """The request does not say who the user is; shown to the user as is."""


def new_browser_id() -> str:
    return secrets.token_urlsafe(18)


def normalize_email(email: str) -> str:
    """One owner per person: Google treats email addresses case-insensitively."""
    return email.strip().lower()


def verify_iap_jwt(assertion: str, certs_url: str = IAP_CERTS_URL) -> Mapping[str, Any]:
    """Check IAP's signed header: signature (IAP's public keys), expiry and issuer.

    The audience is checked by the caller, which may have to look it up first.
    """
    import google.auth.transport.requests  # noqa: PLC0415
    from google.oauth2 import id_token  # noqa: PLC0415

    claims = id_token.verify_token(
        assertion, google.auth.transport.requests.Request(), audience=None, certs_url=certs_url
    )
    if claims.get("iss") != IAP_ISSUER:
        raise ValueError("unexpected issuer")
    return claims


def find_iap_audience(
    project: str, project_number: str, name_part: str, api_url: str = COMPUTE_API_URL
) -> str | None:
    """The audience of the backend service the GKE Ingress made for this app, if it exists.

    GKE names it `k8s1-<cluster>-<namespace>-<service>-<port>-<hash>`; `name_part` is the
    `<namespace>-<service>-<port>` in the middle. Needs compute.backendServices.list.
    """
    import google.auth  # noqa: PLC0415
    from google.auth.transport.requests import AuthorizedSession  # noqa: PLC0415

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    session = AuthorizedSession(credentials)
    response = session.get(
        f"{api_url}/compute/v1/projects/{project}/global/backendServices", timeout=10
    )
    response.raise_for_status()
    found = [
        item
        for item in response.json().get("items", [])
        if f"-{name_part}-" in str(item.get("name", ""))
    ]
    if len(found) != 1:
        if len(found) > 1:
            log.error("%d backend services match %r; set IAP_AUDIENCE", len(found), name_part)
        return None
    return f"/projects/{project_number}/global/backendServices/{found[0]['id']}"


class IapAccess:
    """IAP mode's gate: a verified IAP assertion for this app's audience, or nothing."""

    public_paths = frozenset({"/healthz", "/livez"})

    def __init__(
        self,
        audience: str | None,
        find_audience: Callable[[], str | None] | None = None,
        certs_url: str = IAP_CERTS_URL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audience = audience
        self._find_audience = find_audience
        self.certs_url = certs_url
        self._clock = clock
        self._looked_up_at = -AUDIENCE_LOOKUP_INTERVAL_S
        self._lookup_lock = asyncio.Lock()
        # Verified assertions are cached until shortly before they expire (IAP re-signs often).
        self._verified: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: ChatSettings, certs_url: str = IAP_CERTS_URL) -> IapAccess:
        finder = None
        if settings.iap_project_number and settings.iap_backend_service:
            project = settings.google_cloud_project or settings.iap_project_number
            number, name_part = settings.iap_project_number, settings.iap_backend_service

            def finder() -> str | None:
                return find_iap_audience(project, number, name_part)

        return cls(settings.iap_audience, finder, certs_url)

    async def _refresh_audience(self) -> None:
        if self._find_audience is None:
            return
        async with self._lookup_lock:
            if self._clock() - self._looked_up_at < AUDIENCE_LOOKUP_INTERVAL_S:
                return
            self._looked_up_at = self._clock()
            try:
                found = await asyncio.to_thread(self._find_audience)
            except Exception as err:  # the API may refuse or be unreachable; try again later
                log.warning("IAP audience lookup failed (%s)", type(err).__name__)
                return
            if found:
                self.audience = found

    async def user(self, request: Request) -> str:
        return await self.email(request.headers.get(IAP_JWT_HEADER, ""))

    async def email(self, assertion: str) -> str:
        if not assertion:
            raise AccessDeniedError(
                401,
                "Signed-in access only: this request did not come through Identity-Aware "
                "Proxy. Open the app at its IAP URL.",
            )
        cached = self._verified.get(assertion)
        if cached and cached[1] > time.time():
            return cached[0]
        try:
            claims = await asyncio.to_thread(verify_iap_jwt, assertion, self.certs_url)
        except Exception as err:
            log.info("IAP assertion refused (%s)", type(err).__name__)
            raise AccessDeniedError(403, "The IAP identity assertion is not valid.") from err
        audience = str(claims.get("aud", ""))
        if audience != self.audience:
            await self._refresh_audience()
        if self.audience is None:
            raise AccessDeniedError(
                503,
                "The app cannot verify sign-ins yet: its IAP audience is not known (the load "
                "balancer may still be provisioning). Try again in a few minutes.",
            )
        if audience != self.audience:
            # Never say which audience was expected.
            raise AccessDeniedError(403, "The IAP identity assertion is not for this app.")
        email = normalize_email(str(claims.get("email") or ""))
        if not email:
            raise AccessDeniedError(403, "The IAP identity assertion carries no email.")
        self._verified[assertion] = (email, float(claims.get("exp", 0)) - 30)
        if len(self._verified) > 10_000:
            self._verified.clear()
        return email


class OwnerResolver:
    """Turns a request into the owner key that every history query filters on.

    In login and IAP modes `username` is what the access gate verified for this request.
    """

    def __init__(self, settings: ChatSettings) -> None:
        self.mode = settings.auth_mode

    def owner(self, username: str | None, browser_id: str | None) -> str:
        if self.mode in {"login", "iap"}:
            if not username:
                raise IdentityError("Please sign in again: this request carries no sign-in.")
            return f"user:{username}" if self.mode == "login" else f"iap:{username}"
        if not browser_id:
            raise IdentityError("This browser has no chat identity yet; reload the page.")
        return f"browser:{browser_id}"
