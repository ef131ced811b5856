"""The pack as the Pulumi engine runs it: PolicyPack wiring, engine proxies and unknown values."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policy.rules import ALL_RULES, policies
from policy.rules.core import engine_context

PACK = Path(__file__).resolve().parents[2] / "policy"


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


def _policy(name: str) -> Any:
    return next(p for p in policies() if p.name == name)


def test_pack_main_builds_one_policy_per_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    created: dict[str, Any] = {}

    def fake_pack(**kwargs: Any) -> None:  # the real one starts a gRPC server for the CLI
        created.update(kwargs)

    monkeypatch.setattr("pulumi_policy.PolicyPack", fake_pack)
    # The CLI runs the pack directory itself, so `rules` must import from there.
    monkeypatch.setattr(sys, "path", [str(PACK), *sys.path])
    runpy.run_path(str(PACK), run_name="__main__")
    assert created["name"] == "gemma-stack-security"
    assert [p.name for p in created["policies"]] == [r.name for r in ALL_RULES]
    for policy, rule in zip(created["policies"], ALL_RULES, strict=True):
        assert policy.enforcement_level is rule.enforcement
        assert policy.remediation_steps
    main = (PACK / "__main__.py").read_text()
    assert main.count("PolicyPack(") == 1
    assert "def " not in main


def test_resource_policy_reports_through_the_engine_callback() -> None:
    policy = _policy("no-basic-roles")
    assert isinstance(policy, ResourceValidationPolicy)
    reported: list[tuple[str, str | None]] = []

    def args_for(props: dict[str, Any]) -> ResourceValidationArgs:
        return ResourceValidationArgs(
            "gcp:projects/iAMMember:IAMMember",
            unknown_checking_proxy(props),
            "urn:pulumi:prod::gemma-stack::gcp:projects/iAMMember:IAMMember::x",
            "x",
            _options(),
            None,
        )

    policy.validate(
        args_for({"role": "roles/owner", "member": "user:a@b.c"}),
        lambda m, u: reported.append((m, u)),
    )
    assert len(reported) == 1
    assert "roles/owner" in reported[0][0]
    # During preview a member computed from another resource is unknown; the rule must still run.
    reported.clear()
    policy.validate(
        args_for({"role": "roles/datastore.user", "member": UNKNOWN_STRING_VALUE}),
        lambda m, u: reported.append((m, u)),
    )
    assert reported == []


def test_stack_policy_follows_engine_property_dependencies() -> None:
    policy = _policy("no-public-cloud-run")
    assert isinstance(policy, StackValidationPolicy)
    assert policy.enforcement_level is EnforcementLevel.MANDATORY

    def resource(type_: str, name: str, props: dict[str, Any]) -> PolicyResource:
        return PolicyResource(
            type_,
            unknown_checking_proxy(props),
            f"urn:{name}",
            name,
            _options(),
            None,
            None,
            [],
            {},
        )

    service = resource(
        "gcp:cloudrunv2/service:Service",
        "svc",
        # In preview a new service's name is unknown, so only the dependency links the grant.
        {"name": UNKNOWN_STRING_VALUE, "template": {"serviceAccount": UNKNOWN_STRING_VALUE}},
    )
    grant = resource(
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        "svc-public",
        {"name": UNKNOWN_STRING_VALUE, "role": "roles/run.invoker", "member": "allUsers"},
    )
    grant.property_dependencies["name"] = [service]
    reported: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs([service, grant]), lambda m, u: reported.append((m, u)))
    ((message, urn),) = reported
    assert urn == "urn:svc-public"
    assert "Cloud Run 'svc'" in message


def test_pack_config_approves_a_public_service_and_names_dev_stacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = _policy("no-public-cloud-run")
    service = PolicyResource(
        "gcp:cloudrunv2/service:Service",
        unknown_checking_proxy({"name": "demo", "labels": {"gemma-stack-public": "true"}}),
        "urn:demo",
        "demo",
        _options(),
        None,
        None,
        [],
        {},
    )
    grant = PolicyResource(
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        unknown_checking_proxy({"name": "demo", "role": "roles/run.invoker", "member": "allUsers"}),
        "urn:grant",
        "demo-public",
        _options(),
        None,
        None,
        [],
        {"name": [service]},
    )
    reported: list[str] = []
    approved = {"publicCloudRunServices": ["demo"]}
    policy.validate(
        StackValidationArgs([service, grant], approved), lambda m, u: reported.append(m)
    )
    assert reported == []
    policy.validate(StackValidationArgs([service, grant], {}), lambda m, u: reported.append(m))
    assert len(reported) == 1

    firestore = _policy("firestore-delete-protection")
    off = {"name": "chat-app-db", "deleteProtectionState": "DELETE_PROTECTION_DISABLED"}

    def findings(config: dict[str, Any]) -> list[str]:
        found: list[str] = []
        args = ResourceValidationArgs(
            "gcp:firestore/database:Database",
            unknown_checking_proxy(off),
            "urn:db",
            "db",
            _options(),
            None,
            config,
        )
        firestore.validate(args, lambda m, u: found.append(m))
        return found

    # The engine tells the pack which stack it previews.
    monkeypatch.setattr("pulumi.get_stack", lambda: "prod")
    assert engine_context().stack == "prod"
    assert "in stack 'prod'" in findings({})[0]
    assert findings({"devStacks": ["prod"]}) == []
    monkeypatch.setattr("pulumi.get_stack", lambda: "dev-alice")
    assert findings({}) == []


def test_pack_imports_only_what_its_own_requirements_install() -> None:
    # `pulumi preview` runs the pack in policy/venv, built from policy/requirements.txt alone.
    required = {
        line.split(">")[0].split("=")[0].strip().replace("-", "_")
        for line in (PACK / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert required == {"pulumi", "pulumi_policy"}
    local = {"rules"}
    for source in PACK.rglob("*.py"):
        if "venv" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names | required | local, f"{source}: {name}"
