"""The whole pack over the whole mocked default stack, and one config switch that breaks it."""

from __future__ import annotations

import copy
from typing import Any

from policy.rules import RuleContext, evaluate, kubernetes
from policy.rules.core import MANDATORY
from tests.policy.stack import stack_resources
from tests.pulumi_harness import dev_config, run_program

CLOUD_RUN_SERVICES = "gemma-stack:cloudRunServices"


def _mandatory(run: Any, stack: str) -> list[str]:
    found = evaluate(stack_resources(run.resources), RuleContext(stack=stack))
    return [str(v) for v in found if v.enforcement is MANDATORY]


def test_default_stack_has_what_the_rules_examine(default_stack: Any) -> None:
    # Guards the next test against passing on an empty or partial stack.
    types = {r.type for r in default_stack.resources}
    assert {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:core/v1:Service",
        "gcp:cloudrunv2/service:Service",
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        "gcp:projects/iAMMember:IAMMember",
        "gcp:firestore/database:Database",
    } <= types
    workloads = [r for r in default_stack.resources if r.type in kubernetes.WORKLOAD_TYPES]
    # The mandatory chat-app rule finds the chat Deployment by its label, and the GPU rule
    # has a GPU container to look at.
    assert sum(kubernetes.is_chat_app(r.type, r.inputs) for r in workloads) == 1
    assert any(
        kubernetes.GPU_RESOURCE in str(kubernetes.pod_spec(r.type, r.inputs)) for r in workloads
    )


def test_default_stack_has_no_mandatory_violations(default_stack: Any) -> None:
    assert _mandatory(default_stack, "dev") == []
    # The dev example turns Firestore delete protection off, which only a dev stack may do.
    (violation,) = _mandatory(default_stack, "prod")
    assert "[mandatory] firestore-delete-protection" in violation
    assert "firestoreDeleteProtection true" in violation


def test_opening_one_cloud_run_service_fails_the_policy_run() -> None:
    services = copy.deepcopy(dev_config()[CLOUD_RUN_SERVICES])
    target = next(s for s in services if s.get("enabled", True))
    target["public"] = True
    run = run_program(overrides={CLOUD_RUN_SERVICES: services})
    violations = _mandatory(run, "dev")
    assert len(violations) == 1, violations
    assert "[mandatory] no-public-cloud-run" in violations[0]
    assert f"grants allUsers access to Cloud Run {target['name']!r}" in violations[0]
    assert "not approved" in violations[0]
