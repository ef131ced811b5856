"""Who an IAM binding may name: the member syntax every grant of the stack checks."""

from __future__ import annotations

# The IAM member kinds a binding may name; the open ones make a resource public.
MEMBER_PREFIXES = (
    "user:",
    "group:",
    "serviceAccount:",
    "domain:",
    "principal://",
    "principalSet://",
)
OPEN_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})


def is_iam_member(member: str) -> bool:
    """True for a named IAM member such as `user:ana@example.com` (never allUsers)."""
    return member.startswith(MEMBER_PREFIXES) and len(member) > member.index(":") + 1
