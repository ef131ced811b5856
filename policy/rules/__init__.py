"""gemma-stack's CrossGuard rules, and a runner that applies them all to a list of resources."""

from __future__ import annotations

from collections.abc import Sequence

from pulumi_policy import Policy

from . import cloudrun, firestore, iam, kubernetes
from .core import (
    ADVISORY,
    MANDATORY,
    ResourceRule,
    RuleContext,
    StackResource,
    StackRule,
    Violation,
)

RESOURCE_RULES: list[ResourceRule] = [
    *iam.RULES,
    *cloudrun.RESOURCE_RULES,
    *kubernetes.RULES,
    *firestore.RULES,
]
STACK_RULES: list[StackRule] = [*cloudrun.STACK_RULES, *kubernetes.STACK_RULES]
ALL_RULES: list[ResourceRule | StackRule] = [*RESOURCE_RULES, *STACK_RULES]

__all__ = [
    "ADVISORY",
    "ALL_RULES",
    "MANDATORY",
    "RESOURCE_RULES",
    "STACK_RULES",
    "RuleContext",
    "StackResource",
    "Violation",
    "evaluate",
    "policies",
]


def policies() -> list[Policy]:
    """Every rule as a pulumi_policy policy, for `PolicyPack(...)`."""
    return [rule.to_policy() for rule in ALL_RULES]


def evaluate(
    resources: Sequence[StackResource], context: RuleContext | None = None
) -> list[Violation]:
    """Run every rule over every resource, as `pulumi preview --policy-pack policy` would."""
    context = context or RuleContext()
    found: list[Violation] = []
    for resource in resources:
        for rule in RESOURCE_RULES:
            for message in rule.validate(resource.type, resource.props, context):
                found.append(
                    Violation(rule.name, rule.enforcement, resource.urn or resource.name, message)
                )
    for stack_rule in STACK_RULES:
        for message, urn in stack_rule.validate(resources, context):
            found.append(
                Violation(stack_rule.name, stack_rule.enforcement, urn or "stack", message)
            )
    return found
