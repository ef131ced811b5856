"""Turn the mock harness's recorded resources into what the policy pack's rules see."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from policy.rules import StackResource


def stack_resources(recorded: Iterable[Any]) -> list[StackResource]:
    """Every recorded resource with its camelCase inputs, parent and input dependencies."""
    return [
        StackResource(
            type=r.type,
            name=r.name,
            props=r.inputs,
            urn=r.urn,
            parent=r.parent,
            property_dependencies={k: frozenset(v) for k, v in r.property_dependencies.items()},
        )
        for r in recorded
    ]
