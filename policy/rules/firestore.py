"""Firestore rule: delete protection stays on outside dev stacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core import MANDATORY, ResourceRule, RuleContext, is_unknown

DATABASE = "gcp:firestore/database:Database"
ENABLED = "DELETE_PROTECTION_ENABLED"


def _delete_protection(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del resource_type
    state = props.get("deleteProtectionState")
    if context.is_dev or state == ENABLED or is_unknown(state):
        return []
    name = props.get("name") or "database"
    return [
        f"Firestore database {name!r} has delete protection off "
        f"(deleteProtectionState={state or 'unset'}) in stack {context.stack!r}, so one "
        "`pulumi destroy` or console click erases every conversation. Turn it on with "
        "`pulumi config set firestoreDeleteProtection true` (the default; the database then "
        f"has {ENABLED}); only dev stacks (dev, dev-*, *-dev, or the pack's devStacks "
        "config) may turn it off."
    ]


FIRESTORE_DELETE_PROTECTION = ResourceRule(
    name="firestore-delete-protection",
    description="Firestore databases keep delete protection on in every stack not marked dev.",
    enforcement=MANDATORY,
    check=_delete_protection,
    resource_types=frozenset({DATABASE}),
    remediation=f"Set deleteProtectionState to {ENABLED}.",
)

RULES = [FIRESTORE_DELETE_PROTECTION]
