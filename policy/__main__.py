"""gemma-stack's policy pack: run it with `pulumi preview --policy-pack policy`."""

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import policies

PolicyPack(
    name="gemma-stack-security",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
