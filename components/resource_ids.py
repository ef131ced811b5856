"""IDs that fit Google Cloud's limits: a name too long keeps a hash of the whole of it."""

from __future__ import annotations

import hashlib
import re

import pulumi

# Service account ids: 6 to 30 characters, a lowercase letter first.
SERVICE_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_NOT_ID = re.compile(r"[^a-z0-9-]+")


def id_part(text: str) -> str:
    """``text`` as lowercase letters, digits and single hyphens (a stack name such as `Prod_EU`)."""
    return re.sub(r"-{2,}", "-", _NOT_ID.sub("-", text.lower())).strip("-")


def fitted_id(name: str, max_length: int) -> str:
    """``name`` itself when it fits, else its start plus 4 hex digits of its hash.

    Two long names that share their first characters therefore never share an id.
    """
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:4]
    return f"{name[: max_length - 5].rstrip('-_')}-{digest}"


def service_account_id(name: str) -> str:
    """A valid service account id for ``name`` (padded to 6, fitted to 30 characters)."""
    account = fitted_id(id_part(name), 30)
    if len(account) < 6:
        account = f"gemma-{account}"
    if not SERVICE_ACCOUNT_ID.match(account):
        raise ValueError(
            f"cannot derive a service account id from {name!r}; use a name that starts with a "
            "letter and has lowercase letters, digits and hyphens."
        )
    return account


def scoped_id(base: str, suffix: str, max_length: int) -> str:
    """``base-suffix`` within ``max_length``: one stack's copy of a project-wide resource."""
    return fitted_id(f"{base}-{suffix}" if suffix else base, max_length)


def fixed_id_options(opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """``opts`` for a resource whose id we fix: its replacement must free the id first.

    Pulumi creates a replacement before deleting the old one, which a fixed id turns into a 409.
    """
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True))
