"""The serving components in every exposure mode and flavour pass every mandatory rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.rules import RuleContext, evaluate
from policy.rules.core import MANDATORY
from tests.policy.serving_snippet import SNIPPET
from tests.policy.stack import stack_resources
from tests.pulumi_harness import run_snippet


@pytest.mark.parametrize("exposure", ["internal", "iap", "login"])
def test_serving_components_pass_every_mandatory_rule(exposure: str, tmp_path: Path) -> None:
    run = run_snippet(SNIPPET.format(exposure=exposure, public=False), tmp_path)
    types = [r.type for r in run.resources]
    assert types.count("gcp:cloudrunv2/service:Service") == 4
    assert types.count("kubernetes:apps/v1:Deployment") == 3
    found = evaluate(stack_resources(run.resources), RuleContext(stack="prod"))
    mandatory = [str(v) for v in found if v.enforcement is MANDATORY]
    assert mandatory == [], "\n".join(mandatory)
    if exposure == "login":
        lb = [
            r
            for r in run.of_type("kubernetes:core/v1:Service")
            if r.inputs["spec"].get("type") == "LoadBalancer"
        ]
        assert len(lb) == 1  # the rule really looked at a LoadBalancer


def test_a_public_cloud_run_service_needs_the_policy_owners_approval(tmp_path: Path) -> None:
    run = run_snippet(SNIPPET.format(exposure="internal", public=True), tmp_path)
    resources = stack_resources(run.resources)
    (service,) = [r for r in resources if r.name == "prebuilt-service"]
    assert service.props["labels"]["gemma-stack-public"] == "true"  # the component's marker
    found = [
        v for v in evaluate(resources, RuleContext(stack="prod")) if v.enforcement is MANDATORY
    ]
    assert [v.rule for v in found] == ["no-public-cloud-run"]
    assert "grants allUsers access to Cloud Run 'prebuilt'" in found[0].message
    assert "not approved" in found[0].message
    approved = RuleContext(stack="prod", approved_public=frozenset({"prebuilt"}))
    assert [v for v in evaluate(resources, approved) if v.enforcement is MANDATORY] == []
