"""The Hugging Face token, read from Secret Manager by reference (HF_TOKEN_SECRET) at start-up.

A GemmaFineTuneJob's pod is given only the secret's name; its own identity holds
secretAccessor on that secret, so the token is in no Job spec, image or Pulumi state.
"""

from __future__ import annotations

import base64
import os

from app.finetune.errors import FineTuneError

SECRET_ENV = "HF_TOKEN_SECRET"  # noqa: S105  # pragma: allowlist secret - a variable name


def load_hf_token() -> None:
    """Set HF_TOKEN from the secret HF_TOKEN_SECRET names (projects/P/secrets/S), if any."""
    name = os.environ.get(SECRET_ENV, "").strip()
    if not name or os.environ.get("HF_TOKEN"):
        return
    if "/versions/" not in name:
        name = f"{name}/versions/latest"
    import google.auth  # noqa: PLC0415 - only on GKE or Cloud Run
    from google.auth.transport.requests import AuthorizedSession  # noqa: PLC0415

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        response = AuthorizedSession(credentials).get(
            f"https://secretmanager.googleapis.com/v1/{name}:access", timeout=30
        )
    except Exception as error:
        raise FineTuneError(
            f"{SECRET_ENV}={name}: could not reach Secret Manager ({type(error).__name__}: "
            f"{error}). Check the pod's Workload Identity."
        ) from error
    if response.status_code == 403:
        raise FineTuneError(
            f"{SECRET_ENV}={name}: 403 from Secret Manager. Grant this job's identity "
            "roles/secretmanager.secretAccessor on that secret (GemmaFineTuneJob does)."
        )
    if response.status_code != 200:
        raise FineTuneError(
            f"{SECRET_ENV}={name}: Secret Manager answered {response.status_code}: "
            f"{response.text[:200]}"
        )
    payload = response.json().get("payload", {}).get("data", "")
    os.environ["HF_TOKEN"] = base64.b64decode(payload).decode().strip()
