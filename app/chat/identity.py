"""Who owns a conversation: a browser, an IAP-authenticated Google user, or a logged-in user."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from typing import Any

from app.chat.settings import ChatSettings

IAP_EMAIL_HEADER = "x-goog-authenticated-user-email"
IAP_JWT_HEADER = "x-goog-iap-jwt-assertion"
IAP_CERTS_URL = "https://www.gstatic.com/iap/verify/public_key"
IAP_ISSUER = "https://cloud.google.com/iap"


class IdentityError(Exception):
    """The request does not say who the user is; shown to the user as is."""


def new_browser_id() -> str:
    return secrets.token_urlsafe(18)


def verify_iap_jwt(
    assertion: str, audience: str, certs_url: str = IAP_CERTS_URL
) -> Mapping[str, Any]:
    """Check IAP's signed header: signature (IAP's public keys), audience, expiry, issuer."""
    import google.auth.transport.requests  # noqa: PLC0415
    from google.oauth2 import id_token  # noqa: PLC0415

    claims = id_token.verify_token(
        assertion,
        google.auth.transport.requests.Request(),
        audience=audience,
        certs_url=certs_url,
    )
    if claims.get("iss") != IAP_ISSUER:
        raise ValueError(f"unexpected issuer {claims.get('iss')!r}")
    return claims


class OwnerResolver:
    """Turns a request into the owner key that every history query filters on."""

    def __init__(self, settings: ChatSettings, iap_certs_url: str = IAP_CERTS_URL) -> None:
        self.mode = settings.auth_mode
        self.iap_audience = settings.iap_audience
        self.iap_certs_url = iap_certs_url
        # Verified assertions are cached until shortly before they expire (IAP re-signs often).
        self._verified: dict[str, tuple[str, float]] = {}

    async def owner(
        self, headers: Mapping[str, str], username: str | None, browser_id: str | None
    ) -> str:
        if self.mode == "login":
            if not username:
                raise IdentityError("Please sign in again: this request carries no login.")
            return f"user:{username}"
        if self.mode == "iap":
            return f"iap:{await self._iap_email(headers)}"
        if not browser_id:
            raise IdentityError("This browser has no chat identity yet; reload the page.")
        return f"browser:{browser_id}"

    async def _iap_email(self, headers: Mapping[str, str]) -> str:
        lowered = {k.lower(): v for k, v in headers.items()}
        if self.iap_audience:
            assertion = lowered.get(IAP_JWT_HEADER)
            if not assertion:
                raise IdentityError("Signed-in access only: the IAP identity assertion is missing.")
            cached = self._verified.get(assertion)
            if cached and cached[1] > time.time():
                return cached[0]
            try:
                claims = await asyncio.to_thread(
                    verify_iap_jwt, assertion, self.iap_audience, self.iap_certs_url
                )
            except Exception as err:
                raise IdentityError(f"The IAP identity assertion is not valid: {err}") from err
            email = str(claims.get("email") or "")
            if not email:
                raise IdentityError("The IAP identity assertion carries no email.")
            self._verified[assertion] = (email, float(claims.get("exp", 0)) - 30)
            if len(self._verified) > 10_000:
                self._verified.clear()
            return email
        raw = lowered.get(IAP_EMAIL_HEADER, "")
        # IAP sends `accounts.google.com:user@example.com`.
        email = raw.rpartition(":")[2].strip()
        if not email:
            raise IdentityError(
                "Signed-in access only: no IAP user header. Open the app through its IAP URL."
            )
        return email
