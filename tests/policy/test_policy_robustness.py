"""No rule raises on unknown, missing or odd properties: a crash would stop `pulumi preview`."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policy.rules import RESOURCE_RULES, STACK_RULES, StackResource, kubernetes
from tests.policy.test_policy_rules import DEPLOYMENT, PROD, _ingress, deployment, run_service

# One resource of every shape a rule reads, each with the nested fields that rule looks at.
SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("gcp:cloudrunv2/service:Service", run_service()),
    ("gcp:cloudrunv2/job:Job", {"template": {"template": run_service()["template"]}}),
    ("gcp:cloudrun/service:Service", {"template": {"spec": run_service()["template"]}}),
    (DEPLOYMENT, deployment({"app.kubernetes.io/name": "chat-app"})),
    ("kubernetes:batch/v1:CronJob", {"spec": {"jobTemplate": {"spec": deployment()["spec"]}}}),
    (
        kubernetes.SERVICE,
        {
            "metadata": {
                "name": "chat-app",
                "annotations": {"cloud.google.com/backend-config": '{"default": "iap"}'},
            },
            "spec": {"type": "LoadBalancer"},
        },
    ),
    (kubernetes.INGRESS, _ingress({"gemma-stack/auth": "iap"})),
    (kubernetes.BACKEND_CONFIG, {"metadata": {"name": "iap"}, "spec": {"iap": {"enabled": True}}}),
    (
        "gcp:container/cluster:Cluster",
        {
            "enableAutopilot": True,
            "clusterAutoscaling": {"autoProvisioningDefaults": {"serviceAccount": "n@p.iam"}},
        },
    ),
    ("gcp:container/cluster:Cluster", {"nodeConfig": {"serviceAccount": "n@p.iam"}}),
    (
        "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy",
        {"name": "gemma-vllm", "policyData": {"bindings": [{"role": "r", "members": ["a"]}]}},
    ),
    (
        "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
        {"name": "gemma-vllm", "role": "roles/run.invoker", "members": ["allUsers"]},
    ),
    ("gcp:firestore/database:Database", {"name": "db", "deleteProtectionState": "X"}),
]
# What the engine may send in place of any value: unknown during preview, absent, or odd.
ODD_VALUES: list[Any] = [None, UNKNOWN_STRING_VALUE, "x", 3, [], ["x"], {}, {"a": None}]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(value, dict | list):
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            yield from _paths(child, (*path, key))


def _replaced(props: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    changed = copy.deepcopy(props)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return changed


@pytest.mark.parametrize(("resource_type", "props"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_no_rule_raises_on_any_odd_property(resource_type: str, props: dict[str, Any]) -> None:
    others = [StackResource(t, f"r{i}", p, urn=f"urn:{i}") for i, (t, p) in enumerate(SAMPLES)]
    checked = 0
    for path in _paths(props):
        for odd in ODD_VALUES:
            changed = _replaced(props, path, odd)
            for rule in RESOURCE_RULES:
                assert all(isinstance(m, str) for m in rule.validate(resource_type, changed, PROD))
            resources = [*others, StackResource(resource_type, "odd", changed, urn="urn:odd")]
            for stack_rule in STACK_RULES:
                assert isinstance(stack_rule.validate(resources, PROD), list)
            checked += 1
    assert checked >= len(ODD_VALUES)


def test_an_unknown_security_context_is_not_judged_before_it_is_known() -> None:
    chat = deployment({"app.kubernetes.io/name": "chat-app"})
    chat["spec"]["template"]["spec"]["securityContext"] = UNKNOWN_STRING_VALUE
    chat["spec"]["template"]["spec"]["containers"][0]["securityContext"] = UNKNOWN_STRING_VALUE
    assert kubernetes.CHAT_APP_HARDENED.validate(DEPLOYMENT, chat, PROD) == []
    # A known but missing security context is still refused.
    del chat["spec"]["template"]["spec"]["securityContext"]
    del chat["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    (message,) = kubernetes.CHAT_APP_HARDENED.validate(DEPLOYMENT, chat, PROD)
    assert "may run as root" in message
