"""Rule types shared by every policy module, and their adapters to CrossGuard policies.

A rule's check is a plain function of a resource's type token and its camelCase properties
(as the engine sees them), so tests call it directly; `to_policy()` wraps it for the
`pulumi_policy` analyzer that `pulumi preview --policy-pack policy` runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

# The engine sends values it cannot know during preview as these sentinel strings.
_UNKNOWN_SENTINELS = frozenset(
    {
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
        "030794c1-ac77-496b-92df-f27374a8bd58",
        "e48ece36-62e2-4504-bad9-02848725956a",
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
    }
)

# Stacks whose name matches this are dev stacks unless the pack config says otherwise.
_DEV_STACK = re.compile(r"^dev$|^dev[-_.]|[-_.]dev$")


def is_unknown(value: object) -> bool:
    """Whether `value` is a placeholder for something known only after `pulumi up`."""
    return isinstance(value, str) and value in _UNKNOWN_SENTINELS


# Any property may be unknown (a sentinel string) or malformed; a rule that raised would stop
# `pulumi preview` for everyone, so rules read nested values through these two.
def as_mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """`value` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class RuleContext:
    """What a rule may know besides the resource: the stack it is about to change."""

    stack: str = "dev"
    dev_stacks: frozenset[str] = frozenset()
    # Cloud Run services the policy owner has approved for public access (pack config).
    approved_public: frozenset[str] = frozenset()

    @property
    def is_dev(self) -> bool:
        """Dev stacks are named `dev`, `dev-*` or `*-dev`, or listed in the pack's `devStacks`."""
        return self.stack in self.dev_stacks or bool(_DEV_STACK.search(self.stack))


def engine_context(config: Mapping[str, Any] | None = None) -> RuleContext:
    """The context inside a real `pulumi preview`: the stack name comes from the engine."""
    try:
        stack = pulumi.get_stack()
    except Exception:  # outside an engine run there is no stack
        stack = ""
    config = config or {}
    dev = config.get("devStacks") or ()
    public = config.get("publicCloudRunServices") or ()
    return RuleContext(
        stack=stack,
        dev_stacks=frozenset(str(s) for s in dev),
        approved_public=frozenset(str(s) for s in public),
    )


def plain(value: Any) -> Any:
    """Deep-copy the analyzer's unknown-checking proxies into plain dicts and lists.

    Rules then see unknown values as sentinel strings (see `is_unknown`) instead of
    raising on access, so one unknown field does not stop the rest of a check.
    """
    if isinstance(value, Mapping):
        return {str(k): plain(_raw_item(value, k)) for k in list(_raw_keys(value))}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(_raw_item(value, i)) for i in range(len(value))]
    return value


def _raw_keys(mapping: Mapping[Any, Any]) -> Iterable[Any]:
    target = _target(mapping)
    return target.keys() if target is not None else mapping.keys()


def _raw_item(container: Any, key: Any) -> Any:
    target = _target(container)
    return target[key] if target is not None else container[key]


def _target(container: Any) -> Any:
    # pulumi_policy's proxies hand out their raw container under this key.
    if type(container).__name__ in {"_DictProxy", "_ListProxy"}:
        return container["__target"]
    return None


Check = Callable[[str, Mapping[str, Any], RuleContext], list[str]]


@dataclass(frozen=True)
class ResourceRule:
    """One rule over single resources: `check` returns one message per violation."""

    name: str
    description: str
    enforcement: EnforcementLevel
    check: Check
    # Type tokens the rule applies to; empty means it looks at every resource.
    resource_types: frozenset[str] = frozenset()
    remediation: str = ""

    def applies_to(self, resource_type: str) -> bool:
        return not self.resource_types or resource_type in self.resource_types

    def validate(
        self,
        resource_type: str,
        props: Mapping[str, Any],
        context: RuleContext | None = None,
    ) -> list[str]:
        """Messages for every violation of this rule by one resource (empty when it passes)."""
        if not self.applies_to(resource_type):
            return []
        return self.check(resource_type, plain(props), context or RuleContext())

    def to_policy(self) -> ResourceValidationPolicy:
        def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
            context = engine_context(args.get_config())
            for message in self.validate(args.resource_type, args.props, context):
                report(message, None)

        return ResourceValidationPolicy(
            name=self.name,
            description=self.description,
            validate=validate,
            enforcement_level=self.enforcement,
            config_schema=_CONFIG_SCHEMA,
            remediation_steps=self.remediation or None,
        )


@dataclass(frozen=True)
class StackResource:
    """A resource as a stack rule sees it, whether from the engine or from the mock harness."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    parent: str = ""
    # Input property name -> URNs of the resources that property's value came from.
    property_dependencies: Mapping[str, frozenset[str]] = field(default_factory=dict)


StackCheck = Callable[[Sequence[StackResource], RuleContext], list[tuple[str, str]]]


@dataclass(frozen=True)
class StackRule:
    """One rule over the whole stack: `check` returns (message, urn) per violation."""

    name: str
    description: str
    enforcement: EnforcementLevel
    check: StackCheck
    remediation: str = ""

    def validate(
        self, resources: Sequence[StackResource], context: RuleContext | None = None
    ) -> list[tuple[str, str]]:
        plain_resources = [
            StackResource(r.type, r.name, plain(r.props), r.urn, r.parent, r.property_dependencies)
            for r in resources
        ]
        return self.check(plain_resources, context or RuleContext())

    def to_policy(self) -> StackValidationPolicy:
        def validate(args: StackValidationArgs, report: ReportViolation) -> None:
            resources = [
                StackResource(
                    type=r.resource_type,
                    name=r.name,
                    props=r.props,
                    urn=r.urn,
                    parent=r.parent.urn if r.parent is not None else "",
                    property_dependencies={
                        key: frozenset(dep.urn for dep in deps)
                        for key, deps in r.property_dependencies.items()
                    },
                )
                for r in args.resources
            ]
            for message, urn in self.validate(resources, engine_context(args.get_config())):
                report(message, urn or None)

        return StackValidationPolicy(
            name=self.name,
            description=self.description,
            validate=validate,
            enforcement_level=self.enforcement,
            config_schema=_CONFIG_SCHEMA,
            remediation_steps=self.remediation or None,
        )


_CONFIG_SCHEMA = PolicyConfigSchema(
    properties={
        "devStacks": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Stack names treated as dev besides `dev`, `dev-*` and `*-dev`.",
        },
        "publicCloudRunServices": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Cloud Run services approved to be public (they must also be "
            "labelled gemma-stack-public by `public: true` in the stack config).",
        },
    }
)


@dataclass(frozen=True)
class Violation:
    """One finding of a whole-pack run, as `pulumi preview` would print it."""

    rule: str
    enforcement: EnforcementLevel
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.enforcement.value}] {self.rule} on {self.resource}: {self.message}"
