"""Google ID tokens for calling IAM-protected Cloud Run services, cached and refreshed early."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit

# Refresh this long before expiry so a token never lapses during a long streamed reply.
REFRESH_MARGIN_S = 300.0


def audience_for(url: str) -> str:
    """Cloud Run checks the token's audience against the service URL's origin."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"cannot derive an ID-token audience from {url!r}; use an absolute URL")
    return f"{parts.scheme}://{parts.netloc}"


def token_expiry(token: str) -> float:
    """Read `exp` from a JWT without verifying it (the server verifies; we only schedule)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])
    except (IndexError, ValueError, KeyError) as err:
        raise ValueError("the ID token is not a JWT with an 'exp' claim") from err


def fetch_google_id_token(audience: str) -> str:
    """Mint an ID token from ambient credentials (metadata server, key file, or impersonation).

    On GKE with a direct Workload Identity principal there is no Google service account to
    ask the metadata server for an ID token, so `ID_TOKEN_SERVICE_ACCOUNT` names one to
    impersonate (the workload needs roles/iam.serviceAccountOpenIdTokenCreator on it).
    """
    import google.auth  # noqa: PLC0415 - only deployments that use ID tokens pay for the import
    import google.auth.transport.requests  # noqa: PLC0415
    from google.auth import impersonated_credentials  # noqa: PLC0415
    from google.oauth2 import id_token  # noqa: PLC0415

    request = google.auth.transport.requests.Request()
    target = os.environ.get("ID_TOKEN_SERVICE_ACCOUNT")
    if not target:
        return str(id_token.fetch_id_token(request, audience))
    source, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    impersonated = impersonated_credentials.Credentials(
        source_credentials=source,
        target_principal=target,
        target_scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    credentials = impersonated_credentials.IDTokenCredentials(
        impersonated, target_audience=audience, include_email=True
    )
    credentials.refresh(request)
    return str(credentials.token)


class IdTokenSource:
    """Hands out a valid ID token for one audience, minting a new one shortly before expiry."""

    def __init__(
        self,
        audience: str,
        fetch: Callable[[str], str] = fetch_google_id_token,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self._fetch = fetch
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at - REFRESH_MARGIN_S

    async def token(self) -> str:
        if self._fresh():
            assert self._token is not None  # noqa: S101 - narrowed by _fresh()
            return self._token
        async with self._lock:
            if not self._fresh():
                # google-auth is synchronous; keep the event loop free while it talks HTTP.
                token = await asyncio.to_thread(self._fetch, self.audience)
                self._expires_at = token_expiry(token)
                self._token = token
            assert self._token is not None  # noqa: S101
            return self._token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}
